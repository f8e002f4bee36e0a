"""Bulk upsert by key through a COPY into a temp table (the PostgreSQL twin of DuckDB's
``INSERT OR REPLACE ... SELECT FROM <arrow>``)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from cityvitals.store.pg._sql import copy_arrow


def upsert_arrow(store, table: pa.Table | pl.DataFrame, target: str, allowed: tuple[str, ...], key: tuple[str, ...],
                 *, after=None) -> int:
    """Insert or replace rows of ``target`` by ``key``; only ``allowed`` columns present are written."""
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    cols = [c for c in allowed if c in table.column_names]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in key) or f"{key[0]} = EXCLUDED.{key[0]}"
    stage = f"_stage_{target}"
    with store.transaction() as con:
        con.raw(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target}) ON COMMIT DELETE ROWS")
        # emptied first: a caller's transaction may hold several upserts (a Spark micro-batch)
        con.raw(f"TRUNCATE {stage}")
        copy_arrow(con, table, stage, cols)
        # the last row of a key wins, as with DuckDB's INSERT OR REPLACE
        con.raw(
            f"INSERT INTO {target} ({', '.join(cols)}) SELECT DISTINCT ON ({', '.join(key)}) {', '.join(cols)} "
            f"FROM (SELECT *, row_number() OVER () AS _n FROM {stage}) s ORDER BY {', '.join(key)}, _n DESC "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
        )
        if after:
            after(con)
    return table.num_rows
