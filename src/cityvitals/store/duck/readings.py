"""Readings: append-only, in each kind's canonical unit, idempotent on (sensor, ts).

Layout: readings are stored in ``reading_rows`` with integer keys instead of the two
strings each row used to carry: ``sensor_key`` (the sensor's key in ``sensor_keys``) and
``unit_key`` (the spatial unit's key in ``unit_keys``; both dictionaries are kept by the
sensor registry). Compressing VARCHAR columns of 100,000 distinct sensor ids and tens of
thousands of unit codes per row group (DICT_FSST) was most of the ingest's CPU; integer
columns cost next to nothing to write. ``readings`` is a view with the original columns
(``sensor_id``, ts, value, quality, kind, unit_code, ingested_at), so every reader -- the
API, signs, watch, exports -- reads as before. ``readings_by_key`` is the same without the
sensor id join, with the physical ``rowid``: for readers that count or group by unit
(``ReadingRepo.by_key`` names whichever relation a store has). ``unit_key`` is the unit
the sensor was in when the reading was taken (a sensor moved later keeps its old readings
where they were); ``kind`` stays a string (a few dozen values compress cheaply).
A store written with the old ``readings`` table is upgraded when it is opened for
writing (``upgrade``).

There is no primary-key index: DuckDB's index would slow bulk loads several-fold, so
idempotence is enforced by the ingest step's anti-join against stored keys in the
batch's time range, inside the same transaction as the insert (the store has one
writer).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pyarrow as pa

READING_COLUMNS = ("sensor_id", "ts", "value", "quality", "kind", "unit_code", "ingested_at")
ROW_COLUMNS = "sensor_key, ts, value, quality, kind, unit_key, ingested_at"
_KEYED = ("(SELECT key FROM sensor_keys WHERE sensor_id = r.sensor_id), r.ts, r.value, r.quality, r.kind, "
          "(SELECT key FROM unit_keys WHERE unit_code = r.unit_code), r.ingested_at")
"""The ``reading_rows`` values of a relation ``r`` with the ``readings`` columns (keys assigned first)."""


def _add_keys(con, relation: str) -> None:
    """Give every sensor id and unit code of ``relation`` (with the ``readings`` columns) a key."""
    con.execute(f"INSERT INTO sensor_keys (sensor_id) SELECT DISTINCT sensor_id FROM {relation} "
                "WHERE sensor_id NOT IN (SELECT sensor_id FROM sensor_keys) ORDER BY 1")
    con.execute(f"INSERT INTO unit_keys (unit_code) SELECT DISTINCT unit_code FROM {relation} "
                "WHERE unit_code IS NOT NULL AND unit_code NOT IN (SELECT unit_code FROM unit_keys) ORDER BY 1")

VIEWS = {
    "readings": (
        "SELECT k.sensor_id, r.ts, r.value, r.quality, r.kind, u.unit_code, r.ingested_at FROM reading_rows r "
        "JOIN sensor_keys k ON k.key = r.sensor_key LEFT JOIN unit_keys u ON u.key = r.unit_key"),
    "readings_by_key": (
        "SELECT r.rowid AS rowid, r.sensor_key, r.ts, r.value, r.quality, r.kind, u.unit_code, r.ingested_at "
        "FROM reading_rows r LEFT JOIN unit_keys u ON u.key = r.unit_key"),
}
"""The original ``readings`` columns over the integer-keyed table (what every reader sees),
and the same without the sensor id join (for counts and groups by unit)."""


class ReadingRepo:
    cursor_column = "rowid"
    """What tells new readings from old for a reader that polls (the API's change feed): the
    physical row id, which grows as rows are appended."""
    DDL = (
        """CREATE TABLE IF NOT EXISTS reading_rows (
            sensor_key INTEGER NOT NULL,  -- sensor_keys.key
            ts TIMESTAMPTZ NOT NULL,
            value DOUBLE NOT NULL,
            quality VARCHAR,
            kind VARCHAR,
            unit_key INTEGER,             -- unit_keys.key (null: the sensor was not located)
            ingested_at TIMESTAMPTZ NOT NULL
        )""",
    )

    _layout: str | None = None  # "keys" (reading_rows) or "strings" (an old store read-only; PostgreSQL)

    def __init__(self, store):
        self.store = store

    def upgrade(self) -> None:
        """Bring a store written with a string-keyed ``readings`` table to ``reading_rows``
        (every sensor id and unit code it holds gets a key; rows keep their order), in one
        transaction; then make sure the views exist. On a current store it looks up two
        table types."""
        with self.store.lock:
            con = self.store.con
            for name, sql in VIEWS.items():
                kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = ? "
                                   "AND table_schema = current_schema()", [name]).fetchall()
                if kind and kind[0][0] == "BASE TABLE":
                    with self.store.transaction() as tx:
                        _add_keys(tx, "readings")
                        tx.execute(f"INSERT INTO reading_rows ({ROW_COLUMNS}) SELECT {_KEYED} "
                                   "FROM readings r ORDER BY r.rowid")
                        tx.execute("DROP TABLE readings")
                        tx.execute(f"CREATE VIEW readings AS {sql}")
                elif not kind:
                    con.execute(f"CREATE VIEW {name} AS {sql}")
            self._layout = "keys"

    @property
    def _keyed(self) -> bool:
        if self._layout is None:
            with self.store.lock:
                n = self.store.con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 'reading_rows' "
                    "AND table_schema = current_schema()").fetchall()[0][0]
            self._layout = "keys" if n else "strings"
        return self._layout == "keys"

    @property
    def _physical(self) -> str:
        return "reading_rows" if self._keyed else "readings"

    @property
    def by_key(self) -> str:
        """The relation to read when neither the sensor id string nor its join is needed
        (counts, groups by unit, row ids): ``readings_by_key``, or ``readings`` in an old
        store opened read-only and on PostgreSQL (whose repository inherits this one)."""
        return "readings_by_key" if self._keyed else "readings"

    def stamp(self, now: datetime) -> datetime:
        """The ``ingested_at`` of a batch being written (under the store's lock): ``now``, or
        just after the last stamp if that is not earlier. Readers that poll "ingested after
        the last instant I saw" (the watch, the signs stage) then never meet a batch stored
        with the same or an earlier stamp after they looked: a frozen or stepped-back clock,
        or two batches in one microsecond, would otherwise hide one."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        last = getattr(self, "_last_stamp", None)
        if last is None:
            last = self.store.con.execute(f"SELECT max(ingested_at) FROM {self._physical}").fetchall()[0][0]
        if last is not None and now <= last:
            now = last + timedelta(microseconds=1)
        self._last_stamp = now
        return now

    def bulk_load(self, table: pa.Table | pl.DataFrame) -> int:
        """Append rows with the ``readings`` columns as they are, no validation or dedupe:
        for benches and tests that build a store directly (ingest is the door for data).
        Sensor ids and unit codes without a key get one."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        missing = [c for c in READING_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"bulk_load needs the readings columns; missing {missing}")
        with self.store.transaction() as con:
            con.register("readings_in", table)
            try:
                _add_keys(con, "readings_in")
                con.execute(f"INSERT INTO reading_rows ({ROW_COLUMNS}) SELECT {_KEYED} FROM readings_in r")
            finally:
                con.unregister("readings_in")
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
            return self.store.con.execute(f"SELECT count(*) FROM {self._physical}").fetchall()[0][0]

    def status(self) -> dict:
        with self.store.lock:
            n, lo, hi = self.store.con.execute(f"SELECT count(*), min(ts), max(ts) FROM {self._physical}").fetchall()[0]
        return {
            "readings": n,
            "readings_from": lo.isoformat() if lo else None,
            "readings_to": hi.isoformat() if hi else None,
        }
