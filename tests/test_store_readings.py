"""The DuckDB readings layout: integer sensor and unit keys in ``reading_rows`` behind the
``readings`` view, and the upgrade of a store written with the string-keyed ``readings`` table."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl

from cityvitals.ingest import Ingestor
from cityvitals.store import open_store
from waits import wait_for

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
SENSORS = pl.DataFrame({
    "id": ["P1", "P2", "T1"],
    "kind": ["water_pressure", "water_pressure", "temperature"],
    "unit": ["MPa", "kPa", "degC"],
    "unit_code": ["g1", "g2", "g1"],
})


def _line(sid: str, minute: int, value: float) -> dict:
    return {"sensor_id": sid, "ts": f"2026-05-01T08:{minute:02d}:00+00:00", "value": value}


def _both_paths(store) -> tuple[Ingestor, Ingestor]:
    """An ingestor on the SQL rules alone and one that sends every batch down the fast path."""
    sql, fast = Ingestor(store, clock=lambda: NOW), Ingestor(store, clock=lambda: NOW)
    fast.fast_min_lines = 0
    return sql, fast


def test_readings_are_stored_with_integer_sensor_keys_and_read_back_with_ids(tmp_path):
    with open_store(tmp_path) as store:
        store.sensors.upsert(SENSORS)
        keys = dict(store.frame("SELECT sensor_id, key FROM sensor_keys").rows())
        assert sorted(keys) == ["P1", "P2", "T1"] and len(set(keys.values())) == 3
        sql, fast = _both_paths(store)
        assert sql.ingest_records([_line("P1", 0, 0.3), _line("P2", 0, 300.0)]).accepted == 2
        assert fast.ingest_records([_line("T1", 0, 21.5), _line("P1", 1, 0.31)]).accepted == 2
        raw = store.frame("SELECT sensor_key, unit_key, ts FROM reading_rows")
        assert raw.schema["sensor_key"] == pl.Int32 and raw.schema["unit_key"] == pl.Int32 and raw.height == 4
        types = dict(store.frame("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'reading_rows'").rows())
        assert "sensor_id" not in types and "unit_code" not in types and types["kind"] == "VARCHAR"
        assert sorted(store.frame("SELECT unit_code FROM unit_keys")["unit_code"].to_list()) == ["g1", "g2"]
        got = store.readings.frame()
        assert got.select("sensor_id", "value", "kind", "unit_code").rows() == [
            ("P1", 0.3, "water_pressure", "g1"), ("P1", 0.31, "water_pressure", "g1"),
            ("P2", 0.3, "water_pressure", "g2"), ("T1", 21.5, "temperature", "g1")]
        assert store.readings.frame(sensor_id="P2")["value"].to_list() == [0.3]  # kPa stored as MPa
        assert store.readings.count() == 4 and store.status()["readings"] == 4
        by_unit = store.frame(f"SELECT unit_code, count(*) AS n, max(rowid) AS last FROM {store.readings.by_key} "
                              "GROUP BY ALL ORDER BY 1")
        assert by_unit.select("unit_code", "n").rows() == [("g1", 3), ("g2", 1)] and by_unit["last"].max() == 3
        # a sensor registered again (moved) keeps its key; its stored readings keep their unit
        store.sensors.upsert(SENSORS.with_columns(pl.lit("g2").alias("unit_code")))
        assert dict(store.frame("SELECT sensor_id, key FROM sensor_keys").rows()) == keys
        assert store.readings.frame(sensor_id="T1")["unit_code"].to_list() == ["g1"]
        # duplicates and conflicts are found against the keyed rows, on both paths
        for ing in (sql, fast):
            rep = ing.ingest_records([_line("P1", 0, 0.3), _line("T1", 0, 22.0)])
            assert (rep.accepted, rep.duplicates, rep.quarantined) == (0, 1, {"conflict": 1})
        assert store.readings.count() == 4


def test_bulk_load_gives_unknown_sensors_keys(tmp_path):
    with open_store(tmp_path) as store:
        store.sensors.upsert(SENSORS)
        df = pl.DataFrame({"sensor_id": ["P1", "Z9"], "ts": [NOW, NOW], "value": [0.2, 5.0], "quality": [None, "ok"],
                           "kind": ["water_pressure", "noise"], "unit_code": ["g1", None], "ingested_at": [NOW, NOW]})
        assert store.readings.bulk_load(df) == 2
        assert store.readings.frame().select("sensor_id", "value", "quality", "unit_code").rows() == [
            ("P1", 0.2, None, "g1"), ("Z9", 5.0, "ok", None)]
        assert store.frame("SELECT count(*) AS n FROM sensor_keys")["n"][0] == 4


def _rewind_to_string_keys(path) -> None:
    """Turn a fresh store file into one written before ``reading_rows`` existed, with three
    stored readings (one of a sensor the registry no longer has)."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    con.execute("DROP VIEW readings")
    con.execute("DROP VIEW readings_by_key")
    con.execute("DROP TABLE reading_rows")
    for name in ("sensor_key", "unit_key"):
        con.execute(f"DROP TABLE {name}s")
        con.execute(f"DROP SEQUENCE {name}_seq")
    con.execute("""CREATE TABLE readings (sensor_id VARCHAR NOT NULL, ts TIMESTAMPTZ NOT NULL, value DOUBLE NOT NULL,
        quality VARCHAR, kind VARCHAR, unit_code VARCHAR, ingested_at TIMESTAMPTZ NOT NULL)""")
    con.execute("INSERT INTO readings VALUES "
                "('P1', '2026-05-01 08:00:00+00', 0.3, 'good', 'water_pressure', 'g1', '2026-05-01 08:00:05+00'), "
                "('GONE', '2026-05-01 08:00:00+00', 7.0, NULL, 'noise', 'g2', '2026-05-01 08:00:05+00'), "
                "('T1', '2026-05-01 08:01:00+00', 21.5, NULL, 'temperature', 'g1', '2026-05-01 08:01:05+00')")
    con.close()


