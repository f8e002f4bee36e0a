"""Write a desensitised view to CSV, Parquet or GeoJSON, and register the file.

Every export is recorded in ``share_exports`` (path, dataset, audience, rows, SHA-256,
pseudonym key) so that erasure can find the files a person's data reached. Exporting a
differentially private aggregate makes a new release and spends its epsilon.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from cityvitals.errors import InputError
from cityvitals.share.catalog import get_dataset
from cityvitals.share.views import View, keyring_for, view

FORMATS = ("csv", "parquet", "geojson")


def release_aggregate(store, dataset_id: str, *, epsilon: float | None = None, actor: str = "cli",
                      now: datetime | None = None) -> dict:
    """A new DP release of an aggregate dataset (spends ``epsilon`` of its budget)."""
    from cityvitals.share.dp import release_counts

    ds = get_dataset(dataset_id)
    if not ds.aggregate_of:
        raise InputError(f"dataset {ds.id!r} is not a differentially private aggregate")
    if store.share.budget(ds.id)["epsilon_total"] is None:
        store.share.set_budget(ds.id, float(ds.budget or 1.0))
    base = get_dataset(ds.aggregate_of)
    raw = base.source(store)
    if raw is None:
        raise InputError(f"dataset {ds.id!r}: its source {base.id!r} is not available in this store")
    units = store.frame("SELECT code AS unit_code FROM units WHERE level = 'community'")
    cats = raw.select("category").unique()
    domain = units.join(cats, how="cross") if units.height else None
    person = "reporter_resident_id" if "reporter_resident_id" in raw.columns else None
    return release_counts(store, ds.id, raw, ["unit_code", "category"], epsilon=float(epsilon or ds.epsilon or 0.5),
                          person=person, domain=domain, actor=actor, now=now)


def _wkb_geojson(values: list) -> list[dict | None]:
    import shapely

    out: list[dict | None] = []
    geoms = shapely.from_wkb([bytes(v) if v is not None else None for v in values])
    for g in geoms:
        out.append(None if g is None else json.loads(shapely.to_geojson(g)))
    return out


def to_geojson(v: View) -> dict:
    df = v.frame
    geom_col = v.dataset.geometry if v.dataset.geometry in df.columns else None
    if geom_col:
        geoms = _wkb_geojson(df[geom_col].to_list())
    elif v.point:
        lon, lat = v.point
        geoms = [None if x is None or y is None else {"type": "Point", "coordinates": [x, y]}
                 for x, y in zip(df[lon].to_list(), df[lat].to_list())]
    else:
        geoms = [None] * df.height
    props = df.drop([c for c in df.columns if df.schema[c] == pl.Binary])
    feats = [{"type": "Feature", "geometry": g, "properties": p} for g, p in zip(geoms, props.to_dicts())]
    return {"type": "FeatureCollection", "name": v.dataset.id, "features": feats}


def write_view(v: View, fmt: str, out: Path) -> None:
    df = v.frame
    if fmt == "csv":
        df.drop([c for c in df.columns if df.schema[c] in (pl.Binary, pl.Object)]).write_csv(out)
    elif fmt == "parquet":
        df.write_parquet(out)
    elif fmt == "geojson":
        out.write_text(json.dumps(to_geojson(v), ensure_ascii=False, default=str), encoding="utf-8")
    else:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")


def export_dataset(store, dataset_id: str, fmt: str, out: str | Path, *, audience: str = "public",
                   actor: str = "cli", purpose: str | None = None, epsilon: float | None = None,
                   now: datetime | None = None) -> dict[str, Any]:
    """Export one dataset's view for ``audience`` to ``out``; returns what was written."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ds = get_dataset(dataset_id)
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise InputError(f"--out {out}: folder {out.parent} does not exist")
    info: dict[str, Any] = {}
    if ds.aggregate_of:
        rel = release_aggregate(store, ds.id, epsilon=epsilon, actor=actor, now=now)
        info["release"] = {k: v for k, v in rel.items() if k not in ("rows", "frame")}
    v = view(store, ds.id, audience, actor=actor, purpose=purpose, now=now)
    write_view(v, fmt, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    key_id = keyring_for(store).active_id if any(op.startswith("pseudonym") for op in v.ops.values()) else None
    store.share.register_export(path=str(out.resolve()), dataset=ds.id, fmt=fmt, audience=audience, rows=v.frame.height,
                                sha256=digest, key_id=key_id, actor=actor, now=now)
    return {"dataset": ds.id, "format": fmt, "audience": audience, "path": str(out), "rows": v.frame.height,
            "columns": v.frame.columns, "sha256": digest, **v.info, **info}
