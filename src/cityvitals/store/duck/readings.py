"""Readings: append-only, in each kind's canonical unit, idempotent on (sensor, ts).

Layout: readings are stored in ``reading_rows`` keyed by ``sensor_key`` (INTEGER, the
sensor's id in the ``sensor_keys`` dictionary the registry keeps) instead of the sensor
id string. Compressing a VARCHAR column of 100,000 distinct ids (DICT_FSST) was about
half of the ingest's remaining CPU; an integer column costs next to nothing to write.
``readings`` is a view with the original columns (``sensor_id``, ts, value, quality,
kind, unit_code, ingested_at), so every reader -- the API, signs, watch, exports --
reads as before; hot paths that do not need the id string read ``reading_rows``.
``kind`` and ``unit_code`` stay in the row as they were when the reading was taken
(a sensor moved later keeps its old readings where they were); they have few distinct
values, so DuckDB's dictionary compression keeps them cheap. A store written with the
old ``readings`` table is upgraded when it is opened for writing (``upgrade``).

There is no primary-key index: DuckDB's index would slow bulk loads several-fold, so
idempotence is enforced by the ingest step's anti-join against stored keys in the
batch's time range, inside the same transaction as the insert (the store has one
writer).
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pyarrow as pa

READING_COLUMNS = ("sensor_id", "ts", "value", "quality", "kind", "unit_code", "ingested_at")

VIEW = ("SELECT k.sensor_id, r.ts, r.value, r.quality, r.kind, r.unit_code, r.ingested_at "
        "FROM reading_rows r JOIN sensor_keys k ON k.key = r.sensor_key")
"""The original ``readings`` columns over the integer-keyed table: what every reader sees."""


class ReadingRepo:
    DDL = (
        """CREATE TABLE IF NOT EXISTS reading_rows (
            sensor_key INTEGER NOT NULL,  -- sensor_keys.key
            ts TIMESTAMPTZ NOT NULL,
            value DOUBLE NOT NULL,
            quality VARCHAR,
            kind VARCHAR,
            unit_code VARCHAR,
            ingested_at TIMESTAMPTZ NOT NULL
        )""",
    )

    _table: str | None = None  # the physical table, once known (see ``table``)

    def __init__(self, store):
        self.store = store

    def upgrade(self) -> None:
        """Bring a store written with a string-keyed ``readings`` table to ``reading_rows``
        (every sensor id it holds gets a key; rows keep their order), in one transaction;
        then make sure the view exists. On a current store it looks up one table type."""
        with self.store.lock:
            con = self.store.con
            kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'readings' "
                               "AND table_schema = current_schema()").fetchall()
            if kind and kind[0][0] == "BASE TABLE":
                with self.store.transaction() as tx:
                    tx.execute("INSERT INTO sensor_keys (sensor_id) SELECT DISTINCT sensor_id FROM readings "
                               "WHERE sensor_id NOT IN (SELECT sensor_id FROM sensor_keys) ORDER BY 1")
                    tx.execute(
                        "INSERT INTO reading_rows (sensor_key, ts, value, quality, kind, unit_code, ingested_at) "
                        "SELECT k.key, r.ts, r.value, r.quality, r.kind, r.unit_code, r.ingested_at "
                        "FROM readings r JOIN sensor_keys k ON k.sensor_id = r.sensor_id ORDER BY r.rowid")
                    tx.execute("DROP TABLE readings")
                    tx.execute(f"CREATE VIEW readings AS {VIEW}")
            elif not kind:
                con.execute(f"CREATE VIEW readings AS {VIEW}")
            self._table = "reading_rows"

    @property
    def table(self) -> str:
        """The physical table (``reading_rows``; ``readings`` in an old store opened read-only,
        and on PostgreSQL, whose repository inherits this one): for readers that need neither
        the id string nor the view's join (counts, row ids, unit counts)."""
        if self._table is None:
            with self.store.lock:
                n = self.store.con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 'reading_rows' "
                    "AND table_schema = current_schema()").fetchall()[0][0]
            self._table = "reading_rows" if n else "readings"
        return self._table

    def bulk_load(self, table: pa.Table | pl.DataFrame) -> int:
        """Append rows with the ``readings`` columns as they are, no validation or dedupe:
        for benches and tests that build a store directly (ingest is the door for data).
        Sensor ids without a key get one."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        missing = [c for c in READING_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"bulk_load needs the readings columns; missing {missing}")
        with self.store.transaction() as con:
            con.register("_readings_in", table)
            try:
                con.execute("INSERT INTO sensor_keys (sensor_id) SELECT DISTINCT sensor_id FROM _readings_in "
                            "WHERE sensor_id NOT IN (SELECT sensor_id FROM sensor_keys) ORDER BY 1")
                con.execute(
                    "INSERT INTO reading_rows (sensor_key, ts, value, quality, kind, unit_code, ingested_at) "
                    "SELECT k.key, r.ts, r.value, r.quality, r.kind, r.unit_code, r.ingested_at "
                    "FROM _readings_in r JOIN sensor_keys k ON k.sensor_id = r.sensor_id")
            finally:
                con.unregister("_readings_in")
        return table.num_rows

    def frame(
        self,
        *,
        sensor_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        kind: str | None = None,
        unit_codes: list[str] | None = None,
    ) -> pl.DataFrame:
        """Readings in [start, end), optionally for one sensor, kind or set of units."""
        where, params = [], []
        if sensor_id is not None:
            where.append("sensor_id = ?")
            params.append(sensor_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if start is not None:
            where.append("ts >= ?")
            params.append(start)
        if end is not None:
            where.append("ts < ?")
            params.append(end)
        if unit_codes is not None:
            where.append("list_contains(?, unit_code)")
            params.append(list(unit_codes))
        sql = "SELECT sensor_id, ts, value, quality, kind, unit_code FROM readings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.store.frame(sql + " ORDER BY sensor_id, ts", params)

    def since(self, ingested_after: datetime | None):
        """Readings ingested after a watermark as Arrow (sensor_id, t = epoch seconds, value,
        ingested_at), in time order: what a stage that follows the ingest reads (watch)."""
        return self.store.arrow(
            "SELECT sensor_id, epoch(ts)::BIGINT AS t, value, ingested_at FROM readings "
            "WHERE ingested_at > ? ORDER BY ts, sensor_id",
            [ingested_after or datetime(1, 1, 1, tzinfo=timezone.utc)],
        )

    def count(self) -> int:
        with self.store.lock:
            return self.store.con.execute(f"SELECT count(*) FROM {self.table}").fetchall()[0][0]

    def status(self) -> dict:
        with self.store.lock:
            n, lo, hi = self.store.con.execute(f"SELECT count(*), min(ts), max(ts) FROM {self.table}").fetchall()[0]
        return {
            "readings": n,
            "readings_from": lo.isoformat() if lo else None,
            "readings_to": hi.isoformat() if hi else None,
        }
