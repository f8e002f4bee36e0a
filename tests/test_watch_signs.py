"""Indicator series (``sign_values``) watched with the threshold detector; catalogue levels per kind."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl

from cityvitals.store import open_store
from cityvitals.watch.catalog import catalog_thresholds
from cityvitals.watch.signs import watch_signs

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _put(store, rows):
    df = pl.DataFrame(rows, schema=["indicator", "unit_code", "window_start", "window_end", "value", "level"], orient="row")
    us = pl.Datetime("us", "UTC")
    df = df.with_columns(pl.col("window_start", "window_end").cast(us).cast(pl.Int64), pl.col("level").cast(pl.Int8),
                         pl.lit(0, pl.Int8).alias("schmitt"), pl.lit(10, pl.Int64).alias("n"), pl.lit(True).alias("direct"))
    store.signs.write_values(df)


def test_catalogue_gives_levels_per_kind():
    th = catalog_thresholds()
    assert th["water_pressure"].direction == "lower" and th["water_pressure"].levels[1] == 0.14
    assert th["gas_concentration"].levels == [10.0, 25.0, 50.0]
    assert th["manhole_tilt"].levels[1] == 15.0  # from "count readings >= 15": one such reading is an event
    assert "traffic_speed" not in th and "water_level" not in th  # subset levels come from assets


def test_indicator_crossings_raise_and_resolve_alerts(tmp_path):
    store = open_store(tmp_path)
    vals = [50, 60, 80, 90, 120, 125, 130]  # PM2.5 1-h means: attention > 75, warning > 115
    rows = [("env.pm25", "U1", T0 + timedelta(minutes=5 * i), T0 + timedelta(minutes=5 * i + 60), float(v), 0)
            for i, v in enumerate(vals)]
    # a band indicator is watched on the level the signs stage gave it
    rows += [("fac.tap_free_chlorine", "U2", T0 + timedelta(minutes=15 * i), T0 + timedelta(minutes=15 * (i + 1)), 0.03, 2)
             for i in range(3)]
    _put(store, rows)
    now = T0 + timedelta(hours=2)
    res = watch_signs(store, clock=lambda: now)
    assert res["series"] == 2
    open_ = {a["source"]: a for a in store.alerts.list(state="open")}
    assert open_["env.pm25:U1"]["level"] == "warning" and open_["env.pm25:U1"]["type"] == "threshold"
    assert open_["fac.tap_free_chlorine:U2"]["level"] == "warning"
    assert watch_signs(store, clock=lambda: now)["rows"] == 0  # nothing new
    # back to normal for long enough: the alert resolves itself
    _put(store, [("env.pm25", "U1", T0 + timedelta(minutes=5 * i), T0 + timedelta(minutes=5 * i + 60), 40.0, 0)
                 for i in range(7, 14)])
    watch_signs(store, clock=lambda: now + timedelta(hours=1))
    assert "env.pm25:U1" not in {a["source"] for a in store.alerts.list(state="open")}
    store.close()