def test_an_older_store_with_string_keyed_readings_is_upgraded_on_open(tmp_path):
    with open_store(tmp_path) as store:
        store.sensors.upsert(SENSORS)
    _rewind_to_string_keys(tmp_path / "cityvitals.duckdb")
    old = [("GONE", 7.0, None, "noise", "g2"), ("P1", 0.3, "good", "water_pressure", "g1"),
           ("T1", 21.5, None, "temperature", "g1")]
    with open_store(tmp_path, read_only=True) as store:  # read-only: the old table still reads the same
        assert store.readings.frame().select("sensor_id", "value", "quality", "kind", "unit_code").rows() == old
        assert store.readings.count() == 3 and store.readings.by_key == "readings"
    with open_store(tmp_path) as store:
        kind = store.frame("SELECT table_type FROM information_schema.tables WHERE table_name = 'readings'")
        assert kind["table_type"].to_list() == ["VIEW"]
        assert store.readings.by_key == "readings_by_key" and store.frame("SELECT * FROM reading_rows").height == 3
        assert store.readings.frame().select("sensor_id", "value", "quality", "kind", "unit_code").rows() == old
        ing = store.frame("SELECT sensor_id, ingested_at FROM readings ORDER BY sensor_id")
        assert ing["ingested_at"].to_list()[1] == datetime(2026, 5, 1, 8, 0, 5, tzinfo=UTC)
        # registered sensors without readings got keys too (P2), and the sensor gone from the registry kept one
        assert sorted(store.frame("SELECT sensor_id FROM sensor_keys")["sensor_id"].to_list()) == ["GONE", "P1", "P2", "T1"]
        assert sorted(store.frame("SELECT unit_code FROM unit_keys")["unit_code"].to_list()) == ["g1", "g2"]
        # the upgraded rows take part in the dedupe, on both paths; new readings are accepted
        sql, fast = _both_paths(store)
        for ing in (sql, fast):
            rep = ing.ingest_records([_line("P1", 0, 0.3), _line("T1", 1, 22.0)])
            assert (rep.accepted, rep.duplicates, rep.quarantined) == (0, 1, {"conflict": 1})
        assert sql.ingest_records([_line("P2", 2, 250.0)]).accepted == 1
        assert fast.ingest_records([_line("P1", 3, 0.35)]).accepted == 1
        assert store.readings.count() == 5
        assert store.readings.frame(sensor_id="P2").select("value", "unit_code").rows() == [(0.25, "g2")]
    with open_store(tmp_path) as store:  # opening again changes nothing
        assert store.readings.count() == 5
        assert store.frame("SELECT count(*) AS n FROM sensor_keys")["n"][0] == 4


