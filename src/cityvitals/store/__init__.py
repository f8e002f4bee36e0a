"""The store: every stage writes here, and the API, dashboard and reports read from here.

``open_store`` hands back a store whose repositories (``units``, ``sensors``,
``readings``, ``quarantine`` and what later stages add) hide the backend. The embedded
DuckDB file is the default; callers never write SQL against a backend directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from cityvitals.home import STORE_FILE, resolve_home
from cityvitals.store.duck import DuckDBStore

__all__ = ["DuckDBStore", "open_store"]


def open_store(home: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> DuckDBStore:
    """Open (creating if needed) the store in the data directory ``home``."""
    path = resolve_home(home) / STORE_FILE
    return DuckDBStore(Path(path), read_only=read_only)
