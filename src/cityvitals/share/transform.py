"""Field transforms: mask, keyed pseudonym, generalise, redact, suppress — chosen per field and audience.

Ops (strings, so catalogue entries stay data):

- ``keep``; ``suppress`` (the column is dropped);
- ``mask`` (keep a little for recognisability: ``138****5678``, ``王*``, ``110105********002X``);
- ``pseudonym`` / ``pseudonym:NEW_NAME`` (HMAC under the active key; optionally renamed, so
  ``reporter_resident_id`` is released as ``reporter_id``);
- ``redact`` (free text: every recognised piece of personal data, plus the row's own
  declared personal values, replaced with a neutral label);
- ``time:hour`` / ``time:day`` (truncate); ``unit:LEVEL`` (the ancestor unit at LEVEL);
- ``centroid`` (a coordinate replaced by the centroid of the row's released unit).

Defaults by class for audiences a field does not list: public → keep; restricted →
suppress for the public, keep otherwise; confidential → keep for internal only;
personal → suppress for public and research, mask for internal (text: redact).

>>> import polars as pl
>>> df = pl.DataFrame({"m": ["13812345678", None], "n": ["王小明", "Li"]})
>>> mask_expr("m", "phone").__class__.__name__
'Expr'
>>> df.select(mask_expr("m", "phone"), mask_expr("n", "name")).rows()
[('138****5678', '王**'), (None, 'L*')]
"""

from __future__ import annotations

import re

import polars as pl

from cityvitals.errors import InputError
from cityvitals.share.catalog import AUDIENCES, Dataset, Field
from cityvitals.share.pii import LABELS, redact_texts

_NAME_LABEL = LABELS["name"]


def default_op(f: Field, audience: str) -> str:
    if audience not in AUDIENCES:
        raise InputError(f"audience {audience!r}: choose one of {', '.join(AUDIENCES)}")
    if audience in f.ops:
        return f.ops[audience]
    if f.cls == "public":
        return "keep"
    if f.cls == "restricted":
        return "suppress" if audience == "public" else "keep"
    if f.cls == "confidential":
        return "keep" if audience == "internal" else "suppress"
    # personal
    if audience == "internal":
        return "redact" if f.kind == "text" else ("keep" if f.kind in ("time", "lon", "lat", "category") else "mask")
    return "redact" if f.kind == "text" else "suppress"


def plan(ds: Dataset, audience: str, columns: list[str]) -> dict[str, str]:
    """Field -> op for the columns the source actually has (undeclared columns never appear)."""
    have = set(columns)
    return {f.name: default_op(f, audience) for f in ds.fields if f.name in have}


def mask_expr(col: str, kind: str) -> pl.Expr:
    """A masking expression: enough left to recognise one's own record, not enough to identify."""
    c = pl.col(col).cast(pl.String)
    n = c.str.len_chars()
    if kind == "name":
        out = c.str.slice(0, 1) + pl.lit("*").repeat_by(pl.max_horizontal(n - 1, pl.lit(1))).list.join("")
    elif kind in ("phone", "resident_id", "id", "bank_card"):
        keep_head = pl.when(n >= 15).then(6).otherwise(3)
        out = (c.str.slice(0, keep_head) + pl.lit("*").repeat_by(pl.max_horizontal(n - keep_head - 4, pl.lit(1))).list.join("")
               + c.str.slice(-4))
    elif kind == "email":
        out = c.str.slice(0, 1) + pl.lit("***@") + c.str.split("@").list.last()
    elif kind == "plate":
        out = c.str.slice(0, 2) + pl.lit("***") + c.str.slice(-1)
    else:
        out = c.str.slice(0, 1) + pl.lit("***")
    return pl.when(c.is_null()).then(None).otherwise(out).alias(col)