# -- ingested_at: the instant readers poll by --------------------------------------------------
def test_each_batch_is_stamped_after_the_last_even_with_a_frozen_clock(tmp_path, pg_schema):
    """The watch, the signs stage and the change feed read "ingested after the last instant
    I saw": two batches stamped alike would hide the second from a reader that looked
    between them. A frozen clock (tests, a replay) and two batches in one microsecond must
    still give later stamps, on both backends."""
    for url in (None, pg_schema):
        with open_store(tmp_path / ("pg" if url else "duck"), url=url, migrate=True) as store:
            store.sensors.upsert(SENSORS)
            ing = Ingestor(store, clock=lambda: NOW)
            ing.fast_min_lines = 0
            assert ing.ingest_records([_line("P1", 0, 0.3)]).accepted == 1
            seen = store.frame("SELECT max(ingested_at) AS m FROM readings")["m"][0]
            assert ing.ingest_records([_line("P1", 1, 0.4), _line("T1", 1, 20.0)]).accepted == 2
            assert Ingestor(store, clock=lambda: NOW).ingest_records([_line("P2", 2, 310.0)]).accepted == 1
            stamps = store.frame("SELECT sensor_id, ingested_at FROM readings ORDER BY ingested_at, sensor_id")
            assert stamps["ingested_at"].to_list()[0] == NOW
            assert stamps["ingested_at"].n_unique() == 3  # one per batch, each later than the last
            since = store.readings.since(seen)
            assert sorted(since.column("sensor_id").to_pylist()) == ["P1", "P2", "T1"]


def test_postgresql_stamps_follow_commit_order_across_writers(pg_schema):
    """A writer that commits second stamps later, even when its clock says earlier: the stamp
    row stays locked until the first writer's transaction ends."""
    import threading

    from cityvitals.store.pg import PostgresStore
    from cityvitals.store.pg.readings import PgReadingRepo

    a, b = PostgresStore(pg_schema, migrate_schema=True), PostgresStore(pg_schema)
    try:
        got: dict[str, datetime] = {}
        entered = threading.Event()

        def second() -> None:
            with b.transaction() as con:
                entered.set()
                got["b"] = PgReadingRepo._stamp(con, NOW.replace(hour=0))  # an earlier clock

        with a.transaction() as con:
            got["a"] = PgReadingRepo._stamp(con, NOW)
            th = threading.Thread(target=second)
            th.start()
            assert entered.wait(10)
            th.join(0.5)
            assert th.is_alive() and "b" not in got  # waits for the first writer to end
        th.join(10)
        assert got["a"] == NOW and got["b"] > got["a"]
    finally:
        a.close()
        b.close()


def test_postgresql_readers_stop_before_a_batch_still_in_flight(pg_schema):
    """Writers take their stamps apart from their batches, so their COPYs overlap and a batch
    can commit after one stamped later. A reader polling "ingested after" must then stop
    before the older batch still in flight, or it would step past it for good: it reads the
    later batch only once the earlier one is settled, and a writer that dies mid-batch (its
    session, and so its lock, gone) holds nobody back."""
    import pyarrow as pa

    from cityvitals.store.pg import PostgresStore

    a = PostgresStore(pg_schema, migrate_schema=True)
    b, reader = PostgresStore(pg_schema), PostgresStore(pg_schema)
    try:
        a.sensors.upsert(SENSORS)
        early = a.readings.open_stamp(NOW)  # a's batch: stamped, not yet stored
        assert Ingestor(b, clock=lambda: NOW).ingest_records([_line("P1", 1, 0.4)]).accepted == 1
        later = b.frame("SELECT max(ingested_at) AS m FROM readings")["m"][0]
        assert later > early
        assert reader.readings.settled() < early
        assert reader.readings.since(None).num_rows == 0  # not past a's batch, still in flight
        a.readings.bulk_load(pa.table({  # a's batch lands with its earlier stamp, then settles
            "sensor_id": ["P2"], "ts": pa.array([NOW], pa.timestamp("us", "UTC")), "value": [0.5],
            "quality": pa.nulls(1, pa.string()), "kind": ["water_pressure"], "unit_code": pa.nulls(1, pa.string()),
            "ingested_at": pa.array([early], pa.timestamp("us", "UTC"))}))
        a.readings.close_stamp(early)
        got = reader.readings.since(None)
        assert sorted(got.column("sensor_id").to_pylist()) == ["P1", "P2"]
        # a writer killed in flight: its lock goes with its session
        c = PostgresStore(pg_schema)
        dead = c.readings.open_stamp(NOW)
        assert reader.readings.settled() < dead
        c.pg.close()  # the server ends the session as the socket closes
        wait_for(lambda: reader.readings.settled() >= dead, 10, "the dead writer's session to end")
    finally:
        a.close()
        b.close()
        reader.close()
