"""Put a simulated folder into a store, through the same doors real data uses.

Layers go through ``space.import_layer`` (district → street → community), the grid
through ``space.build_grid`` at the city's resolution, sensors through the registry's
``import_sensors``, readings through ``ingest.ingest_file`` file by file (so the bad
records the simulator emitted land in quarantine with their reasons), assets and
edges into the ``assets`` / ``asset_edges`` tables, and reports plus the truth are
copied under the data directory (``<home>/sim/``) for the later stages.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import shapely

from cityvitals.errors import InputError
from cityvitals.sim.city import LAYER_FILES


def _assets_table(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    doc = json.loads((folder / "assets.geojson").read_text("utf-8"))
    feats = doc["features"]
    geoms = shapely.from_geojson([json.dumps(f["geometry"]) for f in feats])
    wkb = shapely.to_wkb(geoms)
    rows: dict[str, list] = {c: [] for c in ("id", "type", "name", "lon", "lat", "unit_code", "props")}
    for f in feats:
        p = dict(f["properties"])
        for c in ("id", "type", "name", "lon", "lat", "unit_code"):
            rows[c].append(p.pop(c, None))
        rows["props"].append(json.dumps(p, ensure_ascii=False))
    assets = pl.DataFrame(rows, schema={"id": pl.String, "type": pl.String, "name": pl.String, "lon": pl.Float64,
                                        "lat": pl.Float64, "unit_code": pl.String, "props": pl.String})
    assets = assets.with_columns(pl.Series("geometry_wkb", list(wkb), dtype=pl.Binary))
    edges = pl.read_csv(folder / "edges.csv", schema_overrides={"from": pl.String, "to": pl.String, "relation": pl.String})
    edges = edges.rename({"from": "src", "to": "dst"})
    return assets, edges


def load_folder(store, folder: str | Path, *, progress: Callable[[str, int, int], None] | None = None,
                readings: bool = True) -> dict[str, Any]:
    """Load a simulated city folder (city, sensors, readings, reports) into ``store``.

    ``readings=False`` loads the city only; the live demo then replays the readings in
    accelerated time (``cityvitals.runtime``).
    """
    from cityvitals.ingest import ingest_file
    from cityvitals.registry.sensors import import_sensors
    from cityvitals.space import build_grid, import_layer

    folder = Path(folder)
    pfile = folder / "city.json"
    if not pfile.exists():
        raise InputError(f"{folder}: not a simulated city folder (no city.json)")
    params = json.loads(pfile.read_text("utf-8"))
    out: dict[str, Any] = {"folder": str(folder)}
    layers = {}
    for level, fname in LAYER_FILES.items():
        layers[level] = import_layer(store, folder / fname, level=level, name_field="name", code_field="code",
                                     population_field="population", city_name=params.get("city_name", "City"))
    out["layers"] = layers
    out["grid"] = build_grid(store, int(params.get("resolution", 9)))
    out["sensors"] = import_sensors(store, folder / "sensors.csv")
    assets, edges = _assets_table(folder)
    out["assets"] = store.assets.replace(assets, edges)
    files = sorted(p for p in (folder / "readings").glob("part-*") if p.suffix in (".parquet", ".ndjson")) \
        if readings and (folder / "readings").exists() else []
    totals = {"files": 0, "accepted": 0, "duplicates": 0, "quarantined": {}}
    for i, path in enumerate(files):
        rep = ingest_file(store, path)
        totals["files"] += 1
        totals["accepted"] += rep.accepted
        totals["duplicates"] += rep.duplicates
        for k, v in rep.quarantined.items():
            totals["quarantined"][k] = totals["quarantined"].get(k, 0) + v
        if progress:
            progress("readings", i + 1, len(files))
    totals["quarantined"] = dict(sorted(totals["quarantined"].items()))
    out["readings"] = totals
    # the ground truth is kept beside an embedded store's file; a server store has no file
    home = Path(store.path).parent / "sim" if hasattr(store, "path") else None
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in ("reports.ndjson", "truth.json", "city.json"):
        if home is not None and (folder / name).exists():
            shutil.copyfile(folder / name, home / name)
            kept.append(str(home / name))
    out["kept"] = kept
    truth_file = folder / "truth.json"
    if truth_file.exists() and readings:
        expected = json.loads(truth_file.read_text("utf-8")).get("expected_ingest")
        if expected:
            out["expected"] = expected
            out["matches_truth"] = (expected["accepted"] == totals["accepted"]
                                    and expected["duplicates"] == totals["duplicates"]
                                    and expected["quarantined"] == totals["quarantined"])
    return out
