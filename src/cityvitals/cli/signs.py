"""``cityvitals signs``: compute the vital signs (incrementally or for a period) and read them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli
from cityvitals.cli.catalog import CatalogFile
from cityvitals.errors import InputError

app = typer.Typer(help="Vital signs: compute indicator values, levels and health; list stored values.", no_args_is_help=True)


def parse_time(text: str | None, option: str) -> datetime | None:
    """ISO-8601 time; naive times are UTC."""
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{option}: {text!r} is not an ISO-8601 time such as 2024-07-01T08:00:00Z") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def resolve_catalog(home: str | None, catalog: str | None):
    """The shipped catalogue overlaid by --catalog, else by <home>/catalogue.yaml if present."""
    from cityvitals.home import resolve_home
    from cityvitals.signs.catalog import load_catalog

    if catalog is None:
        candidate = resolve_home(home) / "catalogue.yaml"
        catalog = str(candidate) if candidate.exists() else None
    return load_catalog(catalog)


def _print_report(rep: dict) -> None:
    t = Table(show_header=False, title=f"signs {rep['mode']}")
    for k in ("readings", "values", "rolled_up", "late_readings", "watermark", "health_units", "seconds"):
        t.add_row(k, f"{rep[k]:,}" if isinstance(rep[k], int) else str(rep[k]))
    t.add_row("indicators computed", str(len(set(rep["indicators"]))))
    t.add_row("no source yet", f"{len(rep['no_source_yet'])} ({', '.join(rep['no_source_yet'][:6])}{', …' if len(rep['no_source_yet']) > 6 else ''})")
    console.print(t)


@app.command("run")
def run(home: Home = None, store_url: Store = None, catalog: CatalogFile = None, json: Json = False) -> None:
    """Compute everything ingested since the last run (only the windows and units it touches)."""
    from cityvitals.signs import compute_signs

    cat = resolve_catalog(home, catalog)
    with open_store_cli(home, store_url) as store:
        rep = compute_signs(store, catalog=cat).to_dict()
    emit_json(rep) if json else _print_report(rep)


@app.command("recompute")
def recompute_cmd(
    from_: Annotated[Optional[str], typer.Option("--from", help="First window start to rebuild (ISO-8601; default: all).")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Rebuild windows starting before this time (default: all).")] = None,
    home: Home = None, store_url: Store = None,
    catalog: CatalogFile = None,
    json: Json = False,
) -> None:
    """Rebuild exactly every window starting in [--from, --to), late readings included."""
    from cityvitals.signs import recompute

    cat = resolve_catalog(home, catalog)
    with open_store_cli(home, store_url) as store:
        rep = recompute(store, parse_time(from_, "--from"), parse_time(to, "--to"), catalog=cat).to_dict()
    emit_json(rep) if json else _print_report(rep)


@app.command("values")
def values(
    indicator: Annotated[str, typer.Option("--indicator", help="Indicator id, e.g. env.aqi.")],
    unit: Annotated[str, typer.Option("--unit", help="Spatial unit code.")],
    from_: Annotated[Optional[str], typer.Option("--from", help="Windows starting at or after (ISO-8601).")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Windows starting before (ISO-8601).")] = None,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Stored values of one indicator for one unit: window start, end, value, level."""
    from cityvitals.signs.catalog import LEVELS

    with open_store_cli(home, store_url) as store:
        df = store.signs.values(indicator, unit, parse_time(from_, "--from"), parse_time(to, "--to"))
    rows = [
        {"window_start": r["window_start"].isoformat(), "window_end": r["window_end"].isoformat(), "value": r["value"],
         "level": LEVELS[r["level"]]}
        for r in df.iter_rows(named=True)
    ]
    if json:
        emit_json({"indicator": indicator, "unit": unit, "values": rows})
        return
    t = Table("window start", "window end", "value", "level", title=f"{indicator} @ {unit}")
    for r in rows:
        t.add_row(r["window_start"], r["window_end"], f"{r['value']:.4g}", r["level"])
    console.print(t)
