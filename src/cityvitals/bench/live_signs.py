"""``cityvitals bench live-signs``: what one live signs run costs as the current hour fills.

The server runs the signs stage every few seconds (``LiveStages``). Without a session a
run recomputes each touched window from all its stored readings, so its cost grows with
how much of the window is already stored; with one (``signs.session``) it reads only the
readings stored since the last run. This bench measures both on PostgreSQL, each on a
scratch schema of its own in turn: the sensors of ``bench mqtt`` (``_register``: pm25
sensors, 20 per grid unit, feeding the hourly ``env.pm25`` and the AQI derived from it),
each reporting once per ``period`` seconds; after every ``batch`` seconds of data the
batch is stored (COPY, stamped like an ingest batch) and one run follows. Per run it
records CPU seconds of this process (every thread: Polars works in a pool) and of the
PostgreSQL backend serving the stage (``/proc/<pid>/stat``), the readings the run read,
and the session's memory. Reported at the fill levels ``--at`` (minutes into the hour).

The data hour starts on a local hour boundary, so the first batch opens the window and
the last one closes it. It stops by itself and drops its schemas.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Annotated

import numpy as np
import typer

BASE = datetime(2026, 5, 4, 16, 0, tzinfo=timezone.utc)  # 00:00 in the catalogue's UTC+8


def _readings(sensors: int, lo: float, hi: float, period: float, unit_codes, seed: int):
    """Readings with ts in [lo, hi) seconds after BASE: each sensor once per ``period``, at its own phase."""
    import pyarrow as pa

    phase = (np.arange(sensors) * 7919 % int(period * 1000)) / 1000.0  # spread over the period, deterministic
    first = np.ceil((lo - phase) / period)
    last = np.ceil((hi - phase) / period)
    counts = np.maximum(last - first, 0).astype(np.int64)
    sid = np.repeat(np.arange(sensors), counts)
    k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(first, counts)
    t = phase[sid] + k * period
    rng = np.random.default_rng(seed)
    values = np.round(40 + 10 * np.sin(t / 600.0) + rng.normal(0, 1.0, len(t)), 2)
    base_us = int(BASE.timestamp() * 1e6)
    return pa.table({
        "sensor_id": pa.array([f"B{s:05d}" for s in sid], pa.string()),
        "ts": pa.array(base_us + np.round(t * 1e6).astype(np.int64), pa.timestamp("us", "UTC")),
        "value": pa.array(values, pa.float64()), "quality": pa.nulls(len(t), pa.string()),
        "kind": pa.array(["pm25"] * len(t), pa.string()),
        "unit_code": pa.array(np.asarray(unit_codes, dtype=object)[sid], pa.string()),
    })


def _mode(pg: str, *, session: bool, sensors: int, period: float, batch: float, minutes: float, at: list[float]) -> dict:
    import pyarrow as pa

    from cityvitals.bench.mqtt import _backend_pid, _proc_cpu, _register, _schema, _self_cpu
    from cityvitals.signs import compute_signs, load_catalog
    from cityvitals.signs.session import SignsSession
    from cityvitals.store.pg import PostgresStore

    cat = load_catalog()
    runs = []
    with _schema(pg) as url:
        store = PostgresStore(url, migrate_schema=True)
        try:
            _register(store, sensors)
            grids = max(1, sensors // 20)
            unit_codes = [f"g{(s % grids):04d}" for s in range(sensors)]
            pid = _backend_pid(store)
            sess = SignsSession() if session else None
            stamp = BASE
            steps = int(round(minutes * 60 / batch))
            for i in range(steps):
                r = _readings(sensors, i * batch, (i + 1) * batch, period, unit_codes, seed=i)
                stamp = max(stamp + timedelta(microseconds=1), BASE + timedelta(seconds=(i + 1) * batch))
                store.readings.bulk_load(r.append_column("ingested_at", pa.array([stamp] * r.num_rows, pa.timestamp("us", "UTC"))))
                c0, p0, w0 = _self_cpu(), _proc_cpu([pid]), time.perf_counter()
                rep = compute_signs(store, catalog=cat, session=sess)
                c1, p1, w1 = _self_cpu(), _proc_cpu([pid]), time.perf_counter()
                st = dict(sess.stats) if sess is not None else {}
                runs.append({
                    "minute": round((i + 1) * batch / 60, 3), "new_readings": r.num_rows,
                    "read_readings": st.get("new_readings", 0) + st.get("filled_readings", 0) if sess is not None else None,
                    "process_cpu_s": c1 - c0, "postgresql_cpu_s": p1 - p0, "wall_s": w1 - w0, "values": rep.values,
                    "session_bytes": sess.nbytes() if sess is not None else None,
                })
        finally:
            store.close()
    picked = []
    for m in at:
        near = min(runs, key=lambda x: abs(x["minute"] - m))
        picked.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in near.items()})
    return {"runs": len(runs), "at": picked,
            "total_cpu_s": round(sum(x["process_cpu_s"] + x["postgresql_cpu_s"] for x in runs), 2),
            "peak_session_bytes": max((x["session_bytes"] or 0) for x in runs) if session else None}


def run(pg: str, *, sensors: int = 20_000, period: float = 60.0, batch: float = 60.0, minutes: float = 60.0,
        at: tuple[float, ...] = (5, 15, 30, 45, 60)) -> dict:
    """Both modes, the store path first, then the session."""
    import os

    from cityvitals.bench._machine import machine

    out = {"machine": machine(), "load_average": os.getloadavg(), "sensors": sensors, "period_s": period, "batch_s": batch,
           "minutes": minutes}
    out["store_path"] = _mode(pg, session=False, sensors=sensors, period=period, batch=batch, minutes=minutes, at=list(at))
    out["session"] = _mode(pg, session=True, sensors=sensors, period=period, batch=batch, minutes=minutes, at=list(at))
    out["load_average_after"] = os.getloadavg()
    return out


def bench_live_signs(
    pg: Annotated[str, typer.Option("--pg", help="PostgreSQL to make scratch schemas in.")] = "postgresql://postgres@127.0.0.1:5432/postgres",
    sensors: Annotated[int, typer.Option(help="pm25 sensors (20 per grid unit).")] = 20_000,
    period: Annotated[float, typer.Option(help="Seconds between two readings of a sensor.")] = 60.0,
    batch: Annotated[float, typer.Option(help="Seconds of data stored before each signs run.")] = 60.0,
    minutes: Annotated[float, typer.Option(help="Minutes of data (60: one whole hourly window).")] = 60.0,
    at: Annotated[str, typer.Option(help="Minutes into the hour to report, comma-separated.")] = "5,15,30,45,60",
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """CPU of one live signs run (process + PostgreSQL) as the hour fills: store path vs the session."""
    res = run(pg, sensors=sensors, period=period, batch=batch, minutes=minutes, at=tuple(float(x) for x in at.split(",")))
    if json_out:
        typer.echo(json.dumps(res))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("minute", "new readings", "store path: process + PostgreSQL CPU s", "session: process + PostgreSQL CPU s",
              "session: readings read", "session memory",
              title=f"bench live-signs ({sensors:,} sensors, a reading every {period:g} s, a run every {batch:g} s of data)")
    for a, b in zip(res["store_path"]["at"], res["session"]["at"]):
        t.add_row(f"{a['minute']:g}", f"{a['new_readings']:,}", f"{a['process_cpu_s']:.3f} + {a['postgresql_cpu_s']:.3f}",
                  f"{b['process_cpu_s']:.3f} + {b['postgresql_cpu_s']:.3f}", f"{b['read_readings']:,}",
                  f"{b['session_bytes'] / 2**20:.2f} MiB")
    t.add_row("all runs", "", f"{res['store_path']['total_cpu_s']:.2f}", f"{res['session']['total_cpu_s']:.2f}", "", "")
    Console().print(t)
    Console().print(f"load average before {res['load_average']}, after {res['load_average_after']}")
