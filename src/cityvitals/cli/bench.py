"""``cityvitals bench``: measured figures for docs/benchmarks.md, each with its baseline."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from cityvitals.cli._common import Json, console, emit_json

app = typer.Typer(help="Benchmarks: measure a stage end to end against a baseline run in the same process.",
                  no_args_is_help=True)


@app.command("ingest")
def ingest(
    readings: Annotated[int, typer.Option(min=1000, help="Readings in the generated NDJSON file.")] = 5_000_000,
    sensors: Annotated[int, typer.Option(min=100, help="Registered sensors.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    workdir: Annotated[Optional[str], typer.Option(help="Where to write the file and stores (default: a temp dir).")] = None,
    json: Json = False,
) -> None:
    """Readings/s from NDJSON file to durable store on one core, with DuckDB read_json as the baseline."""
    from cityvitals.bench.ingest import run

    with console.status("generating and ingesting…"):
        result = run(readings=readings, sensors=sensors, seed=seed, workdir=workdir)
    if json:
        emit_json(result)
        return
    t = Table("measure", "value", title="bench ingest (one core)")
    r = result["report"]
    t.add_row("readings in file", f"{result['readings']:,} ({result['file_mb']} MB)")
    t.add_row("cityvitals: file → durable store", f"{result['cityvitals_s']} s = {result['cityvitals_readings_per_s']:,} readings/s")
    t.add_row("  per CPU-second", f"{result['cityvitals_readings_per_cpu_s']:,} readings/s")
    t.add_row("baseline: DuckDB read_json → table", f"{result['baseline_duckdb_read_json_s']} s = {result['baseline_readings_per_s']:,} readings/s")
    t.add_row("  per CPU-second", f"{result['baseline_readings_per_cpu_s']:,} readings/s")
    t.add_row("accepted / duplicates", f"{r['accepted']:,} / {r['duplicates']:,}")
    t.add_row("quarantined", ", ".join(f"{k} {v:,}" for k, v in r["quarantined"].items()))
    t.add_row("peak RSS", f"{result['peak_rss_mb']} MB")
    console.print(t)


@app.command("dispose")
def dispose(
    cases: Annotated[int, typer.Option(min=10, help="Cases taken through the whole workflow.")] = 2000,
    stored: Annotated[int, typer.Option(min=1000, help="Cases stored before the Open311 list is timed.")] = 1_000_000,
    queries: Annotated[int, typer.Option(min=1, help="Open311 list queries per kind of filter.")] = 20,
    json: Json = False,
) -> None:
    """Cases per second through the full workflow, and Open311 list latency over many stored cases."""
    from cityvitals.bench.dispose import bench_dispose

    with console.status("running the case workflow and Open311 queries…"):
        result = bench_dispose(n_cases=cases, stored=stored, queries=queries)
    if json:
        emit_json(result)
        return
    t = Table("measure", "value", title="bench dispose")
    for key, value in result.items():
        t.add_row(str(key), str(value))
    console.print(t)


def _register() -> None:
    """Benchmarks owned by other stages live next to them; the CLI only lists them."""
    from cityvitals.bench.api import bench_api
    from cityvitals.bench.diagnose import bench_diagnose
    from cityvitals.bench.live_signs import bench_live_signs
    from cityvitals.bench.mqtt import bench_mqtt
    from cityvitals.bench.mqtt_share import bench_mqtt_share
    from cityvitals.bench.share import bench_share
    from cityvitals.bench.signs import bench_signs
    from cityvitals.bench.simulate import bench_simulate
    from cityvitals.bench.spark import bench_spark
    from cityvitals.bench.watch import bench_watch

    app.command("simulate")(bench_simulate)
    app.command("signs")(bench_signs)
    app.command("watch")(bench_watch)
    app.command("share")(bench_share)
    app.command("diagnose")(bench_diagnose)
    app.command("api")(bench_api)
    app.command("mqtt")(bench_mqtt)
    app.command("mqtt-share")(bench_mqtt_share)
    app.command("live-signs")(bench_live_signs)
    app.command("spark")(bench_spark)



_register()
