"""Alerts in the store against a simulator's ground truth (``truth.json``).

Why here and not in the simulator: the truth file is plain data; this module only reads it
and the ``alerts`` table, so the watch stage never imports the simulator.

Measures (the issue's quality bar):

* ``incident_detection``: share of injected incidents with a non-health alert on one of
  their affected sensors between their start and ``grace`` after their end. An incident
  that touches no sensor at all (in a small city a burst main's zone may have no pressure,
  flow or quality sensor: seed 4 at 300 sensors) cannot be seen by watching readings; it is
  counted in ``incidents_unobservable`` and left out of the share, not scored as a miss;
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

    every_incident = [i for i in truth.get("incidents", []) if i.get("category", "incident") == "incident"]
    incidents = [i for i in every_incident if i.get("affected_sensors")]
    unobservable = [i["id"] for i in every_incident if not i.get("affected_sensors")]
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
    for ev in every_incident + truth.get("background", []) + [i for i in truth.get("incidents", []) if i not in every_incident]:
        # sensors whose tracked crossings the event caused (a heatwave's thermometers) are
        # affected by it too, even when the truth does not list them as affected sensors
        tracked = [sid for tr in ev.get("thresholds", []) for sid in (tr.get("sensors") or {})]
        for s in set(ev.get("affected_sensors", [])) | set(tracked):
            spans.setdefault(s, []).append((_t(ev["start"]) - grace, _t(ev["end"]) + grace))
        # and a tracked crossing explains alerts on that sensor around it, even outside the
        # event's nominal window (a heatwave's morning, before the overload it causes)
        for tr in ev.get("thresholds", []):
            for sid, span in (tr.get("sensors") or {}).items():
                if isinstance(span, dict) and span.get("first"):
                    spans.setdefault(sid, []).append((_t(span["first"]) - grace, _t(span.get("last") or span["first"]) + grace))
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
        "incidents_unobservable": unobservable,
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


def evaluate_sim_folder(folder, *, home=None, warmup: int = 0, thresholds=None, progress=None) -> dict:
    """Load a simulated city (unless ``home`` already holds it), watch it, score against its truth.

    Why one call: the quality bar is measured the same way in tests, in ``watch eval-sim``
    and in the benchmarks notes. With ``home`` given the store is used as it is (loaded with
    ``simulate load``; a second call only watches what is new); without it a temporary
    home is made and removed. The watch clock is the simulation's end.
    """
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from cityvitals.errors import InputError
    from cityvitals.store import open_store
    from cityvitals.watch.runner import watch_readings

    folder = Path(folder)
    tfile = folder / "truth.json"
    if not tfile.is_file():
        raise InputError(f"--sim {folder}: no truth.json (not a simulator output folder)")
    truth = json.loads(tfile.read_text("utf-8"))
    tmp = None
    if home is None:
        tmp = tempfile.mkdtemp(prefix="cityvitals-eval-")
        home = tmp
    try:
        store = open_store(home)
        try:
            if tmp is not None or store.readings.count() == 0:
                from cityvitals.sim import load_folder

                load_folder(store, folder)
            end = datetime.fromisoformat(truth["end"])
            watched = watch_readings(store, thresholds=thresholds, clock=lambda: end, warmup=warmup, progress=progress)
            res = evaluate_against_truth(store, truth)
        finally:
            store.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    res["points_watched"] = watched["points"]
    res["scenarios"] = truth.get("scenarios")
    res["seed"] = truth.get("seed")
    return res
