"""The embedded DuckDB backend: one file, nothing to install or start.

Each repository lives in its own module with its DDL; this module opens the file,
creates what is missing and hands out the repositories. DuckDB serialises writers, so
the store keeps one connection and a lock around it; readers in other threads take
cursors from it.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from cityvitals.store.duck.alerts import AlertRepo
from cityvitals.store.duck.assets import AssetRepo
from cityvitals.store.duck.incidents import IncidentRepo
from cityvitals.store.duck.cases import CaseRepo
from cityvitals.store.duck.quarantine import QuarantineRepo
from cityvitals.store.duck.readings import ReadingRepo
from cityvitals.store.duck.sensors import SensorRepo
from cityvitals.store.duck.share import ShareRepo
from cityvitals.store.duck.signs import SignRepo
from cityvitals.store.duck.units import UnitRepo
from cityvitals.store.duck.users import UserRepo

# Repositories in dependency order; later stages append theirs here.
_REPOS: tuple[tuple[str, type], ...] = (
    ("units", UnitRepo),
    ("sensors", SensorRepo),
    ("readings", ReadingRepo),
    ("quarantine", QuarantineRepo),
    ("alerts", AlertRepo),
    ("signs", SignRepo),
    ("users", UserRepo),
    ("assets", AssetRepo),
    ("incidents", IncidentRepo),
    ("cases", CaseRepo),
    ("share", ShareRepo),
)


class StoreError(RuntimeError):
    """The store cannot be opened or used (locked by another process, corrupt, ...)."""


class DuckDBStore:
    backend = "duckdb"

    def __init__(self, path: Path | str, *, read_only: bool = False, threads: int | None = None):
        self.path = Path(path)
        self.home = self.path.parent  # the data directory: files the stages keep beside the store
        try:
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:  # another process holds the file
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        self.con.execute("SET TimeZone = 'UTC'")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.lock = threading.RLock()
        self.read_only = read_only
        for name, repo_cls in _REPOS:
            repo = repo_cls(self)
            if not read_only:
                for ddl in repo.DDL:
                    self.con.execute(ddl)
                if hasattr(repo, "upgrade"):  # a repository whose layout changed brings an older file forward
                    repo.upgrade()
            setattr(self, name, repo)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing: a batch is durable when this block exits without error."""
        with self.lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            else:
                self.con.execute("COMMIT")

    def arrow(self, sql: str, params: list | dict | None = None):
        """Run a query and return an Arrow table (without the extra copy a DB-API fetch makes)."""
        with self.lock:
            return self.con.sql(sql, params=params).to_arrow_table()

    def frame(self, sql: str, params: list | dict | None = None):
        """Run a query and return a Polars frame."""
        import polars as pl

        return pl.from_arrow(self.arrow(sql, params))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    def close(self, wait_seconds: float = 10.0) -> None:
        """Close once no thread is inside a query.

        Why: a server's background threads (the change watcher, a state-cache refresh) may be
        in a query when their owner closes the store, and DuckDB refuses to close a busy
        connection instead of waiting. Taking the store lock waits for queries run under it;
        the bounded retry covers a cursor finishing outside the lock.
        """
        busy = getattr(duckdb, "ResourceInUseException", duckdb.Error)
        deadline = time.monotonic() + wait_seconds
        got = self.lock.acquire(timeout=wait_seconds)
        try:
            while True:
                try:
                    self.con.close()
                    return
                except busy:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.02)
        finally:
            if got:
                self.lock.release()

    def __enter__(self) -> "DuckDBStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict:
        """What the store holds, for ``cityvitals status``; each repository adds its part."""
        out: dict = {"backend": self.backend, "path": str(self.path)}
        for name, _ in _REPOS:
            repo = getattr(self, name)
            if hasattr(repo, "status"):
                out.update(repo.status())
        return out
