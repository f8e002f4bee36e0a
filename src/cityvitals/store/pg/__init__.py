"""The PostgreSQL backend (server mode): same repositories as the DuckDB store.

Selected with ``--store postgresql://...`` (or ``store:`` in ``<home>/config.yaml``, or
``CITYVITALS_STORE``). The schema is created and changed only by versioned migrations
(``cityvitals db upgrade``). Readings are partitioned by month on ``ts`` (partitions are
created ahead by every batch that needs one and by ``db upgrade``), loaded with COPY and
idempotent on (sensor_id, ts) through the primary key.

Ingest validation is the same DuckDB SQL as the embedded backend, run on a private
in-memory DuckDB connection with a copy of the sensor registry
(``validation_connection``); ``readings.write_batch`` then persists one validated batch
in one PostgreSQL transaction.

Like the DuckDB store, the store holds one connection behind ``lock``: the server's
threads (API, MQTT worker) share it, so statements never interleave. Tests give each
store its own schema with ``?options=-csearch_path%3D<schema>`` in the URL.

The DuckDB names the portable SQL leans on (``list_contains``, ``epoch_us``,
``time_bucket``, ``hash``, ``rowid``) exist here too (migration 0004), and ``con`` answers
DuckDB's ``sql``/``register``/``unregister``, so code outside ``store/`` that queries
``store.con`` with portable SQL runs on both backends.

Every repository of the DuckDB store exists here too (incidents, cases and sharing since
migration 0006). Files the stages keep beside the store (pseudonym keys, the access log's
anchor, case photos, simulator output) live in the data directory ``home``, as with the
embedded backend.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import duckdb
import polars as pl
import psycopg

from cityvitals.store.pg import migrate
from cityvitals.store.pg._sql import PgCon, _param, qmarks, to_arrow
from cityvitals.store.pg.alerts import PgAlertRepo
from cityvitals.store.pg.assets import PgAssetRepo
from cityvitals.store.pg.cases import PgCaseRepo
from cityvitals.store.pg.incidents import PgIncidentRepo
from cityvitals.store.pg.quarantine import PgQuarantineRepo
from cityvitals.store.pg.readings import PgReadingRepo
from cityvitals.store.pg.sensors import PgSensorRepo
from cityvitals.store.pg.share import PgShareRepo
from cityvitals.store.pg.signs import PgSignRepo
from cityvitals.store.pg.units import PgUnitRepo
from cityvitals.store.pg.users import PgUserRepo

_REPOS: tuple[tuple[str, type], ...] = (
    ("units", PgUnitRepo),
    ("sensors", PgSensorRepo),
    ("readings", PgReadingRepo),
    ("quarantine", PgQuarantineRepo),
    ("alerts", PgAlertRepo),
    ("signs", PgSignRepo),
    ("users", PgUserRepo),
    ("assets", PgAssetRepo),
    ("incidents", PgIncidentRepo),
    ("cases", PgCaseRepo),
    ("share", PgShareRepo),
)


def _store_error():
    from cityvitals.store.duck import StoreError

    return StoreError


class PostgresStore:
    backend = "postgresql"

    def __init__(self, url: str, *, migrate_schema: bool = False, read_only: bool = False,
                 home: str | os.PathLike[str] | None = None):
        self.url = url
        self._home = home
        self.read_only = read_only
        try:
            self.pg = psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError as exc:
            raise _store_error()(f"cannot connect to the PostgreSQL store: {str(exc).strip().splitlines()[0]}") from exc
        self.pg.execute("SET TIME ZONE 'UTC'")
        self.con = PgCon(self.pg)
        self.lock = threading.RLock()
        self._pending: list[tuple[str, list, Callable | None]] = []
        self._pending_log: list[tuple[str, list, Callable | None]] = []  # sent after ``_pending``
        if migrate_schema:
            migrate.upgrade(self.pg)
        missing = migrate.pending(self.pg)
        if missing:
            version, head = migrate.current(self.pg), migrate.head()
            self.pg.close()
            raise _store_error()(
                f"the PostgreSQL schema is at version {version}, the code needs {head} "
                f"(migrations {', '.join(map(str, missing))} not applied): run `cityvitals db upgrade`"
            )
        if read_only:
            self.pg.execute("SET default_transaction_read_only = on")
        for name, repo_cls in _REPOS:
            setattr(self, name, repo_cls(self))

    @property
    def home(self):
        """The data directory (``--home``) for the files the stages keep beside the store;
        resolved (and created) on first use, so a store that never writes a file makes none."""
        from cityvitals.home import resolve_home

        return resolve_home(self._home)

    def idle(self) -> bool:
        """No transaction is open on the connection (a caller's own wraps several writes)."""
        return self.pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

    # -- the store protocol (as DuckDBStore) ------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[PgCon]:
        """All-or-nothing: a batch is durable when this block exits without error.

        Writes that return nothing may be deferred inside the block (``defer``) and go out
        together before anything is read and before the commit: one round trip for many
        row updates instead of one each."""
        with self.lock:
            try:
                with self.pg.transaction():
                    yield self.con
                    self.flush()
            finally:
                self._pending.clear()
                self._pending_log.clear()

    def defer(self, sql: str, params: list, many: Callable[[psycopg.Cursor, list[list]], None] | None = None,
              log: bool = False) -> None:
        """Run ``sql`` (``?`` dialect, no result) now, or with the next flush when inside a
        transaction. Statements keep their order.

        ``many``: how to send a run of two or more of this statement as one (for example one
        ``UPDATE … FROM unnest(…)``), given a cursor and each statement's parameters in
        order; without it a run is one pipelined executemany, which still costs PostgreSQL
        a statement per row. ``log``: an append to a log that no other deferred statement
        reads or changes (the alert event log); such appends keep their order among
        themselves but go after the other statements, so a writer that alternates a row
        change and its log line (a new alert, then its "raise") still sends two long runs
        instead of one short statement after another."""
        if self.pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            with self.lock:
                self.con.execute(sql, params)
            return
        (self._pending_log if log else self._pending).append((sql, params, many))

    def flush(self) -> None:
        """Send the deferred statements (then the deferred log appends): each run of the same
        SQL as one statement (``many``) or one pipelined executemany."""
        if not self._pending and not self._pending_log:
            return
        pending, self._pending, self._pending_log = self._pending + self._pending_log, [], []
        with self.lock, self.pg.cursor() as cur:
            i = 0
            while i < len(pending):
                j = i
                while j < len(pending) and pending[j][0] == pending[i][0]:
                    j += 1
                rows = [[_param(p) for p in ps] for _, ps, _m in pending[i:j]]
                many = pending[i][2]
                if many is not None and j - i > 1:
                    many(cur, rows)
                else:
                    cur.executemany(qmarks(pending[i][0]), rows)
                i = j

    def arrow(self, sql: str, params: list | None = None):
        """Run a ``?``-placeholder query and return an Arrow table."""
        with self.lock:
            self.flush()
            return to_arrow(self.con.execute(sql, params))

    def frame(self, sql: str, params: list | None = None) -> pl.DataFrame:
        return pl.from_arrow(self.arrow(sql, params))

    def close(self) -> None:
        self.pg.close()

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict:
        url = redact(self.url)  # "path" too: where the DuckDB store reports its file, callers print it
        out: dict = {"backend": self.backend, "url": url, "path": url, "schema_version": migrate.current(self.pg)}
        for name, _ in _REPOS:
            repo = getattr(self, name)
            if hasattr(repo, "status"):
                out.update(repo.status())
        return out

    # -- ingest --------------------------------------------------------------------------
    def validation_connection(self) -> duckdb.DuckDBPyConnection:
        """A private in-memory DuckDB connection where ingest validation runs."""
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET threads = 2")
        return con


def redact(url: str) -> str:
    """The URL without its password, for status output and logs.

    >>> redact("postgresql://u:secret@h:5432/db")
    'postgresql://u:***@h:5432/db'
    """
    import re

    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


__all__ = ["PostgresStore", "redact"]
