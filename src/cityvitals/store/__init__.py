"""The store: every stage writes here, and the API, dashboard and reports read from here.

``open_store`` hands back a store whose repositories (``units``, ``sensors``,
``readings``, ``quarantine`` and what later stages add) hide the backend. The embedded
DuckDB file in the data directory is the default; a ``postgresql://`` URL selects the
server backend. The URL is taken from, in order: the ``url`` argument (``--store``),
the ``CITYVITALS_STORE`` environment variable, ``store:`` in ``<home>/config.yaml``.
Callers never write SQL against a backend directly.

>>> import tempfile
>>> open_store(tempfile.mkdtemp(), url="duckdb").backend
'duckdb'
"""

from __future__ import annotations

import os
from pathlib import Path

from cityvitals.errors import InputError
from cityvitals.home import STORE_FILE, resolve_home
from cityvitals.store.duck import DuckDBStore

__all__ = ["DuckDBStore", "open_store", "store_url"]

CONFIG_FILE = "config.yaml"


def store_url(home: str | os.PathLike[str] | None = None, url: str | None = None) -> str | None:
    """The store URL in force (None or ``duckdb``: the embedded file in ``home``)."""
    if url:
        return url
    if os.environ.get("CITYVITALS_STORE"):
        return os.environ["CITYVITALS_STORE"]
    config = resolve_home(home) / CONFIG_FILE
    if config.is_file():
        import yaml

        try:
            data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"{config}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise InputError(f"{config}: expected a mapping with a 'store' key")
        value = data.get("store")
        if value is not None and not isinstance(value, str):
            raise InputError(f"{config}: 'store' must be a URL string such as postgresql://user@host/db")
        return value
    return None


def open_store(home: str | os.PathLike[str] | None = None, *, url: str | None = None, read_only: bool = False,
               migrate: bool = False):
    """Open the store: the DuckDB file in the data directory ``home`` (created if needed),
    or the PostgreSQL database the URL names. ``migrate`` brings a PostgreSQL schema up to
    date first (what ``cityvitals db upgrade`` does)."""
    chosen = store_url(home, url)
    if not chosen or chosen in ("duckdb", "duckdb:"):
        return DuckDBStore(Path(resolve_home(home) / STORE_FILE), read_only=read_only)
    if chosen.startswith(("postgresql://", "postgres://")):
        from cityvitals.store.pg import PostgresStore

        return PostgresStore(chosen, migrate_schema=migrate, read_only=read_only, home=home)
    if chosen.startswith("duckdb:"):
        return DuckDBStore(Path(chosen.removeprefix("duckdb:").removeprefix("//")), read_only=read_only)
    raise InputError(f"store {chosen!r}: use postgresql://user@host:port/db, duckdb (the default) or duckdb:PATH")
