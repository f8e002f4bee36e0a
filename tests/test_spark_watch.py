"""The Spark watch query's parts without a JVM: the handoff rows, the operator's body per group
of kinds (``advance_kinds``), the merge of the groups' verdicts, and the handoff directory's
publishing.

What the operator does inside Spark is ``advance_kinds`` on the rows of one group (Spark only
groups, stores the state between batches and collects the output), so checking it here against
one state over every series — verdict for verdict, in the same order — checks the Spark path's
watch logic; tests/test_spark.py checks the same end to end through Spark.
"""

from __future__ import annotations

import dataclasses

import os
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pytest

sim = pytest.importorskip("cityvitals.sim")

from cityvitals.spark.handoff import (  # noqa: E402
    BATCH, GROUP_INPUT, META, Handoff, batch_table, config_from_bytes, config_slices, from_ipc, group_of, merge_configs,
)
from cityvitals.spark.watch import VERDICTS, OperatorState, advance_batches, advance_kinds, merge_key  # noqa: E402
from cityvitals.store import open_store  # noqa: E402
from cityvitals.watch.runner import WatchState, advance, watch_config, watch_windows  # noqa: E402

COLS = ["window", "source", "type", "level", "at", "message", "clear"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    out = tmp_path_factory.mktemp("spark-watch")
    sim.run_simulation(out / "sim", scenario="water_main_burst", duration="4h", seed=5, city_sensors=300,
                       city_districts=2, fmt="ndjson", write_reports=False)
    store = open_store(out / "store")
    sim.load_folder(store, out / "sim")
    kinds = store.sensors.frame().select(pl.col("id").alias("sensor_id"), "kind")
    readings = pl.from_arrow(store.readings.since(None)).join(kinds, on="sensor_id", how="left",
                                                              maintain_order="left")
    yield store, readings
    store.close()


@pytest.mark.parametrize("groups", [1, 3])
def test_kinds_through_the_operator_body_give_one_state_s_verdicts_in_its_order(scenario, groups):
    """Three batches: in the second a whole kind is silent (it must still go stale) and a few
    sensors of another kind report for the first time in the third (they join the state after
    every series seen before, whatever their kind: the merge must place their verdicts so).
    Whatever the number of groups, the verdicts are the same (one kind per group:
    tests/test_watch_by_kind.py)."""
    store, readings = scenario
    counts = readings.group_by("kind").len().sort(["len", "kind"], descending=True)
    silent, late_kind = counts["kind"][0], counts["kind"][1]
    late = sorted(readings.filter(pl.col("kind") == late_kind)["sensor_id"].unique().to_list())[:3]
    t = readings["t"]
    cuts = [int(t.min()) + (int(t.max()) - int(t.min())) * k // 3 // 300 * 300 for k in (1, 2)]
    batches = [
        readings.filter((pl.col("t") < cuts[0]) & ~pl.col("sensor_id").is_in(late)),
        readings.filter((pl.col("t") >= cuts[0]) & (pl.col("t") < cuts[1]) & (pl.col("kind") != silent)
                        & ~pl.col("sensor_id").is_in(late)),
        readings.filter(pl.col("t") >= cuts[1]),
    ]
    cfg = watch_config(store)
    registry_kinds = sorted(set(cfg.sensors["kind"].to_list()))
    assert len({group_of(k, 3) for k in registry_kinds}) == 3  # (the 3 groups are all used)
    one = WatchState()
    states = {g: OperatorState() for g in [META, *range(groups)]}
    fired = set()
    later_rows, later_outs, after_first = [], [], None
    for b, batch in enumerate(batches):
        if b == 1:  # (the state a restart resumes from)
            after_first = {g: dataclasses.replace(st, changed=set()) for g, st in states.items()}
        now = datetime.fromtimestamp(int(batch["t"].max()), tz=timezone.utc)
        windows = watch_windows(batch["t"].to_numpy(), int(now.timestamp()))
        expect = advance(one, batch.select("sensor_id", "t", "value"), windows, lambda: cfg)
        rows = pl.from_arrow(batch_table(b, now, True, batch.select("sensor_id", "t", "value", "kind"),
                                         config_slices(cfg, registry_kinds) if b == 0 else {}, groups))
        inputs = rows.filter(pl.col("row_type") == GROUP_INPUT)
        assert sorted(inputs["group"]) == list(range(groups))  # every group, also one whose kinds sent nothing
        assert sum(from_ipc(r).num_rows for r in inputs["readings"].to_list() if r) == batch.height
        outs = [advance_kinds(group, part, states[group]) for (group,), part in rows.group_by("group")]
        out = pl.concat(outs)
        if b >= 1:
            later_rows.append(rows)
            later_outs.append(out)
        got = pl.from_arrow(pa.concat_tables([from_ipc(v) for v in
                                              out.filter(pl.col("row_type") == VERDICTS)["blob"].to_list()]))
        got = got.sort(merge_key())
        assert got.select(COLS).equals(expect.select(COLS))
        windows_back = pl.from_arrow(from_ipc(out.filter(pl.col("row_type") == BATCH)["blob"][0]))
        assert windows_back.select(windows.columns).equals(windows)
        summary = out.filter(pl.col("row_type") == VERDICTS)
        assert summary["points"].sum() == batch.height
        if b == 1:
            # the silent kind's group is advanced even where it has no reading: its series go stale
            assert group_of(silent, groups) in summary["group"].to_list()
            fired |= set(got.filter((pl.col("type") == "health:stale") & ~pl.col("clear"))["source"])
        if b == 2:
            assert set(got["source"]) >= set(late)
    silent_ids = set(readings.filter(pl.col("kind") == silent)["sensor_id"])
    assert fired & silent_ids  # the silent kind's sensors were judged stale
    ids = [s for st in states.values() if st.detectors for s in WatchState.from_bytes(st.detectors).ids]
    assert sorted(ids) == sorted(one.ids)
    # batches 1 and 2 handed over at once (Spark's file source after a restart): the same
    # output and state as two micro-batches
    both = pl.concat(later_rows)
    together = pl.concat([advance_batches(group, part, after_first[group])
                          for (group,), part in both.group_by("group", maintain_order=True)])
    key = ["batch", "group", "row_type"]
    assert together.sort(key).equals(pl.concat(later_outs).sort(key))
    assert all(after_first[g].detectors == states[g].detectors for g in states)


def test_a_kind_s_configuration_slice_configures_as_the_whole(scenario):
    store, _ = scenario
    cfg = watch_config(store)
    kinds = sorted(set(cfg.sensors["kind"].to_list()))
    slices = config_slices(cfg, kinds)
    assert set(slices) == set(kinds)
    whole = merge_configs([config_from_bytes(b) for b in slices.values()])
    assert whole.sensors.sort("id").equals(cfg.sensors.sort("id"))
    same = repr  # (levels may hold NaN, which equals nothing)
    assert same((whole.thresholds, whole.asset_levels, whole.rest_levels)) == same((
        {k: v for k, v in sorted(cfg.thresholds.items()) if k in kinds}, cfg.asset_levels, cfg.rest_levels))
    for kind in kinds:
        part = config_from_bytes(slices[kind])
        assert part.sensors.equals(cfg.sensors.filter(pl.col("kind") == kind))
        assert repr(part.thresholds) == repr({k: v for k, v in cfg.thresholds.items() if k == kind})
        ids = set(part.sensors["id"])
        assert repr(part.asset_levels) == repr({s: th for s, th in cfg.asset_levels.items() if s in ids})
        assert repr(part.rest_levels) == repr({s: th for s, th in cfg.rest_levels.items() if s in ids})
        assert (part.use_assets, part.user_kinds, part.drift_refs) == (cfg.use_assets, cfg.user_kinds, cfg.drift_refs)
        assert part.near is None  # not computed ahead: the operator computes a kind's own
    # neighbours computed ahead on the driver travel with their kind, and come back whole
    ahead = cfg.with_neighbours()
    back = merge_configs([config_from_bytes(b) for b in config_slices(ahead, kinds).values()])
    assert back.near.sort(["sensor_id", "ref", "near_id"]).equals(ahead.near.sort(["sensor_id", "ref", "near_id"]))


def test_operator_refuses_a_batch_it_cannot_watch_rightly(scenario):
    """Rows of two micro-batches in one call, or readings of a kind with no configuration:
    a clear error, not verdicts from the wrong windows or unconfigured detectors."""
    _, readings = scenario
    kind = readings["kind"][0]
    part = readings.filter(pl.col("kind") == kind).head(50)
    now = datetime.fromtimestamp(int(part["t"].max()), tz=timezone.utc)
    rows = [pl.from_arrow(batch_table(b, now, True, part.select("sensor_id", "t", "value", "kind"), {}, 1))
            for b in (0, 1)]
    mine = [r.filter(pl.col("group") == 0) for r in rows]
    assert [m.height for m in mine] == [1, 1]
    with pytest.raises(RuntimeError, match="mixes micro-batches"):
        advance_kinds(0, pl.concat(mine), OperatorState())
    with pytest.raises(RuntimeError, match="no watch configuration"):
        advance_kinds(0, mine[0], OperatorState())
    with pytest.raises(Exception, match="at least one"):
        batch_table(0, now, True, part.select("sensor_id", "t", "value", "kind"), {}, 0)


def test_handoff_files_are_published_after_staging_once_in_batch_order(tmp_path):
    h = Handoff(tmp_path / "handoff")
    table = batch_table(0, None, False, pl.DataFrame(schema={"sensor_id": pl.Utf8, "t": pl.Int64,
                                                             "value": pl.Float64, "kind": pl.Utf8}), {}, 2)
    assert table.column("row_type").to_pylist() == [BATCH]  # nothing to watch: the batch row alone
    for b in range(3):  # staged within the same millisecond, as fast batches may be
        h.stage(b, table.set_column(0, "batch", pa.array([b] * table.num_rows, pa.int64())))
    assert list(h.path.iterdir()) == [] and h.staged(1)
    assert [h.publish(b) for b in (0, 1, 1, 2)] == [True, True, False, True]
    files = sorted(h.path.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert [f.name for f in files] == [Handoff.name(b) for b in range(3)]
    assert len({f.stat().st_mtime_ns // 1_000_000 for f in files}) == 3  # strictly ordered to the millisecond
    again = Handoff(tmp_path / "handoff")  # a restarted sink continues after the newest file
    again.stage(3, table)
    again.publish(3)
    assert os.stat(again.path / Handoff.name(3)).st_mtime_ns > files[-1].stat().st_mtime_ns


def test_the_group_count_is_fixed_by_the_checkpoint_s_first_run(tmp_path):
    """The watch state is keyed by group: a restart with another count, or a checkpoint of the
    one-query job, is refused with a clear error instead of watching with the wrong state."""
    from cityvitals.errors import InputError
    from cityvitals.spark.job import Layout

    layout = Layout(tmp_path / "ckpt")
    layout.check()
    assert layout.watch_groups(None, 2) == 2
    assert Layout(tmp_path / "ckpt").watch_groups(None, 8) == 2  # the stored count wins over the default
    assert layout.watch_groups(2, 8) == 2
    with pytest.raises(InputError, match="kept in 2 groups"):
        layout.watch_groups(3, 2)
    (tmp_path / "old" / "offsets").mkdir(parents=True)
    with pytest.raises(InputError, match="one-query Spark job"):
        Layout(tmp_path / "old").check()
