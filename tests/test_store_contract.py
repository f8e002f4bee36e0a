"""One contract for the repository interface, run against both backends.

Every test takes ``store`` parametrised over the embedded DuckDB file and PostgreSQL on
127.0.0.1:5432 (each test in its own schema, dropped afterwards), so a feature that works
on one backend and not the other fails here. The PostgreSQL-only tests at the end cover
what only server mode has: migrations, partitions made ahead, retention and roll-ups.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pyarrow as pa
import pytest

from cityvitals.ingest import Ingestor, ingest_frame, ingest_records, replay
from cityvitals.ingest.lines import LineBatch, Reject
from cityvitals.store import open_store
from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation
from cityvitals.watch.runner import Threshold

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
SENSORS = pl.DataFrame({
    "id": ["P1", "P2", "T1", "A1"],
    "kind": ["water_pressure", "water_pressure", "temperature", "pm25"],
    "unit": ["MPa", "kPa", "degC", "ug/m3"],
    "unit_code": ["g1", "g2", "g1", "g2"],
})
UNITS = pl.DataFrame({
    "code": ["c", "d1", "g1", "g2"], "name": ["City", "District", "G1", "G2"],
    "level": ["city", "district", "grid", "grid"], "depth": [0, 1, 2, 2],
    "parent_code": [None, "c", "d1", "d1"], "population": [100.0, 60.0, 30.0, 30.0],
    "geometry_wkb": [b"\x01\x02", None, b"\x00", None],
})


@pytest.fixture(params=["duckdb", "postgresql"])
def store(request, tmp_path):
    if request.param == "duckdb":
        s = open_store(tmp_path / "home")
    else:
        url = request.getfixturevalue("pg_schema")
        s = open_store(tmp_path / "home", url=url, migrate=True)
    yield s
    s.close()


@pytest.fixture
def reg(store):
    store.units.upsert(UNITS)
    store.sensors.upsert(SENSORS)
    return store


def _ing(store):
    return Ingestor(store, clock=lambda: NOW)


# -- units and sensors ---------------------------------------------------------------
def test_units_upsert_get_path_levels_status(store):
    assert store.units.upsert(UNITS) == 4
    store.units.upsert(pl.DataFrame({"code": ["g2"], "name": ["G2 renamed"], "level": ["grid"], "depth": [2],
                                     "parent_code": ["d1"]}))
    assert store.units.get("g2")["name"] == "G2 renamed" and store.units.get("nope") is None
    assert [u["code"] for u in store.units.path("g1")] == ["g1", "d1", "c"]
    assert store.units.levels() == ["city", "district", "grid"]
    assert store.units.status() == {"units": {"city": 1, "district": 1, "grid": 2}}
    frame = store.units.frame("grid", geometry=True)
    assert frame["code"].to_list() == ["g1", "g2"] and frame["geometry_wkb"].to_list()[0] == b"\x00"
    assert store.units.frame().columns == [c for c in frame.columns if c != "geometry_wkb"]
    assert store.units.delete_level("grid") == 2 and store.units.levels() == ["city", "district"]


def test_sensors_upsert_get_count_status_and_version(store):
    v0 = store.sensors.version
    assert store.sensors.upsert(SENSORS) == 4
    assert store.sensors.version != v0
    store.sensors.upsert(pl.DataFrame({"id": ["P1"], "kind": ["water_pressure"], "unit": ["kPa"], "lon": [121.5]}))
    p1 = store.sensors.get("P1")
    assert p1["unit"] == "kPa" and p1["lon"] == 121.5 and store.sensors.get("X") is None
    assert store.sensors.count() == 4
    assert store.sensors.status() == {"sensors": 4, "sensors_by_kind": {"pm25": 1, "temperature": 1, "water_pressure": 2}}
    assert store.sensors.frame()["id"].to_list() == ["A1", "P1", "P2", "T1"]


def test_bulk_load_appends_rows_as_they_are(reg):
    """Benches and tests build stores with ``readings.bulk_load``: the same rows read back on both
    backends, registered sensor or not, in any month (PostgreSQL makes the partitions)."""
    ts = [NOW, NOW, datetime(2025, 11, 30, 23, 59, tzinfo=timezone.utc)]
    df = pl.DataFrame({"sensor_id": ["P1", "Z9", "P1"], "ts": ts, "value": [0.2, 5.0, 0.3],
                       "quality": [None, "ok", None], "kind": ["water_pressure", "noise", "water_pressure"],
                       "unit_code": ["g1", None, "g1"], "ingested_at": [NOW, NOW, NOW]})
    assert reg.readings.bulk_load(df) == 3 and reg.readings.bulk_load(df.head(0)) == 0
    got = reg.readings.frame().sort("ts", "sensor_id").select("sensor_id", "ts", "value", "quality", "unit_code")
    assert got.rows() == [("P1", ts[2], 0.3, None, "g1"), ("P1", NOW, 0.2, None, "g1"), ("Z9", NOW, 5.0, "ok", None)]
    with pytest.raises(ValueError, match="missing"):
        reg.readings.bulk_load(df.drop("kind"))


# -- ingestion: the same outcome on both backends -----------------------------------------
def test_ingest_converts_dedupes_and_quarantines_the_same(reg):
    ing = _ing(reg)
    records = [
        {"sensor_id": "P1", "ts": "2026-05-01T08:00:00+08:00", "value": 0.31},
        {"sensor_id": "P2", "ts": "2026-05-01T00:00:00Z", "value": 310},
        {"sensor_id": "P1", "ts": "2026-05-01T00:00:00Z", "value": 0.31},  # duplicate in the batch
        {"sensor_id": "P1", "ts": "2026-05-01T00:00:00Z", "value": 0.5},  # conflict in the batch
        {"sensor_id": "T1", "ts": 1777593600, "value": 68, "unit": "degF", "quality": "good"},
        {"sensor_id": "ZZ", "ts": "2026-05-01T00:00:00Z", "value": 1},
        {"sensor_id": "A1", "ts": "2026-05-01T00:00:00", "value": 1},
        {"sensor_id": "A1", "ts": "2026-05-01T00:00:00Z", "value": -5},
        {"sensor_id": "A1", "ts": "2026-06-01T00:00:00Z", "value": 5},
        {"sensor_id": "A1", "ts": "2026-05-01T00:00:00Z", "value": "x"},
    ]
    rep = ingest_records(reg, records, ingestor=ing)
    assert (rep.accepted, rep.duplicates) == (3, 1)
    assert rep.quarantined == {"conflict": 1, "unknown_sensor": 1, "bad_timestamp": 1, "out_of_range": 1,
                               "future_timestamp": 1, "bad_value": 1}
    frame = reg.readings.frame()
    assert frame.schema["ts"] == pl.Datetime("us", "UTC") and frame.schema["value"] == pl.Float64
    assert frame.select("sensor_id", "value").rows() == [("P1", pytest.approx(0.31)), ("P2", pytest.approx(0.31)),
                                                        ("T1", pytest.approx(20.0))]
    assert frame.filter(pl.col("sensor_id") == "T1")["quality"].to_list() == ["good"]
    q = reg.quarantine.frame()
    conflict = q.filter(pl.col("reason") == "conflict").to_dicts()[0]
    assert conflict["location"] == "record 4" and conflict["source"] == "api"
    assert conflict["message"] == "sensor P1 already has value 0.31 at 2026-05-01T00:00:00Z; this record says 0.5"
    # the same batch again: nothing new stored, the stored rows decide
    again = ingest_records(reg, records[:5], ingestor=ing)
    assert (again.accepted, again.duplicates, again.quarantined) == (0, 4, {"conflict": 1})
    assert reg.readings.count() == 3
    assert reg.readings.status()["readings_from"] == "2026-05-01T00:00:00+00:00"


def test_ingest_frame_rejects_and_replay(reg):
    ing = _ing(reg)
    frame = pl.DataFrame({"sensor_id": ["P1", "NEW"], "ts": ["2026-05-01T00:00:00Z", "2026-05-01T00:05:00Z"],
                          "value": ["0.2", "3"]})
    rep = ingest_frame(reg, frame, ingestor=ing)
    assert rep.accepted == 1 and rep.quarantined == {"unknown_sensor": 1}
    batch = LineBatch(pa.array([], pa.string()), pa.array([], pa.int64()).to_numpy(),
                      [Reject(7, "too_large", "the record has 9 MB", "{...", truncated=True)])
    assert ing.ingest_lines(batch, source="f.ndjson").quarantined == {"too_large": 1}
    reg.sensors.upsert(pl.DataFrame({"id": ["NEW"], "kind": ["temperature"], "unit": ["degC"], "unit_code": ["g2"]}))
    rep = replay(reg, ingestor=ing)
    assert rep.accepted == 1
    q = reg.quarantine.frame(include_resolved=True).sort("id")
    assert q["resolution"].to_list() == ["replayed", None] and q["raw_truncated"].to_list() == [False, True]
    assert reg.quarantine.counts() == {"too_large": 1}
    assert reg.quarantine.counts(include_resolved=True) == {"too_large": 1, "unknown_sensor": 1}
    assert replay(reg, ingestor=ing).accepted == 0  # replay twice: each record lands once
    assert reg.readings.frame(sensor_id="NEW")["value"].to_list() == [3.0]
    assert reg.readings.frame(unit_codes=["g2"])["sensor_id"].to_list() == ["NEW"]
    assert reg.readings.frame(kind="water_pressure", start=NOW - timedelta(days=1), end=NOW).height == 1


def test_redelivered_records_with_origins_are_quarantined_once(reg):
    """What MQTT relies on: a message delivered again stores nothing and quarantines nothing twice."""
    ing = _ing(reg)
    lines = ['{"sensor_id": "P1", "ts": "2026-05-01T00:00:00Z", "value": 0.3}', '{"sensor_id": "ZZ", "ts": 1, "value": 1}']
    origins = {1: ("t/P1", "message abc record 0"), 2: ("t/ZZ", "message def record 0"), 3: ("t/x", "message 123")}
    for _ in range(3):
        batch = LineBatch(pa.array(lines, pa.string()), pa.array([1, 2], pa.int64()).to_numpy(),
                          [Reject(3, "malformed", "not JSON", "{oops")])
        ing.ingest_lines(batch, source="mqtt", origins=origins)
    assert reg.readings.count() == 1
    q = reg.quarantine.frame().sort("source")
    assert q.select("source", "location", "reason").rows() == [
        ("t/ZZ", "message def record 0", "unknown_sensor"), ("t/x", "message 123", "malformed")]


# -- alerts, users, assets ---------------------------------------------------------------
def test_alert_lifecycle_and_watch_state(store):
    now = [datetime(2026, 3, 2, 8, tzinfo=timezone.utc)]
    mgr = AlertManager(store, AlertPolicy(resolve_after=timedelta(minutes=10)), clock=lambda: now[0])
    t = now[0]
    mgr.observe([Observation("S1", "threshold", 1, t), Observation("S1", "threshold", 2, t + timedelta(minutes=1))])
    mgr.observe([Observation("S2", "threshold", 3, t, "alarm")])
    assert store.alerts.count() == 2 and store.alerts.status() == {"alerts_open": 2, "alerts_total": 2}
    a = store.alerts.list(source="S1")[0]
    assert a["level"] == "warning" and [e["event"] for e in store.alerts.events(a["id"])] == ["raise", "level"]
    assert set(store.alerts.open_for([("S1", "threshold"), ("S9", "x")])) == {("S1", "threshold")}
    mgr.ack(a["id"], "li", "on it")
    assert store.alerts.get(a["id"])["state"] == "acknowledged"
    mgr.resolve(a["id"], "li")
    assert store.alerts.last_resolved("S1", "threshold")["resolved_by"] == "li"
    assert [r["source"] for r in store.alerts.open_alerts()] == ["S2"]
    mgr.observe([Observation("S2", "threshold", 1, t + timedelta(minutes=2), "attention")])  # falls back
    assert store.alerts.list(source="S2")[0]["level"] == "attention"
    marks = store.alerts.level_marks()
    assert marks[a["id"]] == ("warning", None)
    peak, fell = marks[store.alerts.list(source="S2")[0]["id"]]
    assert peak == "alarm" and fell == t + timedelta(minutes=2)
    assert store.alerts.get_watch_state("w") == (None, None)
    with store.transaction() as con:
        store.alerts.put_watch_state(con, "w", t, b"\x00state", t)
    with store.transaction() as con:
        store.alerts.put_watch_state(con, "w", t + timedelta(hours=1), b"\x01", t)
    assert store.alerts.get_watch_state("w") == (t + timedelta(hours=1), b"\x01")


def test_users_keys_and_audit(reg):
    key = reg.users.add("li", "duty_officer", area="d1")
    assert reg.users.authenticate(key)["area_code"] == "d1" and reg.users.authenticate(key + "x") is None
    new = reg.users.rotate("li")
    assert reg.users.authenticate(key) is None and reg.users.authenticate(new)["name"] == "li"
    reg.users.revoke("li")
    assert reg.users.authenticate(new) is None and reg.users.get("li")["revoked_at"] is not None
    reg.users.audit("li", "admin", "readings.post", "x", 200, {"n": 1})
    log = reg.users.audit_log()
    assert [r["action"] for r in log] == ["readings.post", "user.revoke", "user.rotate", "user.add"]
    assert reg.users.status() == {"users_active": 0} and [u["name"] for u in reg.users.list()] == ["li"]


def test_assets_replace_and_read(store):
    assets = pl.DataFrame({"id": ["p1", "m1"], "type": ["pump_station", "water_main"], "name": ["P", "M"],
                           "geometry_wkb": [b"\x01", None], "lon": [121.0, 121.1], "lat": [31.0, 31.1],
                           "unit_code": ["g1", "g2"], "props": ["{}", None]})
    edges = pl.DataFrame({"src": ["p1"], "dst": ["m1"], "relation": ["feeds"]})
    assert store.assets.replace(assets, edges) == {"assets": 2, "edges": 1}
    assert store.assets.replace(assets, edges) == {"assets": 2, "edges": 1}
    assert store.assets.frame()["id"].to_list() == ["m1", "p1"]
    assert store.assets.frame("pump_station")["name"].to_list() == ["P"]
    assert store.assets.edges("feeds").rows() == [("p1", "m1", "feeds")]
    assert store.assets.status() == {"assets": 2, "asset_edges": 1}


def test_sensor_asset_props(store):
    store.assets.replace(pl.DataFrame({"id": ["p1", "m1"], "type": ["substation", "water_main"], "name": ["P", "M"],
                                       "geometry_wkb": [None, None], "lon": [121.0, 121.1], "lat": [31.0, 31.1],
                                       "unit_code": ["g1", "g2"],
                                       "props": ['{"rated_mw": 40, "note": "x"}', '{"rated_mw": "n/a"}']},
                                      schema_overrides={"geometry_wkb": pl.Binary}),
                         pl.DataFrame({"src": [], "dst": [], "relation": []}, schema={"src": pl.String, "dst": pl.String,
                                                                                      "relation": pl.String}))
    store.sensors.upsert(pl.DataFrame({"id": ["L1", "L2", "T9"], "kind": ["power_load", "power_load", "temperature"],
                                       "unit": ["MW", "MW", "degC"],
                                       "meta": ['{"asset_id": "p1"}', '{"asset_id": "m1"}', '{"asset_id": "p1"}']}))
    df = store.assets.sensor_asset_props(["power_load"], {"rated": "rated_mw", "gone": "missing"})
    assert df.columns == ["id", "kind", "atype", "rated", "gone"]
    assert df.rows() == [("L1", "power_load", "substation", 40.0, None), ("L2", "power_load", "water_main", None, None)]


def test_status_names_the_backend(reg):
    st = reg.status()
    assert st["backend"] in ("duckdb", "postgresql") and st["sensors"] == 4 and st["units"]["grid"] == 2


# -- PostgreSQL only: migrations, partitions, retention, roll-ups ------------------------------
def test_pg_schema_must_be_upgraded_and_upgrade_is_idempotent(pg_schema, tmp_path):
    from cityvitals.errors import InputError
    from cityvitals.cli._common import open_store_cli
    from cityvitals.store.pg import migrate

    with pytest.raises(InputError, match="db upgrade"):
        open_store_cli(str(tmp_path), pg_schema)
    s = open_store(tmp_path, url=pg_schema, migrate=True)
    try:
        assert migrate.current(s.pg) == migrate.head() and migrate.upgrade(s.pg) == []
        assert [h["version"] for h in migrate.history(s.pg)] == [m.version for m in migrate.migrations()]
    finally:
        s.close()


def test_pg_partitions_made_ahead_retention_and_rollup(pg_schema, tmp_path):
    s = open_store(tmp_path, url=pg_schema, migrate=True)
    try:
        s.sensors.upsert(SENSORS)
        made = s.readings.ensure_partitions(NOW, NOW + timedelta(days=62))
        assert made == ["readings_p202605", "readings_p202606", "readings_p202607"]
        frame = pl.DataFrame({
            "sensor_id": ["T1"] * 4,
            "ts": ["2026-01-15T00:10:00Z", "2026-01-15T00:50:00Z", "2026-03-02T01:00:00Z", "2026-05-01T00:00:00Z"],
            "value": ["1", "3", "5", "7"],
        })
        assert ingest_frame(s, frame, ingestor=_ing(s)).accepted == 4
        names = [p["name"] for p in s.readings.partitions()]
        assert {"readings_p202601", "readings_p202603"} <= set(names)
        roll = s.readings.rollup(datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 6, 1, tzinfo=timezone.utc))
        assert roll["rows"] == 3
        h = s.readings.hourly("T1").row(0, named=True)
        assert (h["n"], h["mean"], h["min"], h["max"]) == (2, 2.0, 1.0, 3.0)
        cut = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)
        dry = s.readings.retention(cut, dry_run=True)
        assert dry["partitions_dropped"] == ["readings_p202601", "readings_p202602"] and dry["rows_deleted"] == 0
        assert s.readings.count() == 4
        done = s.readings.retention(cut)
        assert done["rows_in_dropped_partitions"] == 2 and s.readings.count() == 2
        assert s.readings.hourly("T1").height == 3  # roll-ups outlive the raw rows
        # a reading for a dropped month makes its partition again
        assert ingest_frame(s, frame.head(1), ingestor=_ing(s)).accepted == 1
    finally:
        s.close()


# -- vital signs: incremental runs on either backend equal a DuckDB recompute ---------------
SIGN_UNITS = pl.DataFrame({
    "code": ["c", "c.d1", "c.d2", "g1", "g2", "g3"], "level": ["city", "district", "district", "grid", "grid", "grid"],
    "depth": [0, 1, 1, 2, 2, 2], "parent_code": [None, "c", "c", "c.d1", "c.d1", "c.d2"],
    "population": [None, None, None, 1000.0, 3000.0, 2000.0], "area_m2": [None, None, None, 1e4, 1e4, 2e4],
})
SIGN_KINDS = {"pm25": "ug/m3", "equipment_temperature": "degC", "water_pressure": "MPa"}
SIGN_T0 = datetime(2024, 6, 1, tzinfo=timezone.utc)


def test_pg_binary_copy_and_column_reads_keep_every_value(pg_schema, tmp_path):
    # the server's hot paths write with binary COPY and read with column aggregates: the
    # rows must be what the CSV COPY and a plain SELECT give, NULLs, NaN and quoting included
    from cityvitals.store.pg._sql import copy_arrow, copy_arrow_binary, read_columns

    s = open_store(tmp_path / "h", url=pg_schema, migrate=True)
    try:
        con = s.con
        con.raw("CREATE TABLE t (i INT, a TEXT, b DOUBLE PRECISION, c TIMESTAMPTZ, d BIGINT, e BOOLEAN, f TEXT)")
        t0 = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=timezone.utc)
        rows = pa.table({
            "a": pa.array(["x", None, "", 'hé,"q"\n\\N', "B00001"]),
            "b": pa.array([1.5, -0.1, None, float("nan"), 1e300]),
            "c": pa.array([t0, None, t0 - timedelta(days=20000), t0, t0 + timedelta(microseconds=1)],
                          pa.timestamp("us", "UTC")),
            "d": pa.array([1, None, -5, 2**62, 0], pa.int64()),
            "e": pa.array([True, False, None, True, False]),
            "f": pa.array(["a", "b", "c", None, "e"]).dictionary_encode(),
        })
        copy_arrow(con, rows.append_column("i", pa.array([0] * 5, pa.int64())), "t", ["i", *rows.column_names])
        copy_arrow_binary(con, rows, "t", rows.column_names)
        got = con.raw("SELECT i IS NULL, a, b::TEXT, c, d, e, f FROM t ORDER BY i IS NULL, d NULLS FIRST, a").fetchall()
        assert [r[1:] for r in got[:5]] == [r[1:] for r in got[5:]] and all(r[0] for r in got[5:])
        assert copy_arrow_binary(con, rows.slice(0, 0), "t", rows.column_names) == 0
        schema = pa.schema([("a", pa.string()), ("c", pa.timestamp("us", tz="UTC")), ("d", pa.int64()),
                            ("b", pa.float64())])
        cols = read_columns(con, "SELECT a, c, d, b FROM t WHERE i IS NULL AND a IS NOT NULL AND c IS NOT NULL "
                                 "AND d IS NOT NULL AND b IS NOT NULL", [], schema, ("d",))
        want = con.raw("SELECT a, c, d, b FROM t WHERE i IS NULL AND a IS NOT NULL AND c IS NOT NULL "
                       "AND d IS NOT NULL AND b IS NOT NULL ORDER BY d").fetchall()
        norm = lambda r: (r[0], r[1].timestamp(), r[2], repr(r[3]))  # noqa: E731  (NaN, zone objects)
        assert [norm(r) for r in zip(*[cols.column(n).to_pylist() for n in schema.names])] == [norm(r) for r in want]
        assert len(want) == 3
        assert read_columns(con, "SELECT a, c, d, b FROM t WHERE false", [], schema).num_rows == 0
        with pytest.raises(ValueError):
            read_columns(con, "SELECT a, c, d, b FROM t", [], schema)  # a NULL would misalign the columns
    finally:
        s.close()


def _sign_data(hours: int = 4) -> pl.DataFrame:
    import numpy as np

    rng = np.random.default_rng(3)
    n = hours * 12
    ts = [SIGN_T0 + timedelta(minutes=5 * i) for i in range(n)]
    parts = []
    for g in ("g1", "g2", "g3"):
        base = {"pm25": 60 + 50 * np.sin(np.arange(n) / 15), "equipment_temperature": 93 + 3 * np.sin(np.arange(n) / 4),
                "water_pressure": 0.15 + 0.02 * np.sin(np.arange(n) / 10)}
        for kind, series in base.items():
            vals = np.clip(series + rng.normal(0, 1 if kind != "water_pressure" else 0.003, n), 0, None)
            parts.append(pl.DataFrame({"sensor_id": f"{g}.{kind}", "ts": ts, "value": vals}))
    return pl.concat(parts).sort("ts")


def _sign_store(s):
    s.units.upsert(SIGN_UNITS)
    s.sensors.upsert(pl.DataFrame([{"id": f"{g}.{k}", "kind": k, "unit": u, "lon": 121.4, "lat": 31.2, "unit_code": g}
                                   for g in ("g1", "g2", "g3") for k, u in SIGN_KINDS.items()]))
    return s


def test_signs_incremental_equals_duckdb_recompute_and_health(store, tmp_path):
    import numpy as np

    from cityvitals.signs import compute_signs, health, recompute

    data = _sign_data()
    cut = SIGN_T0 + timedelta(hours=2, minutes=35)
    _sign_store(store)
    for i, part in enumerate((data.filter(pl.col("ts") < cut), data.filter(pl.col("ts") >= cut))):
        clock = lambda i=i: datetime(2024, 6, 2, tzinfo=timezone.utc) + timedelta(minutes=i)  # noqa: E731
        assert ingest_frame(store, part, ingestor=Ingestor(store, clock=clock)).accepted == part.height
        assert compute_signs(store).readings == part.height
    assert compute_signs(store).values == 0  # nothing new: nothing touched
    got = store.signs.all_values()
    assert store.signs.status()["health_snapshots"] == 2
    with open_store(tmp_path / "ref") as ref:
        _sign_store(ref)
        ingest_frame(ref, data, ingestor=Ingestor(ref, clock=lambda: datetime(2024, 6, 2, tzinfo=timezone.utc)))
        recompute(ref)
        want = ref.signs.all_values()
        h_want = health(ref, "c", SIGN_T0 + timedelta(hours=4))
    assert got.height == want.height > 100 and got.schema == want.schema
    exact = [c for c in want.columns if c != "value"]
    assert got.select(exact).equals(want.select(exact))
    np.testing.assert_allclose(got["value"].to_numpy(), want["value"].to_numpy(), rtol=1e-12)
    h_got = health(store, "c", SIGN_T0 + timedelta(hours=4))
    assert (h_got["index"], h_got["categories"], len(h_got["explain"])) == (
        h_want["index"], h_want["categories"], len(h_want["explain"]))
    assert store.signs.values("env.pm25", "g1").height == want.filter(
        (pl.col("indicator") == "env.pm25") & (pl.col("unit_code") == "g1")).height


# -- the HTTP API over either backend: the same answers ------------------------------------------
def _api_answers(s, tmp_path) -> dict:
    """A few read calls (and the change feed) against a store loaded with the signs data."""
    from fastapi.testclient import TestClient

    from cityvitals.api import create_app
    from cityvitals.signs import compute_signs

    data = _sign_data(hours=3)
    _sign_store(s)
    clock = lambda: datetime(2024, 6, 2, tzinfo=timezone.utc)  # noqa: E731
    ingest_frame(s, data, ingestor=Ingestor(s, clock=clock))
    ingest_records(s, [{"sensor_id": "nope", "ts": "2024-06-01T00:00:00Z", "value": 1}], ingestor=Ingestor(s, clock=clock))
    compute_signs(s)
    mgr = AlertManager(s, AlertPolicy(), clock=clock)
    mgr.observe([Observation("g1.pm25", "threshold", 2, SIGN_T0 + timedelta(hours=1), "high")])
    key = s.users.add("ops", "admin")
    app = create_app(s, poll_interval=None, dashboard=False, clock=lambda: SIGN_T0 + timedelta(hours=3))
    h = {"X-API-Key": key}
    window = {"start": "2024-06-01T00:00:00Z", "end": "2024-06-01T02:00:00Z"}
    out = {}
    with TestClient(app) as c:
        def get(path, **params):
            r = c.get(path, params=params, headers=h)
            assert r.status_code == 200, (path, r.status_code, r.text[:300])
            return r.json()

        out["units"] = [u["code"] for u in get("/api/v1/units")["items"]]
        out["unit"] = {k: v for k, v in get("/api/v1/units/g1").items() if k != "geometry"}
        out["children"] = get("/api/v1/units/c.d1/children")
        out["sensors"] = [x["id"] for x in get("/api/v1/sensors", unit="c.d1")["items"]]
        out["raw"] = get("/api/v1/readings", sensor="g1.pm25", **window)
        out["resampled"] = get("/api/v1/readings", unit="c.d2", interval="PT30M", **window)
        out["paged"] = get("/api/v1/readings", kind="pm25", limit=5, **window)
        out["next"] = get("/api/v1/readings", kind="pm25", limit=5, cursor=out["paged"]["next_cursor"], **window)
        out["quarantine"] = [(q["reason"], q["source"]) for q in get("/api/v1/quarantine")["items"]]
        out["values"] = get("/api/v1/indicators/env.pm25/values", unit="g1", start="2024-06-01T00:00:00Z",
                            end="2024-06-01T03:00:00Z")["items"]
        out["health"] = get("/api/v1/health", unit="c", at="2024-06-01T03:00:00Z")
        alerts = get("/api/v1/alerts")["items"]
        out["alerts"] = [(a["source"], a["level"], a["state"]) for a in alerts]
        out["alert"] = [e["event"] for e in get(f"/api/v1/alerts/{alerts[0]['id']}")["events"]]
        out["map"] = c.get("/api/v1/map", params={"unit": "c", "depth": 2, "format": "compact"}, headers=h).status_code
        watcher = app.state.ctx.watcher
        ingest_records(s, [{"sensor_id": "g3.pm25", "ts": "2024-06-01T05:00:00Z", "value": 40}],
                       ingestor=Ingestor(s, clock=clock))
        out["events"] = len(watcher.check())
    return out


def test_api_reads_the_same_on_both_backends(tmp_path, pg_schema):
    with open_store(tmp_path / "duck") as duck:
        want = _api_answers(duck, tmp_path)
    with open_store(tmp_path / "pg", url=pg_schema, migrate=True) as pg:
        got = _api_answers(pg, tmp_path)
    assert want["raw"]["items"] and want["resampled"]["items"] and want["values"] and want["alerts"]
    assert want["events"] >= 1
    for k in want:  # sums may differ in the last bit between engines
        assert _rounded(got[k]) == _rounded(want[k]), k


def _rounded(x):
    if isinstance(x, float):
        return float(f"{x:.10g}")
    if isinstance(x, dict):  # explanation rows come in no particular order on either engine
        return {k: (sorted(_rounded(v), key=repr) if k == "explain" else _rounded(v)) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


# -- cases: the whole disposal workflow ------------------------------------------------
def _desk(s):
    from test_dispose import Clock, build_units

    from cityvitals.dispose import CaseDesk

    build_units(s)
    clock = Clock(datetime(2026, 5, 6, 1, 0, tzinfo=timezone.utc))   # Wednesday 09:00 Shanghai
    desk = CaseDesk(s, clock=clock)
    desk.sync_departments()
    return desk, clock


def test_cases_whole_workflow_through_dispose(store):
    """One case's whole life (verify, return, extension, rework, escalation, close), duplicates,
    bulk actions with crews, statistics, photos and the personal-data split, on both backends."""
    from test_dispose import DISP, INSP, LAT, LON, OPR, SH, SUP, dept

    from cityvitals.dispose import TransitionError, case_stats

    desk, c = _desk(store)
    res = desk.report(category="SA01", lon=LON + 0.01, lat=LAT + 0.01, text="我是王伟，电话13812345678，垃圾堆了三天",
                      reporter={"name": "王伟", "phone": "13812345678"}, ref="R1", source="public")
    cid = res["case_id"]
    row = store.cases.get(cid)
    assert (row["unit_code"], row["region_code"], row["state"]) == ("G1", "D1", "reported")
    assert "13812345678" not in row["description"] and "王伟" not in row["description"]
    with pytest.raises(TransitionError, match="must be verified on site"):
        desk.act(cid, "file", SUP)
    steps = [((9, 10), "request_verify", OPR, {}), ((9, 40), "verify", INSP, {}), ((10, 0), "file", SUP, {}),
             ((10, 0), "dispatch", DISP, {"department": "greening"}), ((10, 30), "return", dept("greening"), {}),
             ((11, 0), "dispatch", DISP, {}), ((11, 30), "accept", dept("sanitation"), {}),
             ((14, 0), "request_extension", dept("sanitation"), {}), ((15, 0), "grant_extension", SUP, {"hours": 2}),
             ((17, 0), "handle", dept("sanitation"), {}), ((17, 10), "forward", DISP, {}),
             ((17, 30), "rework", INSP, {}), ((17, 40), "dispatch", DISP, {"department": "sanitation"})]
    for (hh, mm), action, actor, data in steps:
        c.set(2026, 5, 6, hh, mm)
        s = desk.act(cid, action, actor, **data)
    assert s.due_at == datetime(2026, 5, 7, 13, 40, tzinfo=SH) and (s.returns, s.reworks, s.extensions) == (1, 1, 1)
    assert desk.escalate_overdue(datetime(2026, 5, 7, 13, 39, tzinfo=SH)) == []
    assert desk.escalate_overdue(datetime(2026, 5, 7, 14, 0, tzinfo=SH)) == [{"case_id": cid, "level": 1}]
    for (d, hh, mm), action, actor in (((7, 18, 0), "accept", dept("sanitation")),
                                       ((8, 10, 0), "handle", dept("sanitation")),
                                       ((8, 10, 30), "forward", DISP), ((8, 11, 0), "close", INSP)):
        c.set(2026, 5, d, hh, mm)
        s = desk.act(cid, action, actor)
    assert (s.state, s.escalation, s.on_time) == ("closed", 1, False)
    evs = store.cases.events(cid)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)) and evs[-1]["action"] == "close"
    assert desk.replay(cid) == desk.state(cid)
    assert [n["ref"] for n in store.cases.notices(cid)] == ["R1"]
    assert store.cases.by_ref("R1")["id"] == cid and store.cases.refs_known(["R1", "nope"]) == {"R1"}
    assert [r["phone"] for r in store.cases.reporters(cid)] == ["13812345678"]
    # duplicates in one batch and against the store; bulk dispatch by distance and workload
    c.set(2026, 5, 6, 9, 0)
    t0 = desk.clock()
    first = desk.report(category="SA01", lon=LON, lat=LAT, ref="S", reported_at=t0,
                        reporter={"name": "张三", "phone": "13900000001"})
    batch = desk.report_many([
        {"category": "SA01", "lon": LON + 0.0003, "lat": LAT, "ref": "near", "reported_at": t0 + timedelta(minutes=5),
         "reporter": {"name": "李四"}},
        {"category": "SA01", "lon": LON + 0.02, "lat": LAT + 0.01, "ref": "new", "reported_at": t0 + timedelta(minutes=6)},
        {"category": "MU01", "lon": LON, "lat": LAT, "ref": "other", "reported_at": t0 + timedelta(minutes=7)}])
    got = {r["ref"]: r for r in batch}
    assert got["near"]["attached"] and got["near"]["case_id"] == first["case_id"]
    assert not got["new"]["attached"] and not got["other"]["attached"]
    assert store.cases.get(first["case_id"])["reports"] == 2
    assert store.cases.case_ids_for_refs(["near", "S"]) == {"near": first["case_id"], "S": first["case_id"]}
    desk.add_crew("near", "sanitation", lon=LON, lat=LAT)
    desk.add_crew("far", "sanitation", lon=LON + 0.05, lat=LAT)
    desk.add_crew("near", "sanitation", lon=LON, lat=LAT)          # re-adding replaces, never duplicates
    ids = [r["case_id"] for r in desk.report_many(
        [{"category": "SA01", "lon": LON, "lat": LAT, "source": "inspector", "actor": "lin", "role": "inspector"}
         for _ in range(4)], check_duplicates=False)]
    desk.act_many([{"case_id": k, "action": "file", "actor": SUP} for k in ids])
    crews = [s.crew for s in desk.act_many([{"case_id": k, "action": "dispatch", "actor": DISP} for k in ids])]
    assert crews == ["near", "near", "near", "far"]
    assert {r["id"]: r["workload"] for r in store.cases.crews("sanitation")} == {"far": 1, "near": 3}
    for action, actor in (("accept", dept("sanitation")), ("handle", dept("sanitation")), ("forward", DISP),
                          ("close", INSP)):
        desk.act_many([{"case_id": k, "action": action, "actor": actor} for k in ids])
    assert all(desk.replay(k) == desk.state(k) for k in ids)
    assert len(store.cases.list(state="closed")) == 5
    assert {r["ref"] for r in store.cases.list(state="open")} == {"S", "new", "other"}
    assert "new" in {r["ref"] for r in store.cases.list(state="open", region="D1")}
    [every] = case_stats(store, by="all")
    assert (every["cases"], every["closed"], every["reworked"], every["returns"]) == (8, 5, 1, 1)
    deps = {r["group"]: r for r in case_stats(store, by="department")}
    assert deps["greening"]["returns"] == 1
    # photos: the file in the data directory, the row in the store
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    photo = desk.attach_photo(cid, png, stage="feedback", by="crew")
    assert (desk.data_dir / photo["path"]).read_bytes() == png and len(store.cases.attachments(cid)) == 1
    assert store.status()["cases_total"] == 8 and store.cases.get_watermark("nothing") is None


def test_cases_incidents_and_open311_routes_are_served(store):
    """The API mounts cases, incidents and Open311 on both backends, and they read the same."""
    from fastapi.testclient import TestClient
    from test_dispose import LAT, LON

    from cityvitals.api import create_app
    from cityvitals.api.app import routers_for

    desk, _ = _desk(store)
    cid = desk.report(category="SA01", lon=LON, lat=LAT, ref="R9", reporter={"name": "王伟", "phone": "13812345678"},
                      text="垃圾")["case_id"]
    key = store.users.add("root", "admin")
    app = create_app(store, clock=desk.clock, poll_interval=None, dashboard=False)
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {key}"}
        r = client.get("/api/v1/cases", headers=h)
        assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [cid]
        one = client.get(f"/api/v1/cases/{cid}", headers=h).json()
        assert one["state"] == "reported" and "13812345678" not in json.dumps(one)
        r = client.get(f"/api/v1/cases/{cid}/reporters", headers=h, params={"purpose": "call back"})
        assert r.status_code == 200 and r.json()["reporters"][0]["phone"] == "13812345678"
        req = client.get("/open311/v2/requests.json").json()
        assert len(req) == 1 and req[0]["requested_datetime"].endswith("Z") and "13812345678" not in json.dumps(req)
        assert client.get("/api/v1/incidents?state=all", headers=h).json()["items"] == []
    from cityvitals.share.audit import entries

    assert [e["dataset"] for e in entries(store)] == ["case_reporters"]
    assert len(routers_for(app.state.ctx)) >= 10


# -- incidents ---------------------------------------------------------------------------
def test_incidents_diagnose_lifecycle(store):
    """Diagnose opens, keeps (same ids on a re-run) and closes incidents the same on both backends."""
    from test_diagnose import ALERTS, REPORTS, T0, network

    from cityvitals.diagnose.run import diagnose_store

    assets, edges, sens = network()
    store.assets.replace(assets.with_columns(pl.lit(None, pl.Binary).alias("geometry_wkb"), pl.lit("{}").alias("props")),
                         edges)
    store.sensors.upsert(sens.with_columns(pl.lit("u").alias("unit")))
    with store.transaction() as con:
        for a in ALERTS:
            store.alerts.insert(con, {k: v for k, v in a.items() if k != "id"})
    rp = store.home / "reports.ndjson"
    rp.write_text("\n".join(json.dumps(r) for r in REPORTS) + "\n")
    now = T0 + timedelta(hours=8)
    res = diagnose_store(store, reports=rp, clock=lambda: now)
    assert res["opened"] == 3 and res["incidents"] == 3
    again = diagnose_store(store, reports=rp, clock=lambda: now)
    assert again["opened"] == 0 and again["unchanged"] == 3
    [open_] = store.incidents.list(state="open")
    assert open_["top_cause"] == "WM1" and isinstance(open_["units"], list)
    inc = store.incidents.get(open_["id"])
    assert inc["causes"][0]["evidence"] and inc["history"][0]["event"] == "opened"
    assert {m["ref"] for m in inc["members"]} >= {"A2", "R1"}
    members, opened = store.incidents.current_members()
    assert opened == {open_["id"]} and len(members) == 3
    assert len(store.incidents.for_eval()) == 3
    with store.transaction() as con:
        con.execute("UPDATE alerts SET state = 'resolved', resolved_at = last_at")
    res = diagnose_store(store, reports=rp, clock=lambda: now)
    assert res["closed"] == 1 and store.incidents.list(state="open") == []
    assert [h["event"] for h in store.incidents.get(open_["id"])["history"]][-1] == "closed"
    assert store.status()["incidents_total"] == 3


# -- data sharing --------------------------------------------------------------------------
def test_share_budget_keys_exports_and_access_chain(store):
    from cityvitals.errors import InputError
    from cityvitals.share import audit
    from cityvitals.share.views import keyring_for

    store.share.set_budget("reports_by_unit", 1.0)
    store.share.set_budget("reports_by_unit", 1.2)                         # replaced, not added
    assert store.share.spend("reports_by_unit", 0.6, actor="t", query="count")["remaining"] == 0.6
    assert store.share.spend("reports_by_unit", 0.6, actor="t", query="count")["remaining"] == 0.0
    with pytest.raises(InputError, match="exceed its privacy budget"):
        store.share.spend("reports_by_unit", 0.1, actor="t", query="count")
    with pytest.raises(InputError, match="no privacy budget"):
        store.share.spend("nothing", 0.1, actor="t", query="count")
    assert store.share.budget("reports_by_unit")["releases"] == 2
    store.share.save_release("reports_by_unit", {"a": 1}, 0.6, now=NOW)
    store.share.save_release("reports_by_unit", {"a": 2}, 0.6, now=NOW)
    assert store.share.release("reports_by_unit")["body"] == {"a": 2}
    # keys: rotating retires the old one; pseudonyms under every key stay derivable
    ring = keyring_for(store)
    k1 = ring.rotate(now=NOW)
    p1 = ring.pseudonym("13900001111")
    k2 = ring.rotate(now=NOW + timedelta(hours=1))
    keys = {k["key_id"]: k for k in store.share.keys()}
    assert {k1, k2} <= set(keys) and [k for k, v in keys.items() if v["retired_at"] is None] == [k2]
    assert p1 in ring.all_pseudonyms("13900001111") and ring.pseudonym("13900001111") != p1
    for i in range(2):
        store.share.register_export(path="/tmp/x.csv", dataset="reports", fmt="csv", audience="research", rows=3 + i,
                                    sha256="ab", key_id=k2, actor="li", now=NOW)
    assert [e["rows"] for e in store.share.exports()] == [4]
    # the access log: chained, anchored outside the table, tampering found
    for i in range(4):
        audit.record(store, actor=f"u{i}", action="read", dataset="reports", fields=["reporter_mobile"],
                     purpose=f"case {i}", records=1, now=NOW + timedelta(minutes=i))
    assert audit.verify(store)["ok"] and [e["seq"] for e in audit.entries(store)] == [4, 3, 2, 1]
    with store.transaction() as con:
        con.execute("UPDATE share_access_log SET purpose = 'curiosity' WHERE seq = 2")
    assert audit.verify(store)["problem"] == "row 2 was edited (hash mismatch)"
    with store.transaction() as con:
        con.execute("UPDATE share_access_log SET purpose = 'case 1' WHERE seq = 2")
        con.execute("DELETE FROM share_access_log WHERE seq = 4")
    assert "deleted" in audit.verify(store)["problem"]
    assert store.status()["share_access_log"] == 3


def test_share_erase_a_person_from_cases(store):
    """Erasure finds a reporter's rows through the cases dataset and leaves no trace in any text column."""
    from test_dispose import LAT, LON

    from cityvitals.share import audit
    from cityvitals.share.erase import erase_person

    desk, _ = _desk(store)
    gone = {"name": "欧阳娜娜", "phone": "13916668888"}
    kept = {"name": "李雷", "phone": "18621235555"}
    a = desk.report(category="SA01", lon=LON, lat=LAT, ref="E1", reporter=gone,
                    text=f"我是{gone['name']}，电话{gone['phone']}，路灯坏了")["case_id"]
    b = desk.report(category="MU01", lon=LON + 0.02, lat=LAT, ref="E2", reporter=kept,
                    text=f"我是{kept['name']}，电话{kept['phone']}，井盖丢了")["case_id"]
    rep = erase_person(store, [gone["phone"]], actor="dpo", purpose="erasure request 7", now=NOW)
    where = {p["where"] for p in rep["places"]}
    assert "table case_reporters" in where and rep["records"].get("cases") == 1
    with store.lock:
        cols = store.frame("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema = current_schema() AND data_type IN ('VARCHAR', 'text')")
    texts = []
    for t, c in cols.iter_rows():
        if t.startswith("readings_"):
            continue
        texts += [v for v in store.frame(f'SELECT "{c}" AS v FROM "{t}" WHERE "{c}" IS NOT NULL')["v"].to_list()]
    assert not [x for x in texts if gone["phone"] in x or gone["name"] in x]
    assert any(kept["phone"] in x for x in texts)
    assert [r["name"] for r in store.cases.reporters(b)] == [kept["name"]] and store.cases.reporters(a) == []
    assert store.cases.get(a)["state"] == "reported"                    # the problem stays, the person goes
    assert audit.verify(store)["ok"] and audit.entries(store, limit=1)[0]["action"] == "erase"


