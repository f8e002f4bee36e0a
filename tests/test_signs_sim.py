"""Vital signs against the simulator's ground truth (truth.json).

A small city (about 1,000 sensors, 3 districts) runs six hours with a water-main burst and
a rainstorm, and a quiet day. The indicator levels must cross where and when the truth
says its thresholds were crossed (the catalogue's thresholds are the same standards as the
truth's: CJ/T 316 0.14 MPa / 0.10 MPa for network pressure, Shanghai's rainstorm signals
35 / 50 mm in one hour), nowhere else, and the health index must drop and name why.

Time tolerance: truth times are the nominal simulation steps; a reading's timestamp adds
the sensor's phase and jitter (under one interval). A tumbling value must turn in the
window that holds the crossing; a sliding window's first crossing must end within one
slide (plus one interval) after it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl
import pytest

from cityvitals.signs import compute_signs, health, load_catalog
from cityvitals.sim import load_folder, run_simulation
from cityvitals.store import open_store

LEVEL = {"attention": 1, "warning": 2, "alarm": 3}


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    base = tmp_path_factory.mktemp("sim")
    run_simulation(base / "city", scenario="water_main_burst,rainstorm", duration="6h", seed=3,
                   city_sensors=1000, city_districts=3, write_reports=False)
    truth = json.loads((base / "city" / "truth.json").read_text("utf-8"))
    store = open_store(base / "home")
    load_folder(store, base / "city")
    rep = compute_signs(store)
    assert rep.values > 0
    yield store, truth
    store.close()


def _incident(truth: dict, kind: str) -> dict:
    return next(i for i in truth["incidents"] if i["type"] == kind)


def _threshold(inc: dict, text: str) -> dict:
    return next(t for t in inc["thresholds"] if text in t["threshold"])


def _unit_of(store) -> dict[str, str]:
    with store.lock:
        rows = store.con.execute("SELECT id, unit_code FROM sensors").fetchall()
    return dict(rows)


def _first_at_level(store, indicator: str, unit: str, level: int):
    v = store.signs.values(indicator, unit).filter(pl.col("level") >= level)
    return None if v.is_empty() else (v["window_start"][0], v["window_end"][0])


@pytest.mark.parametrize("text,level", [("< 0.14 MPa", "warning"), ("< 0.10 MPa", "alarm")])
def test_burst_pressure_crosses_in_the_window_of_the_truth(storm, text, level):
    store, truth = storm
    thr = _threshold(_incident(truth, "water_main_burst"), text)
    assert thr["sensors_crossed"] >= 2
    unit_of = _unit_of(store)
    for sid, when in thr["sensors"].items():
        first = _first_at_level(store, "fac.water_pressure_end", unit_of[sid], LEVEL[level])
        assert first is not None, (sid, level)
        start, end = first
        t = _t(when["first"])
        assert start <= t + timedelta(minutes=1) and t < end + timedelta(minutes=5), (sid, t, start, end)


def test_pressure_elsewhere_never_reaches_warning(storm):
    store, truth = storm
    inc = _incident(truth, "water_main_burst")
    crossed = set(_threshold(inc, "< 0.14 MPa")["sensors"])
    unit_of = _unit_of(store)
    with store.lock:
        pressure = [r[0] for r in store.con.execute("SELECT id FROM sensors WHERE kind = 'water_pressure'").fetchall()]
    hit_units = {unit_of[s] for s in crossed}
    others = {unit_of[s] for s in pressure if s not in crossed} - hit_units
    assert len(others) > 20
    v = store.signs.all_values().filter((pl.col("indicator") == "fac.water_pressure_end") & pl.col("unit_code").is_in(list(others)))
    assert v.height > 1000 and v["level"].max() < LEVEL["warning"]


@pytest.mark.parametrize("text,level", [("rain_1h >= 35 mm", "attention"), ("rain_1h >= 50 mm", "warning")])
def test_rainstorm_signal_levels_at_the_truth_time(storm, text, level):
    store, truth = storm
    thr = _threshold(_incident(truth, "rainstorm"), text)
    assert thr["sensors_crossed"] >= 2
    unit_of = _unit_of(store)
    for sid, when in thr["sensors"].items():
        first = _first_at_level(store, "wx.rain_1h", unit_of[sid], LEVEL[level])
        assert first is not None, (sid, level)
        _, end = first  # the 1-h window sliding every 5 min that first holds the crossing
        t = _t(when["first"])
        assert abs((end - t).total_seconds()) <= 6 * 60, (sid, t, end)
    # rain gauges whose hourly total never reached the signal stay below it
    crossed = set(thr["sensors"])
    with store.lock:
        gauges = [r[0] for r in store.con.execute("SELECT id FROM sensors WHERE kind = 'rainfall'").fetchall()]
    dry = {unit_of[s] for s in gauges if s not in crossed} - {unit_of[s] for s in crossed}
    v = store.signs.all_values().filter((pl.col("indicator") == "wx.rain_1h") & pl.col("unit_code").is_in(list(dry)))
    assert v.height > 0 and v["level"].max() < LEVEL[level]


def test_health_drops_where_the_burst_is_and_names_the_pressure(storm):
    store, truth = storm
    thr = _threshold(_incident(truth, "water_main_burst"), "< 0.10 MPa")
    unit_of = _unit_of(store)
    at = max(_t(w["first"]) for w in thr["sensors"].values()) + timedelta(minutes=10)
    hit = sorted({unit_of[s] for s in thr["sensors"]})
    with store.lock:
        pressure = [r[0] for r in store.con.execute("SELECT id FROM sensors WHERE kind = 'water_pressure'").fetchall()]
    crossed = set(_threshold(_incident(truth, "water_main_burst"), "< 0.14 MPa")["sensors"])
    calm = sorted({unit_of[s] for s in pressure if s not in crossed} - set(hit))[:10]
    cat = load_catalog()
    calm_h = [health(store, c, at, catalog=cat) for c in calm]
    for u in hit:
        h = health(store, u, at, catalog=cat)
        worst = max((r for r in h["explain"] if r["scope"] == "overall"), key=lambda r: r["points"])
        assert worst["indicator"] == "fac.water_pressure_end" and worst["level"] == "alarm", h
        assert h["categories"]["facilities"] < 100
        for ch in calm_h:
            assert h["categories"]["facilities"] < ch["categories"]["facilities"]
            assert h["index"] < ch["index"]


@pytest.fixture(scope="module")
def quiet(tmp_path_factory):
    base = tmp_path_factory.mktemp("quiet")
    run_simulation(base / "city", scenario="quiet_day", duration="6h", seed=4, city_sensors=1000, city_districts=3,
                   write_reports=False)
    store = open_store(base / "home")
    load_folder(store, base / "city")
    compute_signs(store)
    yield store
    store.close()


def test_quiet_day_has_no_alarm_anywhere(quiet):
    """No alarm anywhere on a quiet day. ``sf.waterlogging_depth`` reads only the
    ``waterlogging_depth`` gauges (low spots LS, tunnels TN); river gauges (RG) and
    pumping-station wet wells (DPS) report ``water_level`` (stage, 1-3 m) and are not
    ponding."""
    v = quiet.signs.all_values()
    assert v.height > 10_000
    alarms = v.filter(pl.col("level") >= LEVEL["alarm"])
    assert alarms.is_empty(), alarms.group_by("indicator").len()
    with quiet.lock:
        gauges = quiet.con.execute(
            "SELECT kind, unit_code, regexp_extract(json_extract_string(meta, '$.asset_id'), '^[A-Z]+') FROM sensors "
            "WHERE kind IN ('water_level', 'waterlogging_depth')"
        ).fetchall()
    assert {p for k, _, p in gauges if k == "waterlogging_depth"} == {"LS", "TN"}
    assert {p for k, _, p in gauges if k == "water_level"} <= {"RG", "DPS"}
    ponding = {u for k, u, _ in gauges if k == "waterlogging_depth"}
    pond = v.filter((pl.col("indicator") == "sf.waterlogging_depth") & pl.col("direct"))
    assert set(pond["unit_code"].unique()) == ponding  # every ponding gauge, nothing else
    assert pond.height > 1000 and pond["level"].max() == 0
