"""``cityvitals incidents list|show`` and ``cityvitals diagnose run|eval``.

Incidents are what ``diagnose`` makes of the alerts and reports: a type, a severity, the
ranked probable causes with their evidence, and the history of how the picture changed.
"""

from __future__ import annotations

import json as _json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cityvitals.cli._common import (
    Home,
    Store,
    Json,
    console,
    emit_json,
    open_store_cli,
    progress,
)
from cityvitals.errors import InputError

app = typer.Typer(help="Incidents: alerts and reports grouped by cause, with ranked causes.", no_args_is_help=True)
diagnose_app = typer.Typer(help="Diagnose: group alerts into incidents and rank their causes.", no_args_is_help=True)
STATES = ("open", "closed", "merged", "all")


def _plain(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if k == "area_wkb":
            continue
        out[k] = v.isoformat() if hasattr(v, "isoformat") else ([_plain(x) for x in v] if isinstance(v, list) and v and isinstance(v[0], dict) else v)
    return out


@app.command("list")
def list_(
    state: Annotated[str, typer.Option(help="open, closed, merged or all.")] = "open",
    type_: Annotated[str | None, typer.Option("--type", help="Only this type (water_outage, gas_leak, sensor_fault ...).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Incidents, newest first, with their first suspected cause."""
    if state not in STATES:
        raise InputError(f"--state: {state!r} is not one of {', '.join(STATES)}")
    with open_store_cli(home, store_url) as store:
        rows = store.incidents.list(state=state, type_=type_, limit=limit)
    if json:
        emit_json({"incidents": [_plain(r) for r in rows], "count": len(rows)})
        return
    if not rows:
        console.print("no incidents")
        return
    t = Table("id", "type", "state", "severity", "cause", "share", "alerts", "reports", "start", "units")
    for r in rows:
        t.add_row(str(r["id"]), r["type"], r["state"], r["severity"] or "", r["top_cause"] or "",
                  f"{(r['confidence'] or 0):.0%}", str(r["n_alerts"]), str(r["n_reports"]),
                  r["start_at"].strftime("%m-%d %H:%M") if r["start_at"] else "", str(len(r["units"])))
    console.print(t)


@app.command("show")
def show(
    incident_id: Annotated[int, typer.Argument(help="Incident id (see `cityvitals incidents list`).")],
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """One incident: ranked causes with their evidence, members, history."""
    with open_store_cli(home, store_url) as store:
        inc = store.incidents.get(incident_id)
    if inc is None:
        raise InputError(f"incident {incident_id}: no such incident")
    if json:
        emit_json(_plain(inc))
        return
    console.print(f"[bold]incident {inc['id']}[/bold] {inc['title']}")
    console.print(f"  type {inc['type']}, {inc['state']}, severity {inc['severity']}, level {inc['level']}, "
                  f"{len(inc['units'])} units ({inc['population'] or 0:,.0f} people), "
                  f"{inc['n_alerts']} alerts, {inc['n_reports']} reports")
    console.print(f"  from {inc['start_at']} to {inc['end_at']}")
    console.print("  probable causes:")
    for c in inc["causes"]:
        console.print(f"   {c['rank']}. {c['name'] or c['cause']} [{c['kind']}] {c['score']:.0%}")
        for e in c["evidence"]:
            console.print(f"        - {e}")
    console.print("  history:")
    for h in inc["history"]:
        console.print(f"   {h['ts']} {h['event']}: {h['note'] or ''}")


@diagnose_app.command("run")
def run(
    reports: Annotated[str | None, typer.Option(help="Citizen reports NDJSON (default: <home>/sim/reports.ndjson when present).")] = None,
    lookback: Annotated[float | None, typer.Option(help="Only alerts open or resolved within this many hours (default: all).")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Group alerts and reports into incidents and rank their probable causes."""
    from cityvitals.diagnose.run import diagnose_store

    if reports is not None and not Path(reports).exists():
        raise InputError(f"--reports {reports}: no such file")
    if lookback is not None and lookback <= 0:
        raise InputError(f"--lookback {lookback}: must be positive")
    with open_store_cli(home, store_url) as store, progress("diagnosing", None, enabled=not json):
        res = diagnose_store(store, reports=reports, lookback=timedelta(hours=lookback) if lookback else None)
    if json:
        emit_json(res)
        return
    console.print(f"{res['symptoms']} symptoms -> {res['incidents']} incidents: {res['opened']} opened, "
                  f"{res['updated']} grew, {res['merged']} merged, {res['closed']} closed")


@diagnose_app.command("eval")
def eval_(
    truth: Annotated[str | None, typer.Option(help="The simulator's truth.json for the store's data (default: <home>/sim/truth.json).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Instead: simulate, watch and diagnose this many seeds of a small city.")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Diagnosis quality against simulator ground truth: single_incident, top1, top3, faults_as_faults, mixed."""
    from cityvitals.diagnose import evaluate

    if seeds is not None:
        from cityvitals.bench.diagnose import sim_eval

        if seeds < 1:
            raise InputError(f"--seeds {seeds}: must be at least 1")
        with progress("simulating, watching and diagnosing", seeds, enabled=not json) as bar:
            res = sim_eval(range(1, seeds + 1), progress=bar.advance)
    else:
        with open_store_cli(home, store_url) as store:
            path = Path(truth) if truth else Path(store.home) / "sim" / "truth.json"
            if not path.exists():
                raise InputError(f"--truth {path}: no such file")
            try:
                doc = _json.loads(path.read_text("utf-8"))
            except ValueError as exc:
                raise InputError(f"--truth {path}: not JSON ({exc})") from None
            res = evaluate(store, doc)
    if json:
        emit_json(res)
        return
    for k in ("injected", "detected", "single_incident", "top1", "top3", "mixed", "faults_detected", "faults_as_faults", "incidents"):
        v = res.get(k)
        console.print(f"  {k:<17} {v:.2f}" if isinstance(v, float) else f"  {k:<17} {v}")
