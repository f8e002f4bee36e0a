"""The thin layer between repositories and psycopg: placeholders, Arrow results, COPY.

Repositories shared with the DuckDB backend write ``?`` placeholders; ``PgCon`` turns
them into psycopg's ``%s`` so portable SQL is written once. Results come back as Arrow
tables typed from the column types PostgreSQL reports, so a frame from either backend
has the same dtypes. Bulk writes go through COPY in CSV, which pyarrow writes without a
Python loop per row (and with round-trip float formatting, so values compare exactly).
"""

from __future__ import annotations

import io
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.csv as pacsv

# PostgreSQL type OIDs -> Arrow types (what the repositories select).
_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(), 17: pa.binary(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 25: pa.string(),
    700: pa.float32(), 701: pa.float64(), 1043: pa.string(), 1042: pa.string(), 1700: pa.float64(),
    1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"), 19: pa.string(), 18: pa.string(),
    1082: pa.date32(), 3802: pa.string(), 114: pa.string(),
}


def qmarks(sql: str) -> str:
    """``?`` placeholders outside quoted literals become ``%s``; a literal ``%`` is doubled.

    >>> qmarks("SELECT '?', x FROM t WHERE a = ? AND b LIKE 'a%'")
    "SELECT '?', x FROM t WHERE a = %s AND b LIKE 'a%%'"
    """
    out, quote = [], None
    for ch in sql:
        if quote:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


def _param(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, memoryview):
        return bytes(v)
    return v


class PgCon:
    """A psycopg connection that takes DuckDB-style ``?`` SQL (the repositories' dialect)."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | None = None):
        return self.conn.execute(qmarks(sql), [_param(p) for p in (params or [])])

    def raw(self, sql: str, params: Sequence[Any] | dict | None = None):
        """psycopg's own ``%s`` dialect, for SQL written for PostgreSQL only."""
        return self.conn.execute(sql, params)


def to_arrow(cur) -> pa.Table:
    """The rest of a cursor's result as an Arrow table typed from the column types."""
    desc = cur.description or []
    rows = cur.fetchall()
    cols = list(zip(*rows)) if rows else [[] for _ in desc]
    arrays, names = [], []
    for d, values in zip(desc, cols):
        typ = _TYPES.get(d.type_code, pa.string())
        vals = list(values)
        if typ == pa.binary():
            vals = [bytes(v) if v is not None else None for v in vals]
        elif typ == pa.string() and d.type_code not in (25, 1043, 1042, 19, 18):
            vals = [None if v is None else str(v) for v in vals]
        arrays.append(pa.array(vals, typ))
        names.append(d.name)
    return pa.table(arrays, names=names) if names else pa.table({})


def copy_arrow(con, table: pa.Table, target: str, columns: Iterable[str]) -> int:
    """COPY an Arrow table (columns in ``columns`` order) into ``target`` as CSV."""
    cols = list(columns)
    if table.num_rows == 0:
        return 0
    table = table.select(cols)
    fixed = []
    for name, col in zip(cols, table.columns):
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        elif pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
            # bytea in CSV: the hex form; blobs are few (geometries), so a Python pass is fine
            col = pa.array([None if v is None else "\\x" + v.hex() for v in col.to_pylist()], pa.string())
        fixed.append(col)
    buf = io.BytesIO()
    pacsv.write_csv(pa.table(fixed, names=cols), buf, pacsv.WriteOptions(include_header=False))
    with con.conn.cursor().copy(f"COPY {target} ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as cp:
        cp.write(buf.getvalue())
    return table.num_rows
