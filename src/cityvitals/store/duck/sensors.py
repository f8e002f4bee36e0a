"""The sensor registry: every sensor, its kind, unit, place and cached spatial unit.

``unit`` is the unit of measure the sensor reports in; ``unit_code`` is the spatial
unit it was located in when registered (cached so readings never need geometry).

Each sensor id also gets a ``key`` in ``sensor_keys`` when first registered, and each
spatial unit a sensor is located in a ``key`` in ``unit_keys``: the integers the stored
readings carry instead of the two strings (see ``readings.py``). Keys are assigned once
and never changed or reused, so a cached key can only be missing, never wrong; they
outlive a sensor's registry row (its readings keep theirs).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

SENSOR_COLUMNS = ("id", "kind", "unit", "lon", "lat", "department", "installed", "unit_code", "meta")


class SensorRepo:
    DDL = (
        """CREATE TABLE IF NOT EXISTS sensors (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            unit VARCHAR NOT NULL,
            lon DOUBLE,
            lat DOUBLE,
            department VARCHAR,
            installed TIMESTAMPTZ,
            unit_code VARCHAR,
            meta VARCHAR,
            registered_at TIMESTAMPTZ DEFAULT current_timestamp
        )""",
        "CREATE SEQUENCE IF NOT EXISTS sensor_key_seq",
        """CREATE TABLE IF NOT EXISTS sensor_keys (
            key INTEGER PRIMARY KEY DEFAULT nextval('sensor_key_seq'),
            sensor_id VARCHAR NOT NULL UNIQUE
        )""",
        "CREATE SEQUENCE IF NOT EXISTS unit_key_seq",
        """CREATE TABLE IF NOT EXISTS unit_keys (
            key INTEGER PRIMARY KEY DEFAULT nextval('unit_key_seq'),
            unit_code VARCHAR NOT NULL UNIQUE
        )""",
    )
    _ADD_KEYS = ("INSERT INTO sensor_keys (sensor_id) SELECT id FROM sensors "
                 "WHERE id NOT IN (SELECT sensor_id FROM sensor_keys) ORDER BY 1",
                 "INSERT INTO unit_keys (unit_code) SELECT DISTINCT unit_code FROM sensors WHERE unit_code IS NOT NULL "
                 "AND unit_code NOT IN (SELECT unit_code FROM unit_keys) ORDER BY 1")

    def __init__(self, store):
        self.store = store
        self.version = 0  # bumped on every change, so lookups built from the registry know to refresh

    def upgrade(self) -> None:
        """Give the sensors and units of a store written before the key tables their keys."""
        self.ensure_keys()

    def ensure_keys(self) -> None:
        """Every registered sensor and the unit it is in have keys (``upsert`` gives them; this
        covers a store written before the keys and any other way in)."""
        with self.store.transaction() as con:
            for sql in self._ADD_KEYS:
                con.execute(sql)

    def upsert(self, table: pa.Table | pl.DataFrame) -> int:
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        cols = [c for c in SENSOR_COLUMNS if c in table.column_names]
        with self.store.transaction() as con:
            con.register("_sensors_in", table)
            try:
                con.execute(
                    f"INSERT OR REPLACE INTO sensors ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _sensors_in"
                )
                for sql in self._ADD_KEYS:
                    con.execute(sql)
            finally:
                con.unregister("_sensors_in")
        self.version += 1
        return table.num_rows

    def frame(self) -> pl.DataFrame:
        return self.store.frame(
                    f"SELECT {', '.join(SENSOR_COLUMNS)} FROM sensors ORDER BY id"
                )

    def get(self, sensor_id: str) -> dict | None:
        with self.store.lock:
            cur = self.store.con.execute(
                f"SELECT {', '.join(SENSOR_COLUMNS)} FROM sensors WHERE id = ?", [sensor_id]
            )
            rows = cur.fetchall()  # DuckDB keeps a result open until it is fully fetched
            row = rows[0] if rows else None
            return None if row is None else dict(zip(SENSOR_COLUMNS, row))

    def count(self) -> int:
        with self.store.lock:
            return self.store.con.execute("SELECT count(*) FROM sensors").fetchall()[0][0]

    def status(self) -> dict:
        with self.store.lock:
            rows = self.store.con.execute("SELECT kind, count(*) FROM sensors GROUP BY kind ORDER BY kind").fetchall()
        return {"sensors": sum(n for _, n in rows), "sensors_by_kind": dict(rows)}
