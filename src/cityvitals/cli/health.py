"""``cityvitals health``: the health index of a unit, per category and overall, explained."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli
from cityvitals.cli.catalog import CatalogFile
from cityvitals.cli.signs import parse_time, resolve_catalog

COLOUR = {"normal": "green", "attention": "blue", "warning": "yellow", "alarm": "red"}


def health(
    unit: Annotated[Optional[str], typer.Option("--unit", help="Unit code (default: the city, the root of the tree).")] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="Time (ISO-8601; default: the watermark, i.e. the latest complete window).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="List the indicators that cost points, and how many.")] = False,
    home: Home = None,
    store_url: Store = None,
    catalog: CatalogFile = None,
    json: Json = False,
) -> None:
    """Health index 0-100 of a unit: overall and per category; --explain says why."""
    from cityvitals.signs import health as health_of

    cat = resolve_catalog(home, catalog)
    with open_store_cli(home, store_url) as store:
        h = health_of(store, unit, parse_time(at, "--at"), catalog=cat)
    if not explain:
        h = {k: v for k, v in h.items() if k not in ("explain", "stale")}
    if json:
        emit_json(h)
        return
    console.print(f"[bold]{h['unit']}[/bold] at {h['at']}: health [bold]{h['index']:.1f}[/bold] / 100")
    t = Table("category", "index")
    for c, v in sorted(h["categories"].items()):
        t.add_row(c, f"{v:.1f}")
    console.print(t)
    if explain:
        e = Table("indicator", "category", "value", "level", "weight", "points lost (overall)", title="explanation: 100 − points = index")
        for r in h["explain"]:
            if r["scope"] != "overall" or r["points"] == 0:
                continue
            e.add_row(r["indicator"], r["category"], f"{r['value']:.4g}", f"[{COLOUR[r['level']]}]{r['level']}[/]",
                      f"{r['weight']:g}", f"{r['points']:.2f}")
        console.print(e)
        for r in h["stale"]:
            console.print(f"not counted (stale): {r['indicator']} = {r['value']:.4g} ({r['level']}), window ended "
                          f"{r['window_end']}, {r['age_s'] / 60:.0f} min before; limit {r['limit_s'] / 60:.0f} min")
