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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg.types.numeric import Int8

# PostgreSQL type OIDs -> Arrow types (what the repositories select).
_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(), 17: pa.binary(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 25: pa.string(),
    700: pa.float32(), 701: pa.float64(), 1043: pa.string(), 1042: pa.string(), 1700: pa.float64(),
    1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"), 19: pa.string(), 18: pa.string(),
    1082: pa.date32(), 3802: pa.string(), 114: pa.string(),
}


def qmarks(sql: str, named: bool = False) -> str:
    """``?`` placeholders outside quoted literals become ``%s`` (``$name`` becomes
    ``%(name)s`` when the parameters are a mapping); a literal ``%`` is doubled.

    >>> qmarks("SELECT '?', x FROM t WHERE a = ? AND b LIKE 'a%'")
    "SELECT '?', x FROM t WHERE a = %s AND b LIKE 'a%%'"
    >>> qmarks("SELECT x FROM t WHERE a > $wm AND b = '$x'", named=True)
    "SELECT x FROM t WHERE a > %(wm)s AND b = '$x'"
    """
    out, quote, i, n = [], None, 0, len(sql)
    while i < n:
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = None
            out.append("%%" if ch == "%" else ch)
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?" and not named:
            out.append("%s")
        elif ch == "$" and named and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            out.append(f"%({sql[i + 1:j]})s")
            i = j
            continue
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _param(v: Any) -> Any:
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        # psycopg types an int list by its largest value (smallint[] ...): always bigint[]
        return [Int8(x) for x in v]
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def pg_type(t: pa.DataType) -> str:
    """The PostgreSQL column type for an Arrow type (temp tables made from Arrow data).

    >>> pg_type(pa.timestamp("us", tz="UTC")), pg_type(pa.dictionary(pa.int32(), pa.string()))
    ('TIMESTAMPTZ', 'TEXT')
    """
    if pa.types.is_dictionary(t):
        return pg_type(t.value_type)
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTEA"
    return "TEXT"


class _Relation:
    """What DuckDB's ``con.sql(...)`` hands back, for the calls the repositories make."""

    def __init__(self, con: "PgCon", sql: str, params: Sequence[Any] | dict | None):
        self._con, self._sql, self._params = con, sql, params

    def to_arrow_table(self) -> pa.Table:
        return to_arrow(self._con.execute(self._sql, self._params))

    def fetchall(self) -> list[tuple]:
        return self._con.execute(self._sql, self._params).fetchall()

    def pl(self):
        import polars as pl

        return pl.from_arrow(self.to_arrow_table())


class PgCon:
    """A psycopg connection that takes DuckDB-style ``?`` SQL (the repositories' dialect)."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | dict | None = None):
        if isinstance(params, dict):  # DuckDB's $name parameters
            return self.conn.execute(qmarks(sql, named=True), {k: _param(v) for k, v in params.items()})
        return self.conn.execute(qmarks(sql), [_param(p) for p in (params or [])])

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement for many parameter rows, pipelined (DuckDB's ``executemany``)."""
        with self.conn.cursor() as cur:
            cur.executemany(qmarks(sql), [[_param(p) for p in r] for r in rows])

    def raw(self, sql: str, params: Sequence[Any] | dict | None = None):
        """psycopg's own ``%s`` dialect, for SQL written for PostgreSQL only."""
        return self.conn.execute(sql, params)

    def sql(self, sql: str, params: Sequence[Any] | None = None) -> _Relation:
        """DuckDB's ``con.sql(q, params=...)``: ``.to_arrow_table()``, ``.fetchall()``, ``.pl()``."""
        return _Relation(self, sql, params)

    def register(self, name: str, table) -> None:
        """DuckDB's ``register``: an Arrow table or Polars frame becomes a temp table ``name``
        (COPYed in; a table, not a view, so it costs one bulk load)."""
        if not isinstance(table, pa.Table):
            table = table.to_arrow()
        cols = ", ".join(f'"{f.name}" {pg_type(f.type)}' for f in table.schema)
        self.conn.execute(f'DROP TABLE IF EXISTS pg_temp."{name}"')
        self.conn.execute(f'CREATE TEMP TABLE "{name}" ({cols})')
        copy_arrow(self, table, f'"{name}"', table.column_names)

    def unregister(self, name: str) -> None:
        self.conn.execute(f'DROP TABLE IF EXISTS pg_temp."{name}"')


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


