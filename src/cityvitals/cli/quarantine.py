"""``cityvitals quarantine``: see what was refused and why, and replay it."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli

app = typer.Typer(help="Quarantined records: list them, replay them after fixing the cause.", no_args_is_help=True)


@app.command("list")
def list_(
    reason: Annotated[Optional[str], typer.Option(help="Only this reason code.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many records.")] = 50,
    all_: Annotated[bool, typer.Option("--all", help="Include records already resolved by a replay.")] = False,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Quarantined records with their reason, message and where they came from."""
    with open_store_cli(home, store_url) as store:
        frame = store.quarantine.frame(reason=reason, include_resolved=all_, limit=limit)
        counts = store.quarantine.counts(include_resolved=all_)
    if json:
        emit_json({"counts": counts, "records": frame.to_dicts()})
        return
    t = Table("id", "source", "where", "reason", "message", "raw")
    for r in frame.iter_rows(named=True):
        raw = (r["raw"] or "").strip()
        t.add_row(str(r["id"]), r["source"] or "", r["location"] or "", r["reason"], r["message"],
                  raw[:60] + ("…" if len(raw) > 60 or r["raw_truncated"] else ""))
    console.print(t)
    console.print("by reason: " + (", ".join(f"{k} {v:,}" for k, v in counts.items()) or "none"))


@app.command("replay")
def replay(
    reason: Annotated[Optional[str], typer.Option(help="Only records with this reason code.")] = None,
    ids: Annotated[Optional[list[int]], typer.Option("--id", help="Only these record ids (repeatable).")] = None,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Re-validate quarantined records; those that now pass are stored exactly once."""
    from cityvitals.ingest import replay as run_replay

    with open_store_cli(home, store_url) as store:
        report = run_replay(store, reason=reason, ids=ids)
    if json:
        emit_json(report.to_dict())
        return
    console.print(
        f"replayed {report.records:,}: stored {report.accepted:,} · already stored {report.duplicates:,} · "
        f"still quarantined {sum(report.quarantined.values()):,}"
    )
