"""The ground truth of a run: what was injected, where, when, and what the data should show.

For every incident and background event: type, root-cause asset, cause, affected
units (communities and H3 grid cells) and sensors, start and end, and per tracked
level the time each affected sensor's true signal first crossed it (times are the
nominal step times; a reading's ``ts`` adds the sensor's phase and jitter, less than
one interval). Rainstorms also yield one ``waterlogging`` incident per low spot that
flooded. Faults list the one sensor they touch. ``emitted`` counts what the emitter
wrote, and ``expected_ingest`` is what a correct ingest must report for it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import h3
import numpy as np

from cityvitals.sim.index import CityIndex
from cityvitals.sim.scenarios import Incident, Plan


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return None if v.size > 50 else [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return round(float(v), 6)
    return v


def build_truth(city, ix: CityIndex, plan: Plan, tracker, *, t0: datetime, dt: float, steps: int, seed: int,
                names: list[str], fmt: str, emitter, random_incidents: int, bad_rate: float) -> dict:
    ids = ix.sensors.ids
    res = int(city.params.get("resolution", 9))
    lon, lat = ix.sensors.lon, ix.sensors.lat

    def at(step: int) -> str:
        return (t0 + timedelta(seconds=int(step) * dt)).isoformat()

    def cells(sensors) -> list[str]:
        return sorted({h3.latlng_to_cell(float(lat[j]), float(lon[j]), res) for j in sensors})

    by_event: dict[str, list] = {}
    for st in tracker.states:
        by_event.setdefault(st.event.id, []).append(st)

    def event_doc(ev: Incident, sensors=None, units=None, extra: dict | None = None) -> dict:
        crossings = []
        crossed: set[int] = set()
        for st in by_event.get(ev.id, []):
            hit = st.first >= 0
            sens = st.track.sensors[hit]
            crossed.update(int(j) for j in sens)
            crossings.append({
                "kind": st.track.kind,
                "threshold": st.track.name,
                "op": st.track.op,
                "value": _jsonable(st.track.value) if np.isscalar(st.track.value) else "per sensor",
                "first_crossing": at(st.first[hit].min()) if hit.any() else None,
                "sensors_tracked": len(st.track.sensors),
                "sensors_crossed": int(hit.sum()),
                "sensors": {ids[j]: {"first": at(f), "last": at(la)} for j, f, la in zip(sens, st.first[hit], st.last[hit])},
            })
        if sensors is None:
            sensors = ev.sensors
        sensors = sorted({int(j) for j in sensors})
        if units is None:
            units = ev.units
        doc = {
            "id": ev.id, "type": ev.type, "category": ev.category,
            "root_cause_asset": ev.root_asset, "cause": ev.cause,
            "start": at(ev.start), "end": at(min(ev.end, steps)),
            "affected_units": list(units), "affected_cells": cells(sensors),
            "affected_sensors": [ids[j] for j in sensors],
            "thresholds": crossings,
            "params": {k: _jsonable(v) for k, v in ev.params.items()
                       if not isinstance(v, np.ndarray) and k not in ("hops",)},
            "reports": [],
        }
        if "hops" in ev.params:
            doc["params"]["segments_by_hop"] = {s: int(h) for s, h in sorted(ev.params["hops"].items())}
        if extra:
            doc.update(extra)
        return doc, crossed

    incidents = []
    n_inc = len(plan.incidents)
    for ev in plan.incidents:
        if ev.type in ("rainstorm", "air_pollution"):
            doc, crossed = event_doc(ev)
            sens = sorted(crossed)
            doc["affected_sensors"] = [ids[j] for j in sens]
            doc["affected_cells"] = cells(sens)
            doc["affected_units"] = sorted({ix.assets.unit_codes[ix.asset_of[j]] for j in sens
                                            if ix.asset_of[j] >= 0 and ix.assets.unit_codes[ix.asset_of[j]]})
            incidents.append(doc)
            if ev.type == "rainstorm":
                incidents.extend(_waterlogging(ev, ix, by_event, doc, at, cells, n_inc + len(incidents) - len(plan.incidents)))
        else:
            doc, _ = event_doc(ev)
            incidents.append(doc)
    # waterlogging ids continue the incident numbering
    faults = [{
        "id": f.id, "type": f.type, "sensor": ids[f.sensor], "kind": ix.kind[f.sensor],
        "asset_id": ix.sensors.asset_id[f.sensor] or None,
        "unit_code": ix.assets.unit_codes[ix.asset_of[f.sensor]] if ix.asset_of[f.sensor] >= 0 else None,
        "start": at(f.start), "end": at(min(f.end, steps)),
        "params": {k: _jsonable(v) for k, v in f.params.items() if k != "held"},
        "is_incident": False,
    } for f in plan.faults]
    background = [event_doc(ev)[0] for ev in plan.background]
    c = emitter.counts
    quarantined = {k: v for k, v in sorted(c["bad"].items()) if v}
    return {
        "format": 1,
        "seed": int(seed),
        "scenarios": names,
        "random_incidents": int(random_incidents),
        "start": t0.isoformat(),
        "end": at(steps),
        "interval_s": dt,
        "steps": steps,
        "readings_format": fmt,
        "readings_files": emitter.files,
        "bad_rate": bad_rate,
        "city": {k: city.params[k] for k in ("seed", "districts", "centre", "sensors", "resolution", "counts")},
        "time_note": "times are nominal step times in local time; a reading's ts adds its sensor's phase (< interval) and jitter",
        "incidents": incidents,
        "faults": faults,
        "background": background,
        "emitted": {"readings": c["readings"], "late": c["late"], "duplicates": c["duplicates"], "bad": dict(sorted(c["bad"].items()))},
        "expected_ingest": {"accepted": c["readings"], "duplicates": c["duplicates"], "quarantined": quarantined},
    }


def _waterlogging(ev: Incident, ix: CityIndex, by_event, storm_doc: dict, at, cells, next_no: int) -> list[dict]:
    """One incident per low spot whose ponding crossed 0.15 m during the storm."""
    sts = {st.track.name: st for st in by_event.get(ev.id, [])}
    p15 = next((s for n, s in sts.items() if n.startswith("ponding depth >= 0.15")), None)
    p30 = next((s for n, s in sts.items() if n.startswith("ponding depth >= 0.30")), None)
    if p15 is None:
        return []
    failed = ev.params.get("failed_pumping_station")
    failed_cat = set(ix.children(failed, "drains")) if failed else set()
    out = []
    ids = ix.sensors.ids
    n = 0
    for pos in np.flatnonzero(p15.first >= 0):
        j = int(p15.track.sensors[pos])
        spot = ix.assets.ids[ix.asset_of[j]]
        cat = ix.parents(spot, "contains")
        roads = ix.children(spot, "floods")
        road_sensors = ix.sensors_on(roads)
        root = failed if (cat and cat[0] in failed_cat) else spot
        n += 1
        sensors = sorted({j, *map(int, road_sensors)})
        thr = [{"kind": "waterlogging_depth", "threshold": p15.track.name, "first_crossing": at(p15.first[pos])}]
        if p30 is not None and p30.first[pos] >= 0:
            thr.append({"kind": "waterlogging_depth", "threshold": p30.track.name, "first_crossing": at(p30.first[pos])})
        unit = ix.assets.unit_codes[ix.asset_of[j]]
        out.append({
            "id": f"{ev.id}-W{n:02d}", "type": "waterlogging", "category": "incident", "parent": ev.id,
            "root_cause_asset": root,
            "cause": ("storm water exceeds drainage at a low spot whose pumping station is degraded" if root == failed
                      else "storm water exceeds the drainage capacity of the low spot"),
            "start": at(p15.first[pos]), "end": at(p15.last[pos] + 1),
            "affected_units": [unit] if unit else [], "affected_cells": cells(sensors),
            "affected_sensors": [ids[s] for s in sensors], "thresholds": thr, "params": {"low_spot": spot, "roads": roads},
            "reports": [],
        })
    return out
