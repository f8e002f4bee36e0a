"""``cityvitals bench signs``: throughput of windowing + levels, and a whole-city recompute.

Two figures, each with a baseline measured in the same run:

1. readings/s through event-time windows and levels on ONE core: the measuring code runs
   in a subprocess started with ``POLARS_MAX_THREADS=1`` (Polars reads it once, at
   import) and DuckDB ``SET threads = 1``. Baseline: the same hourly mean per unit plus
   the same level CASE as one plain DuckDB SQL query.
2. the time to recompute every computable indicator for every unit of a city with
   40,625 grid units (Shanghai's unit-grid count) for one window: windows, derived
   indicators (AQI), levels, roll-up to streets, districts and the city, and the health
   index, on the pure core; plus the same through the store (``recompute``), first on a
   fresh store and then again on the same window (what recomputing a period costs on a store
   that has been computed before: the old values deleted, the units already numbered). Baseline:
   the per-unit, per-kind window aggregation as one DuckDB query.

Data are synthetic and seeded; ``--small`` shrinks everything for tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer

T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)


def _city(n_grids: int):
    """city -> 16 districts -> streets (~190 grids each) -> grids, with population and area."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(1)
    n_streets = max(16, n_grids // 190)
    districts = [f"D{d:02d}" for d in range(16)]
    streets = [f"{districts[s % 16]}.S{s:03d}" for s in range(n_streets)]
    grids = [f"{streets[g % n_streets]}.G{g:05d}" for g in range(n_grids)]
    units = pl.DataFrame({
        "code": ["SH", *districts, *streets, *grids],
        "level": ["city"] + ["district"] * 16 + ["street"] * n_streets + ["grid"] * n_grids,
        "depth": [0] + [1] * 16 + [2] * n_streets + [3] * n_grids,
        "parent_code": [None] + ["SH"] * 16 + [s.split(".")[0] for s in streets] + [g.rsplit(".", 1)[0] for g in grids],
        "population": [None] * (17 + n_streets) + rng.integers(200, 3000, n_grids).astype(float).tolist(),
        "area_m2": [None] * (17 + n_streets) + rng.uniform(5e3, 2e4, n_grids).tolist(),
    })
    return units, grids


def _closure(units):
    import polars as pl

    parent = units.select(pl.col("code").alias("unit_code"), pl.col("parent_code").alias("ancestor")).drop_nulls()
    out, step = [parent], parent
    while True:
        step = step.join(parent.rename({"unit_code": "ancestor", "ancestor": "up"}), on="ancestor").select("unit_code", pl.col("up").alias("ancestor"))
        if step.is_empty():
            break
        out.append(step)
    return pl.concat(out)


def _city_readings(grids: list[str], kinds: dict[str, tuple[float, float]]):
    """One reading per (grid, kind) at the window start: every windowed indicator sees it."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(2)
    frames = []
    for kind, (lo, hi) in kinds.items():
        frames.append(pl.DataFrame({
            "sensor_id": [f"{g}.{kind}" for g in grids], "unit_code": grids, "kind": kind,
            "ts": [T0] * len(grids), "value": rng.uniform(lo, hi, len(grids)),
        }))
    return pl.concat(frames)


def _core_city(readings, units, closure, cat) -> int:
    """Every computable indicator for every unit, one window, on the pure core; rows out."""
    import polars as pl

    from cityvitals.signs.engine import _param_columns
    from cityvitals.signs.dense import partition
    from cityvitals.signs.functions import evaluate, input_keys
    from cityvitals.signs.health import health_index
    from cityvitals.signs.levels import assign_levels
    from cityvitals.signs.rollup import rollup
    from cityvitals.signs.windows import US, bucket_expr, window_values

    # unit codes and indicator ids as Categorical, as the engine keeps them: integer joins and groups
    attrs = units.select(pl.col("code").cast(pl.Categorical).alias("unit_code"), "population", "area_m2", pl.lit(None, pl.String).alias("props"))
    closure = closure.cast({"unit_code": pl.Categorical, "ancestor": pl.Categorical})
    readings = readings.with_columns(pl.col("unit_code").cast(pl.Categorical))
    fresh: dict[str, pl.DataFrame] = {}
    by_kind = partition(readings, "kind")
    t0 = int((T0 - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() * US)
    off = int(cat.utc_offset_hours * 3600 * US)
    for ind in cat.computable():
        if ind.kinds:
            parts = [by_kind[k] for k in ind.kinds if k in by_kind]
            if not parts:
                continue
            x = pl.concat(parts)
            ws = int(bucket_expr(pl.lit(t0), ind, off).alias("w").pipe(lambda e: pl.select(e))["w"][0])  # the window holding t0
            v = window_values(x, ind, utc_offset_hours=cat.utc_offset_hours, between=(ws, ws + 1))  # as a recompute does
        else:
            ins = {d: fresh[d] for d in ind.inputs() if d in fresh}
            if not ins:
                continue
            keys = input_keys([f.select("unit_code", "window_start") for f in ins.values()])
            v = evaluate(ind, ins, keys, attrs.select("unit_code", "population"))
        fresh[ind.id] = v.with_columns(pl.lit(ind.id, pl.Categorical).alias("indicator"))
    rows = 0
    leveled = []
    for iid, v in fresh.items():
        ind = cat[iid]
        lv = assign_levels(_param_columns(v, ind, cat, attrs), ind.thresholds, hysteresis=ind.hysteresis, min_windows=ind.min_windows)
        leveled.append(lv.select("indicator", "unit_code", "window_start", "window_end", "value", "level"))
    leaf = pl.concat(leveled, how="vertical_relaxed")
    rules = pl.DataFrame({"indicator": list(cat), "rule": [i.rollup for i in cat.values()],
                          "rule_level": [i.rollup_level for i in cat.values()]}).cast({"rule_level": pl.Int8})
    rolled = rollup(leaf, closure, attrs, rules)
    rl = []
    for iid, part in partition(rolled, "indicator").items():
        ind = cat[iid]
        conds = ind.rollup_thresholds if ind.rollup == "share_at_level" else ind.thresholds
        rl.append(assign_levels(_param_columns(part, ind, cat, attrs), conds, hysteresis=ind.hysteresis).select(leaf.columns))
    allv = pl.concat([leaf, *rl], how="vertical_relaxed")
    idx, _ = health_index(allv.select("unit_code", "indicator", "value", "level"), cat)
    rows = allv.height + idx.height
    return rows


def _measure(small: bool) -> dict:
    """Runs inside the single-core subprocess; prints nothing, returns figures."""
    import duckdb
    import numpy as np
    import polars as pl

    from cityvitals.signs.catalog import load_catalog
    from cityvitals.signs.levels import assign_levels
    from cityvitals.signs.windows import window_values

    cat = load_catalog()
    out: dict = {"polars_threads": pl.thread_pool_size(), "small": small}
    # -- 1. readings/s through windows + levels ------------------------------------
    n = 200_000 if small else 2_000_000
    n_sensors = 1_000 if small else 5_000
    rng = np.random.default_rng(3)
    per = n // n_sensors
    sid = np.repeat(np.arange(n_sensors), per)
    ts = np.tile(np.arange(per) * 300_000_000, n_sensors) + int(T0.timestamp() * 1_000_000)
    r = pl.DataFrame({
        "sensor_id": pl.Series(sid).cast(pl.String), "unit_code": pl.Series(sid // 2).cast(pl.String),
        "ts": pl.Series(ts).cast(pl.Datetime("us", "UTC")), "value": rng.gamma(2.0, 40.0, len(sid)),
    })
    ind = cat["env.pm25"]
    rain = cat["wx.rain_1h"]

    cpu: dict[str, float] = {}  # CPU seconds beside wall seconds: on a shared machine wall time includes waiting

    def ours(indicator):
        t, c = time.perf_counter(), time.process_time()
        v = window_values(r, indicator, utc_offset_hours=8)
        lv = assign_levels(v, indicator.thresholds, hysteresis=indicator.hysteresis, min_windows=indicator.min_windows)
        cpu[indicator.id] = time.process_time() - c
        return time.perf_counter() - t, lv.height

    ours(ind)  # warm-up
    t_tumble, w_tumble = ours(ind)
    t_slide, w_slide = ours(rain)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.execute("SET TimeZone = 'UTC'")
    con.register("r_src", r.to_arrow())
    con.execute("CREATE TABLE r AS SELECT * FROM r_src")
    sql = """SELECT unit_code, ws, v, CASE WHEN v > 150 THEN 3 WHEN v > 115 THEN 2 WHEN v > 75 THEN 1 ELSE 0 END AS level
             FROM (SELECT unit_code, time_bucket(INTERVAL 1 hour, ts) ws, avg(value) v FROM r GROUP BY ALL)"""
    con.execute(sql).fetchall()
    t = time.perf_counter()
    c = time.process_time()
    con.execute(f"SELECT count(*) FROM ({sql})").fetchall()
    t_duck = time.perf_counter() - t
    cpu["duck"] = time.process_time() - c
    out["throughput"] = {
        "readings": n, "sensors": n_sensors,
        "ours_tumbling_1h_readings_per_s": n / t_tumble, "ours_tumbling_windows": w_tumble,
        "ours_sliding_1h_every_5m_readings_per_s": n / t_slide, "ours_sliding_windows": w_slide,
        "duckdb_sql_baseline_readings_per_s": n / t_duck,
        "cpu_ours_tumbling_readings_per_s": n / cpu[ind.id], "cpu_ours_sliding_readings_per_s": n / cpu[rain.id],
        "cpu_duckdb_sql_baseline_readings_per_s": n / cpu["duck"],
    }
    # -- 2. every indicator, every unit, one window -----------------------------------
    n_grids = 2_000 if small else 40_625
    units, grids = _city(n_grids)
    closure = _closure(units)
    kinds = {"pm25": (10, 200), "pm10": (20, 300), "so2": (2, 50), "no2": (10, 150), "co": (0.2, 3), "o3": (20, 250),
             "rainfall": (0, 5), "temperature": (20, 38), "wind_speed": (0, 20), "traffic_speed": (5, 80),
             "crowd_density": (0, 4), "waterlogging_depth": (0, 0.3), "gas_concentration": (0, 30), "noise": (40, 80),
             "water_pressure": (0.08, 0.3), "turbidity": (0, 2), "residual_chlorine": (0.05, 2), "elevator_status": (0, 2),
             "manhole_tilt": (0, 20), "road_occupancy": (0, 60), "equipment_temperature": (40, 110)}
    readings = _city_readings(grids, kinds)
    _core_city(readings.head(len(kinds) * 50), units, closure, cat)  # warm-up
    t, c = time.perf_counter(), time.process_time()
    rows = _core_city(readings, units, closure, cat)
    t_core = time.perf_counter() - t
    cpu["core"] = time.process_time() - c
    con.register("c_src", readings.to_arrow())
    con.execute("CREATE TABLE c AS SELECT * FROM c_src")
    t, c = time.perf_counter(), time.process_time()
    con.execute("SELECT count(*) FROM (SELECT unit_code, kind, time_bucket(INTERVAL 1 hour, ts), avg(value), max(value), min(value) "
                "FROM c GROUP BY ALL)").fetchall()
    t_duck_city = time.perf_counter() - t
    cpu["duck_city"] = time.process_time() - c
    store_s = None
    with tempfile.TemporaryDirectory() as home:
        from cityvitals.signs.engine import health_frames, recompute
        from cityvitals.store import open_store

        with open_store(home) as store:
            store.con.execute("SET threads = 1")
            store.units.upsert(units)
            # bench only: bulk-load synthetic readings straight into the store (ingest has its own bench)
            store.readings.bulk_load(readings.with_columns(pl.lit(T0).alias("ingested_at"), pl.lit(None, pl.String).alias("quality")))
            t, c = time.perf_counter(), time.process_time()
            rep = recompute(store, T0, T0 + timedelta(hours=1))  # the windows starting at T0: one per indicator (daily ones start at local midnight)
            store_s = time.perf_counter() - t
            cpu["store"] = time.process_time() - c
            # the same window again: what `signs recompute` costs on a store that has been
            # computed before (its 1.2M values deleted and rebuilt; the units already numbered)
            t, c = time.perf_counter(), time.process_time()
            again = recompute(store, T0, T0 + timedelta(hours=1))
            again_s = time.perf_counter() - t
            cpu["again"] = time.process_time() - c
            assert again.values + again.rolled_up == rep.values + rep.rolled_up
            # the health index of every unit from the values just written, stored as a snapshot
            t, c = time.perf_counter(), time.process_time()
            at = T0 + timedelta(hours=1)
            idx, explain = health_frames(store, cat, at)
            store.signs.write_health(at, idx, explain)
            health_s = time.perf_counter() - t
            cpu["health"] = time.process_time() - c
    out["city"] = {
        "grid_units": n_grids, "units": units.height, "indicators": len([i for i in cat.computable()]),
        "readings": readings.height, "core_seconds": t_core, "core_rows": rows, "store_recompute_seconds": store_s,
        "store_rows": rep.values + rep.rolled_up, "duckdb_sql_baseline_seconds": t_duck_city,
        "store_health_seconds": health_s, "health_units": idx["unit_code"].n_unique(),
        "cpu_core_seconds": cpu["core"], "cpu_store_recompute_seconds": cpu["store"],
        "store_recompute_again_seconds": again_s, "cpu_store_recompute_again_seconds": cpu["again"], "cpu_duckdb_sql_baseline_seconds": cpu["duck_city"],
        "cpu_store_health_seconds": cpu["health"],
    }
    return out


def bench_signs(
    small: Annotated[bool, typer.Option("--small", help="Small sizes (seconds), for tests and quick checks.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
) -> None:
    """Readings/s through windows + levels on one core, and a 40,625-unit city recompute, each vs plain DuckDB SQL."""
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    code = f"import json; from cityvitals.bench.signs import _measure; print(json.dumps(_measure({small!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        from cityvitals.errors import CityvitalsError

        raise CityvitalsError("bench signs failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if json_out:
        sys.stdout.write(json.dumps(res) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    tp, city = res["throughput"], res["city"]
    t = Table("measure", "cityvitals", "baseline (DuckDB SQL, 1 thread)", title=f"bench signs (one core; polars threads = {res['polars_threads']})")
    t.add_row(f"readings/s, 1-h tumbling mean + levels ({tp['readings']:,} readings)", f"{tp['ours_tumbling_1h_readings_per_s']:,.0f}",
              f"{tp['duckdb_sql_baseline_readings_per_s']:,.0f}")
    t.add_row("readings/s, 1-h window sliding every 5 min + levels", f"{tp['ours_sliding_1h_every_5m_readings_per_s']:,.0f}", "-")
    t.add_row(f"every indicator ({city['indicators']}), every unit ({city['units']:,}; {city['grid_units']:,} grids), one window: core",
              f"{city['core_seconds']:.3f} s", f"{city['duckdb_sql_baseline_seconds']:.3f} s (windows only)")
    t.add_row("same, through the store (recompute: read, compute, level, roll up, write)", f"{city['store_recompute_seconds']:.3f} s", "-")
    t.add_row("the same window recomputed again (its values deleted and rebuilt)", f"{city['store_recompute_again_seconds']:.3f} s", "-")
    t.add_row(f"then the health index of every unit ({city['health_units']:,}), stored", f"{city['store_health_seconds']:.3f} s", "-")
    t.add_row("CPU seconds (core / store recompute / again / store health / baseline): wall time includes waiting on a shared machine",
              f"{city['cpu_core_seconds']:.3f} / {city['cpu_store_recompute_seconds']:.3f} / {city['cpu_store_recompute_again_seconds']:.3f}"
              f" / {city['cpu_store_health_seconds']:.3f} s",
              f"{city['cpu_duckdb_sql_baseline_seconds']:.3f} s")
    Console().print(t)