def redact_column(df: pl.DataFrame, col: str, literal_cols: list[str]) -> pl.Series:
    """Regex recognition over the batch, then the row's own declared personal values, literally."""
    texts = redact_texts(df[col].cast(pl.String).to_list())
    if literal_cols:
        # the row's own declared values, literally: catches shapes the regexes do not know
        # (a two-character name, a number written oddly). Per-row patterns cannot be a
        # vectorised polars replace, but str.replace in C over short texts is cheap.
        cols = [(df[lc].cast(pl.String).to_list(), _NAME_LABEL if lc.endswith("name") else "[个人信息]")
                for lc in literal_cols]
        for i, t in enumerate(texts):
            if not t:
                continue
            for values, label in cols:
                v = values[i]
                if v and len(v) >= 2 and v in t:
                    t = t.replace(v, label)
            texts[i] = t
    return pl.Series(col, texts, dtype=pl.String)


def unit_ancestors(store) -> pl.DataFrame:
    """code -> ancestor code at each level (for generalising a unit), with centroids."""
    units = store.frame("SELECT code, level, parent_code, centroid_lon, centroid_lat, name FROM units")
    return units


def ancestor_map(units: pl.DataFrame, level: str) -> dict[str, str]:
    """Each unit code mapped to its ancestor at ``level`` (itself if already at or above it)."""
    parent = dict(zip(units["code"].to_list(), units["parent_code"].to_list()))
    lv = dict(zip(units["code"].to_list(), units["level"].to_list()))
    order = ["city", "district", "street", "community", "grid"]
    target = order.index(level)
    out: dict[str, str] = {}
    for code in parent:
        c = code
        while c is not None and lv.get(c) in order and order.index(lv[c]) > target:
            c = parent.get(c)
        out[code] = c if c is not None else code
    return out


def place_regex(units: pl.DataFrame, finer_than: str = "street") -> re.Pattern | None:
    """One alternation of the names of units finer than ``finer_than`` (to blur places in text)."""
    levels = {"street": ("community", "grid"), "community": ("grid",)}.get(finer_than, ("community", "grid"))
    names = sorted({n for n, lv in zip(units["name"].to_list(), units["level"].to_list())
                    if n and lv in levels and len(n) >= 2}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, names))) if names else None


def apply_ops(df: pl.DataFrame, ds: Dataset, ops: dict[str, str], *, keyring=None,
              literal_cols: list[str] | None = None, place: re.Pattern | None = None) -> pl.DataFrame:
    """Apply ``ops`` column by column (centroid is resolved later, after k-anonymity)."""
    literal_cols = [c for c in (literal_cols or []) if c in df.columns]
    out: list[pl.Series | pl.Expr] = []
    renames: dict[str, str] = {}
    for name, op in ops.items():
        f = ds.field(name)
        if op in ("keep", "centroid"):
            out.append(pl.col(name))
        elif op == "suppress":
            continue
        elif op == "mask":
            out.append(mask_expr(name, f.kind))
        elif op.startswith("pseudonym"):
            if keyring is None:
                raise InputError(f"dataset {ds.id!r}, field {name!r}: a pseudonym needs the key ring")
            out.append(pl.Series(name, keyring.pseudonyms(df[name].cast(pl.String).to_list()), dtype=pl.String))
            if ":" in op:
                renames[name] = op.split(":", 1)[1]
        elif op == "redact":
            s = redact_column(df, name, literal_cols)
            if place is not None:
                s = pl.Series(name, [None if t is None else place.sub("[地点]", t) for t in s.to_list()], dtype=pl.String)
            out.append(s)
        elif op in ("time:hour", "time:day"):
            out.append(pl.col(name).dt.truncate("1h" if op == "time:hour" else "1d"))
        elif op.startswith("unit:"):
            continue  # done by the caller with the unit tree
        else:
            raise InputError(f"dataset {ds.id!r}, field {name!r}: unknown transform {op!r}")
    res = df.select(out) if out else pl.DataFrame()
    return res.rename(renames) if renames else res


def safety_net(df: pl.DataFrame, skip: tuple[str, ...] = ()) -> pl.DataFrame:
    """A last recognition pass over every text column of a public view: defence in depth."""
    cols = [c for c, t in df.schema.items() if t == pl.String and c not in skip]
    if not cols or df.height == 0:
        return df
    return df.with_columns(pl.Series(c, redact_texts(df[c].to_list()), dtype=pl.String) for c in cols)
