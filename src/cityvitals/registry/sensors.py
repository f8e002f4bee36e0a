"""Registering sensors: read a CSV or JSON file, check every row, locate each sensor once.

A registry import is all-or-nothing: a sensor with an unknown kind or a unit its kind
cannot convert would quarantine every reading it ever sends, so the import refuses
the file and names each bad row and field instead of half-registering it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import polars as pl

from cityvitals.errors import InputError
from cityvitals.registry.kinds import load_kinds

REQUIRED = ("id", "kind", "unit", "lon", "lat")
KNOWN = REQUIRED + ("department", "installed")
MAX_PROBLEMS_SHOWN = 10


def read_sensor_file(path: str | os.PathLike[str]) -> pl.DataFrame:
    """The file as text columns, whatever its format (CSV, JSON array or NDJSON)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix.lower() == ".csv":
            frame = pl.read_csv(path, infer_schema=False, encoding="utf8")
        elif path.suffix.lower() in (".json", ".ndjson", ".jsonl"):
            text = path.read_bytes()
            rows = orjson.loads(text) if text.lstrip()[:1] == b"[" else [orjson.loads(x) for x in text.splitlines() if x.strip()]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise InputError(f"{path}: expected a JSON array of sensor objects")
            frame = pl.DataFrame([{k: (None if v is None else str(v) if not isinstance(v, (dict, list)) else orjson.dumps(v).decode())
                                   for k, v in r.items()} for r in rows], infer_schema_length=None)
        else:
            raise InputError(f"{path}: sensor files must be .csv or .json/.ndjson")
    except (pl.exceptions.ComputeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read: {str(exc).splitlines()[0]}") from exc
    return frame


def check_sensors(frame: pl.DataFrame, origin: str, kinds=None) -> pl.DataFrame:
    """Typed, checked sensor rows; raises InputError listing the bad rows (line numbers as in a CSV)."""
    kinds = kinds or load_kinds()
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(f"{origin}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
    problems: list[str] = []
    ids = frame["id"].to_list()
    seen: set[str] = set()
    lon = frame["lon"].cast(pl.Float64, strict=False).to_numpy()
    lat = frame["lat"].cast(pl.Float64, strict=False).to_numpy()
    for i, (sid, kind, unit) in enumerate(zip(ids, frame["kind"].to_list(), frame["unit"].to_list())):
        line = i + 2  # header is line 1
        if not sid or not str(sid).strip():
            problems.append(f"line {line}: field id is empty")
        elif sid in seen:
            problems.append(f"line {line}: sensor {sid} appears twice")
        seen.add(sid)
        k = kinds.get(kind or "")
        if k is None:
            problems.append(f"line {line}: sensor {sid}: field kind {kind!r} is not a known kind")
        elif k.conversion(unit) is None or not unit:
            problems.append(f"line {line}: sensor {sid}: field unit {unit!r} cannot be converted to {k.unit} for kind {kind}")
        if not np.isfinite(lon[i]) or not -180 <= lon[i] <= 180:
            problems.append(f"line {line}: sensor {sid}: field lon {frame['lon'][i]!r} is not a longitude")
        if not np.isfinite(lat[i]) or not -90 <= lat[i] <= 90:
            problems.append(f"line {line}: sensor {sid}: field lat {frame['lat'][i]!r} is not a latitude")
    installed = None
    if "installed" in frame.columns:
        installed = frame["installed"].str.to_datetime(time_zone="UTC", strict=False)
        bad = frame["installed"].is_not_null() & (frame["installed"] != "") & installed.is_null()
        for i in np.flatnonzero(bad.to_numpy()):
            problems.append(f"line {i + 2}: sensor {ids[i]}: field installed {frame['installed'][i]!r} is not a date")
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise InputError(f"{origin}: {len(problems)} problem(s), nothing imported: " + "; ".join(problems[:MAX_PROBLEMS_SHOWN]) + more)
    extra = [c for c in frame.columns if c not in KNOWN]
    meta = (
        frame.select(pl.struct(extra).struct.json_encode().alias("meta"))["meta"]
        if extra else pl.Series("meta", [None] * frame.height, pl.String)
    )
    return pl.DataFrame({
        "id": frame["id"],
        "kind": frame["kind"],
        "unit": frame["unit"],
        "lon": lon,
        "lat": lat,
        "department": frame["department"] if "department" in frame.columns else pl.Series([None] * frame.height, dtype=pl.String),
        "installed": installed if installed is not None else pl.Series([None] * frame.height, dtype=pl.Datetime("us", "UTC")),
        "meta": meta,
    })


def locate_sensors(store, sensors: pl.DataFrame) -> pl.DataFrame:
    """Attach each sensor's finest spatial unit (None when outside the city or no tree yet)."""
    if not store.units.levels():
        return sensors.with_columns(pl.lit(None, pl.String).alias("unit_code"))
    from cityvitals.space import Locator

    codes = Locator.from_store(store).locate(sensors["lon"].to_numpy(), sensors["lat"].to_numpy())
    return sensors.with_columns(pl.Series("unit_code", list(codes), dtype=pl.String))


def import_sensors(store, path: str | os.PathLike[str]) -> dict:
    """Register (or update) the sensors in a file; returns counts including those outside the city."""
    frame = read_sensor_file(path)
    checked = check_sensors(frame, str(path))
    located = locate_sensors(store, checked)
    store.sensors.upsert(located)
    outside = int(located["unit_code"].is_null().sum())
    by_kind = dict(located.group_by("kind").len().sort("kind").iter_rows())
    return {"imported": located.height, "outside": outside, "by_kind": by_kind}
