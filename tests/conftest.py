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


def pytest_generate_tests(metafunc):
    """Modules marked ``both_backends`` run their ``store`` tests on DuckDB and on PostgreSQL in
    every run, so a feature that works on one backend and not the other fails in CI (issue #8)
    without running the whole suite twice; ``CITYVITALS_TEST_BACKEND=postgresql`` still moves every
    ``store`` test to PostgreSQL (see docs/server.md)."""
    import os

    if ("store" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends")
            and os.environ.get("CITYVITALS_TEST_BACKEND") is None):
        metafunc.parametrize("store", ["duckdb", "postgresql"], indirect=True)


@pytest.fixture
def store(request, tmp_path):
    """The embedded DuckDB store; ``CITYVITALS_TEST_BACKEND=postgresql`` runs the same tests on a
    fresh PostgreSQL schema instead (the contract suite and the ``both_backends`` modules run both
    in every run regardless)."""
    import os

    from cityvitals.store import open_store

    backend = getattr(request, "param", None) or os.environ.get("CITYVITALS_TEST_BACKEND", "duckdb")
    if backend == "postgresql":
        s = open_store(tmp_path / "home", url=request.getfixturevalue("pg_schema"), migrate=True)
    elif backend == "duckdb":
        s = open_store(tmp_path / "home")
    else:
        pytest.fail(f"CITYVITALS_TEST_BACKEND must be duckdb or postgresql, not {backend!r}")
    yield s
    s.close()


@pytest.fixture
def clock():
    return lambda: FIXED_NOW
