"""Desensitised views: the only way data leaves the store for someone outside the operations centre.

``view(store, dataset, audience)`` runs the dataset's declared source, keeps only the
declared fields, applies each field's transform for the audience, enforces k-anonymity
on microdata, moves coordinates to the released unit's centroid and, for the public,
passes every text column through the recogniser once more. Audiences other than the
public may see pseudonyms or masked identifiers: those reads need an actor and a stated
purpose and are written to the hash-chained access log before any row is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from cityvitals.errors import InputError
from cityvitals.share import audit
from cityvitals.share.catalog import Dataset, cat_by_id, get_dataset
from cityvitals.share.kanon import k_anonymise
from cityvitals.share.keys import KeyRing
from cityvitals.share.transform import ancestor_map, apply_ops, place_regex, plan, safety_net

_LITERAL_KINDS = ("name", "phone", "resident_id", "plate", "email", "address")


@dataclass
class View:
    dataset: Dataset
    audience: str
    frame: pl.DataFrame
    ops: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def point(self) -> tuple[str, str] | None:
        return ("lon", "lat") if {"lon", "lat"} <= set(self.frame.columns) else (
            ("centroid_lon", "centroid_lat") if {"centroid_lon", "centroid_lat"} <= set(self.frame.columns) else None)


def home_of(store) -> Path:
    return Path(store.home)


def keyring_for(store) -> KeyRing:
    return KeyRing(home_of(store), store)


def reaches_personal(ds: Dataset, ops: dict[str, str]) -> list[str]:
    """Personal fields this plan returns identifiable or linkable (kept, masked or pseudonymised).

    Redacted text and generalised time or place are not counted: they are what the
    public may see."""
    return [n for n, op in ops.items() if ds.field(n).cls == "personal"
            and (op in ("keep", "mask") or op.startswith("pseudonym"))]


def _units(store) -> pl.DataFrame:
    return store.frame("SELECT code, name, level, parent_code, centroid_lon, centroid_lat FROM units")


def _centroids(df: pl.DataFrame, ops: dict[str, str], units: pl.DataFrame) -> pl.DataFrame:
    cols = [n for n, op in ops.items() if op == "centroid" and n in df.columns]
    if not cols:
        return df
    if "unit_code" not in df.columns:
        return df.drop(cols)
    cent = units.select(pl.col("code").alias("unit_code"), pl.col("centroid_lon").alias("_clon"),
                        pl.col("centroid_lat").alias("_clat"))
    df = df.join(cent, on="unit_code", how="left", maintain_order="left")
    repl = []
    for c in cols:
        src = "_clat" if c.endswith("lat") else "_clon"
        repl.append(pl.col(src).round(6).alias(c))
    return df.with_columns(repl).drop("_clon", "_clat")


def view(store, dataset_id: str, audience: str = "public", *, actor: str | None = None, purpose: str | None = None,
         role: str | None = None, keyring: KeyRing | None = None, now: datetime | None = None) -> View:
    """The desensitised rows of ``dataset_id`` for ``audience`` (see module doc)."""
    ds = get_dataset(dataset_id)
    if ds.aggregate_of:
        rel = store.share.release(ds.id)
        if rel is None:
            raise InputError(f"dataset {ds.id!r}: no differentially private release yet "
                             f"(make one with `cityvitals export {ds.id} ...`)")
        frame = pl.DataFrame(rel["body"]["rows"]) if rel["body"]["rows"] else pl.DataFrame(
            schema={"unit_code": pl.String, "category": pl.String, "count": pl.Int64})
        return View(ds, audience, frame, {}, {k: v for k, v in rel["body"].items() if k != "rows"})
    raw = ds.source(store)
    if raw is None:
        raise InputError(f"dataset {ds.id!r}: not available in this store yet ({ds.lineage})")
    ops = plan(ds, audience, raw.columns)
    personal = reaches_personal(ds, ops)
    if personal:
        if audience == "public":  # a catalogue entry must never do this; refuse rather than leak
            raise InputError(f"dataset {ds.id!r}: fields {personal} would reach the public in identifiable form")
        if not actor or not purpose:
            raise InputError(f"dataset {ds.id!r} for audience {audience!r} reaches personal data ({', '.join(personal)}): "
                             "give --actor and --purpose")
    keyring = keyring or (keyring_for(store) if any(op.startswith("pseudonym") for op in ops.values()) else None)
    literal = [f.name for f in ds.fields if f.cls == "personal" and f.kind in _LITERAL_KINDS and f.name in raw.columns]
    units = _units(store)
    place = place_regex(units) if audience == "public" else None
    out = apply_ops(raw, ds, ops, keyring=keyring, literal_cols=literal, place=place)
    info: dict[str, Any] = {"rows_in": raw.height}
    if ds.microdata and audience in ("public", "research"):
        levels = {lv: ancestor_map(units, lv) for lv in ("community", "street", "district")}
        res = k_anonymise(out, ds.quasi_identifiers, k=ds.k, unit_levels=levels)
        out = res.frame
        info["k_anonymity"] = res.to_dict()
    out = _centroids(out, ops, units)
    if audience == "public":
        pseudo = tuple(op.split(":", 1)[1] if ":" in op else n for n, op in ops.items() if op.startswith("pseudonym"))
        out = safety_net(out, skip=pseudo + ("geometry_wkb",))
    info["rows_out"] = out.height
    if personal:
        audit.record(store, actor=actor or "?", role=role, action="read", dataset=ds.id, fields=personal,
                     purpose=purpose, records=out.height, now=now)
    return View(ds, audience, out, ops, info)


def open_datasets() -> list[str]:
    """Every dataset id, all of which have a public view."""
    return list(cat_by_id())