def test_migrations_with_a_gap_are_applied_and_a_late_lower_number_is_found(pg_schema, tmp_path, monkeypatch):
    """Numbers reserved for other branches leave gaps; a migration that lands later with a lower
    number than one already applied still counts as pending, and the store refuses to open until
    it is applied."""
    import psycopg

    from cityvitals.store.duck import StoreError
    from cityvitals.store.pg import migrate

    without = [m for m in migrate.migrations() if m.version != 5]     # 0005 is reserved for another branch
    monkeypatch.setattr(migrate, "migrations", lambda: without)
    open_store(tmp_path, url=pg_schema, migrate=True).close()
    late = migrate.Migration(5, "late", "CREATE TABLE late_table (x INTEGER)")
    monkeypatch.setattr(migrate, "migrations", lambda: sorted(without + [late], key=lambda m: m.version))
    with pytest.raises(StoreError, match="migrations 5 not applied"):
        open_store(tmp_path, url=pg_schema)
    with psycopg.connect(pg_schema, autocommit=True) as conn:
        assert migrate.pending(conn) == [5] and migrate.upgrade(conn) == [5] and migrate.pending(conn) == []
        assert migrate.upgrade(conn) == [] and conn.execute("SELECT count(*) FROM late_table").fetchall() == [(0,)]
    open_store(tmp_path, url=pg_schema).close()


