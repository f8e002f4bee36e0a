"""``cityvitals db``: the PostgreSQL store's schema and explicit maintenance.

Nothing here runs by itself: schema changes (``upgrade``), dropping old readings
(``retention``) and hourly summaries (``rollup``) happen only when asked.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer

from cityvitals.cli._common import Home, Json, Store, console, emit_json
from cityvitals.errors import InputError

app = typer.Typer(help="Server-mode store (PostgreSQL): schema migrations, retention, roll-ups.", no_args_is_help=True)


def _when(text: str, option: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{option} {text!r}: not an ISO 8601 time (e.g. 2026-01-01T00:00:00Z)") from exc
    if t.tzinfo is None:
        raise InputError(f"{option} {text!r}: give a time zone (Z or +08:00); a local time is ambiguous")
    return t.astimezone(timezone.utc)


def _pg(home: str | None, store_url: str | None, *, migrate: bool = False):
    from cityvitals.store import open_store, store_url as resolve
    from cityvitals.store.duck import StoreError

    url = resolve(home, store_url)
    if not url or not url.startswith(("postgresql://", "postgres://")):
        raise InputError("this command works on a PostgreSQL store: pass --store postgresql://user@host/db "
                         "(or set CITYVITALS_STORE, or 'store:' in <home>/config.yaml)")
    try:
        return open_store(home, url=url, migrate=migrate)
    except StoreError as exc:
        raise InputError(str(exc)) from exc


@app.command()
def upgrade(
    months_ahead: Annotated[int, typer.Option("--months-ahead", min=0, help="Reading partitions to create ahead.")] = 3,
    home: Home = None, store_url: Store = None, json: Json = False,
) -> None:
    """Apply pending schema migrations and create reading partitions ahead."""
    from cityvitals.store.pg import migrate

    from cityvitals.store import store_url as resolve

    url = resolve(home, store_url)
    import psycopg

    if not url or not url.startswith(("postgresql://", "postgres://")):
        raise InputError("db upgrade works on a PostgreSQL store: pass --store postgresql://user@host/db")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            before = migrate.current(conn)
            applied = migrate.upgrade(conn)
            version = migrate.current(conn)
    except psycopg.OperationalError as exc:
        raise InputError(f"cannot connect to the PostgreSQL store: {str(exc).strip().splitlines()[0]}") from exc
    store = _pg(home, url)
    try:
        now = datetime.now(timezone.utc)
        made = store.readings.ensure_partitions(now - timedelta(days=31), now + timedelta(days=31 * months_ahead))
    finally:
        store.close()
    out = {"from_version": before, "to_version": version, "applied": applied, "partitions_created": made}
    if json:
        emit_json(out)
    else:
        console.print(f"schema {before} -> {version}" + (f" (applied {applied})" if applied else " (up to date)")
                      + f"; {len(made)} partition(s) created")


@app.command()
def status(home: Home = None, store_url: Store = None, json: Json = False) -> None:
    """Schema version, migrations applied and reading partitions."""
    from cityvitals.store.pg import migrate

    store = _pg(home, store_url)
    try:
        out = {"schema_version": migrate.current(store.pg), "code_version": migrate.head(),
               "migrations": migrate.history(store.pg), "partitions": store.readings.partitions()}
    finally:
        store.close()
    if json:
        emit_json(out)
        return
    console.print(f"schema version {out['schema_version']} (code {out['code_version']})")
    for p in out["partitions"]:
        console.print(f"  {p['name']}  ~{p['rows_estimate']} rows  {p['bounds']}")


@app.command()
def retention(
    before: Annotated[str, typer.Option("--before", help="Remove readings with ts before this ISO time.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; change nothing.")] = False,
    home: Home = None, store_url: Store = None, json: Json = False,
) -> None:
    """Remove old raw readings: whole monthly partitions dropped, the rest deleted."""
    store = _pg(home, store_url)
    try:
        out = store.readings.retention(_when(before, "--before"), dry_run=dry_run)
    finally:
        store.close()
    if json:
        emit_json(out)
    else:
        verb = "would drop" if dry_run else "dropped"
        console.print(f"{verb} {len(out['partitions_dropped'])} partition(s) ({out['rows_in_dropped_partitions']} rows)"
                      f" and {'would delete' if dry_run else 'deleted'} {out['rows_deleted']} more row(s)")


@app.command()
def rollup(
    start: Annotated[str, typer.Option("--start", help="First hour (ISO time, inclusive).")],
    end: Annotated[str, typer.Option("--end", help="End (ISO time, exclusive).")],
    home: Home = None, store_url: Store = None, json: Json = False,
) -> None:
    """Write hourly count/mean/min/max per sensor for [start, end) into readings_hourly."""
    a, b = _when(start, "--start"), _when(end, "--end")
    if b <= a:
        raise InputError("--end must be after --start")
    store = _pg(home, store_url)
    try:
        out = store.readings.rollup(a, b)
    finally:
        store.close()
    if json:
        emit_json(out)
    else:
        console.print(f"{out['rows']} hourly row(s) written for {out['start']} .. {out['end']}")
