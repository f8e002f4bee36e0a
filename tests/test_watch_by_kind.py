"""The detectors' store-free entry point: each sensor kind's series advanced apart, from state
bytes to state bytes, give the alerts of one ``watch_readings`` over every series.

This is what a stateful operator keyed by kind (Spark's ``applyInPandasWithState``) would hold,
so the claim that the kind is a sufficient key is checked here, on a simulator scenario with
several kinds, neighbours, a burst that raises alerts, stale and faulty sensors. The readings
are watched in two batches so state goes through its bytes between them.
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

sim = pytest.importorskip("cityvitals.sim")

from cityvitals.store import open_store  # noqa: E402
from cityvitals.watch.alerts import AlertManager, AlertPolicy  # noqa: E402
from cityvitals.watch.runner import (  # noqa: E402
    advance_series, apply_verdicts, watch_config, watch_readings, watch_windows,
)

ALERTS = ("SELECT source, type, level, state, message, first_at, last_at, occurrences, clear_since, escalation, "
          "escalated_at, flapping, reopened, resolved_at FROM alerts ORDER BY source, type, first_at")
EVENTS = ("SELECT a.source, a.type, e.ts, e.event, e.level, e.note FROM alert_events e "
          "JOIN alerts a ON a.id = e.alert_id ORDER BY a.source, a.type, e.ts, e.event, e.level")


def _by_kind(store, states: dict[str, bytes], batch: pl.DataFrame, now: datetime) -> None:
    """One batch watched kind by kind, verdicts applied together (the per-kind operator's shape).

    Every kind that has state is advanced, also one without readings in this batch: its
    series still go stale at the batch's windows (a keyed operator must be invoked for it).
    """
    cfg = watch_config(store)
    windows = watch_windows(batch["t"].to_numpy(), int(now.timestamp()))
    events = []
    for kind in dict.fromkeys([*batch["kind"].unique(maintain_order=True).to_list(), *states]):
        part = batch.filter(pl.col("kind") == kind).select("sensor_id", "t", "value")
        states[kind], ev = advance_series(states.get(kind), part, windows, cfg)
        events.append(ev)
    mgr = AlertManager(store, AlertPolicy(), lambda: now)
    apply_verdicts(mgr, pl.concat(events), windows, lambda: now)


def test_kinds_watched_apart_give_the_same_alerts(tmp_path):
    sim.run_simulation(tmp_path / "sim", scenario="water_main_burst", duration="4h", seed=5, city_sensors=300,
                       city_districts=2, fmt="ndjson", write_reports=False)
    whole, apart = open_store(tmp_path / "whole"), open_store(tmp_path / "apart")
    for store in (whole, apart):
        sim.load_folder(store, tmp_path / "sim")
    kinds = apart.sensors.frame().select(pl.col("id").alias("sensor_id"), "kind")
    readings = pl.from_arrow(apart.readings.since(None)).join(kinds, on="sensor_id", how="left", maintain_order="left")
    t = readings["t"]
    end = datetime.fromtimestamp(int(t.max()), tz=timezone.utc)
    watch_readings(whole, clock=lambda: end)
    # two batches cut at a window boundary: the same windows, and the first batch's last
    # window is judged at its own last reading, as in the single run
    cut = (int(t.min() + t.max()) // 2) // 300 * 300
    states: dict[str, bytes] = {}
    for batch in (readings.filter(pl.col("t") < cut), readings.filter(pl.col("t") >= cut)):
        _by_kind(apart, states, batch, datetime.fromtimestamp(int(batch["t"].max()), tz=timezone.utc))
    assert len(states) > 5  # several kinds, each its own state
    a, b = whole.frame(ALERTS), apart.frame(ALERTS)
    assert a.height > 0 and set(a["type"]) >= {"threshold"}
    assert a.equals(b) and whole.frame(EVENTS).equals(apart.frame(EVENTS))
    whole.close()
    apart.close()


def test_a_kind_silent_in_a_batch_goes_stale_at_that_batch_s_windows(tmp_path):
    """A kind that sends nothing in the second batch: its series are judged stale at the windows
    of the readings of *other* kinds, so one state over every series and one state per kind
    give the same stale alerts only because the window table is passed in."""
    sim.run_simulation(tmp_path / "sim", scenario="water_main_burst", duration="2h", seed=5, city_sensors=300,
                       city_districts=2, fmt="ndjson", write_reports=False)
    stores = {name: open_store(tmp_path / name) for name in ("one", "apart")}
    for store in stores.values():
        sim.load_folder(store, tmp_path / "sim")
    kinds = stores["one"].sensors.frame().select(pl.col("id").alias("sensor_id"), "kind")
    readings = pl.from_arrow(stores["one"].readings.since(None)).join(kinds, on="sensor_id", how="left",
                                                                      maintain_order="left")
    silent = readings.group_by("kind").len().sort("len", descending=True)["kind"][0]
    t = readings["t"]
    cut = (int(t.min() + t.max()) // 2) // 300 * 300
    batches = [readings.filter(pl.col("t") < cut), readings.filter((pl.col("t") >= cut) & (pl.col("kind") != silent))]
    one: dict[str, bytes] = {}
    apart: dict[str, bytes] = {}
    for batch in batches:
        now = datetime.fromtimestamp(int(batch["t"].max()), tz=timezone.utc)
        _by_kind(stores["one"], one, batch.with_columns(pl.lit("all").alias("kind")), now)
        _by_kind(stores["apart"], apart, batch, now)
    a, b = stores["one"].frame(ALERTS), stores["apart"].frame(ALERTS)
    silent_ids = set(kinds.filter(pl.col("kind") == silent)["sensor_id"])
    stale = a.filter((pl.col("type") == "health:stale") & pl.col("source").is_in(sorted(silent_ids)))
    assert stale.height > 0  # the silent kind's sensors were called stale
    assert a.equals(b) and stores["one"].frame(EVENTS).equals(stores["apart"].frame(EVENTS))
    for store in stores.values():
        store.close()
