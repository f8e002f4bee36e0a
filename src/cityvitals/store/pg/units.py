"""Spatial units on PostgreSQL: the DuckDB repository's portable SQL, COPY for bulk upserts."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from cityvitals.store.duck.units import UNIT_COLUMNS, UnitRepo
from cityvitals.store.pg._upsert import upsert_arrow


class PgUnitRepo(UnitRepo):
    DDL = ()  # the schema comes from migrations

    def upsert(self, table: pa.Table | pl.DataFrame) -> int:
        """Insert or replace units by code; missing optional columns are left empty."""
        return upsert_arrow(self.store, table, "units", UNIT_COLUMNS, ("code",))
