"""The vital-signs store layout: integer-coded keys behind the ``sign_values`` view, and
the upgrade of a DuckDB file written with the one-table layout."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl

from cityvitals.store import open_store

T0 = datetime(2024, 6, 1, tzinfo=UTC)
H = 3_600_000_000
T0_US = int(T0.timestamp()) * 1_000_000


def _frame(rows):
    return pl.DataFrame(rows, schema={"indicator": pl.String, "unit_code": pl.String, "window_start": pl.Int64,
                                      "window_end": pl.Int64, "value": pl.Float64, "level": pl.Int8, "schmitt": pl.Int8,
                                      "n": pl.Int64, "direct": pl.Boolean}, orient="row")


def test_values_are_stored_with_integer_keys_and_read_back_as_strings(tmp_path):
    with open_store(tmp_path) as store:
        rows = [("env.pm25", "U1", T0_US, T0_US + H, 80.0, 1, 1, 4, True), ("env.pm25", "U2", T0_US, T0_US + H, 20.0, 0, 0, 4, True),
                ("env.aqi", "U1", T0_US, T0_US + H, 120.0, 2, 2, 1, True)]
        assert store.signs.write_values(_frame(rows)) == 3
        # replacing by key: the same (indicator, unit, window) again is one row, with the new value
        store.signs.write_values(_frame([("env.pm25", "U1", T0_US, T0_US + H, 90.0, 1, 1, 5, True)]))
        raw = store.frame("SELECT indicator_id, unit_id FROM sign_rows")
        assert raw.schema["indicator_id"] == pl.Int16 and raw.schema["unit_id"] == pl.Int32 and raw.height == 3
        assert store.frame("SELECT count(*) AS n FROM sign_units")["n"][0] == 2  # each code once
        allv = store.signs.all_values()
        assert allv.columns == ["indicator", "unit_code", "window_start", "window_end", "value", "level", "schmitt", "n", "direct"]
        assert allv.select("indicator", "unit_code", "value").rows() == [
            ("env.aqi", "U1", 120.0), ("env.pm25", "U1", 90.0), ("env.pm25", "U2", 20.0)]
        assert allv.schema["n"] == pl.Int64 and allv.schema["unit_code"] == pl.String
        v = store.signs.values("env.pm25", "U1")
        assert v["value"].to_list() == [90.0] and v["window_start"][0] == T0
        assert store.signs.status()["sign_values"] == 3 and store.signs.status()["sign_indicators"] == 2
        assert store.signs.delete_windows(T0, datetime(2024, 6, 2, tzinfo=UTC), ["env.aqi"]) == 1
        assert store.signs.all_values()["indicator"].unique().to_list() == ["env.pm25"]


def test_an_older_store_with_the_one_table_layout_is_upgraded_on_open(tmp_path):
    with open_store(tmp_path):
        pass
    path = tmp_path / "cityvitals.duckdb"
    con = duckdb.connect(str(path))  # rewind the file to the one-table layout, with two stored values
    con.execute("SET TimeZone = 'UTC'")
    for view in ("sign_values", "sign_health", "sign_health_explain"):
        con.execute(f"DROP VIEW {view}")
    for table in ("sign_rows", "sign_health_rows", "sign_explain_rows", "sign_units", "sign_indicators", "sign_scopes"):
        con.execute(f"DROP TABLE {table}")
    con.execute("""CREATE TABLE sign_health (unit_code VARCHAR NOT NULL, as_of TIMESTAMPTZ NOT NULL, scope VARCHAR NOT NULL,
        value DOUBLE NOT NULL, computed_at TIMESTAMPTZ DEFAULT current_timestamp)""")
    con.execute("""CREATE TABLE sign_health_explain (unit_code VARCHAR NOT NULL, as_of TIMESTAMPTZ NOT NULL, scope VARCHAR NOT NULL,
        indicator VARCHAR NOT NULL, category VARCHAR, level TINYINT, value DOUBLE, weight DOUBLE, points DOUBLE)""")
    con.execute("INSERT INTO sign_health VALUES ('U2', '2024-06-01 01:00:00+00', 'environment', 70.0, '2024-06-01 01:00:05+00'), "
                "('U2', '2024-06-01 01:00:00+00', 'overall', 85.0, '2024-06-01 01:00:05+00')")
    con.execute("INSERT INTO sign_health_explain VALUES "
                "('U2', '2024-06-01 01:00:00+00', 'environment', 'env.aqi', 'environment', 2, 160.0, 3.0, 30.0), "
                "('U2', '2024-06-01 01:00:00+00', 'overall', 'env.aqi', 'environment', 2, 160.0, 3.0, 15.0)")
    con.execute("""CREATE TABLE sign_values (indicator VARCHAR NOT NULL, unit_code VARCHAR NOT NULL,
        window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL, value DOUBLE, level TINYINT NOT NULL,
        schmitt TINYINT NOT NULL, n BIGINT, direct BOOLEAN NOT NULL, computed_at TIMESTAMPTZ DEFAULT current_timestamp)""")
    con.execute("INSERT INTO sign_values VALUES ('env.pm25', 'U1', '2024-06-01 00:00:00+00', '2024-06-01 01:00:00+00', "
                "80.0, 1, 1, 4, true, '2024-06-01 01:00:05+00'), ('env.aqi', 'U2', '2024-06-01 00:00:00+00', "
                "'2024-06-01 01:00:00+00', 160.0, 2, 2, 1, false, '2024-06-01 01:00:05+00')")
    con.close()
    with open_store(tmp_path, read_only=True) as store:  # read-only: the old tables still read the same
        assert store.signs.all_values().height == 2
        assert store.signs.status() == {"sign_values": 2, "sign_indicators": 2, "health_snapshots": 1}
        lat = store.signs.latest(datetime(2024, 6, 1, 2, tzinfo=UTC),
                                 pl.DataFrame({"indicator": ["env.pm25", "env.aqi"], "stale": [3 * H, 3 * H]}))
        assert sorted(lat["value"].to_list()) == [80.0, 160.0]
    with open_store(tmp_path) as store:
        kind = store.frame("SELECT table_type FROM information_schema.tables WHERE table_name = 'sign_values'")
        assert kind["table_type"].to_list() == ["VIEW"]
        allv = store.signs.all_values()
        assert allv.select("indicator", "unit_code", "value", "level", "n", "direct").rows() == [
            ("env.aqi", "U2", 160.0, 2, 1, False), ("env.pm25", "U1", 80.0, 1, 4, True)]
        # computed_at survives: watch reads "computed since" from it
        ca = store.frame("SELECT computed_at FROM sign_values")["computed_at"].to_list()
        assert all(c == datetime(2024, 6, 1, 1, 0, 5, tzinfo=UTC) for c in ca)
        assert store.frame("SELECT unit_code, scope, value FROM sign_health ORDER BY scope").rows() == [
            ("U2", "environment", 70.0), ("U2", "overall", 85.0)]
        assert store.frame("SELECT unit_code, scope, indicator, category, level, points FROM sign_health_explain ORDER BY scope").rows() == [
            ("U2", "environment", "env.aqi", "environment", 2, 30.0), ("U2", "overall", "env.aqi", "environment", 2, 15.0)]
        assert store.signs.status()["health_snapshots"] == 1
        # and the upgraded store takes new values with the existing dictionaries
        store.signs.write_values(_frame([("env.pm25", "U2", T0_US, T0_US + H, 30.0, 0, 0, 3, True)]))
        assert store.frame("SELECT count(*) AS n FROM sign_units")["n"][0] == 2
        assert store.signs.all_values().height == 3
    with open_store(tmp_path) as store:  # opening again changes nothing
        assert store.signs.all_values().height == 3


def test_a_health_snapshot_reads_back_through_the_views(tmp_path):
    from cityvitals.signs.catalog import load_catalog
    from cityvitals.signs.engine import health_frames

    cat = load_catalog()
    with open_store(tmp_path) as store:
        rows = [("env.aqi", "U1", T0_US, T0_US + H, 160.0, 2, 2, 1, True), ("env.o3_1h", "U1", T0_US, T0_US + H, 90.0, 0, 0, 1, True),
                ("env.aqi", "U2", T0_US, T0_US + H, 40.0, 0, 0, 1, True)]
        store.signs.write_values(_frame(rows))
        at = datetime(2024, 6, 1, 1, tzinfo=UTC)
        idx, explain = health_frames(store, cat, at)
        store.signs.write_health(at, idx, explain)
        store.signs.write_health(at, idx, explain)  # the same snapshot again replaces, not doubles
        got = store.frame("SELECT unit_code, scope, value FROM sign_health ORDER BY unit_code, scope")
        assert got.rows() == idx.select(pl.col("unit_code").cast(pl.String), "scope", "value").sort("unit_code", "scope").rows()
        assert got.filter(pl.col("scope") == "overall")["value"].to_list() == [55.0, 100.0]  # the health doctest's 55 for U1
        ex = store.frame("SELECT unit_code, scope, indicator, category, level, value, weight, points FROM sign_health_explain "
                         "ORDER BY unit_code, scope, indicator")
        want = explain.with_columns(pl.col("unit_code").cast(pl.String)).sort("unit_code", "scope", "indicator")
        assert ex.rows() == want.select(ex.columns).rows() and ex.height == 6
        # latest() on the integer keys, per unit, as a frame of codes
        lat = store.signs.latest(at, pl.DataFrame({"indicator": list(cat), "stale": [3 * H] * len(cat)}), ["U1"])
        assert sorted(lat.select(pl.col("indicator").cast(pl.String), "value").rows()) == [("env.aqi", 160.0), ("env.o3_1h", 90.0)]
        assert lat.columns == ["unit_code", "indicator", "value", "level", "window_start", "window_end"]


def test_levels_of_one_window_per_series_equal_the_first_window_of_longer_series():
    """The shortcut for series of one row (a one-window recompute) agrees with the
    general forward fill: a series' first window is decided by its own value alone."""
    import numpy as np

    from cityvitals.signs.catalog import load_catalog
    from cityvitals.signs.levels import assign_levels

    cat = load_catalog()
    rng = np.random.default_rng(7)
    units = [f"U{i:03d}" for i in range(300)]
    for iid in ("env.pm25", "fac.water_pressure_end", "wx.rain_1h", "sf.waterlogging_depth", "fac.tap_free_chlorine"):
        ind = cat[iid]
        bounds = [b.value for c in ind.thresholds.values() for b in c.bounds if b.param is None] or [1.0]
        vals = rng.uniform(min(bounds) * 0.5 - 1, max(bounds) * 1.5 + 1, len(units))
        one = pl.DataFrame({"unit_code": units, "window_start": [0] * len(units), "value": vals})
        two = pl.concat([one, one.with_columns(pl.lit(1, pl.Int64).alias("window_start"), pl.Series("value", rng.permutation(vals)))])
        for mw in (1, ind.min_windows, 3):
            fast = assign_levels(one, ind.thresholds, hysteresis=ind.hysteresis, min_windows=mw)
            general = assign_levels(two, ind.thresholds, hysteresis=ind.hysteresis, min_windows=mw).filter(pl.col("window_start") == 0)
            assert fast.select("unit_code", "schmitt", "level").rows() == general.select("unit_code", "schmitt", "level").rows(), (iid, mw)
            assert fast["schmitt"].max() > 0  # the values do cross a threshold


def test_integer_keys_stay_right_when_polars_renumbers_its_categories(tmp_path):
    """Polars reuses Categorical physical ids once no Categorical data is alive; the
    repository's code -> id table must not be fooled by that."""
    import gc

    with open_store(tmp_path) as store:
        store.signs.write_values(_frame([("env.pm25", u, T0_US, T0_US + H, float(i), 0, 0, 1, True)
                                         for i, u in enumerate(["A", "B", "C"])]))
        gc.collect()
        # the same codes in another order: other physical ids if Polars renumbered
        rows = [("env.pm25", u, T0_US + H, T0_US + 2 * H, float(10 + i), 0, 0, 1, True) for i, u in enumerate(["C", "A", "B"])]
        store.signs.write_values(_frame(rows))
        got = store.signs.all_values().filter(pl.col("window_start") == datetime(2024, 6, 1, 1, tzinfo=UTC))
        assert dict(got.select("unit_code", "value").rows()) == {"C": 10.0, "A": 11.0, "B": 12.0}
        first = store.signs.all_values().filter(pl.col("window_start") == T0)
        assert dict(first.select("unit_code", "value").rows()) == {"A": 0.0, "B": 1.0, "C": 2.0}
