"""``cityvitals cases``: report, act on, import, escalate, auto-open and evaluate cases.

Every workflow action is its own command (``cases file 12 --by wu``), generated from the
state machine's action table so the CLI can never offer an action the core lacks.
"""


from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli
from cityvitals.errors import InputError

app = typer.Typer(help="Cases: the disposal loop from report to closure, and its evaluation.", no_args_is_help=True)


def _plain(row: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def _time(text: Optional[str], name: str) -> Optional[datetime]:
    if text is None:
        return None
    from cityvitals.dispose.desk import _as_utc

    return _as_utc(text, name)


def _desk(store):
    from cityvitals.dispose import CaseDesk

    return CaseDesk(store)


@app.command("report")
def report(
    category: Annotated[str, typer.Option(help="Category code (event.0102) or alias (SA01).")],
    lon: Annotated[Optional[float], typer.Option(help="Longitude (WGS84).")] = None,
    lat: Annotated[Optional[float], typer.Option(help="Latitude (WGS84).")] = None,
    unit: Annotated[Optional[str], typer.Option(help="Unit code, if known.")] = None,
    text: Annotated[str, typer.Option(help="Description.")] = "",
    source: Annotated[str, typer.Option(help="public, enterprise, inspector, sensor, alert, incident, hotline.")] = "inspector",
    priority: Annotated[str, typer.Option(help="urgent, high, normal, low.")] = "normal",
    by: Annotated[str, typer.Option(help="Who reports (inspector's name for inspector reports).")] = "cli",
    at: Annotated[Optional[str], typer.Option(help="Report time, ISO 8601 with offset (default now).")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Open a case (or attach to an open duplicate)."""
    with open_store_cli(home, store_url) as store:
        res = _desk(store).report(category=category, lon=lon, lat=lat, unit_code=unit, text=text, source=source,
                                  priority=priority, actor=by, role="inspector" if source == "inspector" else "operator",
                                  reported_at=_time(at, "--at"))
    if json:
        emit_json(res)
    else:
        console.print(f"case {res['case_id']}" + (" (attached as a duplicate)" if res["attached"] else " opened"))


@app.command("import-reports")
def import_reports_cmd(
    path: Annotated[Optional[Path], typer.Argument(help="reports.ndjson (default: <home>/sim/reports.ndjson).")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Open cases for citizen and enterprise reports (duplicates attach; re-imports skip)."""
    from cityvitals.dispose import import_reports

    with open_store_cli(home, store_url) as store:
        p = path or Path(store.home) / "sim" / "reports.ndjson"
        res = import_reports(_desk(store), p)
    if json:
        emit_json(res)
    else:
        console.print(f"{res['reports']} reports: {res['opened']} cases opened, {res['attached']} attached to open "
                      f"cases, {res['skipped']} already imported")


@app.command("auto-open")
def auto_open_cmd(
    rules: Annotated[Optional[Path], typer.Option(help="Rules YAML (default: the shipped auto_open.yaml).")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Open cases for new alerts and incidents that the rules select."""
    from cityvitals.dispose import auto_open, load_rules

    with open_store_cli(home, store_url) as store:
        res = auto_open(_desk(store), rules=load_rules(rules))
    if json:
        emit_json(res)
    else:
        for k, v in res.items():
            console.print(f"{k}: {v['seen']} new, {v['opened']} cases opened, {v['attached']} attached")


@app.command("escalate")
def escalate(
    at: Annotated[Optional[str], typer.Option(help="As of this time (default now).")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Escalate (督办) every running case past its working-time deadline."""
    with open_store_cli(home, store_url) as store:
        res = _desk(store).escalate_overdue(_time(at, "--at"))
    if json:
        emit_json({"escalated": res})
    else:
        console.print(f"{len(res)} cases escalated")


@app.command("list")
def list_(
    state: Annotated[str, typer.Option(help="open, overdue, all or a state name.")] = "open",
    department: Annotated[Optional[str], typer.Option(help="Only this department.")] = None,
    category: Annotated[Optional[str], typer.Option(help="Only this category.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Cases, newest first."""
    with open_store_cli(home, store_url) as store:
        rows = store.cases.list(state=state, department=department, category=category, limit=limit)
    if json:
        emit_json({"cases": [_plain(r) for r in rows], "count": len(rows)})
        return
    t = Table("id", "category", "state", "priority", "department", "reported", "due", "esc", "reports")
    for r in rows:
        t.add_row(str(r["id"]), r["category"], r["state"], r["priority"], r["department"] or "",
                  f"{r['reported_at']:%Y-%m-%d %H:%M}", f"{r['due_at']:%m-%d %H:%M}" if r["due_at"] else "",
                  str(r["escalation"] or ""), str(r["reports"]))
    console.print(t)


@app.command("show")
def show(case_id: int, reporters: Annotated[bool, typer.Option(help="Include reporters' personal data.")] = False,
         by: Annotated[Optional[str], typer.Option("--by", help="With --reporters: who reads (recorded).")] = None,
         purpose: Annotated[Optional[str], typer.Option(help="With --reporters: why (recorded in the access log).")] = None,
         home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """One case with its event log (and, with --reporters, who reported it: a read that is logged)."""
    if reporters and (not by or not purpose or len(purpose.strip()) < 3):
        raise InputError("--reporters reads personal data: say who reads with --by and why with --purpose")
    with open_store_cli(home, store_url) as store:
        row = store.cases.get(case_id)
        if row is None:
            raise InputError(f"case {case_id}: no such case")
        row = _plain(row)
        row["events"] = [_plain(e) for e in store.cases.events(case_id)]
        row["attachments"] = [_plain(a) for a in store.cases.attachments(case_id)]
        if reporters:
            from cityvitals.share.audit import record

            row["reporters"] = [_plain(p) for p in store.cases.reporters(case_id)]
            # Every read of personal data is accounted for, from the CLI as from the API.
            record(store, actor=by, role="cli", action="read", dataset="case_reporters",
                   fields=sorted({k for p in row["reporters"] for k in p if k != "id"}), purpose=purpose.strip(),
                   records=len(row["reporters"]), detail={"case_id": case_id, "route": "cityvitals cases show"})
    if json:
        emit_json(row)
        return
    console.print(f"case {row['id']} {row['category']} [{row['state']}] {row['description']}")
    for e in row["events"]:
        console.print(f"  {e['seq']:>3} {e['ts']} {e['action']:<18} {e['actor']} ({e['role']}) "
                      f"{e['from_state'] or ''} → {e['to_state']} {e['data'] or ''}")


@app.command("attach")
def attach(case_id: int, photo: Path, stage: Annotated[str, typer.Option(help="report, feedback or check.")] = "feedback",
           by: str = "cli", home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """Attach a photo (JPEG, PNG, WebP, GIF; checked by content, at most 10 MB)."""
    if not photo.is_file():
        raise InputError(f"{photo}: no such file")
    with open_store_cli(home, store_url) as store:
        res = _desk(store).attach_photo(case_id, photo.read_bytes(), stage=stage, by=by, name=str(photo))
    emit_json(_plain(res)) if json else console.print(f"attached {res['path']}")


@app.command("stats")
def stats(
    by: Annotated[str, typer.Option(help="region, department, inspector, category or all.")] = "region",
    start: Annotated[Optional[str], typer.Option(help="Period start (ISO 8601 with offset).")] = None,
    end: Annotated[Optional[str], typer.Option(help="Period end, exclusive.")] = None,
    home: Home = None,
    store_url: Store = None,
    json: Json = False,
) -> None:
    """Filed, close, on-time close and rework rates, returns, average handling time."""
    from cityvitals.dispose import case_stats

    with open_store_cli(home, store_url) as store:
        rows = case_stats(store, by=by, start=_time(start, "--start"), end=_time(end, "--end"))
    if json:
        emit_json({"by": by, "groups": rows})
        return
    t = Table(by, "cases", "filed%", "closed%", "on-time%", "due", "handled/due%", "on-time/due%", "rework%",
              "returns", "ext", "overdue", "avg h")
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for r in rows:
        t.add_row(str(r["group"]), str(r["cases"]), pct(r["filed_rate"]), pct(r["close_rate"]),
                  pct(r["on_time_close_rate"]), str(r["due"]), pct(r["handle_rate"]), pct(r["on_time_close_rate_due"]),
                  pct(r["rework_rate"]), str(r["returns"]), str(r["extensions"]),
                  str(r["overdue"]), "" if r["avg_handling_h"] is None else f"{r['avg_handling_h']:.1f}")
    console.print(t)


@app.command("codes")
def codes(json: Json = False) -> None:
    """The component/event code table (version, codes, limits, departments)."""
    from cityvitals.dispose import CodeTable

    t = CodeTable.load()
    rows = [{"code": c.code, "zh": c.zh, "en": c.en, "group": c.group, "limit": c.limit, "dept": c.dept,
             "aliases": list(c.aliases), "local": c.local} for c in t]
    if json:
        emit_json({"version": t.version, "codes": rows})
        return
    tab = Table("code", "name", "limit", "department", "aliases", title=f"code table {t.version}")
    for r in rows:
        tab.add_row(r["code"], f"{r['zh']} {r['en']}", r["limit"], r["dept"] or "", ",".join(r["aliases"]))
    console.print(tab)


@app.command("crew")
def crew(crew_id: str, department: str, name: Optional[str] = None, lon: Optional[float] = None,
         lat: Optional[float] = None, inactive: bool = False, home: Home = None, store_url: Store = None) -> None:
    """Add or update a crew of a department (its base position is used for assignment)."""
    with open_store_cli(home, store_url) as store:
        d = _desk(store)
        d.sync_departments()
        d.add_crew(crew_id, department, name=name, lon=lon, lat=lat, active=not inactive)
    console.print(f"crew {crew_id} ({department}) saved")


def _make_action(action: str, roles: tuple[str, ...]) -> None:
    default_role = roles[0] if roles else "admin"

    def cmd(
        case_id: Annotated[int, typer.Argument(help="The case id.")],
        by: Annotated[str, typer.Option(help="Who acts (name).")] = "cli",
        role: Annotated[str, typer.Option(help=f"Acting role (allowed: {', '.join(roles)}).")] = default_role,
        department: Annotated[Optional[str], typer.Option(help="dispatch: the department (default: ownership table); "
                                                               "department role: the actor's department.")] = None,
        crew: Annotated[Optional[str], typer.Option(help="dispatch/assign_crew: the crew ('auto' picks one).")] = None,
        hours: Annotated[Optional[float], typer.Option(help="grant_extension: extra working hours.")] = None,
        priority: Annotated[Optional[str], typer.Option(help="dispatch: change the priority.")] = None,
        note: Annotated[Optional[str], typer.Option(help="A note for the log.")] = None,
        at: Annotated[Optional[str], typer.Option(help="When (ISO 8601 with offset; default now).")] = None,
        home: Home = None,
        store_url: Store = None,
        json: Json = False,
    ) -> None:
        from cityvitals.dispose import Actor
        from cityvitals.dispose.desk import state_dict

        data = {"note": note, "hours": hours, "priority": priority}
        actor_dept = None
        if action in ("dispatch",):
            data["department"] = department
            data["crew"] = crew or "auto"
        elif action == "assign_crew":
            data["crew"] = crew
        if role == "department":
            actor_dept = department
        with open_store_cli(home, store_url) as store:
            s = _desk(store).act(case_id, action, Actor(by, role, actor_dept), at=_time(at, "--at"), **data)
        if json:
            emit_json(state_dict(s))
        else:
            console.print(f"case {case_id}: {action} → {s.state}" + (f", due {s.due_at:%Y-%m-%d %H:%M} UTC" if s.due_at else ""))

    cmd.__doc__ = f"{action.replace('_', ' ').capitalize()} (roles: {', '.join(roles)})."
    app.command(action.replace("_", "-"))(cmd)


def _register() -> None:
    from cityvitals.dispose.workflow import ACTIONS

    for a, (_, _, roles) in ACTIONS.items():
        _make_action(a, roles)


_register()
