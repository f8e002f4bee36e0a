"""Diagnosis quality against the simulator's ground truth (``truth.json``).

Why it reads only plain data: the truth file and the stored incidents (or diagnoses in
memory) are enough; diagnose never imports the simulator.

For every injected incident, its *alerts* are the non-health alerts on its affected
sensors from 15 minutes before its start to 30 minutes after its end (a rainstorm gives
the sensors of its waterlogging spots to those child incidents). An alert that two
unrelated injected incidents both explain (a road in the rainstorm that is also in the
queue of an accident) is evidence for neither: it is left out of both and mixes nothing,
and each incident reports how many such ``shared_alerts`` it had. Then:

* ``single_incident`` — of the injected incidents that raised alerts, the share whose
  alerts all sit in exactly one incident;
* ``top1`` / ``top3`` — the share whose incident (the one holding most of its alerts) ranks
  the true root-cause asset first / in the first three ("weather" when the truth names no
  asset, as for a regional pollution episode);
* ``mixed`` — the share of incidents holding alerts of two unrelated injected causes (a
  rainstorm and its waterlogging spots are related);
* ``faults_as_faults`` — of the injected sensor faults that raised alerts, the share whose
  alerts all sit in incidents whose first cause is "sensor fault";
* ``noise_in_real`` — alerts explained by nothing injected that were put in an incident
  holding injected alerts.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any

from cityvitals.diagnose.rank import SENSOR_FAULT, WEATHER

BEFORE = timedelta(minutes=60)
AFTER = timedelta(minutes=30)


def _t(x) -> float:
    if isinstance(x, (int, float)):
        return float(x)
    if isinstance(x, str):
        x = datetime.fromisoformat(x)
    return x.timestamp()


def score(incidents: list[dict], alerts: list[dict], truth: dict[str, Any]) -> dict:
    """``incidents``: dicts with ``members`` (alert ids) and ``causes`` (ranked cause ids);
    ``alerts``: dicts with ``id``, ``source``, ``type``, ``first_at``."""
    inc_of: dict[int, int] = {}
    for k, inc in enumerate(incidents):
        for a in inc["members"]:
            inc_of[int(a)] = k
    by_src: dict[str, list[dict]] = defaultdict(list)
    for a in alerts:
        by_src[a["source"]].append(a)
    truth_inc = [i for i in truth.get("incidents", []) if i.get("category", "incident") == "incident"]
    child_sensors: dict[str, set[str]] = defaultdict(set)
    for i in truth_inc:
        if i.get("parent"):
            child_sensors[i["parent"]].update(i.get("affected_sensors", []))

    def alerts_of(sensors, start, end, health=False) -> list[dict]:
        lo, hi = _t(start) - BEFORE.total_seconds(), _t(end) + AFTER.total_seconds()
        out = []
        for sid in sensors:
            for a in by_src.get(sid, ()):
                if lo <= _t(a["first_at"]) <= hi and (health or not a["type"].startswith("health:")):
                    out.append(a)
        return out

    family_of_alert: dict[int, set[str]] = defaultdict(set)
    own_alerts: list[tuple[dict, str, list[dict]]] = []
    for i in truth_inc:
        sens = set(i.get("affected_sensors", [])) - child_sensors.get(i["id"], set())
        al = alerts_of(sorted(sens), i["start"], i["end"])
        fam = i.get("parent") or i["id"]
        for a in al:
            family_of_alert[int(a["id"])].add(fam)
        own_alerts.append((i, fam, al))
    per: list[dict] = []
    for i, fam, al in own_alerts:
        # an alert that two unrelated injected causes explain at once is nobody's evidence
        shared = sum(1 for a in al if len(family_of_alert[int(a["id"])]) > 1)
        al = [a for a in al if len(family_of_alert[int(a["id"])]) == 1]
        ks = Counter(inc_of[int(a["id"])] for a in al if int(a["id"]) in inc_of)
        root = i.get("root_cause_asset") or WEATHER
        row = {"id": i["id"], "type": i["type"], "root": root, "alerts": len(al), "shared_alerts": shared,
               "incidents": len(ks)}
        if ks:
            main = ks.most_common(1)[0][0]
            ranked = incidents[main]["causes"]
            row.update(incident=incidents[main].get("id", main), rank=(ranked.index(root) + 1 if root in ranked else None),
                       top=ranked[:3])
        per.append(row)
    detected = [r for r in per if r["alerts"] and r["incidents"]]
    faults = []
    fault_alert_ids: set[int] = set()
    for f in truth.get("faults", []):
        al = alerts_of([f["sensor"]], f["start"], f["end"], health=True)
        fault_alert_ids.update(int(a["id"]) for a in al)
        ks = {inc_of[int(a["id"])] for a in al if int(a["id"]) in inc_of}
        if ks:
            faults.append(all(incidents[k]["causes"][:1] == [SENSOR_FAULT] for k in ks))
    # alerts explained by nothing injected
    explained = set(family_of_alert) | fault_alert_ids
    for ev in truth.get("background", []):
        explained.update(int(a["id"]) for a in alerts_of(ev.get("affected_sensors", []), ev["start"], ev["end"], True))
    real = {inc_of[a] for a in family_of_alert if a in inc_of}
    noise_in_real = sum(1 for a in alerts if int(a["id"]) not in explained and inc_of.get(int(a["id"])) in real)
    fams_per_inc: dict[int, set[str]] = defaultdict(set)
    for a, fams in family_of_alert.items():
        if a in inc_of and len(fams) == 1:  # a shared alert mixes nothing: either cause may claim it
            fams_per_inc[inc_of[a]].update(fams)
    mixed = [k for k, f in fams_per_inc.items() if len(f) > 1]

    def frac(xs) -> float | None:
        xs = list(xs)
        return sum(xs) / len(xs) if xs else None

    return {
        "injected": len(per),
        "detected": len(detected),
        "single_incident": frac(r["incidents"] == 1 for r in detected),
        "top1": frac(r.get("rank") == 1 for r in detected),
        "top3": frac(r.get("rank") is not None and r["rank"] <= 3 for r in detected),
        "mixed": frac(k in mixed for k in fams_per_inc) if fams_per_inc else 0.0,
        "faults": len(truth.get("faults", [])),
        "faults_detected": len(faults),
        "faults_as_faults": frac(faults),
        "incidents": len(incidents),
        "noise_in_real": noise_in_real,
        "per_incident": per,
    }


def evaluate(store, truth: dict[str, Any]) -> dict:
    """Stored incidents (``store.incidents``) against ``truth``."""
    incidents = store.incidents.for_eval()
    alerts = store.alerts.list(state="all", limit=10**9)
    return score(incidents, alerts, truth)