def test_migration_files_gaps_and_duplicate_numbers(tmp_path):
    from cityvitals.store.pg import migrate

    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0003_c.sql").write_text("SELECT 3")
    (tmp_path / "README").write_text("not a migration")
    assert [(m.version, m.name) for m in migrate.migrations(tmp_path)] == [(1, "a"), (3, "c")]
    (tmp_path / "0003_twin.sql").write_text("SELECT 3")
    with pytest.raises(RuntimeError, match="share number 3"):
        migrate.migrations(tmp_path)


# -- the stages that follow the store in a server ---------------------------------------------
def test_live_stages_raise_alerts_and_indicators_after_each_commit(reg, request):
    """Readings stored by the ingest wake the watch, which raises the threshold alert with its
    detectors' state kept in memory; signs follow; closing checkpoints the watch's state."""
    from cityvitals.live import LiveStages
    from cityvitals.watch.runner import STATE_NAME

    store = reg
    if store.backend == "postgresql":
        from cityvitals.store.pg import PostgresStore

        opened = []
        url = store.url

        def open_():
            opened.append(PostgresStore(url))
            return opened[-1]
    else:
        opened = []

        def open_():
            return store
    clock = lambda: NOW  # noqa: E731
    live = LiveStages(open_, thresholds={"pm25": Threshold((300.0, 500.0, 700.0), "higher", 0)}, use_catalog=False,
                      clock=clock, checkpoint_seconds=3600).start()
    try:
        ingest_now = [NOW - timedelta(seconds=10)]   # each batch ingested a little later (the watch's watermark)
        ing = Ingestor(store, clock=lambda: ingest_now[0])
        base = NOW - timedelta(minutes=30)
        recs = [{"sensor_id": "A1", "ts": (base + timedelta(minutes=m)).isoformat(), "value": 40.0} for m in range(20)]
        assert ing.ingest_records(recs).accepted == 20
        live.notify()
        assert live.wait_caught_up(60) and store.alerts.list(state="open", type_="threshold") == []
        spike = [{"sensor_id": "A1", "ts": (base + timedelta(minutes=m)).isoformat(), "value": 800.0}
                 for m in range(20, 25)]
        ingest_now[0] = NOW
        assert ing.ingest_records(spike).accepted == 5
        live.notify()
        assert live.wait_caught_up(60)
        [alert] = store.alerts.list(state="open", type_="threshold")
        assert (alert["source"], alert["level"]) == ("A1", "alarm") and live.errors == []
        assert store.alerts.get_watch_state(STATE_NAME) == (None, None)   # in memory until due or closed
    finally:
        live.close()
    wm, blob = store.alerts.get_watch_state(STATE_NAME)
    assert wm is not None and blob
    assert live.watch_runs and live.errors == []
    for s in opened:
        s.close()


