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


@pytest.fixture
def store(tmp_path):
    from cityvitals.store import open_store

    s = open_store(tmp_path / "home")
    yield s
    s.close()


@pytest.fixture
def clock():
    return lambda: FIXED_NOW
