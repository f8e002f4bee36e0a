"""Symptoms: alerts and citizen reports in one columnar shape, placed on the graph.

Why one shape: the grouping core links rows by keys and time and does not care whether a
row came from a pressure sensor or a phone call. Alert rows keep their sensor (and so the
asset it watches); report rows keep their community, which the graph reaches through
``supplies`` edges.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cityvitals.diagnose.domains import domain_of_kind, domain_of_report
from cityvitals.diagnose.graph import AssetGraph
from cityvitals.errors import InputError

LEVELS = {"attention": 1, "warning": 2, "alarm": 3}
REPORT_SPAN_S = 1800  # a report says "it is happening now": count it as 30 minutes of evidence


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


def build_symptoms(alerts: Iterable[dict], reports: Iterable[dict], graph: AssetGraph) -> Symptoms:
    """Alerts (rows of ``store.alerts``) and reports (``reports.ndjson`` records) as symptoms.

    Reports whose category is not a symptom of anything diagnose knows (parking, rubbish …)
    are left out: they are service requests, handled by dispose.
    """
    cols: dict[str, list] = {k: [] for k in ("ref", "origin", "source", "type", "kind", "domain", "level", "t0", "t1",
                                             "open", "health", "asset", "unit", "x", "y")}
    for a in alerts:
        sid = a["source"]
        kind = graph.sensor_kind.get(sid)
        t0 = _epoch(a["first_at"])
        end = a.get("resolved_at") or a.get("last_at") or a["first_at"]
        xy = graph.sensor_xy.get(sid, (np.nan, np.nan))
        asset = graph.sensor_asset.get(sid)
        cols["ref"].append(f"A{a['id']}")
        cols["origin"].append("alert")
        cols["source"].append(sid)
        cols["type"].append(a["type"])
        cols["kind"].append(kind)
        cols["domain"].append(domain_of_kind(kind))
        cols["level"].append(LEVELS.get(a.get("level"), 1))
        cols["t0"].append(t0)
        cols["t1"].append(max(t0, _epoch(end)))
        cols["open"].append(a.get("state") in ("active", "acknowledged"))
        cols["health"].append(str(a["type"]).startswith("health:"))
        cols["asset"].append(asset)
        cols["unit"].append(graph.unit_of.get(asset) if asset else graph.sensor_unit.get(sid))
        cols["x"].append(xy[0])
        cols["y"].append(xy[1])
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
    return Symptoms(
        ref=cols["ref"], origin=np.array(cols["origin"], dtype=object), source=cols["source"], type=cols["type"],
        kind=cols["kind"], domain=cols["domain"], level=np.array(cols["level"], dtype=np.int64),
        t0=np.array(cols["t0"], dtype=float), t1=np.array(cols["t1"], dtype=float),
        open=np.array(cols["open"], dtype=bool), health=np.array(cols["health"], dtype=bool), asset=cols["asset"],
        unit=cols["unit"], x=np.array(cols["x"], dtype=float), y=np.array(cols["y"], dtype=float),
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