def test_alerts_auto_resolve_reopen_and_flap_in_one_batch(store):
    """Clear long enough resolves; a new breach soon after reopens the same alert (also when
    the resolve happened earlier in the same batch); the third reopening marks it flapping;
    a breach long after raises a new alert."""
    t = datetime(2026, 3, 2, 8, tzinfo=timezone.utc)
    mgr = AlertManager(store, AlertPolicy(resolve_after=timedelta(minutes=10), reopen_within=timedelta(minutes=30),
                                          flap_threshold=3), clock=lambda: t)
    m = timedelta(minutes=1)
    obs = [Observation("S1", "threshold", 2, t), Observation("S2", "threshold", 1, t)]
    for k in range(3):   # clear for 10 minutes, then breach again: resolve and reopen, in one batch each time
        base = t + (k * 20 + 1) * m
        obs += [Observation("S1", "threshold", 0, base), Observation("S1", "threshold", 0, base + 10 * m),
                Observation("S1", "threshold", 2, base + 12 * m)]
    assert mgr.observe(obs) == {"raised": 2, "repeated": 0, "reopened": 3, "level_changed": 0, "resolved": 3}
    [s1] = store.alerts.list(source="S1")
    assert (s1["state"], s1["reopened"], s1["flapping"], s1["occurrences"]) == ("active", 3, True, 4)
    later = t + 3 * 60 * m
    assert mgr.observe([Observation("S2", "threshold", 0, later), Observation("S2", "threshold", 0, later + 10 * m)]
                       )["resolved"] == 1
    # resolved in an earlier batch, breached within the window: reopened (the last resolved is read)
    assert mgr.observe([Observation("S2", "threshold", 1, later + 20 * m)])["reopened"] == 1
    assert mgr.observe([Observation("S2", "threshold", 0, later + 21 * m),
                        Observation("S2", "threshold", 0, later + 31 * m)])["resolved"] == 1
    # long after: a new alert
    assert mgr.observe([Observation("S2", "threshold", 1, later + 300 * m)])["raised"] == 1
    assert len(store.alerts.list(source="S2")) == 2 and store.alerts.count() == 3
    # open at the batch's start, with an old resolved alert too: resolved and breached again in
    # the batch, the one just resolved reopens (not the old one, not a new alert)
    end = later + 300 * m
    assert mgr.observe([Observation("S2", "threshold", 0, end + m), Observation("S2", "threshold", 0, end + 11 * m),
                        Observation("S2", "threshold", 2, end + 12 * m)]) == {
        "raised": 0, "repeated": 0, "reopened": 1, "level_changed": 0, "resolved": 1}
    assert [a["state"] for a in store.alerts.list(source="S2")].count("active") == 1 and store.alerts.count() == 3


