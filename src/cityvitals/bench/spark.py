"""``cityvitals bench spark``: the pipeline's throughput on Spark local[1] and local[2], and on
the local engine in the same run, over the same simulated files into PostgreSQL.

Why these three: the Spark job validates on its executors (``mapInArrow``, one task per
file), stores and runs signs on its driver, and runs the watch's detectors on its executors
(a stateful operator keyed by groups of sensor kinds, its state in Spark's state store), so
what Spark adds or costs per micro-batch (file discovery, offsets, commits and state in the
checkpoints, the handoff file between the two queries, the validated rows and the verdicts
to the driver as Arrow, two PostgreSQL transactions) is the difference from the local
engine, and local[1] vs local[2] shows what a second executor core buys when a micro-batch
holds two files (``files_per_batch``; the local engine takes the same files per step) and
the watch has two groups. CPU is reported for the driver (this Python process), for Spark
(the JVM and its Python workers) and for the PostgreSQL backends separately; the machine is
shared.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import psutil
import typer

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _jvm_cpu() -> float:
    """CPU of every process below this one: the JVM and the executors' Python workers
    (with the workers that already ended, counted in their parent's ``children_*``)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _backend_cpu(admin_url: str, app: str, seen: dict[int, float] | None = None) -> float | None:
    """CPU seconds so far of the PostgreSQL backends serving ``app`` (same host only): the
    store's share of the work, which neither the driver's nor the JVM's CPU includes.

    ``seen`` keeps each backend's latest figure across calls, so a backend that has ended
    (the Spark job's two queries each have their own connection, one after the other) still
    counts with what it had used when last seen."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        pids = [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app]).fetchall()]
    seen = {} if seen is None else seen
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        seen[pid] = max(seen.get(pid, 0.0), t.user + t.system)
    return sum(seen.values()) if seen else None


def _schema(admin_url: str, home: Path, city: Path) -> tuple[str, str]:
    import psycopg

    from cityvitals.sim import load_folder
    from cityvitals.store import open_store

    schema = "cv_bench_spark_" + uuid.uuid4().hex[:8]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    url = f"{admin_url}?options=-csearch_path%3D{schema}&application_name={schema}"
    with open_store(home, url=url, migrate=True) as store:
        load_folder(store, city, readings=False)
    return schema, url


def run(*, sensors: int = 1000, duration: str = "4h", seed: int = 11, masters: tuple[str, ...] = ("local[1]", "local[2]"),
        admin_url: str = PG_ADMIN, workdir: str | None = None, files_per_batch: int = 2, warmup: bool = True) -> dict:
    import psycopg

    from cityvitals.bench._machine import machine
    from cityvitals.runtime import LocalRunner
    from cityvitals.runtime.files import FileSource
    from cityvitals.sim import run_simulation
    from cityvitals.spark import session, stream_job
    from cityvitals.store import open_store

    tmp = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cv-bench-spark-"))
    city = tmp / "city"
    if not (city / "city.json").exists():
        run_simulation(city, scenario="water_main_burst", duration=duration, seed=seed, city_sensors=sensors,
                       city_districts=3, fmt="ndjson")
    src = tmp / "stream"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    for i, f in enumerate(sorted((city / "readings").glob("part-*.ndjson"))):
        shutil.copyfile(f, src / f.name)
        os.utime(src / f.name, (1_700_000_000 + 60 * i,) * 2)
    home = tmp / "home"
    schemas: list[str] = []
    out: dict = {"machine": machine(), "sensors": sensors, "duration": duration, "files": len(list(src.iterdir())),
                 "files_per_batch": files_per_batch, "load_average": list(os.getloadavg()),
                 "date": datetime.now(timezone.utc).date().isoformat(), "runs": {}}
    try:
        schema, url = _schema(admin_url, home, city)
        schemas.append(schema)
        t0, c0 = time.perf_counter(), time.process_time()
        accepted = 0
        with open_store(home, url=url) as store:
            source = FileSource(src, files_per_batch=files_per_batch)
            runner = LocalRunner(store, source, lambda: datetime.now(timezone.utc), event_time=True)
            while not source.done():
                accepted += runner.step().accepted
            pg_cpu = _backend_cpu(admin_url, schema)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out["runs"]["local engine"] = {"readings": accepted, "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                                       "store_cpu_seconds": _round(pg_cpu),
                                       "readings_per_s": round(accepted / wall),
                                       "readings_per_cpu_s": round(accepted / (cpu + (pg_cpu or 0.0)))}
        if warmup:
            # The JVM outlives a session (py4j keeps it), so the first measured master would
            # pay the JIT's warm-up alone: one file through Spark first, not counted.
            one = tmp / "warmup"
            shutil.rmtree(one, ignore_errors=True)
            one.mkdir()
            first = sorted(src.iterdir())[0]
            shutil.copyfile(first, one / first.name)
            schema, url = _schema(admin_url, home, city)
            schemas.append(schema)
            s0 = time.perf_counter()
            spark = session(masters[0])
            try:
                stream_job(spark, str(one), url, str(tmp / f"ckpt-{schema}"), query="warmup", home=str(home))
            finally:
                spark.stop()
            out["warmup_s"] = round(time.perf_counter() - s0, 1)
        for master in masters:
            schema, url = _schema(admin_url, home, city)
            schemas.append(schema)
            s0 = time.perf_counter()
            spark = session(master)
            startup = time.perf_counter() - s0
            j0 = _jvm_cpu()
            pg: list = [None]
            backends: dict[int, float] = {}

            def sample(_report, app=schema, pg=pg, backends=backends) -> None:  # a backend lives as long as its query
                pg[0] = _backend_cpu(admin_url, app, backends)

            try:
                res = stream_job(spark, str(src), url, str(tmp / f"ckpt-{schema}"), query="bench", home=str(home),
                                 on_batch=sample, on_watch=sample, files_per_batch=files_per_batch)
                actual = spark.sparkContext.master
            finally:
                jvm = _jvm_cpu() - j0
                spark.stop()
            d = res.to_dict()
            out["runs"][f"spark {master}"] = {
                "master": actual, "readings": d["accepted"], "store_cpu_seconds": _round(pg[0]), "seconds": d["seconds"], "driver_cpu_seconds": d["driver_cpu_seconds"],
                "jvm_cpu_seconds": round(jvm, 2), "session_start_s": round(startup, 1),
                "readings_per_s": round(d["accepted"] / d["seconds"]),
                "readings_per_cpu_s": round(d["accepted"] / (d["driver_cpu_seconds"] + jvm + (pg[0] or 0.0))),
                "stage_seconds_in_batches": round(sum(b.seconds for b in res.batches), 2),
                "watch_sink_seconds": round(sum(w.seconds for w in res.watch), 2),
                "ingest_query_seconds": d.get("ingest_seconds"), "watch_query_seconds": d.get("watch_seconds"),
                "ingest_batch_ms": d.get("ingest_trigger_ms"), "watch_batch_ms": d.get("watch_trigger_ms"),
                "watch_groups": d["watch_groups"], "watch_series": d["watch_series"],
                "watch_state_bytes": d["watch_state_bytes"],
                "watch_state_bytes_per_series": round(d["watch_state_bytes"] / max(d["watch_series"], 1)),
            }
        out["load_average_after"] = list(os.getloadavg())
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for schema in schemas:
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if not workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def bench_spark(
    sensors: Annotated[int, typer.Option(min=100, help="Sensors in the simulated city.")] = 1000,
    duration: Annotated[str, typer.Option(help="Simulated time (one NDJSON file per hour).")] = "4h",
    files_per_batch: Annotated[int, typer.Option(min=1, help="Files per micro-batch (and per local engine step).")] = 2,
    warmup: Annotated[bool, typer.Option(help="Warm the JVM with one file through Spark first (not counted).")] = True,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 11,
    store: Annotated[str, typer.Option(help="PostgreSQL database (a fresh schema per run, dropped after).")] = PG_ADMIN,
    workdir: Annotated[str | None, typer.Option(help="Keep the files here (default: a temp dir).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object for scripts.")] = False,
) -> None:
    """Readings/s through every stage into PostgreSQL: Spark local[1], local[2] and the local engine."""
    import json as _json

    res = run(sensors=sensors, duration=duration, seed=seed, admin_url=store, workdir=workdir,
              files_per_batch=files_per_batch, warmup=warmup)
    if json:
        typer.echo(_json.dumps(res))
        return
    typer.echo(f"{res['sensors']:,} sensors, {res['duration']}, {res['files']} files, on {res['machine']['cpu']} "
               f"({res['machine']['cores']} cores)")
    for name, r in res["runs"].items():
        cpu = r.get("cpu_seconds", (r.get("driver_cpu_seconds", 0) + r.get("jvm_cpu_seconds", 0)))
        extra = f", session start {r['session_start_s']} s (not counted)" if "session_start_s" in r else ""
        typer.echo(f"  {name:16s} {r['readings']:,} readings in {r['seconds']} s = {r['readings_per_s']:,} readings/s "
                   f"({r['readings_per_cpu_s']:,} per CPU-s of this process, Spark and PostgreSQL; CPU here and in Spark {cpu:.1f} s; "
                   f"PostgreSQL backend {r['store_cpu_seconds']} s){extra}")
