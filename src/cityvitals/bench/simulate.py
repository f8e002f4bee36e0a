"""``cityvitals bench simulate``: how fast the simulator streams readings to Parquet, in how much memory.

The figure is readings generated per second of wall time and per CPU-second (per
core), with the resident memory sampled through the run, against a baseline measured
in the same process: writing the same number of rows of plain random numbers with
NumPy + pyarrow alone (same schema, same row groups), i.e. the cost of the file
format with no model at all.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import psutil
import typer

from cityvitals.cli._common import Json, console, emit_json


class _RssSampler:
    """Peak resident set size sampled every 50 ms on a thread (the run's own peak, not the process's)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> _RssSampler:
        self.start = self.proc.memory_info().rss
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _baseline(out: Path, n_sensors: int, steps: int, block: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pa.array([f"S{i:06d}" for i in range(n_sensors)])
    schema = pa.schema([("sensor_id", pa.dictionary(pa.int32(), pa.string())), ("ts", pa.timestamp("ms", tz="UTC")),
                        ("value", pa.float64())])
    rng = np.random.default_rng(0)
    w0, c0 = time.perf_counter(), _cpu()
    writer = pq.ParquetWriter(out / "baseline.parquet", schema, compression="zstd", compression_level=1,
                              use_dictionary=["sensor_id"], store_schema=False)
    rows = 0
    for k0 in range(0, steps, block):
        t = min(block, steps - k0)
        idx = np.tile(np.arange(n_sensors, dtype=np.int32), t)
        ts = 1_721_001_600_000 + np.repeat(np.arange(k0, k0 + t, dtype=np.int64) * 60_000, n_sensors)
        val = np.round(rng.standard_normal(n_sensors * t) * 100) / 100
        writer.write_table(pa.table({"sensor_id": pa.DictionaryArray.from_arrays(pa.array(idx), ids),
                                     "ts": pa.array(ts, type=pa.timestamp("ms", tz="UTC")), "value": val}),
                           row_group_size=1_000_000)
        rows += len(idx)
    writer.close()
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    return {"rows": rows, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "rows_per_second": round(rows / wall), "rows_per_cpu_second": round(rows / max(cpu, 1e-9))}


def bench_simulate(
    sensors: Annotated[int, typer.Option("--sensors", help="Sensors in the benchmark city.")] = 100_000,
    hours: Annotated[float, typer.Option("--hours", help="Simulated hours at one reading per minute (24 = the full-day target).")] = 1.0,
    scenario: Annotated[str, typer.Option("--scenario", help="Scenarios to run while measuring.")] = "rainstorm,water_main_burst,sensor_faults",
    keep: Annotated[Path | None, typer.Option("--keep", help="Write into this folder and keep it (default: a temporary folder).")] = None,
    json_out: Json = False,
) -> None:
    """Readings generated per second (per core) and peak memory while streaming to Parquet, with a baseline."""
    from cityvitals.sim.city import generate_city, write_city
    from cityvitals.sim.run import _block_steps, run_simulation

    if hours <= 0:
        raise typer.BadParameter("--hours must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="cv-bench-sim-")) if keep is None else keep
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        w0 = time.perf_counter()
        city = generate_city(1, sensors=sensors)
        write_city(city, tmp)
        n = len(city.sensors.ids)
        del city
        city_s = time.perf_counter() - w0
        steps = int(round(hours * 60))
        with _RssSampler() as mem:
            c0, w1 = _cpu(), time.perf_counter()
            summary = run_simulation(tmp, scenario=scenario, duration=hours * 3600, seed=1, interval=60.0, fmt="parquet",
                                     write_reports=False)
            cpu, wall = _cpu() - c0, time.perf_counter() - w1
        size = sum(p.stat().st_size for p in (tmp / "readings").iterdir())
        base_dir = tmp / "baseline"
        base_dir.mkdir(exist_ok=True)
        base = _baseline(base_dir, n, steps, _block_steps(n, 60))
        readings = summary["readings"]
        result = {
            "sensors": n,
            "hours": hours,
            "readings": readings,
            "city_seconds": round(city_s, 3),
            "run_seconds": round(wall, 3),
            "run_cpu_seconds": round(cpu, 3),
            "readings_per_second": round(readings / wall),
            "readings_per_cpu_second": round(readings / max(cpu, 1e-9)),
            "cores": psutil.cpu_count(),
            "parquet_bytes": size,
            "bytes_per_reading": round(size / max(readings, 1), 2),
            "rss_before_run_mb": round(mem.start / 2**20, 1),
            "rss_peak_during_run_mb": round(mem.peak / 2**20, 1),
            "rss_growth_mb": round((mem.peak - mem.start) / 2**20, 1),
            "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "baseline_numpy_pyarrow": base,
            "speed_vs_baseline": round(readings / wall / max(base["rows_per_second"], 1), 3),
            "full_day_estimate_seconds": round(wall / hours * 24, 1),
        }
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    if json_out:
        emit_json(result)
    else:
        console.print(
            f"{result['readings']:,} readings from {n:,} sensors ({hours:g} h) in {result['run_seconds']} s: "
            f"{result['readings_per_second']:,}/s wall, {result['readings_per_cpu_second']:,}/s per core; "
            f"RSS {result['rss_before_run_mb']} → peak {result['rss_peak_during_run_mb']} MB; "
            f"baseline (NumPy+pyarrow random rows) {base['rows_per_second']:,}/s; a full day ≈ {result['full_day_estimate_seconds']} s")
