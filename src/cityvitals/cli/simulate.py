"""``cityvitals simulate``: a digital-twin city with ground truth (city, run, load)."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Annotated

import typer

from cityvitals.cli._common import (
    Home,
    Store,
    Json,
    console,
    emit_json,
    open_store_cli,
    progress,
)

app = typer.Typer(help="Simulate a city: generate it, run scenarios with ground truth, load the result into a store.",
                  no_args_is_help=True)


@app.command("city")
def city(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the city into.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same city.")] = 1,
    districts: Annotated[int, typer.Option("--districts", help="Number of districts.")] = 7,
    centre: Annotated[str | None, typer.Option("--centre", help="LON,LAT of the centre (default central Shanghai 121.47,31.23).")] = None,
    sensors: Annotated[int, typer.Option("--sensors", help="Approximate number of sensors (every kind gets some).")] = 5000,
    resolution: Annotated[int, typer.Option("--resolution", help="H3 resolution of the grid units built when loading.")] = 9,
    json_out: Json = False,
) -> None:
    """Generate a city: district/street/community polygons, assets, dependency edges and sensors."""
    from cityvitals.sim.city import generate_city, parse_centre, write_city

    c = generate_city(seed, districts=districts, centre=parse_centre(centre), sensors=sensors, resolution=resolution)
    files = write_city(c, out)
    result = {"out": str(out), "files": files, **c.params}
    if json_out:
        emit_json(result)
    else:
        p = c.params
        console.print(f"city written to {out}: {p['counts']['district']} districts, {p['counts']['street']} streets, "
                      f"{p['counts']['community']} communities, {p['counts']['assets']} assets, {p['counts']['edges']} edges, "
                      f"{p['counts']['sensors']} sensors; population {p['population']:,}; {p['area_km2']} km²")


@app.command("run")
def run(
    out: Annotated[Path, typer.Option("--out", help="Output folder (the city is generated there first if missing).")],
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario names, comma-separated: quiet_day, rainstorm, water_main_burst, "
                                          "substation_overload, traffic_accident, gas_leak, manhole_displaced, air_pollution, "
                                          "stuck, drift, dropout, spikes, wrong_unit, sensor_faults.")] = "quiet_day",
    start: Annotated[str | None, typer.Option("--start", help="Start time, ISO 8601 (default 2024-07-15T00:00:00+08:00).")] = None,
    duration: Annotated[str, typer.Option("--duration", help="Simulated time span: 90s, 15m, 6h, 1d.")] = "1d",
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives byte-identical output.")] = 1,
    random_incidents: Annotated[int, typer.Option("--random-incidents", help="Add K incidents of random types.")] = 0,
    interval: Annotated[str, typer.Option("--interval", help="Reporting interval of every sensor.")] = "60s",
    fmt: Annotated[str, typer.Option("--format", help="Readings format: parquet or ndjson.")] = "parquet",
    bad_rate: Annotated[float, typer.Option("--bad-rate", help="Share of readings that are bad records of some kind.")] = 0.002,
    sensors: Annotated[int, typer.Option("--sensors", help="Sensors of the city when it has to be generated.")] = 5000,
    districts: Annotated[int, typer.Option("--districts", help="Districts of the city when it has to be generated.")] = 7,
    json_out: Json = False,
) -> None:
    """Run scenarios: stream readings, reports and truth.json into the folder."""
    from datetime import datetime

    from cityvitals.sim.run import parse_start, run_simulation

    t0 = parse_start(start)
    if t0 > datetime.now(UTC):
        typer.echo("warning: the start is in the future; ingest will quarantine those readings as future_timestamp", err=True)
    with progress("simulating", None, enabled=not json_out) as bar:
        def tick(done: int, total: int) -> None:
            bar.update(completed=done, total=total)

        result = run_simulation(out, scenario=scenario, start=start, duration=duration, seed=seed,
                                random_incidents=random_incidents, interval=interval, fmt=fmt, bad_rate=bad_rate,
                                city_sensors=sensors, city_districts=districts, progress=tick)
    if json_out:
        emit_json(result)
    else:
        console.print(f"{result['readings']:,} readings from {result['sensors']:,} sensors over {result['steps']} steps "
                      f"in {result['seconds']} s ({result['readings_per_second']:,}/s); {result['incidents']} incidents, "
                      f"{result['faults']} faults, {result['reports']} reports; truth in {out / 'truth.json'}")


@app.command("load")
def load(
    folder: Annotated[Path, typer.Argument(help="A folder written by `simulate run` (or `simulate city`).")],
    home: Home = None, store_url: Store = None,
    json_out: Json = False,
) -> None:
    """Load a simulated folder into the store: layers, grid, sensors, assets, readings; keep reports and truth."""
    from cityvitals.sim.load import load_folder

    store = open_store_cli(home, store_url)
    try:
        with progress("loading readings", None, enabled=not json_out) as bar:
            def tick(_what: str, done: int, total: int) -> None:
                bar.update(completed=done, total=total)

            result = load_folder(store, folder, progress=tick)
    finally:
        store.close()
    if json_out:
        emit_json(result)
    else:
        r = result["readings"]
        console.print(f"loaded {folder}: {result['sensors']['imported']} sensors, {result['grid'].get('cells')} grid cells, "
                      f"{result['assets']['assets']} assets; readings accepted {r['accepted']:,}, duplicates {r['duplicates']:,}, "
                      f"quarantined {sum(r['quarantined'].values()):,} {r['quarantined']}"
                      + ("" if "matches_truth" not in result else f"; matches truth: {result['matches_truth']}"))
