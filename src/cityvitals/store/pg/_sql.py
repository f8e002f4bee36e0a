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


_PG_EPOCH_US = 946_684_800_000_000  # PostgreSQL's binary times count from 2000-01-01


def read_columns(con, sql: str, params: Sequence[Any], schema: pa.Schema,
                 sort_by: Sequence[str] = ()) -> pa.Table:
    """A query's result as one row of column aggregates, for reads on hot paths.

    Why not ``COPY ... TO STDOUT``: libpq hands COPY out one row at a time, and psycopg's
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


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2  # signature, flags, no extension


def binary_copy_data(table: pa.Table) -> bytes:
    """``table`` in PostgreSQL's binary COPY format, built with array operations (no loop per row).

    Why: COPY in CSV made pyarrow print every float and time as text and PostgreSQL parse it
    back; the binary form is the values' own bytes. Column types map to what the target
    column must be, exactly (binary COPY does not convert): string -> text, float64 ->
    double precision, int64 -> bigint, bool -> boolean, timestamp -> timestamptz (or
    timestamp). A NULL is a field of length -1.
    """
    n, k = table.num_rows, table.num_columns
    lens, parts = [], []
    for col in table.columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        valid = np.ones(n, bool) if col.null_count == 0 else col.is_valid().to_numpy(zero_copy_only=False)
        t = col.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            off_type = np.int64 if pa.types.is_large_string(t) else np.int32
            _, ob, db = col.buffers()
            off = np.frombuffer(ob, off_type)[col.offset: col.offset + n + 1].astype(np.int64)
            data = np.frombuffer(db, np.uint8) if db is not None else np.zeros(0, np.uint8)
            size = np.where(valid, np.diff(off), -1)
            parts.append(("var", data, off[:-1], size))
        else:
            if pa.types.is_timestamp(t):
                v = col.cast(pa.timestamp("us", t.tz)).cast(pa.int64()).fill_null(0).to_numpy() - _PG_EPOCH_US
                raw = v.astype(">i8")
            elif pa.types.is_floating(t):
                raw = col.cast(pa.float64()).fill_null(0).to_numpy().astype(">f8")
            elif pa.types.is_integer(t):
                raw = col.cast(pa.int64()).fill_null(0).to_numpy().astype(">i8")
            elif pa.types.is_boolean(t):
                raw = col.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8)
            else:
                raise TypeError(f"binary COPY: no binary form for {t}")
            width = raw.dtype.itemsize
            size = np.where(valid, width, -1)
            parts.append(("fixed", raw.view(np.uint8).reshape(n, width), None, size))
        lens.append(size)
    size = np.stack(lens, axis=1) if k else np.zeros((n, 0), np.int64)  # (n, k) field lengths, -1 for NULL
    field = 4 + np.maximum(size, 0)
    row_len = 2 + field.sum(axis=1)
    start = len(_COPY_HEADER) + np.concatenate([[0], np.cumsum(row_len)[:-1]]).astype(np.int64)
    total = len(_COPY_HEADER) + int(row_len.sum()) + 2
    out = np.empty(total, np.uint8)
    out[:len(_COPY_HEADER)] = np.frombuffer(_COPY_HEADER, np.uint8)
    out[start] = (k >> 8) & 0xFF
    out[start + 1] = k & 0xFF
    at = start + 2  # where each row's next field starts
    four = np.arange(4)
    for j, (kind, data, src, _) in enumerate(parts):
        out[at[:, None] + four] = size[:, j].astype(">i4").view(np.uint8).reshape(n, 4)
        body = at + 4
        if kind == "fixed":
            ok = size[:, j] >= 0
            w = data.shape[1]
            out[body[ok][:, None] + np.arange(w)] = data[ok]
        else:
            m = np.maximum(size[:, j], 0)
            if m.sum():
                ends = np.cumsum(m)
                within = np.arange(int(ends[-1])) - np.repeat(ends - m, m)
                out[np.repeat(body, m) + within] = data[np.repeat(src, m) + within]
        at = body + np.maximum(size[:, j], 0)
    out[-2:] = 0xFF  # trailer: a field count of -1
    return out.tobytes()


def copy_arrow_binary(con, table: pa.Table, target: str, columns: Iterable[str]) -> int:
    """COPY an Arrow table into ``target`` in the binary format (``binary_copy_data``: the
    column types must match the target's exactly)."""
    cols = list(columns)
    if table.num_rows == 0:
        return 0
    data = binary_copy_data(table.select(cols))
    names = ", ".join('"' + c + '"' for c in cols)
    with con.conn.cursor().copy(f"COPY {target} ({names}) FROM STDIN (FORMAT binary)") as cp:
        cp.write(data)
    return table.num_rows
