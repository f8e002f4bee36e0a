"""``cityvitals alerts``: list, acknowledge and resolve alerts raised by ``watch``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli
from cityvitals.errors import InputError

app = typer.Typer(help="Alerts: list them, acknowledge them, resolve them.", no_args_is_help=True)

STATES = ("open", "active", "acknowledged", "resolved", "all")


def _plain(row: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


@app.command("list")
def list_(
    state: Annotated[str, typer.Option(help="open (active or acknowledged), active, acknowledged, resolved or all.")] = "open",
    level: Annotated[Optional[str], typer.Option(help="Only this level (attention, warning, alarm).")] = None,
    source: Annotated[Optional[str], typer.Option(help="Only alerts of this source (sensor or series id).")] = None,
    type_: Annotated[Optional[str], typer.Option("--type", help="Only this alert type (threshold, shift, health:stale ...).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    events: Annotated[bool, typer.Option("--events", help="Include each alert's event log.")] = False,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Alerts, newest first."""
    if state not in STATES:
        raise InputError(f"--state: {state!r} is not one of {', '.join(STATES)}")
    with open_store_cli(home, store_url) as store:
        rows = store.alerts.list(state=None if state == "all" else state, level=level, source=source, type_=type_, limit=limit)
        if events:
            for r in rows:
                r["events"] = [_plain(e) for e in store.alerts.events(r["id"])]
    if json:
        emit_json({"alerts": [_plain(r) for r in rows], "count": len(rows)})
        return
    if not rows:
        console.print("no alerts")
        return
    t = Table("id", "level", "state", "source", "type", "count", "first", "last", "message")
    for r in rows:
        flags = " (flapping)" if r["flapping"] else ""
        esc = f" ↑{r['escalation']}" if r["escalation"] else ""
        t.add_row(
            str(r["id"]), r["level"] + esc, r["state"] + flags, r["source"], r["type"], str(r["occurrences"]),
            f"{r['first_at']:%Y-%m-%d %H:%M}", f"{r['last_at']:%Y-%m-%d %H:%M}", r["message"] or "",
        )
    console.print(t)


def _change(action: str, alert_id: int, by: str, note: Optional[str], home: Optional[str], json: bool,
            store_url: Optional[str] = None) -> None:
    from cityvitals.watch.alerts import AlertManager

    with open_store_cli(home, store_url) as store:
        mgr = AlertManager(store)
        row = mgr.ack(alert_id, by, note) if action == "ack" else mgr.resolve(alert_id, by, note)
    if json:
        emit_json(_plain(row))
    else:
        console.print(f"alert {alert_id} {row['state']} by {by}")


@app.command("ack")
def ack(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (see `alerts list`).")],
    by: Annotated[str, typer.Option("--by", help="Who acknowledges it.")],
    note: Annotated[Optional[str], typer.Option(help="A note for the event log.")] = None,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Acknowledge an alert: someone is on it (stops escalation)."""
    _change("ack", alert_id, by, note, home, json, store_url)


@app.command("resolve")
def resolve(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (see `alerts list`).")],
    by: Annotated[str, typer.Option("--by", help="Who resolves it.")],
    note: Annotated[Optional[str], typer.Option(help="A note for the event log.")] = None,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Resolve an alert by hand."""
    _change("resolve", alert_id, by, note, home, json, store_url)
