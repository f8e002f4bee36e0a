"""``cityvitals demo``: the simulated city, live, with the API and the dashboard.

On first run it simulates a city with incidents and faults (ground truth kept under
``<home>/sim``), loads the city and the first hours of history, then replays the rest in
accelerated time through every stage while serving the dashboard. ``--once`` stops after
the history and prints the tree, the health and the counts instead of serving.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.tree import Tree

from cityvitals.cli._common import Home, Json, console, emit_json, err_console, open_store_cli

DEFAULT_SCENARIO = "rainstorm,water_main_burst,traffic_accident,air_pollution,sensor_faults"


def prepare_demo(store, home: Path, *, seed: int, sensors: int, districts: int, duration: str, scenario: str,
                 history: str, say=lambda msg: None):
    """Simulate the city once, load it and its history; returns the replay source and runner."""
    from cityvitals.runtime import LocalRunner, ReplaySource
    from cityvitals.sim import load_folder, run_simulation
    from cityvitals.sim.run import parse_duration

    folder = home / "demo-city"
    if not (folder / "truth.json").exists():
        say(f"simulating the demo city (seed {seed}, {sensors:,} sensors, {duration}, {scenario}) into {folder}")
        run_simulation(folder, scenario=scenario, duration=duration, seed=seed, city_sensors=sensors,
                       city_districts=districts)
    if not store.units.levels():
        say("loading the city: layers, grid, sensors, assets")
        load_folder(store, folder, readings=False)
    source = ReplaySource(folder)
    history_end = source.start + timedelta(seconds=parse_duration(history, "--history"))
    status = store.readings.status()
    resume = max(history_end, _parse(status["readings_to"])) if status.get("readings_to") else history_end
    runner = LocalRunner(store, source, lambda: resume)
    say(f"replaying history up to {resume.isoformat()} through ingest, signs and watch")
    runner.step(resume)
    return source, runner, resume


def _parse(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


def demo(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port for the dashboard and API.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    speed: Annotated[float, typer.Option(min=1, max=100_000, help="Simulated seconds per wall second (144 = a day in 10 min).")] = 144,
    seed: Annotated[int, typer.Option(help="Simulator seed: the same seed gives the same city.")] = 7,
    sensors: Annotated[int, typer.Option(min=100, max=200_000, help="Sensors in the demo city.")] = 5000,
    districts: Annotated[int, typer.Option(min=1, max=30, help="Districts in the demo city.")] = 7,
    duration: Annotated[str, typer.Option(help="Simulated time in total (e.g. 1d).")] = "1d",
    history: Annotated[str, typer.Option(help="Simulated time loaded before going live (e.g. 3h).")] = "3h",
    scenario: Annotated[str, typer.Option(help="Scenarios, comma-separated.")] = DEFAULT_SCENARIO,
    once: Annotated[bool, typer.Option("--once", help="Load the history, print the city and exit (no server).")] = False,
    tiles: Annotated[Optional[str], typer.Option(help="Raster tile URL template ({z}/{x}/{y}) under the map; default none (offline).", envvar="CITYVITALS_TILES")] = None,
    home: Home = None,
    json: Json = False,
) -> None:
    """Run the simulated city live with the API and dashboard (or --once: load, print, exit)."""
    from cityvitals.home import announce_server, resolve_home, withdraw_server
    from cityvitals.runtime import SimClock

    home_dir = resolve_home(home)
    say = (lambda msg: None) if json else (lambda msg: err_console.print(f"[dim]{msg}[/dim]"))
    store = open_store_cli(str(home_dir))
    try:
        source, runner, resume = prepare_demo(store, home_dir, seed=seed, sensors=sensors, districts=districts,
                                              duration=duration, scenario=scenario, history=history, say=say)
        if once:
            _print_city(store, json)
            return
        clock = SimClock(resume, speed=speed, end=source.end)
        runner.clock = clock
        announce_server(home_dir, f"http://{host}:{port}")  # other commands cannot open the file now
        _serve_live(store, runner, clock, host=host, port=port, source=source, tiles=tiles)
    finally:
        withdraw_server(home_dir)
        store.close()


def _serve_live(store, runner, clock, *, host: str, port: int, source, tiles: str | None = None) -> None:
    import uvicorn

    from cityvitals.api import create_app

    key = store.users.rotate("demo") if store.users.get("demo") else store.users.add("demo", "admin", actor="demo")
    app = create_app(store, clock=clock, tiles=tiles)
    runner.start()
    # Plain echo, not rich: a wrapped URL cannot be clicked or copied.
    typer.echo(
        f"cityvitals demo: the city runs from {clock().isoformat()} to {source.end.isoformat()} at {clock.speed:g}x speed\n"
        f"dashboard: http://{host}:{port}/#key={key}\n"
        f"API docs:  http://{host}:{port}/api/v1/docs   (user 'demo', role admin, key {key})\n"
        "stop with Ctrl-C",
        err=True,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        runner.stop()


def _print_city(store, json: bool) -> None:
    from cityvitals.signs import health
    from cityvitals.space import tree

    status = store.status()
    city = health(store)
    if json:
        emit_json({"status": status, "health": {k: city.get(k) for k in ("unit", "at", "index", "categories")}})
        return
    view = Tree("[bold]the city / 城市[/bold]")
    for root in tree(store, max_depth=2, grid=False):
        _add(view, root)
    console.print(view)
    console.print(f"health of {city.get('unit')} at {city.get('at')}: [bold]{city.get('index')}[/bold] / 100")
    q = status.get("quarantined", {})
    console.print(
        f"units {status.get('units')} · sensors {status.get('sensors', 0):,} · readings {status.get('readings', 0):,}"
        f" · quarantined {sum(q.values()):,} · open alerts {status.get('alerts_open', status.get('alerts', '–'))}"
    )


def _add(parent: Tree, node: dict) -> None:
    pop = f" · pop {node['population']:,.0f}" if node.get("population") else ""
    cells = f" · {node['grid_cells']} grid cells" if node.get("grid_cells") else ""
    branch = parent.add(f"{node['name']} [dim]({node['level']} {node['code']}{pop}{cells})[/dim]")
    for child in node.get("children") or []:
        _add(branch, child)