def copy_out_arrow(con, sql: str, params: Sequence[Any], schema: pa.Schema) -> pa.Table:
    """A query's result through ``COPY ... TO STDOUT`` in CSV, parsed by pyarrow: for large
    reads on hot paths, where building a Python tuple per row (``to_arrow``) costs more than
    the query. ``schema`` names and types the columns in order (text, integers, floats,
    booleans; send times as ``epoch_us(...)`` and cast). Parameters are bound client-side.
    NULL and the empty string stay apart (PostgreSQL quotes empty strings in CSV)."""
    with con.conn.cursor() as cur:
        with cur.copy(f"COPY ({qmarks(sql)}) TO STDOUT (FORMAT csv)", [_param(p) for p in params]) as cp:
            data = b"".join(bytes(chunk) for chunk in cp)
    if not data:
        return schema.empty_table()
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        convert_options=pacsv.ConvertOptions(column_types={f.name: f.type for f in schema}, strings_can_be_null=True,
                                             quoted_strings_can_be_null=False, null_values=[""]),
    ).select(schema.names)


_PG_EPOCH_US = 946_684_800_000_000  # PostgreSQL's binary times count from 2000-01-01


def read_columns(con, sql: str, params: Sequence[Any], schema: pa.Schema,
                 sort_by: Sequence[str] = ()) -> pa.Table:
    """A query's result as one row of column aggregates, for reads on hot paths.

    Why not ``copy_out_arrow``: libpq hands COPY out one row at a time, and psycopg's
    Python per row cost about 1.5 µs (30 ms for the watch's 20,000 new readings every
    batch). Here each column comes back as one value: text as a ``text[]`` (psycopg's C
    loader), integers and floats as one ``bytea`` of big-endian 8-byte values
    (``int8send`` / ``float8send``; times as ``timestamptz_send``, no ``extract``, whose
    numeric arithmetic cost more than the scan) that NumPy reads without a loop; 4 ms for
    the same rows.
    The aggregates of one query level read the rows in one order, so the columns stay
    aligned; the rows are then sorted here by ``sort_by`` (column names of ``schema``;
    strings by their bytes, as the C collation does), because an ``ORDER BY`` inside each
    aggregate sorted once per column in PostgreSQL. ``sql`` is a ``SELECT`` whose columns
    are named and typed as ``schema`` (text, int64, float64, timestamp[us]) with no NULLs (``string_agg``
    would skip them: a NULL raises ``ValueError``)."""
    aggs = []
    for f in schema:
        col = f'q."{f.name}"'
        if pa.types.is_timestamp(f.type):  # the binary form: int64 microseconds since 2000-01-01
            aggs.append(f"string_agg(timestamptz_send({col}::TIMESTAMPTZ), ''::bytea)")
        elif pa.types.is_integer(f.type):
            aggs.append(f"string_agg(int8send({col}::BIGINT), ''::bytea)")
        elif pa.types.is_floating(f.type):
            aggs.append(f"string_agg(float8send({col}::DOUBLE PRECISION), ''::bytea)")
        else:
            aggs.append(f"array_agg({col}::TEXT)")
    query = f"SELECT count(*), {', '.join(aggs)} FROM ({qmarks(sql)}) q"
    with con.conn.cursor(binary=True) as cur:
        cur.execute(query, [_param(p) for p in params])
        row = cur.fetchone()
    n = int(row[0])
    if n == 0:
        return schema.empty_table()
    arrays = []
    for f, v in zip(schema, row[1:]):
        if pa.types.is_timestamp(f.type):
            v = pa.array(np.frombuffer(v, ">i8").astype(np.int64) + _PG_EPOCH_US, pa.int64()).cast(f.type)
        elif pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            v = np.frombuffer(v, ">i8" if pa.types.is_integer(f.type) else ">f8").astype(f.type.to_pandas_dtype())
        if len(v) != n:
            raise ValueError(f"read_columns: column {f.name} has NULLs")
        arrays.append(pa.array(v, f.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    if sort_by:
        table = table.take(pc.sort_indices(table, [(c, "ascending") for c in sort_by]))
    return table


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
    names = ", ".join('"' + c + '"' for c in cols)
    with con.conn.cursor().copy(f"COPY {target} ({names}) FROM STDIN (FORMAT csv)") as cp:
        cp.write(buf.getvalue())
    return table.num_rows
