"""Readings on PostgreSQL: monthly partitions on ``ts``, COPY in, idempotent on (sensor_id, ts).

``write_batch`` persists one validated batch (see ``cityvitals.ingest.pipeline.Batch``)
in one transaction. Live data is new: its valid records are COPYed (binary format, see
``_sql.binary_copy_data``: no text to print and parse per value) straight into
``readings`` under a savepoint. When that meets a stored key (a redelivery after a crash)
or the batch repeats a key, the records are COPYed into a staging table instead, the first record
of each key is inserted with ``ON CONFLICT DO NOTHING``, and every record not inserted
is classified against the stored row as a duplicate (same value) or a conflict (another
value) -- the same rules as the DuckDB backend, so a redelivered batch stores nothing
twice. Refused records are COPYed into quarantine in the same transaction.

Every batch is stamped (``ingested_at``) later than the last, and readers poll "ingested
after the last instant I saw". Outside a caller's transaction the stamp is taken apart from
the batch and held in flight until it commits (``open_stamp``), so several writers' COPYs
overlap, and readers stop just before the oldest stamp still in flight (``settled``).
Inside a caller's transaction (the Spark sink's micro-batch) the stamp row stays locked to
its end (``_stamp``), as every write did until 2026-12-08.

Partitions are made ahead: each batch creates the months it touches if missing (under
an advisory lock, so concurrent writers do not race), and ``ensure_partitions`` (run by
``db upgrade``) creates the months around today. Retention drops whole partitions
below a cut-off and deletes the rest of the rows below it; roll-ups write hourly
summaries. Both run only when asked (``cityvitals db retention`` / ``db rollup``).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from cityvitals.store.duck.readings import READING_COLUMNS, ReadingRepo
from cityvitals.store.pg._sql import copy_arrow, copy_arrow_binary, read_columns, to_arrow

_PART_LOCK = 0x72656164  # "read": advisory lock id for partition creation
_SINCE_READ = pa.schema([("sensor_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")), ("value", pa.float64()),
                         ("ingested_at", pa.timestamp("us", tz="UTC"))])
STAGE_COLUMNS = ("seq", "sensor_id", "ts", "value", "quality", "kind", "unit_code", "first")
_NEXT_STAMP = ("UPDATE store_meta SET value = greatest(value + 1, %s) WHERE key = 'ingest_stamp_us' "
               "RETURNING value")  # now, or just after the last stamp issued
_STAMP_FLOOR_US = 10**15  # 2001-09-09 in µs since 1970: advisory keys below are not stamps
_SETTLED_SQL = """SELECT (SELECT value FROM store_meta WHERE key = 'ingest_stamp_us'),
       (SELECT min((classid::bigint << 32) | objid::bigint) FROM pg_locks
        WHERE locktype = 'advisory' AND objsubid = 1
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND (classid::bigint << 32) | objid::bigint >= %s)"""


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _epoch_us(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (t - _EPOCH) // timedelta(microseconds=1)


def month_start(t: datetime) -> datetime:
    t = t.astimezone(timezone.utc)
    return datetime(t.year, t.month, 1, tzinfo=timezone.utc)


def next_month(t: datetime) -> datetime:
    return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=timezone.utc)


def partition_name(start: datetime) -> str:
    """``readings_pYYYYMM`` for the month starting at ``start``.

    >>> partition_name(datetime(2026, 5, 1, tzinfo=timezone.utc))
    'readings_p202605'
    """
    return f"readings_p{start.year:04d}{start.month:02d}"


class PgReadingRepo(ReadingRepo):
    DDL = ()
    cursor_column = "ingested_at"
    """What tells new readings from old for a reader that polls (the API's change feed): the
    instant a batch was stored, b-tree indexed (migration 0008), as the watch reads."""

    def __init__(self, store):
        self.store = store
        self._known: set[str] = set()

    # -- reads ------------------------------------------------------------------
    def frame(self, *, sensor_id: str | None = None, start: datetime | None = None, end: datetime | None = None,
              kind: str | None = None, unit_codes: list[str] | None = None) -> pl.DataFrame:
        """Readings in [start, end), optionally for one sensor, kind or set of units."""
        where, params = [], []
        for cond, val in (("sensor_id = ?", sensor_id), ("kind = ?", kind), ("ts >= ?", start), ("ts < ?", end)):
            if val is not None:
                where.append(cond)
                params.append(val)
        if unit_codes is not None:
            where.append("unit_code = ANY(?)")
            params.append(list(unit_codes))
        sql = "SELECT sensor_id, ts, value, quality, kind, unit_code FROM readings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.store.frame(sql + " ORDER BY sensor_id, ts", params)

    def since(self, ingested_after: datetime | None):
        """As the DuckDB repository: readings ingested after a watermark (index on ingested_at),
        up to ``settled()``: a batch still in flight with an earlier stamp is read next time.

        Read as column aggregates (``read_columns``): the watch runs this after every ingest
        batch in server mode, and a Python tuple (or a COPY row) per reading cost more than
        the query itself."""
        with self.store.lock:
            self.store.flush()
            t = read_columns(
                self.store.con,
                "SELECT sensor_id, ts, value, ingested_at FROM readings WHERE ingested_at > ? AND ingested_at <= ?",
                [ingested_after or datetime(1, 1, 1, tzinfo=timezone.utc), self.settled()], _SINCE_READ,
                ("ts", "sensor_id"))
        us = t.column("ts").cast(pa.int64()).to_numpy()
        # whole seconds rounded half away from zero, as PostgreSQL's numeric -> bigint cast
        secs = np.where(us >= 0, (us + 500_000) // 1_000_000, -((500_000 - us) // 1_000_000))
        return pa.table({"sensor_id": t.column("sensor_id"), "t": pa.array(secs, pa.int64()),
                         "value": t.column("value"), "ingested_at": t.column("ingested_at")})

    # -- partitions ---------------------------------------------------------------
    def partitions(self) -> list[dict]:
        """Existing partitions, oldest first: name, from, to, rows (estimate)."""
        with self.store.lock:
            rows = self.store.con.raw(
                """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.reltuples::BIGINT
                   FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname"""
            ).fetchall()
        return [{"name": n, "bounds": b, "rows_estimate": max(int(r), 0)} for n, b, r in rows]

    def ensure_partitions(self, lo: datetime, hi: datetime, con=None) -> list[str]:
        """Create the monthly partitions covering [lo, hi] that are missing; returns new names."""
        months, m = [], month_start(lo)
        while m <= hi:
            months.append(m)
            m = next_month(m)
        missing = [m for m in months if partition_name(m) not in self._known]
        if not missing:
            return []
        made = []

        def create(c) -> None:
            c.raw("SELECT pg_advisory_xact_lock(%s)", [_PART_LOCK])
            for m in missing:
                name = partition_name(m)
                exists = c.raw("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchall()[0][0]
                if not exists:
                    # DDL takes no parameters; the bounds are ISO strings we made ourselves
                    c.raw(f"CREATE TABLE {name} PARTITION OF readings "
                          f"FOR VALUES FROM ('{m.isoformat()}') TO ('{next_month(m).isoformat()}')")
                    made.append(name)

        if con is not None:
            create(con)
        else:
            with self.store.transaction() as c:
                create(c)
        self._known.update(partition_name(m) for m in missing)
        return made

    def bulk_load(self, table: pa.Table | pl.DataFrame) -> int:
        """Append rows with the ``readings`` columns as they are, no validation or dedupe, as
        on DuckDB (whose version writes its integer-keyed ``reading_rows``, which this schema
        does not have): COPY into the months the rows need. A key already stored fails the
        whole load (the primary key), where DuckDB would keep both rows."""
        if isinstance(table, pl.DataFrame):
            table = table.to_arrow()
        missing = [c for c in READING_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"bulk_load needs the readings columns; missing {missing}")
        if table.num_rows == 0:
            return 0
        table = table.select(list(READING_COLUMNS))
        with self.store.transaction() as con:
            ts = table.column("ts")
            self.ensure_partitions(pc.min(ts).as_py(), pc.max(ts).as_py(), con)
            copy_arrow(con, table, "readings", READING_COLUMNS)
            latest = pc.max(table.column("ingested_at")).as_py()
            if latest is not None:  # the stamps it brings count as issued: readers stop at settled()
                con.raw("UPDATE store_meta SET value = greatest(value, %s) WHERE key = 'ingest_stamp_us'",
                        [_epoch_us(latest)])
        return table.num_rows

    # -- the ingest write path ---------------------------------------------------------
    def write_batch(self, batch, report, valid: pa.Table | None = None) -> None:
        """Persist one validated batch in one transaction (see the module docstring).

        ``valid``: the batch's valid records (``STAGE_COLUMNS``, in time order) when the
        ingest's fast path proved them; otherwise they are read from the SQL rules' ``_val``."""
        vcon = batch.con
        ok = valid if valid is not None else vcon.sql(
            """SELECT seq, sensor_id, ts, value, quality, kind, unit_code,
                      row_number() OVER (PARTITION BY sensor_id, ts ORDER BY seq) = 1 AS first
               FROM _val WHERE reason IS NULL ORDER BY ts"""
        ).to_arrow_table()
        refused = batch.refused_count()
        # outside a caller's transaction the stamp is taken apart and held in flight (see
        # open_stamp), so writers' COPYs overlap; inside one, the stamp row stays locked to its end
        flying = self.open_stamp(batch.now) if ok.num_rows and self.store.idle() else None
        try:
            self._write(batch, report, ok, refused, flying)
        finally:
            if flying is not None:
                self.close_stamp(flying)

    def _write(self, batch, report, ok: pa.Table, refused: int, flying: datetime | None) -> None:
        with self.store.transaction() as con:
            stamp = flying or (self._stamp(con, batch.now) if ok.num_rows else batch.now)
            outcomes = self._store_valid(con, ok, stamp)
            report.accepted = ok.num_rows - outcomes.num_rows
            report.duplicates = sum(1 for o in outcomes.column("outcome").to_pylist() if o == "duplicate")
            if not refused and not outcomes.num_rows and not batch.replay:  # the live case: all stored
                if batch.rejects:
                    rows = batch.reject_rows()
                    self._quarantine(con, rows, batch.now, once=batch.once)
                    report.add_quarantined(_count(rows))
                return
            # BAD_SQL reads only the refused from _ded (a conflict's other value); a replay
            # also needs the accepted, to resolve their quarantine rows
            accepted = self._accepted_outcomes(ok, outcomes) if batch.replay else outcomes.slice(0, 0)
            rows = batch.bad_rows(pa.concat_tables([accepted, outcomes]))
            if batch.replay:
                self._finish_replay(con, batch, pa.concat_tables([accepted, outcomes]), rows)
                report.add_quarantined(_count(rows))
                return
            if batch.rejects:
                rows = pa.concat_tables([rows, batch.reject_rows()])
            self._quarantine(con, rows, batch.now, once=batch.once)
            report.add_quarantined(_count(rows))

    def stamp(self, now: datetime) -> datetime:
        raise TypeError("a PostgreSQL batch takes its stamp in write_batch (open_stamp, or _stamp in a transaction)")

    def open_stamp(self, now: datetime) -> datetime:
        """A batch's ``ingested_at``, taken before its transaction and held *in flight* until
        ``close_stamp``: ``now``, or just after the last stamp, from the ``store_meta`` row, in
        a transaction of its own that also takes a session advisory lock keyed by the stamp.

        Why: a stamp taken inside the batch's transaction keeps the row locked through the
        COPY, so every other writer waits (batches commit one after another). Taken apart,
        stamps still increase, but a batch may commit after one stamped later, and a reader
        polling "ingested after the last instant I saw" could step past it. Readers therefore
        stop at ``settled()``: before the oldest stamp still in flight. The lock goes with the
        session, so a writer killed mid-batch holds nobody back."""
        with self.store.lock:  # one statement, so one transaction: the lock is visible before the stamp is
            us = int(self.store.pg.execute(f"WITH s AS ({_NEXT_STAMP}) SELECT value, pg_advisory_lock(value) FROM s",
                                           [_epoch_us(now)]).fetchall()[0][0])
        return _EPOCH + timedelta(microseconds=us)

    def close_stamp(self, stamp: datetime) -> None:
        """The batch stamped ``stamp`` is committed (or rolled back): no longer in flight."""
        import psycopg

        with self.store.lock:
            try:
                self.store.pg.execute("SELECT pg_advisory_unlock(%s)", [_epoch_us(stamp)])
            except psycopg.OperationalError:  # the connection is gone, and the lock with its session
                pass

    def settled(self) -> datetime:
        """The latest ``ingested_at`` up to which every batch is committed or will never be:
        the last stamp issued, or just before the oldest still in flight (``open_stamp``).
        Both come from one statement, so a stamp issued after its snapshot is above the
        first, and one issued before it has its lock visible to the second. Advisory locks
        are per database: other schemas' writers in flight hold this one back a little too
        (never wrongly); keys below 2001 in µs are other locks, not stamps."""
        with self.store.lock:
            self.store.flush()
            last, oldest = self.store.pg.execute(_SETTLED_SQL, [_STAMP_FLOOR_US]).fetchall()[0]
        us = int(last) if oldest is None else min(int(last), int(oldest) - 1)
        return _EPOCH + timedelta(microseconds=us)

    @staticmethod
    def _stamp(con, now: datetime) -> datetime:
        """The batch's ``ingested_at`` inside a caller's transaction: ``now``, or just after
        the last stamp if that is not earlier. The row it is taken from stays locked until the
        transaction ends, so a concurrent writer waits, and the stamp counts as issued only
        once this commits: ``settled`` never passes it while it is open."""
        us = con.raw(_NEXT_STAMP, [_epoch_us(now)]).fetchall()[0][0]
        return _EPOCH + timedelta(microseconds=int(us))

    def _store_valid(self, con, ok: pa.Table, now: datetime) -> pa.Table:
        """Insert the batch's valid records; returns (seq, outcome, other_v) of those not stored."""
        empty = pa.table({"seq": pa.array([], pa.int64()), "outcome": pa.array([], pa.string()),
                          "other_v": pa.array([], pa.float64())})
        if ok.num_rows == 0:
            return empty
        ts = ok.column("ts")
        self.ensure_partitions(pc.min(ts).as_py(), pc.max(ts).as_py(), con)
        if pc.all(ok.column("first")).as_py() and self._copy_direct(con, ok, now):
            return empty
        con.raw(
            """CREATE TEMP TABLE IF NOT EXISTS _stage (seq BIGINT, sensor_id TEXT, ts TIMESTAMPTZ,
                   value DOUBLE PRECISION, quality TEXT, kind TEXT, unit_code TEXT, first BOOLEAN)
               ON COMMIT DELETE ROWS"""
        )
        # Emptied first: ON COMMIT only empties it when the caller's transaction ends, and a
        # caller may write several batches in one (a Spark micro-batch of several files).
        con.raw("TRUNCATE _stage")
        copy_arrow_binary(con, ok, "_stage", STAGE_COLUMNS)
        con.raw("CREATE TEMP TABLE IF NOT EXISTS _inserted (sensor_id TEXT, ts TIMESTAMPTZ) ON COMMIT DELETE ROWS")
        con.raw("TRUNCATE _inserted")
        inserted = con.raw(
            """WITH ins AS (
                   INSERT INTO readings (sensor_id, ts, value, quality, kind, unit_code, ingested_at)
                   SELECT sensor_id, ts, value, quality, kind, unit_code, %s FROM _stage WHERE first ORDER BY ts
                   ON CONFLICT (sensor_id, ts) DO NOTHING
                   RETURNING sensor_id, ts)
               INSERT INTO _inserted SELECT sensor_id, ts FROM ins""",
            [now],
        ).rowcount
        if inserted == ok.num_rows:  # the live case: every record new and distinct
            return empty
        # Every record not inserted meets the stored row of its key: the same value is a
        # duplicate, another value a conflict (later copies within the batch meet the first).
        # The keys this statement inserted are in _inserted (not told by xmin: inside a
        # caller's transaction the insert runs in a subtransaction with an xid of its own).
        return to_arrow(con.raw(
            """SELECT s.seq, CASE WHEN r.value = s.value THEN 'duplicate' ELSE 'conflict' END AS outcome,
                      r.value AS other_v
               FROM _stage s JOIN readings r ON r.sensor_id = s.sensor_id AND r.ts = s.ts
               LEFT JOIN _inserted i ON i.sensor_id = s.sensor_id AND i.ts = s.ts
               WHERE NOT (s.first AND i.sensor_id IS NOT NULL)
               ORDER BY s.seq"""
        ))

    @staticmethod
    def _copy_direct(con, ok: pa.Table, now: datetime) -> bool:
        """The live case first: COPY straight into ``readings`` under a savepoint. A key
        already stored (a redelivery) makes the COPY fail whole; the savepoint undoes it and
        the caller takes the staged path that sorts duplicates from conflicts."""
        import psycopg

        table = ok.select(["sensor_id", "ts", "value", "quality", "kind", "unit_code"]).append_column(
            "ingested_at", pa.repeat(pa.scalar(now, pa.timestamp("us", "UTC")), ok.num_rows))
        try:
            with con.conn.transaction():  # a savepoint inside the batch's transaction
                copy_arrow_binary(con, table, "readings", table.column_names)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    @staticmethod
    def _accepted_outcomes(ok: pa.Table, outcomes: pa.Table) -> pa.Table:
        """(seq, 'accept', null) for the valid records that were stored."""
        seqs = ok.column("seq").combine_chunks()
        if outcomes.num_rows:
            seqs = seqs.filter(pc.invert(pc.is_in(seqs, value_set=outcomes.column("seq").combine_chunks())))
        n = len(seqs)
        return pa.table({"seq": seqs.cast(pa.int64()), "outcome": pa.array(["accept"] * n, pa.string()),
                         "other_v": pa.nulls(n, pa.float64())})

    def _quarantine(self, con, rows: pa.Table, now: datetime, *, once: bool) -> None:
        if rows.num_rows == 0:
            return
        rows = rows.append_column("received_at", pa.array([now] * rows.num_rows, pa.timestamp("us", "UTC")))
        cols = ("received_at", "source", "location", "reason", "message", "raw", "raw_truncated")
        if not once:
            copy_arrow(con, rows, "quarantine", cols)
            return
        con.raw("""CREATE TEMP TABLE IF NOT EXISTS _qstage (received_at TIMESTAMPTZ, source TEXT, location TEXT,
                   reason TEXT, message TEXT, raw TEXT, raw_truncated BOOLEAN) ON COMMIT DELETE ROWS""")
        con.raw("TRUNCATE _qstage")  # a caller's transaction may hold several batches
        copy_arrow(con, rows, "_qstage", cols)
        con.raw(
            f"""INSERT INTO quarantine ({', '.join(cols)})
                SELECT DISTINCT ON (source, location) {', '.join(cols)} FROM _qstage q
                WHERE NOT EXISTS (SELECT 1 FROM quarantine x WHERE x.source = q.source AND x.location = q.location
                                  AND x.resolved_at IS NULL)
                ORDER BY source, location"""
        )

    @staticmethod
    def _finish_replay(con, batch, outcomes: pa.Table, bad: pa.Table) -> None:
        """Replayed quarantine rows: resolved when stored or already stored, else re-reasoned."""
        done = outcomes.filter(pc.is_in(outcomes.column("outcome"), value_set=pa.array(["accept", "duplicate"])))
        if done.num_rows:
            con.raw(
                """UPDATE quarantine q SET resolved_at = %s,
                       resolution = CASE d.outcome WHEN 'accept' THEN 'replayed' ELSE 'duplicate of a stored reading' END
                   FROM unnest(%s::bigint[], %s::text[]) AS d(id, outcome) WHERE q.id = d.id""",
                [batch.now, done.column("seq").to_pylist(), done.column("outcome").to_pylist()],
            )
        seqs = batch.con.sql("SELECT seq, reason, message FROM _bad").to_arrow_table()
        if seqs.num_rows:
            con.raw(
                """UPDATE quarantine q SET reason = b.reason, message = b.message, attempts = q.attempts + 1
                   FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS b(id, reason, message) WHERE q.id = b.id""",
                [seqs.column("seq").to_pylist(), seqs.column("reason").to_pylist(), seqs.column("message").to_pylist()],
            )

    # -- explicit maintenance ---------------------------------------------------------
    def retention(self, before: datetime, *, dry_run: bool = False) -> dict:
        """Remove readings with ts < ``before``: whole partitions dropped, the rest deleted."""
        before = before.astimezone(timezone.utc)
        with self.store.transaction() as con:
            con.raw("SELECT pg_advisory_xact_lock(%s)", [_PART_LOCK])
            parts = con.raw(
                """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname"""
            ).fetchall()
            dropped, rows_dropped = [], 0
            for (name,) in parts:
                y, m = int(name[-6:-2]), int(name[-2:])
                if next_month(datetime(y, m, 1, tzinfo=timezone.utc)) <= before:
                    rows_dropped += con.raw(f"SELECT count(*) FROM {name}").fetchall()[0][0]
                    dropped.append(name)
            if dry_run:
                deleted = con.raw("SELECT count(*) FROM readings WHERE ts < %s", [before]).fetchall()[0][0] - rows_dropped
            else:
                for name in dropped:
                    con.raw(f"DROP TABLE {name}")
                deleted = con.raw("DELETE FROM readings WHERE ts < %s", [before]).rowcount
        if not dry_run:
            self._known.difference_update(dropped)
        return {"before": before.isoformat(), "partitions_dropped": dropped, "rows_in_dropped_partitions": rows_dropped,
                "rows_deleted": int(deleted), "dry_run": dry_run}

    def rollup(self, start: datetime, end: datetime) -> dict:
        """Hourly count/mean/min/max per sensor for hours in [start, end); recomputing replaces."""
        with self.store.transaction() as con:
            con.raw("DELETE FROM readings_hourly WHERE hour >= %s AND hour < %s", [start, end])
            n = con.raw(
                """INSERT INTO readings_hourly (sensor_id, hour, kind, unit_code, n, mean, min, max)
                   SELECT sensor_id, date_trunc('hour', ts), min(kind), min(unit_code), count(*), avg(value),
                          min(value), max(value)
                   FROM readings WHERE ts >= %s AND ts < %s GROUP BY 1, 2""",
                [start, end],
            ).rowcount
        return {"start": start.isoformat(), "end": end.isoformat(), "rows": int(n)}

    def hourly(self, sensor_id: str | None = None) -> pl.DataFrame:
        sql, params = "SELECT sensor_id, hour, kind, unit_code, n, mean, min, max FROM readings_hourly", []
        if sensor_id is not None:
            sql += " WHERE sensor_id = ?"
            params.append(sensor_id)
        return self.store.frame(sql + " ORDER BY sensor_id, hour", params)


def _count(rows: pa.Table) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(rows.column("reason").to_pylist())) if rows.num_rows else {}
