"""Alerts in the store against a simulator's ground truth (``truth.json``).

Why here and not in the simulator: the truth file is plain data; this module only reads it
and the ``alerts`` table, so the watch stage never imports the simulator.

Measures (the issue's quality bar):

* ``incident_detection``: share of injected incidents with a non-health alert on one of
  their affected sensors between their start and ``grace`` after their end;
* ``false_alerts_per_100_sensor_days``: alerts on sensors touched by no incident, fault or
  background event in its time span, per 100 sensor-days of the run;
* ``faults_as_faults``: share of injected sensor faults that raised a ``health:*`` alert
  on the faulty sensor; ``faults_as_incidents`` those that raised only other alerts;
* ``lead_times_s``: for each forecast (``breach``) alert raised before the first crossing
  of a tracked level on its sensor, the lead time; with the median.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s)


def evaluate_against_truth(store, truth: dict[str, Any], *, grace: timedelta = timedelta(minutes=30)) -> dict:
    alerts = store.alerts.list(state="all", limit=10**9)
    by_src: dict[str, list[dict]] = {}
    for a in alerts:
        by_src.setdefault(a["source"], []).append(a)

    def overlapping(src: str, start: datetime, end: datetime, health: bool | None = None) -> list[dict]:
        out = []
        for a in by_src.get(src, []):
            if a["first_at"] > end or (a["resolved_at"] or a["last_at"]) < start:
                continue
            is_health = a["type"].startswith("health:")
            if health is None or health == is_health:
                out.append(a)
        return out

    incidents = [i for i in truth.get("incidents", []) if i.get("category", "incident") == "incident"]
    detected = 0
    lead: list[float] = []
    for inc in incidents:
        start, end = _t(inc["start"]), _t(inc["end"]) + grace
        if any(overlapping(s, start, end, health=False) for s in inc.get("affected_sensors", [])):
            detected += 1
        for tr in inc.get("thresholds", []):
            for sid, span in (tr.get("sensors") or {}).items():
                cross = _t(span["first"])
                warn = [a for a in by_src.get(sid, []) if a["type"] == "breach" and start - grace <= a["first_at"] <= cross]
                if warn:
                    lead.append((cross - min(a["first_at"] for a in warn)).total_seconds())

    faults = truth.get("faults", [])
    as_fault = as_incident = 0
    for f in faults:
        start, end = _t(f["start"]), _t(f["end"]) + grace
        if overlapping(f["sensor"], start, end, health=True):
            as_fault += 1
        elif overlapping(f["sensor"], start, end, health=False):
            as_incident += 1

    # alerts explained by nothing injected are false alerts
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for ev in incidents + truth.get("background", []) + [i for i in truth.get("incidents", []) if i not in incidents]:
        for s in ev.get("affected_sensors", []):
            spans.setdefault(s, []).append((_t(ev["start"]) - grace, _t(ev["end"]) + grace))
    for f in faults:
        spans.setdefault(f["sensor"], []).append((_t(f["start"]) - grace, _t(f["end"]) + grace))
    false = [
        a for a in alerts
        if not any(lo <= a["first_at"] <= hi for lo, hi in spans.get(a["source"], []))
    ]
    n_sensors = int(truth.get("city", {}).get("sensors") or 0) or len({a["source"] for a in alerts}) or 1
    days = truth["steps"] * truth["interval_s"] / 86400.0
    sensor_days = n_sensors * days
    return {
        "incidents": len(incidents),
        "incidents_detected": detected,
        "incident_detection": detected / len(incidents) if incidents else None,
        "faults": len(faults),
        "faults_as_faults": as_fault / len(faults) if faults else None,
        "faults_as_incidents": as_incident / len(faults) if faults else None,
        "false_alerts": len(false),
        "false_alerts_by_type": _count(a["type"] for a in false),
        "sensor_days": sensor_days,
        "false_alerts_per_100_sensor_days": 100.0 * len(false) / sensor_days if sensor_days else None,
        "lead_times_s": lead,
        "median_lead_time_s": float(np.median(lead)) if lead else None,
    }


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in items:
        out[k] = out.get(k, 0) + 1
    return out
