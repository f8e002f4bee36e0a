"""``cityvitals space``: import administrative layers, make the grid, locate points, show the tree."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.markup import escape
from rich.tree import Tree

from cityvitals.cli._common import Home, Store, Json, console, emit_json, err_console, open_store_cli, progress
from cityvitals.errors import CityvitalsError

app = typer.Typer(help="The city's tree of spatial units: import layers, build the grid, locate points.", no_args_is_help=True)


class ImportLevel(str, Enum):
    city = "city"
    district = "district"
    street = "street"
    community = "community"


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """User errors end as one line and exit 1, also when the app runs outside ``main``."""
    try:
        yield
    except CityvitalsError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _say(text: str) -> None:
    """Plain text, never re-wrapped or styled (unit names may contain brackets)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="GeoJSON FeatureCollection of Polygon/MultiPolygon features (lon/lat).")],
    level: Annotated[ImportLevel, typer.Option("--level", help="Level of the layer's units.", case_sensitive=False)],
    name_field: Annotated[str, typer.Option("--name-field", help="Property holding each unit's name.")],
    code_field: Annotated[Optional[str], typer.Option("--code-field", help="Property holding each unit's code (default: generated).")] = None,
    population_field: Annotated[Optional[str], typer.Option("--population-field", help="Property holding each unit's population.")] = None,
    city_name: Annotated[str, typer.Option("--city-name", help="Name of the city root when one is created.")] = "City",
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Import an administrative layer; it nests under the coarser units it overlaps most."""
    from cityvitals.space import import_layer

    with _one_line_errors(), open_store_cli(home, store_url) as store, progress("importing layer", None, enabled=not json):
        result = import_layer(
            store, file, level=level.value, name_field=name_field, code_field=code_field,
            population_field=population_field, city_name=city_name,
        )
    if json:
        emit_json(result)
        return
    where = f" under {result['parent_level']}" if result["parent_level"] else ""
    _say(f"imported {result['imported']:,} {result['level']} units{where}")
    if result["city_created"]:
        _say(f"created the city root {city_name!r} (code 0)")
    for lvl, n in result["reparented"].items():
        _say(f"re-parented {n:,} {lvl} units")
    if result["grid_rebuilt"] is not None:
        _say(f"rebuilt the grid: {result['grid_rebuilt']:,} cells")


@app.command("grid")
def grid_cmd(
    resolution: Annotated[int, typer.Option("--resolution", "-r", min=0, max=15, help="H3 resolution (9 ≈ 0.1 km², 10 ≈ 15,000 m²).")],
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Create the minimum units: H3 cells under the finest polygons (replaces any grid)."""
    from cityvitals.space import build_grid

    with _one_line_errors(), open_store_cli(home, store_url) as store, progress("building grid", None, enabled=not json):
        result = build_grid(store, resolution)
    if json:
        emit_json(result)
        return
    _say(
        f"grid at resolution {result['resolution']}: {result['cells']:,} cells under {result['parents']:,} "
        f"{result['parent_level']} units ({result['border_cells']:,} on the border) in {result['seconds']:.1f} s"
    )


@app.command("locate", context_settings={"ignore_unknown_options": True})  # so "-73.96" is a number, not an option
def locate_cmd(
    lon: Annotated[float, typer.Argument(help="Longitude (WGS84).")],
    lat: Annotated[float, typer.Argument(help="Latitude (WGS84).")],
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """The finest unit at a point and its path up to the city; "outside" if it is not in the city."""
    from cityvitals.space import Locator

    with _one_line_errors(), open_store_cli(home, store_url) as store:
        found = Locator.from_store(store).locate_one(lon, lat)
    if json:
        emit_json({"outside": found is None, "lon": lon, "lat": lat, **(found or {"code": None})})
        return
    if found is None:
        _say("outside")
        return
    _say(f"{found['code']}  {found['name']}  ({found['level']})")
    _say(" › ".join(p["name"] for p in found["path"]))


@app.command("tree")
def tree_cmd(
    depth: Annotated[Optional[int], typer.Option("--depth", min=0, help="Levels to show below the city (default: all).")] = None,
    cells: Annotated[bool, typer.Option("--cells", help="List grid cells one by one instead of a count per parent.")] = False,
    home: Home = None, store_url: Store = None,
    json: Json = False,
) -> None:
    """Show the city's tree with population, area and number of children."""
    from cityvitals.space import tree

    with _one_line_errors(), open_store_cli(home, store_url) as store:
        roots = tree(store, depth, grid=cells)
    if json:
        emit_json({"units": roots})
        return
    if not roots:
        _say("no spatial units yet: import a layer with `cityvitals space import`")
        return
    for root in roots:
        view = Tree(_label(root))
        _grow(view, root)
        console.print(view)


def _label(node: dict) -> str:
    parts = [f"[bold]{escape(str(node['name']))}[/bold]", f"[dim]{escape(str(node['code']))} · {node['level']}[/dim]"]
    if node.get("area_m2"):
        parts.append(f"{node['area_m2'] / 1e6:,.2f} km²")
    if node.get("population") is not None:
        parts.append(f"pop {node['population']:,.0f}")
    if node.get("grid_cells"):
        parts.append(f"[cyan]{node['grid_cells']:,} grid cells[/cyan]")
    elif node["n_children"] and not node["children"]:
        parts.append(f"[dim]({node['n_children']:,} children)[/dim]")
    return "  ".join(parts)


def _grow(view: Tree, node: dict) -> None:
    for child in node["children"]:
        _grow(view.add(_label(child)), child)
