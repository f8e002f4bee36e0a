"""``cityvitals sensors``: the sensor registry."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cityvitals.cli._common import Home, Store, Json, console, emit_json, open_store_cli

app = typer.Typer(help="The sensor registry: import sensors, list kinds.", no_args_is_help=True)


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(help="CSV (id,kind,unit,lon,lat,department[,installed][,meta...]) or JSON.")],
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Register sensors from FILE; each is located once and its unit cached."""
    from cityvitals.registry.sensors import import_sensors

    with open_store_cli(home, store_url) as store:
        result = import_sensors(store, file)
    if json:
        emit_json(result)
    else:
        console.print(f"imported {result['imported']:,} sensors ({result['outside']:,} outside the city's units)")


@app.command("kinds")
def kinds(json: Json = False) -> None:
    """The sensor kinds: canonical unit, accepted units and physical range."""
    from cityvitals.registry import load_kinds

    table = load_kinds()
    if json:
        emit_json({k.id: {"unit": k.unit, "min": k.min, "max": k.max, "accepts": sorted(k.accepts), "name_en": k.name_en,
                          "name_zh": k.name_zh} for k in table.values()})
        return
    t = Table("kind", "unit", "range", "also accepts", "name")
    for k in table.values():
        t.add_row(k.id, k.unit, f"{k.min:g} … {k.max:g}", ", ".join(k.accepts), f"{k.name_en} / {k.name_zh}")
    console.print(t)
