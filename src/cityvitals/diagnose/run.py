"""``diagnose_store``: read alerts and reports, diagnose, and bring the stored incidents up to date.

Why match by members: a re-run sees the whole recent picture again; an incident keeps its
id while its group keeps any of its members (it *grew*), two stored incidents whose
members end up in one group are *merged* into the older, and an incident closes when all
its alerts are resolved. The history log records each of those changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cityvitals.diagnose.graph import AssetGraph
from cityvitals.diagnose.group import link
from cityvitals.diagnose.rank import Diagnosis, diagnose_symptoms
from cityvitals.diagnose.symptoms import Symptoms, build_symptoms, read_reports

SEVERITIES = ("low", "medium", "high", "critical")


def utcnow() -> datetime:
    return datetime.now(UTC)


def severity(level: int, population: float, is_fault: bool) -> str:
    """Levels (1 attention .. 3 alarm) raised by the population of the affected units.

    >>> severity(3, 80_000, False), severity(2, 500, False), severity(3, 1e6, True)
    ('critical', 'low', 'low')
    """
    if is_fault:
        return "low"
    k = max(0, min(3, level - 1))
    if population >= 50_000:
        k += 1
    elif population < 1_000 and level < 3:
        k -= 1
    return SEVERITIES[max(0, min(3, k))]


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(float(t), tz=UTC)


def load_inputs(store, *, reports: str | Path | None = None, since: datetime | None = None,
                graph: AssetGraph | None = None) -> tuple[Symptoms, AssetGraph]:
    graph = graph or AssetGraph.from_store(store)
    alerts = store.alerts.list(state="all", limit=10**9)
    marks = store.alerts.level_marks()
    alerts = [dict(a, peak_level=marks[a["id"]][0], fell_at=marks[a["id"]][1]) if a["id"] in marks else a for a in alerts]
    if since is not None:
        alerts = [a for a in alerts if a["state"] != "resolved" or (a["resolved_at"] or a["last_at"]) >= since]
    if reports is None:
        default = Path(store.home) / "sim" / "reports.ndjson"
        reports = default if default.exists() else None
    recs = read_reports(reports)
    if since is not None:
        recs = [r for r in recs if datetime.fromisoformat(r["reported_at"]) >= since]
    return build_symptoms(alerts, recs, graph), graph


def diagnose_store(store, *, reports: str | Path | None = None, lookback: timedelta | None = None,
                   clock: Callable[[], datetime] = utcnow, graph: AssetGraph | None = None,
                   cache: dict | None = None) -> dict:
    """Diagnose the alerts (open, or resolved within ``lookback``) and reports; returns counts of changes.

    A caller that runs every tick keeps ``graph`` and ``cache`` (any dict) between calls, so
    only the groups new alerts touched are ranked again (see ``diagnose_symptoms``).
    """
    now = clock()
    since = now - lookback if lookback else None
    s, graph = load_inputs(store, reports=reports, since=since, graph=graph)
    labels = link(s, graph)
    pop = _populations(store)
    diags = diagnose_symptoms(s, graph, labels, pop, cache=cache)
    return write_incidents(store, s, diags, pop, now, since)


def _populations(store) -> dict[str, float]:
    rows = store.frame("SELECT code, population FROM units WHERE population IS NOT NULL")
    return dict(zip(rows["code"].to_list(), rows["population"].to_list())) if rows.height else {}


def _areas(store, diags: list[Diagnosis]) -> list[bytes | None]:
    """Affected area per incident: the union of its units' polygons (WKB)."""
    import shapely

    codes = sorted({u for d in diags for u in d.units})
    if not codes:
        return [None] * len(diags)
    rows = store.frame("SELECT code, geometry_wkb FROM units WHERE list_contains(?, code) AND geometry_wkb IS NOT NULL",
                       [codes])
    geoms = dict(zip(rows["code"].to_list(), shapely.from_wkb(rows["geometry_wkb"].to_list()))) if rows.height else {}
    out = []
    for d in diags:
        gs = [geoms[u] for u in d.units if u in geoms]
        out.append(shapely.to_wkb(shapely.union_all(gs)) if gs else None)
    return out


def write_incidents(store, s: Symptoms, diags: list[Diagnosis], pop: dict[str, float], now: datetime,
                    since: datetime | None = None) -> dict:
    existing, was_open = store.incidents.current_members(since)
    owner: dict[str, int] = {ref: k for k, refs in existing.items() for ref in refs}
    areas = _areas(store, diags)
    counts = {"opened": 0, "updated": 0, "merged": 0, "closed": 0, "unchanged": 0}
    seen: set[int] = set()
    with store.transaction() as con:
        for d, area in zip(diags, areas):
            refs = [s.ref[i] for i in d.members]
            prior = sorted({owner[r] for r in refs if r in owner} - seen)
            population = float(sum(pop.get(u, 0.0) for u in d.units))
            top = d.causes[0]
            n_alerts = sum(1 for i in d.members if s.origin[i] == "alert")
            row = {
                "type": d.type, "state": "open" if d.open else "closed", "title": d.title,
                "severity": severity(d.level, population, top.kind == "sensor_fault"), "level": d.level,
                "confidence": float(top.score), "top_cause": top.cause, "start_at": _at(d.start), "end_at": _at(d.end),
                "updated_at": now, "units": d.units, "population": population, "area_wkb": area,
                "n_alerts": n_alerts, "n_reports": len(d.members) - n_alerts,
            }
            if not d.open:
                row["closed_at"] = _at(d.end)
            if prior:
                iid = prior[0]
                old = existing[iid]
                store.incidents.update(con, iid, row)
                for other in prior[1:]:
                    store.incidents.update(con, other, {"state": "merged", "merged_into": iid, "updated_at": now})
                    store.incidents.log(con, other, now, "merged", f"merged into incident {iid}: they share a cause")
                    store.incidents.log(con, iid, now, "merged", f"absorbed incident {other}")
                    counts["merged"] += 1
                    seen.add(other)
                new = set(refs) - old
                if new:
                    store.incidents.log(con, iid, now, "grew", f"{len(new)} new symptoms; {d.title}")
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
                if not d.open and iid in was_open:
                    store.incidents.log(con, iid, now, "closed", "all its alerts are resolved")
                    counts["closed"] += 1
                elif d.open and iid not in was_open:
                    store.incidents.log(con, iid, now, "reopened", "an alert is open again")
                    row["closed_at"] = None
                    store.incidents.update(con, iid, {"closed_at": None})
            else:
                row["opened_at"] = _at(d.start)
                iid = store.incidents.insert(con, row)
                store.incidents.log(con, iid, now, "opened", d.title)
                if not d.open:
                    store.incidents.log(con, iid, _at(d.end), "closed", "all its alerts are resolved")
                    counts["closed"] += 1
                counts["opened"] += 1
            seen.add(iid)
            store.incidents.replace_members(con, iid, [(s.ref[i], str(s.origin[i]), s.source[i], s.type[i]) for i in d.members])
            store.incidents.replace_causes(con, iid, [
                {"cause": c.cause, "kind": c.kind, "name": c.name, "asset_type": c.asset_type, "score": c.score,
                 "evidence": c.evidence} for c in d.causes])
        for iid in (set(existing) & was_open) - seen:  # its symptoms left the picture: nothing open remains
            store.incidents.update(con, iid, {"state": "closed", "closed_at": now, "updated_at": now})
            store.incidents.log(con, iid, now, "closed", "no open symptom remains")
            counts["closed"] += 1
    counts["incidents"] = len(diags)
    counts["symptoms"] = len(s)
    return counts
