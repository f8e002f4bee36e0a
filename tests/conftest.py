"""Shared fixtures: a fresh store per test, the shared data folder, a fixed clock."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXED_NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"the shared data folder is expected next to the repository at {SHARED}")
    return SHARED


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_schema():
    """A fresh PostgreSQL schema of its own (dropped afterwards); yields the store URL selecting it."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    schema = "cv_t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def store(request, tmp_path):
    """The embedded DuckDB store; ``CITYVITALS_TEST_BACKEND=postgresql`` runs the same tests on a
    fresh PostgreSQL schema instead (the contract suite runs both in every run regardless)."""
    import os

    from cityvitals.store import open_store

    if os.environ.get("CITYVITALS_TEST_BACKEND") == "postgresql":
        s = open_store(tmp_path / "home", url=request.getfixturevalue("pg_schema"), migrate=True)
    else:
        s = open_store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture
def clock():
    return lambda: FIXED_NOW
