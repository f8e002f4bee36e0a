"""Symptoms: alerts and citizen reports in one columnar shape, placed on the graph.

Why one shape: the grouping core links rows by keys and time and does not care whether a
row came from a pressure sensor or a phone call. Alert rows keep their sensor (and so the
asset it watches); report rows keep their community, which the graph reaches through
``supplies`` edges. Alerts on an indicator series (watch's ``watch_signs``: source
``<indicator>:<unit code>``, e.g. ``env.pm25:310101``) name no sensor: they keep the unit
and take the domain of the indicator's sensor kind, and are flagged ``indicator`` so that
ranking never calls an area aggregate a "sensor fault".

>>> indicator_source("env.pm25:310101"), indicator_source("indicator:wx.rain_1h:310101001"), indicator_source("WP01")
(('env.pm25', '310101'), ('wx.rain_1h', '310101001'), None)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from cityvitals.diagnose.domains import KIND_DOMAIN, domain_of_kind, domain_of_report
from cityvitals.diagnose.graph import AssetGraph
from cityvitals.errors import InputError

LEVELS = {"attention": 1, "warning": 2, "alarm": 3}
REPORT_SPAN_S = 1800  # a report says "it is happening now": count it as 30 minutes of evidence
WEAK_TYPES = {"shift", "seasonal"}  # pattern changes: no level crossed


@dataclass
class Symptoms:
    """Parallel arrays, one entry per symptom (alerts first, then reports)."""

    ref: list[str]  # "A<id>" for alerts, the report id for reports
    origin: np.ndarray  # "alert" | "report"
    source: list[str]  # sensor id or report id
    type: list[str]  # alert type or report category
    kind: list[str | None]
    domain: list[str]
    level: np.ndarray  # 0..3
    t0: np.ndarray  # epoch seconds
    t1: np.ndarray
    open: np.ndarray  # bool
    health: np.ndarray  # bool: a sensor-health finding
    asset: list[str | None]
    unit: list[str | None]
    x: np.ndarray
    y: np.ndarray
    indicator: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # bool: an indicator-series alert
    # seconds from the alert's last fall back to attention to its last sighting (NaN: it never fell)
    recede: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if len(self.indicator) != len(self.ref):
            self.indicator = np.zeros(len(self.ref), dtype=bool)
        if len(self.recede) != len(self.ref):
            self.recede = np.full(len(self.ref), np.nan)

    def __len__(self) -> int:
        return len(self.ref)


def _epoch(v) -> float:
    if v is None:
        return float("nan")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    return v.timestamp()


# when the catalogue cannot be read: the indicator id's prefix says enough for the domain
PREFIX_KIND = {"wx.rain": "rainfall", "wx.temp": "temperature", "wx.wind": "wind_speed", "env.pm25": "pm25",
               "env.pm10": "pm10", "env.o3": "o3", "env.no2": "no2", "env.so2": "so2", "env.co": "co",
               "env.noise": "noise", "tr.": "traffic_speed", "fac.water": "water_pressure", "fac.tap": "turbidity",
               "fac.power": "power_load", "fac.sewer": "water_level", "fac.gas": "gas_concentration"}


def indicator_source(source: str) -> tuple[str, str] | None:
    """(indicator id, unit code) of an indicator-series alert source, None for anything else.

    Indicator ids are dotted (``env.pm25``); sensor ids never hold a colon.
    """
    if ":" not in source:
        return None
    body = source.removeprefix("indicator:")
    ind, _, unit = body.rpartition(":")
    if not ind or not unit or "." not in ind:
        return None
    return ind, unit


@lru_cache(maxsize=1)
def _catalog_kinds() -> dict[str, str | None]:
    try:
        from cityvitals.signs import load_catalog

        return {k: (v.kinds[0] if getattr(v, "kinds", None) else None) for k, v in load_catalog().items()}
    except Exception:  # noqa: BLE001 - a broken catalogue must not stop diagnosis; the prefixes still work
        return {}


def indicator_kind(indicator: str) -> str | None:
    """The sensor kind an indicator is computed from (catalogue ``kinds``, else by its id's prefix)."""
    kind = _catalog_kinds().get(indicator)
    if kind in KIND_DOMAIN:
        return kind
    for prefix, k in PREFIX_KIND.items():
        if indicator.startswith(prefix):
            return k
    return kind


def build_symptoms(alerts: Iterable[dict], reports: Iterable[dict], graph: AssetGraph) -> Symptoms:
    """Alerts (rows of ``store.alerts``) and reports (``reports.ndjson`` records) as symptoms.

    Reports whose category is not a symptom of anything diagnose knows (parking, rubbish …)
    are left out: they are service requests, handled by dispose.
    """
    cols: dict[str, list] = {k: [] for k in ("ref", "origin", "source", "type", "kind", "domain", "level", "t0", "t1",
                                             "open", "health", "asset", "unit", "x", "y", "indicator", "recede")}
    for a in alerts:
        sid = a["source"]
        kind = graph.sensor_kind.get(sid)
        ind = None if kind is not None else indicator_source(sid)
        t0 = _epoch(a["first_at"])
        end = a.get("resolved_at") or a.get("last_at") or a["first_at"]
        xy = graph.sensor_xy.get(sid, (np.nan, np.nan))
        asset = graph.sensor_asset.get(sid)
        unit = graph.unit_of.get(asset) if asset else graph.sensor_unit.get(sid)
        if ind is not None:
            kind, unit = indicator_kind(ind[0]), ind[1]
            xy = graph.xy.get(unit, (np.nan, np.nan))  # a community node may have a place
        cols["ref"].append(f"A{a['id']}")
        cols["origin"].append("alert")
        cols["source"].append(sid)
        cols["type"].append(a["type"])
        cols["kind"].append(kind)
        cols["domain"].append(domain_of_kind(kind))
        cols["level"].append(LEVELS.get(a.get("peak_level") or a.get("level"), 1))  # the highest it reached
        cols["t0"].append(t0)
        cols["t1"].append(max(t0, _epoch(end)))
        cols["open"].append(a.get("state") in ("active", "acknowledged"))
        cols["health"].append(str(a["type"]).startswith("health:"))
        cols["asset"].append(asset)
        cols["unit"].append(unit)
        cols["x"].append(xy[0])
        cols["y"].append(xy[1])
        cols["indicator"].append(ind is not None)
        fell = a.get("fell_at")
        cols["recede"].append(_epoch(a.get("last_at")) - _epoch(fell) if fell is not None and a.get("last_at") else np.nan)
    for r in reports:
        dom = domain_of_report(r.get("category"))
        if dom is None:
            continue
        t0 = _epoch(r["reported_at"])
        xy = graph.to_xy(r["lon"], r["lat"]) if r.get("lon") is not None else (np.nan, np.nan)
        cols["ref"].append(str(r["id"]))
        cols["origin"].append("report")
        cols["source"].append(str(r["id"]))
        cols["type"].append(r.get("category"))
        cols["kind"].append(None)
        cols["domain"].append(dom)
        cols["level"].append(2)
        cols["t0"].append(t0)
        cols["t1"].append(t0 + REPORT_SPAN_S)
        cols["open"].append(False)
        cols["health"].append(False)
        cols["asset"].append(None)
        cols["unit"].append(r.get("unit_code"))
        cols["x"].append(xy[0])
        cols["y"].append(xy[1])
        cols["indicator"].append(False)
        cols["recede"].append(np.nan)
    return Symptoms(
        ref=cols["ref"], origin=np.array(cols["origin"], dtype=object), source=cols["source"], type=cols["type"],
        kind=cols["kind"], domain=cols["domain"], level=np.array(cols["level"], dtype=np.int64),
        t0=np.array(cols["t0"], dtype=float), t1=np.array(cols["t1"], dtype=float),
        open=np.array(cols["open"], dtype=bool), health=np.array(cols["health"], dtype=bool), asset=cols["asset"],
        unit=cols["unit"], x=np.array(cols["x"], dtype=float), y=np.array(cols["y"], dtype=float),
        indicator=np.array(cols["indicator"], dtype=bool), recede=np.array(cols["recede"], dtype=float),
    )


def read_reports(path: str | Path | None) -> list[dict]:
    """Reports from an NDJSON file (the simulator's ``reports.ndjson``); none when absent."""
    if path is None:
        return []
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}: line {n}: not JSON ({exc})") from None
            if "id" not in doc or "reported_at" not in doc:
                raise InputError(f"{path}: line {n}: a report needs id and reported_at")
            out.append(doc)
    return out
