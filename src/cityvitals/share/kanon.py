"""k-anonymity for microdata releases: generalise the quasi-identifiers, suppress what still stands out.

The quasi-identifiers of a report or case are where (unit), when (time) and what
(category): together they can single out a caller even with the name removed. The
release walks a ladder of *global* recodings, from fine to coarse — (hour, community),
(day, community), (day, street), (day, district), then the category dropped to '*' —
and takes the first rung where at most ``max_suppression`` of the rows sit in groups
smaller than ``k``; those rows are suppressed. Global recoding (every row generalised
the same way) is used rather than per-row recoding so that rows released at different
granularities cannot be intersected to undo it.

>>> import polars as pl
>>> from datetime import datetime, timezone
>>> t = datetime(2024, 7, 1, 8, 10, tzinfo=timezone.utc)
>>> df = pl.DataFrame({"u": ["a1", "a1", "a1", "a2"], "t": [t] * 4, "c": ["x", "x", "x", "x"]})
>>> res = k_anonymise(df, {"u": "unit", "t": "time", "c": "category"}, k=3, max_suppression=0.25,
...                   unit_levels={"community": {"a1": "a1", "a2": "a2"}, "street": {"a1": "s", "a2": "s"}})
>>> res.frame.height, res.suppressed, res.rung["unit"]
(3, 1, 'community')
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

LADDER = (
    {"time": "1h", "unit": "community", "category": True},
    {"time": "1d", "unit": "community", "category": True},
    {"time": "1d", "unit": "street", "category": True},
    {"time": "1d", "unit": "district", "category": True},
    {"time": "1d", "unit": "district", "category": False},
    {"time": "1mo", "unit": "district", "category": False},
)


@dataclass
class KAnonResult:
    frame: pl.DataFrame
    k: int
    rung: dict
    suppressed: int
    smallest_group: int | None
    tried: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"k": self.k, "rung": self.rung, "suppressed": self.suppressed, "released": self.frame.height,
                "smallest_group": self.smallest_group, "tried": self.tried}


def _recode(df: pl.DataFrame, qi: dict[str, str], rung: dict, unit_levels: dict[str, dict[str, str]]) -> pl.DataFrame:
    exprs = []
    for col, kind in qi.items():
        if col not in df.columns:
            continue
        if kind == "time":
            exprs.append(pl.col(col).dt.truncate(rung["time"]))
        elif kind == "unit":
            mapping = unit_levels.get(rung["unit"])
            if mapping:
                exprs.append(pl.col(col).replace(mapping))
        elif kind == "category" and not rung["category"]:
            exprs.append(pl.lit("*").alias(col))
    return df.with_columns(exprs) if exprs else df


def k_anonymise(df: pl.DataFrame, qi: dict[str, str], *, k: int = 5, max_suppression: float = 0.05,
                unit_levels: dict[str, dict[str, str]] | None = None, ladder: tuple[dict, ...] = LADDER) -> KAnonResult:
    """The release of ``df`` in which every quasi-identifier combination occurs at least ``k`` times."""
    unit_levels = unit_levels or {}
    cols = [c for c in qi if c in df.columns]
    if k <= 1 or df.height == 0 or not cols:
        return KAnonResult(df, k, {}, 0, None)
    tried = []
    chosen = None
    for rung in ladder:
        rec = _recode(df, qi, rung, unit_levels)
        sizes = rec.select(pl.len().over(cols).alias("_n"))["_n"]
        small = int((sizes < k).sum())
        tried.append({**rung, "rows_below_k": small})
        chosen = (rung, rec, sizes, small)
        if small <= max_suppression * df.height:
            break
    rung, rec, sizes, small = chosen
    kept = rec.filter(sizes >= k)
    smallest = int(sizes.filter(sizes >= k).min()) if kept.height else None
    return KAnonResult(kept, k, dict(rung), small, smallest, tried)


def check_k(df: pl.DataFrame, cols: list[str], k: int) -> bool:
    """True when every combination of ``cols`` in ``df`` occurs at least ``k`` times."""
    if df.height == 0:
        return True
    return int(df.group_by(cols).len()["len"].min()) >= k