def test_alert_writes_of_one_batch_keep_last_values_and_event_order(store):
    """Many alerts raised, seen again twice, raised a level and resolved in one batch (on
    PostgreSQL each run of like writes is one statement and the event log goes after the
    rows): every alert ends with its last values, its events in the order they happened."""
    t = datetime(2026, 3, 2, 8, tzinfo=timezone.utc)
    m = timedelta(minutes=1)
    mgr = AlertManager(store, AlertPolicy(resolve_after=timedelta(minutes=10)), clock=lambda: t)
    ids = [f"S{i:02d}" for i in range(30)]
    obs = [Observation(s, "threshold", 1, t, "first") for s in ids]
    obs += [Observation(s, "threshold", 1, t + k * m, f"seen {k}") for k in (1, 2) for s in ids]
    obs += [Observation(s, "threshold", 3, t + 3 * m, "alarm") for s in ids[::2]]
    obs += [Observation(s, "threshold", 0, t + k * m) for k in (4, 15) for s in ids[1::2]]
    assert mgr.observe(obs) == {"raised": 30, "repeated": 0, "reopened": 0, "level_changed": 15, "resolved": 15}
    got = {a["source"]: a for a in store.alerts.list(state="all", limit=100)}
    for i, s in enumerate(ids):
        a = got[s]
        if i % 2 == 0:
            assert (a["state"], a["level"], a["message"], a["last_at"]) == ("active", "alarm", "alarm", t + 3 * m)
            assert [e["event"] for e in store.alerts.events(a["id"])] == ["raise", "level"]
        else:
            assert (a["state"], a["level"], a["message"], a["last_at"]) == ("resolved", "attention", "seen 2", t + 2 * m)
            assert (a["resolved_at"], a["clear_since"]) == (t + 15 * m, None)
            assert [e["event"] for e in store.alerts.events(a["id"])] == ["raise", "auto_resolve"]
    assert sorted(got) == ids and store.alerts.count() == 30
