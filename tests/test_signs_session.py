"""The live signs session (``signs.session``) gives what ``compute_signs`` gives without one.

A simulated city (rain gauges with the sliding, sensor-combined rain sums, noise Leq by
local hours, the 8-hour ozone mean with its minimum count, daily water-pressure
compliance, counts of elevator and manhole events, ...) is replayed in 10-minute batches
into two stores through the same ingest. After every batch one store runs the stage with
a session (as ``LiveStages`` does) and the other without; both must then hold the same
indicator values, levels, health snapshots with their explanations, and stage state.

Why values may differ at all, and the tolerance: a window's sum is the sum of its buckets'
partial sums in both paths, but the session builds a bucket's sum run by run ((a+b)+(c+d))
where the store path adds the bucket's readings in one pass in scan order (((a+b)+c)+d).
Floating-point addition is not associative, so the two may differ in the last bits: the
sums here are of same-sign terms, whose rounding error is at most (readings in the window)
x 2^-53 relative, under 1e-12 for the largest windows (a day of one-minute readings).
Values are compared to a relative 1e-9 (absolute 1e-12 near zero); counts, levels, the
Schmitt state, window keys, health levels and the stage's state must be equal exactly.

The simulator holds some readings back one to three one-hour blocks: late readings for
windows still open merge into held buckets, and those for closed windows are counted as
late by both. A restart midway (a new session) fills its partials from the store once,
after which late readings for windows that started before the new session's first bucket
are read from the store; a run that fails after merging must not be trusted on retry.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from cityvitals.ingest import Ingestor
from cityvitals.runtime import ReplaySource
from cityvitals.signs import compute_signs, load_catalog
from cityvitals.signs.session import SignsSession, serves
from cityvitals.sim import load_folder, run_simulation
from cityvitals.store import open_store

RTOL, ATOL = 1e-9, 1e-12
STEP = timedelta(minutes=15)


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    run_simulation(out, scenario="water_main_burst,rainstorm", duration="7h", seed=3, city_sensors=300, city_districts=2,
                   write_reports=False)
    return out


@contextmanager
def _pair(backend: str, tmp_path):
    """Two empty stores on ``backend`` (PostgreSQL: two throwaway schemas in ``test``)."""
    if backend == "duckdb":
        a, b = open_store(tmp_path / "a"), open_store(tmp_path / "b")
        try:
            yield a, b
        finally:
            a.close()
            b.close()
        return
    psycopg = pytest.importorskip("psycopg")
    from conftest import PG_ADMIN

    schemas = ["cv_t_" + uuid.uuid4().hex[:12] for _ in range(2)]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for s in schemas:
            admin.execute(f"CREATE SCHEMA {s}")
    stores = []
    try:
        for s in schemas:
            stores.append(open_store(tmp_path / s, url=f"{PG_ADMIN}?options=-csearch_path%3D{s}", migrate=True))
        yield tuple(stores)
    finally:
        for st in stores:
            st.close()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            for s in schemas:
                admin.execute(f"DROP SCHEMA {s} CASCADE")


def _health(store) -> tuple[pl.DataFrame, pl.DataFrame]:
    h = store.frame("SELECT unit_code, as_of, scope, value FROM sign_health ORDER BY unit_code, as_of, scope")
    e = store.frame("SELECT unit_code, as_of, scope, indicator, category, level, value, weight, points "
                    "FROM sign_health_explain ORDER BY unit_code, as_of, scope, indicator")
    return h, e


def _close(a: pl.Series, b: pl.Series, what: str) -> None:
    x, y = a.cast(pl.Float64).to_numpy(), b.cast(pl.Float64).to_numpy()
    ok = np.isclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True)
    assert ok.all(), (what, x[~ok][:5], y[~ok][:5])


def _same(a, b, step: int) -> None:
    va, vb = a.signs.all_values(), b.signs.all_values()
    assert va.height == vb.height, (step, va.height, vb.height)
    assert va.drop("value").equals(vb.drop("value")), step  # keys, windows, level, schmitt, n, direct
    _close(va["value"], vb["value"], f"sign_values at step {step}")
    (ha, ea), (hb, eb) = _health(a), _health(b)
    assert ha.drop("value").equals(hb.drop("value")) and ea.drop("value", "weight", "points").equals(
        eb.drop("value", "weight", "points")), step
    _close(ha["value"], hb["value"], f"sign_health at step {step}")
    for c in ("value", "weight", "points"):
        _close(ea[c], eb[c], f"sign_health_explain.{c} at step {step}")
    assert a.signs.state() == b.signs.state(), step


@pytest.mark.slow
@pytest.mark.parametrize("backend,steps,fail_at,restart_at", [("duckdb", None, 6, 14), ("postgresql", 10, 3, 5)])
def test_session_gives_what_compute_signs_gives(city, tmp_path, backend, steps, fail_at, restart_at):
    """DuckDB over the whole stream; PostgreSQL (its own SQL for the reads by ingested_at)
    over its first two and a half hours. Memory stays bounded: after each run a held
    indicator keeps only the buckets of windows still open, at most (window + lateness) /
    slide + 1 of them, however long the stream."""
    cat = load_catalog()
    with _pair(backend, tmp_path) as (a, b):
        for s in (a, b):
            load_folder(s, city, readings=False)
        source = ReplaySource(city)
        now = [source.start]
        ing = [Ingestor(s, clock=lambda: now[0]) for s in (a, b)]
        session = SignsSession()
        t, step = source.start, 0
        stats, held_ids, late_seen, peak = [], set(), 0, {}
        while not source.done() and step != steps:
            t += STEP
            now[0] = t
            due = source.due(t)
            for path in due.files:  # the simulator's deliberately bad records: quarantined alike
                from cityvitals.ingest import ingest_file

                for s, i in zip((a, b), ing):
                    ingest_file(s, path, "ndjson", ingestor=i)
            if due.readings is None:
                continue
            for i in ing:
                i.ingest_table(due.readings, source="simulator")
            step += 1
            if step == restart_at:  # a restart: the new process starts with an empty session
                held_ids |= set(session.held)
                session = SignsSession()
            if step == fail_at:  # a run that fails after merging this batch (the roll-up's write): retried
                real = a.signs.write_values
                calls = [0]

                def failing(frame, *, replace=True):
                    calls[0] += 1
                    if calls[0] == 2:
                        raise RuntimeError("connection lost")
                    return real(frame, replace=replace)

                a.signs.write_values = failing
                with pytest.raises(RuntimeError):
                    compute_signs(a, catalog=cat, session=session)
                a.signs.write_values = real
            rep = compute_signs(a, catalog=cat, session=session)
            stats.append((step, dict(session.stats)))
            ref = compute_signs(b, catalog=cat)
            assert rep.readings == ref.readings and rep.values == ref.values and rep.rolled_up == ref.rolled_up, step
            assert rep.late == ref.late and rep.health_units == ref.health_units, step
            late_seen += sum(rep.late.values())
            _same(a, b, step)
            for iid, h in session.held.items():
                peak[iid] = max(peak.get(iid, 0), len(h.buckets))
        held_ids |= set(session.held)

    assert step > restart_at + 4
    # what the comparison covered: every indicator the session can serve was served from
    # partials (sliding, sensor-combined, rain sums, Leq by hours, minimum counts, counts,
    # shares), late readings were counted, and windows before a new session's first
    # bucket were read from the store
    served = {i.id for i in cat.computable() if serves(i)}
    assert {"wx.rain_1h", "wx.rain_6h", "wx.rain_24h", "wx.wind_mean", "env.o3_8h", "env.noise_day", "env.noise_night",
            "fac.water_pressure_compliance", "fac.elevator_entrapments", "fac.manhole_cover_alarms"} <= held_ids <= served
    assert late_seen > 0 or steps is not None  # a closed window's late reading needs more than the first hours
    first = dict(stats)
    assert first[1]["filled_readings"] > 0 and first[restart_at]["filled_readings"] > 0
    assert first[fail_at]["filled_readings"] > 0  # the retry did not trust what the failed run had merged
    assert any(s["store_windows"] for k, s in stats if k > restart_at)
    assert all(s["new_readings"] > 0 for k, s in stats if k not in (1, restart_at, fail_at))
    for iid, n in peak.items():
        w = cat[iid].window
        assert n <= (w.size + cat[iid].lateness) // w.slide + 1, (iid, n)
    assert peak["wx.rain_1h"] > 12  # sliding: more buckets than one window has



def test_bench_live_signs_small_run_reads_only_what_is_new():
    """``cityvitals bench live-signs`` at a tiny size: both modes write the same values; with the
    session each run after the first reads exactly the readings stored since the last one;
    its scratch schemas are gone afterwards."""
    psycopg = pytest.importorskip("psycopg")
    from conftest import PG_ADMIN

    from cityvitals.bench.live_signs import run

    def schemas() -> set[str]:
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            return {r[0] for r in c.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cv_bench_%'")}

    before = schemas()
    res = run(PG_ADMIN, sensors=200, minutes=4, at=(1, 2, 4))
    assert schemas() == before
    plain, live = res["store_path"], res["session"]
    assert plain["runs"] == live["runs"] == 4
    assert [r["values"] for r in plain["at"]] == [r["values"] for r in live["at"]] and plain["at"][0]["values"] > 0
    assert [r["read_readings"] for r in live["at"][1:]] == [r["new_readings"] for r in live["at"][1:]] == [200, 200]
    assert 0 < live["peak_session_bytes"] < 2**20
