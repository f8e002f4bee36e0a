"""``cityvitals bench watch``: detector throughput and state size, with river as the baseline.

What is measured: every ``watch`` detector (threshold, level shift, seasonal, time-to-
breach, sensor health with neighbours, and the combined anomaly score) updating on
``series`` series at once, one point per series per step, for ``steps`` steps; points
per second of CPU time (= per core: the NumPy kernels here run on one thread) and the
checkpoint size per series. Baseline in the same run: river's HalfSpaceTrees (behind a
MinMaxScaler, as river's docs use it), one model per series as a city would need, on a
subset of the series because it is ~100x slower.
"""

from __future__ import annotations

import json as _json
import pickle
import time
from typing import Annotated

import numpy as np
import typer


def _data(series: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 100, series)
    amp = base * rng.uniform(0, 0.3, series)
    t = 1_700_000_000 + np.arange(steps, dtype=np.int64) * 60
    phase = (t % 86400) / 86400.0
    x = base[None, :] + amp[None, :] * np.sin(2 * np.pi * phase)[:, None] + rng.normal(0, 1, (steps, series)) * base * 0.02
    return t, x


def _detectors(series: int):
    from cityvitals.watch.anomaly import AnomalyScoreDetector
    from cityvitals.watch.breach import BreachForecaster
    from cityvitals.watch.health import SensorHealthDetector
    from cityvitals.watch.runner import HEALTH
    from cityvitals.watch.seasonal import SeasonalDetector
    from cityvitals.watch.shift import LevelShiftDetector
    from cityvitals.watch.threshold import ThresholdDetector

    dets = {
        "threshold": ThresholdDetector(levels=(80, 90, 100), min_duration=300),
        "shift": LevelShiftDetector(),
        "seasonal": SeasonalDetector(),
        "breach": BreachForecaster(level=100.0),
        "health": SensorHealthDetector(valid_range=(0, 1000), **HEALTH),  # as the runner configures it
        "anomaly": AnomalyScoreDetector(),
    }
    # neighbours: each series with the 4 next ids (a ring), like sensors along one street
    ids = np.arange(series)
    dets["health"].set_neighbours({int(i): [int((i + k) % series) for k in (1, 2, -1, -2)] for i in ids})
    # every series of a kind with other units (unit slips looked for from half a jump: the costlier
    # case), half of a kind sharing one regime across the city (as the runner sets them from the kinds)
    dets["health"].set_units(ids, [3.6, 1.609344])
    dets["health"].set_shared(ids[::2])
    return dets


def run_bench(series: int = 100_000, steps: int = 30, baseline_series: int = 50, seed: int = 0) -> dict:
    t, x = _data(series, steps, seed)
    dets = _detectors(series)
    sid = np.arange(series, dtype=np.int64)
    per_det = {k: 0.0 for k in dets}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for k in range(steps):
        ts = np.full(series, t[k], dtype=np.int64)
        for name, det in dets.items():
            c = time.process_time()
            det.update_many(sid, ts, x[k])
            per_det[name] += time.process_time() - c
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    points = series * steps
    blob_bytes = {name: len(det.to_bytes()) / series for name, det in dets.items()}
    out = {
        "series": series, "steps": steps, "points": points,
        "points_per_s_per_core": points / cpu, "points_per_s_wall": points / wall,
        "detectors": list(dets),
        "per_detector_points_per_s": {k: points / v for k, v in per_det.items() if v > 0},
        "bytes_per_series": {k: det.bytes_per_series for k, det in dets.items()},
        "bytes_per_series_total": sum(det.bytes_per_series for det in dets.values()),
        "checkpoint_bytes_per_series": sum(blob_bytes.values()),
    }
    out["baseline"] = _river(t, x[:, :baseline_series]) if baseline_series > 0 else {"name": "none"}
    if out["baseline"].get("points_per_s_per_core"):
        out["speedup_vs_baseline"] = out["points_per_s_per_core"] / out["baseline"]["points_per_s_per_core"]
    return out


def _river(t: np.ndarray, x: np.ndarray, warmup: int = 300) -> dict:
    try:
        from river import anomaly, preprocessing
    except ImportError:
        return {"name": "river.anomaly.HalfSpaceTrees", "error": "river is not installed (pip install river)"}
    steps, n = x.shape
    models = [preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=i) for i in range(n)]
    # HalfSpaceTrees builds its trees lazily and is ~50x slower on its first points: warm it up
    # on earlier points of the same series, untimed, so the figure is its steady-state speed.
    warm = np.random.default_rng(1).normal(x.mean(axis=0), x.std(axis=0) + 1e-9, (warmup, n))
    for k in range(warmup):
        for i, m in enumerate(models):
            xi = {"x": float(warm[k, i])}
            m.score_one(xi)
            m.learn_one(xi)
    c0 = time.process_time()
    for k in range(steps):
        for i, m in enumerate(models):
            xi = {"x": float(x[k, i])}
            m.score_one(xi)
            m.learn_one(xi)
    cpu = time.process_time() - c0
    return {
        "name": "river.anomaly.HalfSpaceTrees (MinMaxScaler | HST, defaults), one model per series",
        "series": n, "points": steps * n, "points_per_s_per_core": steps * n / cpu,
        "bytes_per_series": float(np.mean([len(pickle.dumps(m)) for m in models[:10]])),
    }


def bench_watch(
    series: Annotated[int, typer.Option(help="Number of series watched at once.")] = 100_000,
    steps: Annotated[int, typer.Option(help="Points per series (one per step).")] = 30,
    baseline_series: Annotated[int, typer.Option(help="Series given to the river baseline (one model each).")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic series.")] = 0,
    json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object for scripts.")] = False,
) -> None:
    """Points scored per second per core with all watch detectors, and bytes per series; river HalfSpaceTrees as baseline."""
    res = run_bench(series, steps, baseline_series, seed)
    if json:
        typer.echo(_json.dumps(res))
        return
    b = res["baseline"]
    typer.echo(
        f"watch, all detectors ({', '.join(res['detectors'])}) on {res['series']:,} series x {res['steps']} points:\n"
        f"  {res['points_per_s_per_core']:,.0f} points/s per core ({res['points_per_s_wall']:,.0f}/s wall)\n"
        f"  state {res['bytes_per_series_total']} B per series (checkpoint {res['checkpoint_bytes_per_series']:.0f} B)\n"
        + "".join(f"    {k}: {v:,.0f} points/s, {res['bytes_per_series'][k]} B\n" for k, v in res["per_detector_points_per_s"].items())
        + (f"baseline {b['name']}: {b['points_per_s_per_core']:,.0f} points/s per core, {b['bytes_per_series']:,.0f} B per series"
           if "points_per_s_per_core" in b else f"baseline: {b.get('error')}")
    )
