"""The sensor registry on PostgreSQL.

``version`` lives in the database (``store_meta``), bumped in the same transaction as
each upsert, so an ingest process notices registry changes made by another process (a
``sensors import`` while the server runs) and refreshes its validation copy.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from cityvitals.store.duck.sensors import SENSOR_COLUMNS, SensorRepo
from cityvitals.store.pg._upsert import upsert_arrow


class PgSensorRepo(SensorRepo):
    DDL = ()

    def __init__(self, store):
        self.store = store

    @property
    def version(self) -> int:  # type: ignore[override]
        with self.store.lock:
            return self.store.con.execute("SELECT value FROM store_meta WHERE key = 'sensors_version'").fetchall()[0][0]

    @version.setter
    def version(self, _: int) -> None:  # the base class sets it in __init__; the database owns it here
        pass

    def upsert(self, table: pa.Table | pl.DataFrame) -> int:
        def bump(con) -> None:
            con.raw("UPDATE store_meta SET value = value + 1 WHERE key = 'sensors_version'")

        return upsert_arrow(self.store, table, "sensors", SENSOR_COLUMNS, ("id",), after=bump)
