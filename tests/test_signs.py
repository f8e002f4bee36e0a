"""Stage signs on synthetic data: windows, levels (hysteresis, minimum duration), roll-up,
health explanation, incremental == full recompute, late data, CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from cityvitals.cli import app as cli_app
from cityvitals.cli.health import health as health_cmd
from cityvitals.ingest import Ingestor, ingest_frame
from cityvitals.signs import compute_signs, health, load_catalog, recompute
from cityvitals.signs.catalog import Bound, Condition
from cityvitals.signs.health import health_index
from cityvitals.signs.levels import assign_levels
from cityvitals.signs.rollup import rollup
from cityvitals.signs.windows import window_values
from cityvitals.store import open_store

UTC = timezone.utc
T0 = datetime(2024, 6, 1, tzinfo=UTC)
CAT = load_catalog()


def readings(values, *, minutes=5, sensor="s1", unit="u1", start=T0):
    return pl.DataFrame({
        "sensor_id": [sensor] * len(values), "unit_code": [unit] * len(values),
        "ts": [start + timedelta(minutes=minutes * i) for i in range(len(values))], "value": [float(v) for v in values],
    })


def us(dt):
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000)


# ---------------------------------------------------------------- windows

def test_tumbling_mean_and_window_bounds():
    r = readings(range(24))  # two hours of 5-minute readings
    out = window_values(r, CAT["env.pm25"], utc_offset_hours=8)
    assert out["value"].to_list() == [5.5, 17.5]
    assert out["window_start"].to_list() == [us(T0), us(T0 + timedelta(hours=1))]
    assert out["window_end"].to_list() == [us(T0 + timedelta(hours=1)), us(T0 + timedelta(hours=2))]
    assert out["n"].to_list() == [12, 12]


def test_sliding_sum_combines_sensors_by_max():
    ind = CAT["wx.rain_1h"]  # 1 h sum every 5 min, per sensor, then max over sensors
    r = pl.concat([readings([1] * 12, sensor="a"), readings([2] * 6, sensor="b")])
    out = window_values(r, ind, utc_offset_hours=8)
    at = {row["window_start"]: row["value"] for row in out.iter_rows(named=True)}
    assert at[us(T0)] == 12.0  # a: 12 x 1 mm beats b: 6 x 2 mm = 12 -> max 12
    assert at[us(T0 + timedelta(minutes=30))] == 6.0  # a: 6, b: 0 readings left in [00:30, 01:30)
    assert at[us(T0 - timedelta(minutes=55))] == 2.0  # only the first slot of each: max(1, 2)
    assert len(out) == 12 + 11


def test_hours_filter_wraps_midnight_and_leq():
    ind = CAT["env.noise_night"]  # [22, 6) local, UTC+8
    start = datetime(2024, 6, 1, 13, tzinfo=UTC)  # 21:00 local
    r = readings([60, 60, 70, 70], minutes=30, start=start)  # 21:00, 21:30 (day), 22:00, 22:30 (night)
    out = window_values(r, ind, utc_offset_hours=8)
    assert out["value"].to_list() == [pytest.approx(70.0)]
    leq = window_values(readings([60, 70]), CAT["env.noise_day"], utc_offset_hours=0)  # 00:00 UTC = day? filter at offset 0
    assert leq.is_empty() or leq["value"][0] == pytest.approx(10 * np.log10((1e6 + 1e7) / 2))


def test_parametrised_aggs_min_count_and_local_days():
    share = window_values(readings([0.10, 0.20, 0.15, 0.12], minutes=360, start=T0 - timedelta(hours=8)), CAT["fac.water_pressure_compliance"], utc_offset_hours=8)
    assert share["value"].to_list() == [50.0]  # 2 of 4 readings >= 0.14 MPa; one local day
    assert share["window_start"][0] == us(T0 - timedelta(hours=8))  # local midnight
    o3 = window_values(readings([100] * 5, minutes=60), CAT["env.o3_8h"], utc_offset_hours=8)
    assert o3.is_empty()  # 5 hourly readings: no 8-h window reaches the 6 valid hours it needs
    ent = window_values(readings([0, 2, 2, 1, 2], minutes=10), CAT["fac.elevator_entrapments"], utc_offset_hours=8)
    assert ent["value"].max() == 3.0


# ---------------------------------------------------------------- levels

def frame(values):
    return pl.DataFrame({"unit_code": ["u"] * len(values), "window_start": list(range(len(values))), "value": [float(v) for v in values]})


def test_levels_plain_thresholds_all_directions():
    up = assign_levels(frame([10, 80, 120, 160, 40]), CAT["env.pm25"].thresholds)["level"].to_list()
    assert up == [0, 1, 2, 3, 0]
    down = assign_levels(frame([0.2, 0.15, 0.13, 0.05]), CAT["fac.water_pressure_end"].thresholds)["level"].to_list()
    assert down == [0, 1, 2, 3]
    band = assign_levels(frame([0.5, 1.7, 0.04, 5.0]), CAT["fac.tap_free_chlorine"].thresholds)["level"].to_list()
    assert band == [0, 1, 2, 3]


def test_hysteresis_stops_flapping():
    conds = {"warning": Condition("gte", (Bound(95.0),))}
    hovering = [94, 96, 94, 96, 94.5, 92, 96]
    plain = assign_levels(frame(hovering), conds)["level"].to_list()
    assert plain == [0, 2, 0, 2, 0, 0, 2]  # flaps
    steady = assign_levels(frame(hovering), conds, hysteresis=2)["level"].to_list()
    assert steady == [0, 2, 2, 2, 2, 0, 2]  # leaves only below 93


def test_minimum_duration_ignores_spikes():
    conds = {"alarm": Condition("gte", (Bound(100.0),))}
    out = assign_levels(frame([50, 120, 50, 120, 120, 120, 50]), conds, min_windows=2)
    assert out["level"].to_list() == [0, 0, 0, 0, 3, 3, 0]
    assert out["schmitt"].to_list() == [0, 3, 0, 3, 3, 3, 0]


def test_levels_resume_from_context_rows():
    conds = {"warning": Condition("gte", (Bound(95.0),))}
    f = frame([94, 94]).with_columns(pl.Series("ctx", [True, False]), pl.Series("ctx_schmitt", [2, None], dtype=pl.Int8))
    assert assign_levels(f, conds, hysteresis=2)["level"].to_list() == [2, 2]  # still above 93: stays warning


def test_catalogue_hysteresis_and_duration_on_equipment_temperature():
    ind = CAT["fac.equipment_temperature"]  # warning >= 95, hysteresis 2, min 30 min = 2 windows of 15 min
    out = assign_levels(frame([90, 96, 94, 96, 96, 94, 92]), ind.thresholds, hysteresis=ind.hysteresis, min_windows=ind.min_windows)
    assert out["level"].to_list() == [0, 1, 2, 2, 2, 2, 1]  # attention also needs 2 windows


# ---------------------------------------------------------------- roll-up

@pytest.mark.parametrize("rule,expected", [
    ("max", 30.0), ("min", 10.0), ("sum", 60.0), ("mean", 20.0),
    ("mean_population", (10 * 100 + 20 * 300 + 30 * 600) / 1000), ("mean_area", (10 * 1 + 20 * 1 + 30 * 2) / 4),
    ("share_at_level", 100 * 2 / 3),
])
def test_rollup_rules(rule, expected):
    leaf = pl.DataFrame({"indicator": ["x"] * 3, "unit_code": ["a", "b", "c"], "window_start": [0] * 3, "window_end": [1] * 3,
                         "value": [10.0, 20.0, 30.0], "level": [0, 2, 3]})
    closure = pl.DataFrame({"unit_code": ["a", "b", "c", "a", "b", "c"], "ancestor": ["d", "d", "d", "city", "city", "city"]})
    units = pl.DataFrame({"unit_code": ["a", "b", "c"], "population": [100.0, 300.0, 600.0], "area_m2": [1.0, 1.0, 2.0]})
    rules = pl.DataFrame({"indicator": ["x"], "rule": [rule], "rule_level": [2]})
    out = rollup(leaf, closure, units, rules).sort("unit_code")
    assert out["unit_code"].to_list() == ["city", "d"]
    assert out["value"].to_list() == [pytest.approx(expected)] * 2


# ---------------------------------------------------------------- health

def test_health_explanation_adds_up_across_categories():
    latest = pl.DataFrame({
        "unit_code": ["u"] * 5 + ["v"],
        "indicator": ["env.aqi", "env.o3_1h", "fac.water_pressure_end", "fac.tap_turbidity", "wx.rain_1h", "env.aqi"],
        "value": [210.0, 100.0, 0.12, 0.2, 10.0, 20.0], "level": [3, 0, 2, 0, 0, 0],
    })
    idx, exp = health_index(latest, CAT)
    for (unit, scope), part in exp.group_by("unit_code", "scope"):
        index = idx.filter((pl.col("unit_code") == unit) & (pl.col("scope") == scope))["value"][0]
        assert 100 - part["points"].sum() == pytest.approx(index)
    u = {r["scope"]: r["value"] for r in idx.filter(pl.col("unit_code") == "u").iter_rows(named=True)}
    assert u["environment"] == pytest.approx(100 - 100 * 3 / 4)
    assert u["facilities"] == pytest.approx(100 - 60 * 1 / 2)
    assert u["weather"] == 100
    cw = {"environment": 1, "facilities": 1.5, "weather": 1}
    assert u["overall"] == pytest.approx(sum(cw[c] * u[c] for c in cw) / sum(cw.values()))
    assert idx.filter(pl.col("unit_code") == "v")["value"].to_list() == [100.0, 100.0]


# ---------------------------------------------------------------- the store: incremental == full

UNITS = pl.DataFrame({
    "code": ["c", "c.d1", "c.d2", "g1", "g2", "g3", "g4"],
    "level": ["city", "district", "district", "grid", "grid", "grid", "grid"],
    "depth": [0, 1, 1, 2, 2, 2, 2],
    "parent_code": [None, "c", "c", "c.d1", "c.d1", "c.d2", "c.d2"],
    "population": [None, None, None, 1000.0, 3000.0, 2000.0, 500.0],
    "area_m2": [None, None, None, 1e4, 1e4, 2e4, 1e4],
})
KINDS = {"pm25": "ug/m3", "equipment_temperature": "degC", "water_pressure": "MPa", "rainfall": "mm"}


def synthetic(seed=7, hours=8):
    rng = np.random.default_rng(seed)
    n = hours * 12
    ts = [T0 + timedelta(minutes=5 * i) for i in range(n)]
    rows = []
    for g in ("g1", "g2", "g3", "g4"):
        base = {"pm25": 60 + 50 * np.sin(np.arange(n) / 15), "equipment_temperature": 93 + 3 * np.sin(np.arange(n) / 4),
                "water_pressure": 0.15 + 0.02 * np.sin(np.arange(n) / 10), "rainfall": np.clip(rng.normal(3, 2, n), 0, None)}
        for kind, series in base.items():
            vals = series + rng.normal(0, 1 if kind != "water_pressure" else 0.003, n) * (kind != "rainfall")
            vals = np.clip(vals, 0, None)
            rows.append(pl.DataFrame({"sensor_id": f"{g}.{kind}", "ts": ts, "value": vals}))
    return pl.concat(rows).sort("ts")


def make_store(home):
    store = open_store(home)
    store.units.upsert(UNITS)
    store.sensors.upsert(pl.DataFrame([
        {"id": f"{g}.{k}", "kind": k, "unit": u, "lon": 121.4, "lat": 31.2, "unit_code": g}
        for g in ("g1", "g2", "g3", "g4") for k, u in KINDS.items()
    ]))
    return store


def ingest(store, df, minute):
    clock = lambda: datetime(2024, 6, 2, tzinfo=UTC) + timedelta(minutes=minute)  # noqa: E731
    rep = ingest_frame(store, df, ingestor=Ingestor(store, clock=clock))
    assert rep.accepted == df.height


def assert_same(a: pl.DataFrame, b: pl.DataFrame) -> None:
    """Same keys, levels, trigger states and counts; values equal to float rounding (1e-12
    relative: a sum over differently chunked batches may differ in the last bit)."""
    assert a.height == b.height
    exact = [c for c in a.columns if c != "value"]
    assert a.select(exact).equals(b.select(exact))
    np.testing.assert_allclose(a["value"].to_numpy(), b["value"].to_numpy(), rtol=1e-12, atol=0)


def test_incremental_equals_full_recompute(tmp_path):
    data = synthetic()
    cuts = [T0 + timedelta(hours=h, minutes=m) for h, m in ((2, 35), (5, 10))]
    batches = [data.filter(pl.col("ts") < cuts[0]), data.filter((pl.col("ts") >= cuts[0]) & (pl.col("ts") < cuts[1])),
               data.filter(pl.col("ts") >= cuts[1])]
    with make_store(tmp_path / "inc") as a:
        for i, b in enumerate(batches):
            ingest(a, b, i)
            rep = compute_signs(a)
            assert rep.readings == b.height and not rep.late
        inc = a.signs.all_values()
        assert a.signs.status()["health_snapshots"] == 3  # one snapshot per run, at its watermark
        again = compute_signs(a)  # nothing new: nothing touched
        assert again.readings == 0 and again.values == 0
    with make_store(tmp_path / "full") as b:
        ingest(b, data, 0)
        recompute(b)
        full = b.signs.all_values()
    assert inc.height > 1000
    assert set(inc["unit_code"].unique()) == set(UNITS["code"])
    assert_same(inc, full)
    # the hovering equipment temperature really exercised hysteresis (level differs from raw threshold)
    eq = full.filter(pl.col("indicator") == "fac.equipment_temperature")
    assert eq["level"].n_unique() >= 2


def test_late_readings_counted_then_recompute_includes_them(tmp_path):
    data = synthetic(hours=6)
    early = data.filter(pl.col("ts") < T0 + timedelta(hours=1))
    on_time = data.join(early, on=["sensor_id", "ts"], how="anti")
    with make_store(tmp_path / "late") as s:
        ingest(s, on_time, 0)
        compute_signs(s)
        before = s.signs.values("env.pm25", "g1")
        ingest(s, early, 1)  # the first hour arrives 5 hours late: its windows are closed
        rep = compute_signs(s)
        assert rep.late.get("env.pm25", 0) == early.filter(pl.col("sensor_id") == "g1.pm25").height * 4
        assert s.signs.values("env.pm25", "g1").equals(before)
        assert s.signs.state()["late"]["env.pm25"] == rep.late["env.pm25"]
        recompute(s, T0 - timedelta(days=1), T0 + timedelta(hours=2))  # every window holding a late reading
        after = s.signs.all_values()
    with make_store(tmp_path / "all") as f:
        ingest(f, data, 0)
        compute_signs(f)
        assert_same(f.signs.all_values(), after)


def test_cli_run_values_and_health(tmp_path):
    home = tmp_path / "cli"
    with make_store(home) as s:
        ingest(s, synthetic(hours=3), 0)
    runner = CliRunner()
    res = runner.invoke(cli_app, ["signs", "run", "--home", str(home), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["values"] > 0 and "liv.hotline_count" in rep["no_source_yet"]
    res = runner.invoke(cli_app, ["signs", "values", "--indicator", "env.pm25", "--unit", "c", "--from", "2024-06-01T00:00:00Z",
                                  "--to", "2024-06-01T02:00:00Z", "--home", str(home), "--json"])
    assert res.exit_code == 0, res.output
    vals = json.loads(res.stdout)["values"]
    assert [v["window_start"] for v in vals] == ["2024-06-01T00:00:00+00:00", "2024-06-01T01:00:00+00:00"]
    assert set(vals[0]) == {"window_start", "window_end", "value", "level"}
    app = typer.Typer()
    app.command()(health_cmd)
    res = runner.invoke(app, ["--unit", "c.d1", "--at", "2024-06-01T02:00:00Z", "--explain", "--json", "--home", str(home)])
    assert res.exit_code == 0, res.output
    h = json.loads(res.stdout)
    lost = sum(r["points"] for r in h["explain"] if r["scope"] == "overall")
    assert h["index"] == pytest.approx(100 - lost, abs=0.01)
    res = runner.invoke(app, ["--unit", "nowhere", "--home", str(home)])
    assert res.exit_code != 0
    with open_store(home) as s:
        assert health(s, "c", datetime(2024, 6, 1, 2, tzinfo=UTC))["unit"] == "c"


def test_threshold_parameters_by_zone_class_and_season():
    from cityvitals.signs.engine import _param_columns

    ind = CAT["env.noise_night"]  # GB 3096-2008 night limits: class 1 -> 45, class 4a -> 55 dB(A); default 50
    units = pl.DataFrame({"unit_code": ["quiet", "road", "plain"],
                          "props": ['{"zone_class": "1"}', '{"zone_class": "4a"}', None]})
    f = pl.DataFrame({"unit_code": ["quiet", "road", "plain"], "window_start": [0, 0, 0], "value": [52.0, 52.0, 52.0]})
    f = _param_columns(f, ind, CAT, units)
    assert f["p_limit"].to_list() == [45.0, 55.0, 50.0]
    lv = assign_levels(f, ind.thresholds).sort("unit_code")
    assert dict(zip(lv["unit_code"], lv["level"])) == {"quiet": 2, "road": 0, "plain": 1}  # 52 >= 45+5; < 55; >= 50
    from dataclasses import replace

    seasonal = replace(ind, params={"limit": {"by": "season", "values": {"summer": 50, "winter": 40}, "default": 45}})
    g = pl.DataFrame({"unit_code": ["u", "u"], "window_start": [us(T0), us(datetime(2024, 1, 10, tzinfo=UTC))], "value": [1.0, 1.0]})
    assert _param_columns(g, seasonal, CAT, units)["p_limit"].to_list() == [50.0, 40.0]


def test_bench_signs_small_runs_and_reports_baselines():
    app = typer.Typer()
    from cityvitals.bench.signs import bench_signs

    app.command()(bench_signs)
    res = CliRunner().invoke(app, ["--small", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["polars_threads"] == 1
    assert out["throughput"]["ours_tumbling_1h_readings_per_s"] > 0 and out["throughput"]["duckdb_sql_baseline_readings_per_s"] > 0
    assert out["city"]["core_rows"] > out["city"]["units"] and out["city"]["store_rows"] > 0


# ---------------------------------------------------------------- windows == brute-force reference

def reference_windows(r: pl.DataFrame, ind, off_h: float) -> pl.DataFrame:
    """Every reading copied into each of the k windows that hold it, then plain group-bys."""
    off = int(off_h * 3600e6)
    k = ind.window.k
    size, slide = int(ind.window.size.total_seconds() * 1e6), int(ind.window.slide.total_seconds() * 1e6)
    t = pl.col("ts").cast(pl.Datetime("us", "UTC")).cast(pl.Int64)
    df = r.with_columns(t.alias("t"))
    if ind.hours:
        h = ((pl.col("t") + off) // 3_600_000_000) % 24
        lo, hi = ind.hours
        df = df.filter((h >= lo) & (h < hi) if lo < hi else (h >= lo) | (h < hi))
    b = ((pl.col("t") + off) // slide) * slide - off
    df = df.with_columns(pl.lit(list(range(k))).alias("j")).explode("j").with_columns((b - pl.col("j") * slide).alias("window_start"))
    v, a = pl.col("value"), ind.agg_arg if ind.agg_arg is not None else 0.0
    val = {
        "mean": v.mean(), "sum": v.sum(), "max": v.max(), "min": v.min(), "count": pl.len().cast(pl.Float64),
        "leq": 10 * (10 ** (v / 10)).mean().log10(), "count_eq": (v == a).sum().cast(pl.Float64),
        "count_ge": (v >= a).sum().cast(pl.Float64), "share_ge": 100 * (v >= a).mean(), "share_le": 100 * (v <= a).mean(),
    }[ind.agg]
    keys = ["unit_code", "sensor_id"] if ind.sensor_combine else ["unit_code"]
    out = df.group_by(keys + ["window_start"]).agg(val.alias("value"), pl.len().alias("n")).filter(pl.col("n") >= ind.min_count)
    if ind.sensor_combine:
        comb = {"max": pl.col("value").max(), "min": pl.col("value").min(), "mean": pl.col("value").mean(), "sum": pl.col("value").sum()}
        out = out.group_by("unit_code", "window_start").agg(comb[ind.sensor_combine].alias("value"), pl.col("n").sum())
    return out.with_columns((pl.col("window_start") + size).alias("window_end")).sort("unit_code", "window_start")


def random_readings(seed: int, n: int, *, sensors: int, units: int, span_h: float, values=(0.0, 10.0), integers=False):
    rng = np.random.default_rng(seed)
    sid = rng.integers(0, sensors, n)
    ts = T0 + pl.Series(rng.integers(0, int(span_h * 3600e6), n)).cast(pl.Duration("us"))
    vals = rng.integers(int(values[0]), int(values[1]) + 1, n).astype(float) if integers else rng.uniform(*values, n)
    return pl.DataFrame({"sensor_id": [f"s{i}" for i in sid], "unit_code": [f"u{i % units:02d}" for i in sid],
                         "ts": ts, "value": vals}).unique(["sensor_id", "ts"])


@pytest.mark.parametrize("iid,kw", [
    ("wx.rain_1h", dict(n=3000, sensors=40, units=7, span_h=10)),          # sliding 12 x 5 min, per sensor then max
    ("wx.rain_1h", dict(n=200, sensors=30, units=9, span_h=72)),           # sparse: the copy-into-k-windows path
    ("wx.rain_6h", dict(n=4000, sensors=12, units=5, span_h=30)),          # 36 slides
    ("wx.rain_24h", dict(n=2000, sensors=6, units=3, span_h=80)),          # daily, hourly slide, local days
    ("env.o3_8h", dict(n=600, sensors=10, units=4, span_h=40, values=(20, 250))),   # min_count 6
    ("fac.elevator_entrapments", dict(n=1500, sensors=20, units=6, span_h=8, values=(0, 3), integers=True)),
    ("fac.water_pressure_compliance", dict(n=1500, sensors=20, units=6, span_h=100, values=(0.08, 0.3))),
    ("env.noise_night", dict(n=2000, sensors=20, units=5, span_h=50, values=(35, 80))),
    ("env.pm25", dict(n=2500, sensors=25, units=8, span_h=12, values=(5, 300))),
    ("fac.water_pressure_end", dict(n=2500, sensors=25, units=8, span_h=3, values=(0.05, 0.3))),
])
@pytest.mark.parametrize("seed", [1, 2])
def test_windows_equal_bruteforce_reference(iid, kw, seed):
    ind = CAT[iid]
    r = random_readings(seed, **kw)
    got = window_values(r, ind, utc_offset_hours=8)
    ref = reference_windows(r, ind, 8).filter(pl.col("value").is_finite())
    assert got["unit_code"].to_list() == ref["unit_code"].to_list()
    assert got["window_start"].to_list() == ref["window_start"].to_list()
    assert got["window_end"].to_list() == ref["window_end"].to_list()
    assert got["n"].to_list() == ref["n"].to_list()
    np.testing.assert_allclose(got["value"].to_numpy(), ref["value"].to_numpy(), rtol=1e-9, atol=1e-12)
    # restricting to some windows gives exactly those rows
    only = ref.select("unit_code", "window_start").sample(fraction=0.3, seed=seed).sort("unit_code", "window_start")
    part = window_values(r, ind, utc_offset_hours=8, only=only)
    assert part.select("unit_code", "window_start").equals(only)
    # integer (dense id) unit keys give the same rows as strings
    ids = window_values(r.with_columns(pl.col("unit_code").str.slice(1).cast(pl.Int32)), ind, utc_offset_hours=8)
    assert ids["value"].equals(got["value"]) and ids["unit_code"].dtype == pl.Int32


def test_rollup_on_a_tree_equals_every_member_under_every_ancestor():
    """The depth-by-depth roll-up (tree) equals a plain closure join + group-by, for every
    rule, with direct units at several depths and units without population."""
    rng = np.random.default_rng(5)
    parent = {"city": None}
    for d in range(4):
        parent[f"d{d}"] = "city"
        for s_ in range(3):
            parent[f"d{d}.s{s_}"] = f"d{d}"
            for g in range(int(rng.integers(1, 6))):
                parent[f"d{d}.s{s_}.g{g}"] = f"d{d}.s{s_}"
    codes = list(parent)
    rows = []
    for code in codes:
        anc, p = [], parent[code]
        while p is not None:
            anc.append(p)
            p = parent[p]
        rows += [(code, a) for a in anc]
    closure = pl.DataFrame(rows, schema=["unit_code", "ancestor"], orient="row")
    units = pl.DataFrame({"unit_code": codes, "population": [None if rng.random() < 0.2 else float(rng.integers(0, 900)) for _ in codes],
                          "area_m2": rng.uniform(0, 5, len(codes))})
    direct = [c for c in codes if c.count(".") == 2 or rng.random() < 0.2]  # grids, plus some streets/districts
    rule_names = ["max", "min", "mean", "sum", "mean_population", "mean_area", "share_at_level"]
    leaf = pl.DataFrame([
        (f"x{r}", u, w, w + 10, float(rng.normal(50, 20)), int(rng.integers(0, 4)))
        for r in range(len(rule_names)) for u in direct for w in (0, 10, 20) if rng.random() < 0.8
    ], schema=["indicator", "unit_code", "window_start", "window_end", "value", "level"], orient="row")
    rules = pl.DataFrame({"indicator": [f"x{r}" for r in range(len(rule_names))], "rule": rule_names, "rule_level": [2] * 7})
    got = rollup(leaf, closure, units, rules).sort("indicator", "unit_code", "window_start")
    j = leaf.join(closure, on="unit_code").join(units, on="unit_code", how="left").join(rules, on="indicator").with_columns(
        pl.col("population").fill_null(0.0), pl.col("area_m2").fill_null(0.0))
    v = pl.col("value")

    def wmean(w):
        return pl.when(pl.col(w).sum() > 0).then((v * pl.col(w)).sum() / pl.col(w).sum()).otherwise(v.mean())

    aggs = {"max": v.max(), "min": v.min(), "mean": v.mean(), "sum": v.sum(), "mean_population": wmean("population"),
            "mean_area": wmean("area_m2"), "share_at_level": 100.0 * (pl.col("level") >= 2).mean()}
    ref = pl.concat([
        j.filter(pl.col("rule") == r).group_by("indicator", "ancestor", "window_start")
        .agg(pl.col("window_end").max(), aggs[r].alias("value"), pl.len().cast(pl.Int64).alias("n"))
        for r in rule_names
    ]).rename({"ancestor": "unit_code"}).sort("indicator", "unit_code", "window_start")
    assert got.select("indicator", "unit_code", "window_start", "window_end", "n").equals(
        ref.select("indicator", "unit_code", "window_start", "window_end", "n"))
    np.testing.assert_allclose(got["value"].to_numpy(), ref["value"].to_numpy(), rtol=1e-12)


def test_health_defaults_to_the_watermark_and_drops_stale_values(tmp_path):
    with make_store(tmp_path / "h") as s:
        ingest(s, synthetic(hours=3), 0)
        compute_signs(s)
        wm = s.signs.state()["watermark_us"]
        h = health(s, "g1")
        assert h["at"] == (T0 + timedelta(microseconds=wm - us(T0))).isoformat()  # the watermark, not a future window end
        counted = {r["indicator"] for r in h["explain"]}
        assert {"env.pm25", "fac.water_pressure_end"} <= counted and not h["stale"]
        later = health(s, "g1", T0 + timedelta(microseconds=wm - us(T0)) + timedelta(hours=1))
        counted = {r["indicator"] for r in later["explain"]}
        stale = {r["indicator"]: r for r in later["stale"]}
        # 5-min water pressure ended > 3 windows (15 min) ago: listed, not counted; the hourly PM2.5 still counts
        assert "fac.water_pressure_end" in stale and "fac.water_pressure_end" not in counted
        assert stale["fac.water_pressure_end"]["age_s"] > stale["fac.water_pressure_end"]["limit_s"] == 900
        assert "env.pm25" in counted and "env.pm25" not in stale
