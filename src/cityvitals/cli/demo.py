"""``cityvitals demo``: the simulated demo city, from nothing to vital signs in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.tree import Tree

from cityvitals.cli._common import Home, Json, console, emit_json, err_console, open_store_cli

DEFAULT_SCENARIO = "water_main_burst,rainstorm,sensor_faults"


def prepare_demo(store, home: Path, *, seed: int, sensors: int, districts: int, duration: str, scenario: str,
                 say=lambda msg: None) -> dict:
    """Simulate and load the demo city into an empty store, then compute what the stages compute."""
    from cityvitals.signs import compute_signs
    from cityvitals.sim import load_folder, run_simulation

    out: dict = {}
    if not store.units.levels():
        folder = home / "demo-city"
        say(f"simulating the demo city (seed {seed}, {sensors:,} sensors, {duration}, {scenario}) into {folder}")
        out["simulation"] = run_simulation(folder, scenario=scenario, duration=duration, seed=seed,
                                           city_sensors=sensors, city_districts=districts)
        say("loading it through the ingest, locate and registry stages")
        out["load"] = load_folder(store, folder)
    say("computing the vital signs")
    out["signs"] = compute_signs(store)
    return out


def demo(
    seed: Annotated[int, typer.Option(help="Simulator seed: the same seed gives the same city.")] = 7,
    sensors: Annotated[int, typer.Option(min=100, max=200_000, help="Sensors in the demo city.")] = 5000,
    districts: Annotated[int, typer.Option(min=1, max=30, help="Districts in the demo city.")] = 7,
    duration: Annotated[str, typer.Option(help="Simulated time to generate (e.g. 6h, 1d).")] = "6h",
    scenario: Annotated[str, typer.Option(help="Scenarios, comma-separated.")] = DEFAULT_SCENARIO,
    home: Home = None,
    json: Json = False,
) -> None:
    """Build and load the simulated demo city, compute its vital signs, print the tree and counts."""
    from cityvitals.home import resolve_home
    from cityvitals.signs import health
    from cityvitals.space import tree

    home_dir = resolve_home(home)
    say = (lambda msg: None) if json else (lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    with open_store_cli(str(home_dir)) as store:
        prepare_demo(store, home_dir, seed=seed, sensors=sensors, districts=districts, duration=duration,
                     scenario=scenario, say=say)
        status = store.status()
        city = health(store)
        roots = tree(store, max_depth=2, grid=False)
    if json:
        emit_json({"status": status, "health": {k: city.get(k) for k in ("unit", "at", "index", "categories")}})
        return
    view = Tree("[bold]the city / 城市[/bold]")
    for root in roots:
        _add(view, root)
    console.print(view)
    console.print(f"health of {city.get('unit')} at {city.get('at')}: [bold]{city.get('index')}[/bold] / 100")
    q = status.get("quarantined", {})
    console.print(
        f"units {status.get('units')} · sensors {status.get('sensors', 0):,} · readings {status.get('readings', 0):,}"
        f" · quarantined {sum(q.values()):,}"
    )


def _add(parent: Tree, node: dict) -> None:
    pop = f" · pop {node['population']:,.0f}" if node.get("population") else ""
    cells = f" · {node['grid_cells']} grid cells" if node.get("grid_cells") else ""
    branch = parent.add(f"{node['name']} [dim]({node['level']} {node['code']}{pop}{cells})[/dim]")
    for child in node.get("children") or []:
        _add(branch, child)
