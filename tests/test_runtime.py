"""The local runner: simulated time, replay in time order, every stage per step."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cityvitals.runtime import LocalRunner, ReplaySource, SimClock
from cityvitals.sim import load_folder, run_simulation


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    run_simulation(out, scenario="water_main_burst", duration="3h", seed=5, city_sensors=300, city_districts=2)
    return out


def test_clock_runs_at_speed_and_holds_at_end():
    wall = [100.0]
    start = datetime(2024, 7, 15, tzinfo=timezone.utc)
    clock = SimClock(start, speed=60, end=start + timedelta(hours=1), wall=lambda: wall[0])
    wall[0] += 10
    assert clock() == start + timedelta(minutes=10)
    wall[0] += 3600
    assert clock() == start + timedelta(hours=1)


def test_replay_releases_every_row_once_in_time(city):
    source = ReplaySource(city)
    t = source.start
    released = 0
    while not source.done():
        t += timedelta(minutes=20)
        due = source.due(t)
        if due.readings is not None:
            ts = pc.drop_null(due.readings["ts"])
            assert len(ts) == 0 or pc.max(ts).as_py() <= t
            released += due.readings.num_rows
    total = sum(pa.parquet.read_metadata(p).num_rows for p in (city / "readings").glob("part-*.parquet"))
    assert released == total


def test_runner_steps_through_ingest_signs_and_watch(city, tmp_path):
    from cityvitals.store import open_store

    with open_store(tmp_path / "home") as store:
        load_folder(store, city, readings=False)
        source = ReplaySource(city)
        clock = SimClock(source.start, speed=0)
        runner = LocalRunner(store, source, clock)
        first = runner.step(source.start + timedelta(hours=1))
        assert first.accepted > 300 * 50 and "signs" in first.stages and "watch" in first.stages
        before = store.readings.count()
        runner.step(source.end)
        assert store.readings.count() > before
        assert source.done()
        # Simulated timestamps are judged against the simulated clock, not the wall clock.
        assert store.quarantine.counts().get("future_timestamp", 0) == 0
