"""The pipeline on Spark Structured Streaming: the same results as the local runner, exactly once.

One seeded simulator scenario (300 sensors, 3 hours, a water main burst that raises
alerts) is written as three NDJSON files. The local engine and Spark ``local[2]`` each
take them, one file per batch, into a fresh PostgreSQL schema; the stores must end equal:
readings, quarantine, indicator values and levels, health index and its explanation,
alerts (with their ids: created in the same order) and their events, incidents, cases.
Spark runs two queries: ingest (executors validate; the driver stores, runs signs and hands
the batch over) and watch (the detectors in a stateful operator keyed by sensor kind, their
state in Spark's checkpoint; the driver applies the verdicts, diagnoses and disposes). The
restart test crashes both queries at the points that matter and restarts them from their
checkpoints; the store must end as after the uninterrupted run.

The store's ``watch_state`` is not compared: the local runner keeps its detectors' state
there, the Spark job keeps it in its checkpoint (``test_detector_state_lives_in_the_spark_checkpoint``
compares the two states series by series instead).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

# CI installs both (.ci/run sets CITYVITALS_REQUIRE_SPARK): there a missing one fails, never skips.
if os.environ.get("CITYVITALS_REQUIRE_SPARK"):
    import pyspark  # noqa: F401

    assert shutil.which("java") or os.environ.get("JAVA_HOME"), "Spark needs Java and CI must provide it"
else:
    pytest.importorskip("pyspark")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("Spark needs Java (none on this machine)", allow_module_level=True)

from cityvitals.runtime import LocalRunner
from cityvitals.runtime.files import FileSource
from cityvitals.sim import load_folder, run_simulation
from cityvitals.spark import StoreSink, kafka_options, session, stream_job
from cityvitals.store import open_store
from cityvitals.watch.runner import WatchState

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

_RANKS = ("WITH ar AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM alerts), "
          "ir AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM incidents), "
          "cr AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM cases) ")
"""Alerts, incidents and cases are compared by their rank in id order, not by id: a
PostgreSQL sequence is not rolled back with a transaction, so a batch redone after a crash
takes later ids (a gap), but the same rows in the same creation order get the same ranks.
References to them ("A<alert id>" in incident members, "alert:<id>" / "incident:<id>" in
case refs) are ranked too."""

SNAPSHOT = {
    "readings": "SELECT sensor_id, ts, value, quality, kind, unit_code FROM readings ORDER BY sensor_id, ts",
    "quarantine": "SELECT source, location, reason, message, raw FROM quarantine ORDER BY source, location, reason",
    "sign_values": "SELECT indicator, unit_code, window_start, window_end, value, level, schmitt, n, direct "
                   "FROM sign_values ORDER BY indicator, unit_code, window_start, direct",
    "sign_health": "SELECT unit_code, as_of, scope, value FROM sign_health ORDER BY unit_code, as_of, scope",
    "sign_health_explain": "SELECT unit_code, as_of, scope, indicator, category, level, value, weight, points "
                           "FROM sign_health_explain ORDER BY unit_code, as_of, scope, indicator",
    "sign_watermark": "SELECT value FROM sign_state WHERE key = 'watermark_us'",
    "alerts": _RANKS + "SELECT ar.n AS id, source, type, level, state, message, first_at, last_at, occurrences, "
              "clear_since, escalation, escalated_at, flapping, reopened, resolved_at FROM alerts JOIN ar USING (id) "
              "ORDER BY ar.n",
    "alert_events": "SELECT a.source, a.type, e.ts, e.event, e.level, e.note FROM alert_events e "
                    "JOIN alerts a ON a.id = e.alert_id ORDER BY a.source, a.type, e.ts, e.event, e.level",
    "incidents": _RANKS + "SELECT ir.n AS id, type, state, title, severity, level, confidence, top_cause, start_at, "
                 "end_at, opened_at, updated_at, closed_at, m.n AS merged_into, units, population, n_alerts, n_reports "
                 "FROM incidents i JOIN ir USING (id) LEFT JOIN ir m ON m.id = i.merged_into ORDER BY ir.n",
    "incident_members": _RANKS + "SELECT ir.n AS incident_id, CASE WHEN ref ~ '^A[0-9]+$' THEN 'A' || "
                        "(SELECT n FROM ar WHERE ar.id = substr(ref, 2)::bigint) ELSE ref END AS ref, origin, "
                        "source, type FROM incident_members JOIN ir ON ir.id = incident_id ORDER BY 1, 2, origin",
    "incident_causes": _RANKS + "SELECT ir.n AS incident_id, rank, cause, kind, name, score, evidence "
                       "FROM incident_causes JOIN ir ON ir.id = incident_id ORDER BY 1, rank",
    "incident_history": _RANKS + "SELECT ir.n AS incident_id, ts, event, note FROM incident_history "
                        "JOIN ir ON ir.id = incident_id ORDER BY 1, ts, event, note",
    "cases": _RANKS + "SELECT cr.n AS id, CASE WHEN ref ~ '^alert:[0-9]+$' THEN 'alert:' || "
             "(SELECT n FROM ar WHERE ar.id = split_part(ref, ':', 2)::bigint) WHEN ref ~ '^incident:[0-9]+$' THEN "
             "'incident:' || (SELECT n FROM ir WHERE ir.id = split_part(ref, ':', 2)::bigint) ELSE ref END AS ref, "
             "channel, description, unit_code, state, category, priority, source, reported_at, updated_at, filed_at, "
             "department, crew, dispatched_at, due_at, escalation FROM cases JOIN cr USING (id) ORDER BY cr.n",
    "case_events": _RANKS + "SELECT cr.n AS case_id, seq, ts, action, actor, from_state, to_state FROM case_events "
                   "JOIN cr ON cr.id = case_id ORDER BY 1, seq",
}


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """The scenario as NDJSON files with distinct modification times (the order both engines take)."""
    out = tmp_path_factory.mktemp("spark-city")
    run_simulation(out / "sim", scenario="water_main_burst", duration="3h", seed=5, city_sensors=300,
                   city_districts=2, fmt="ndjson")
    src = out / "stream"
    src.mkdir()
    for i, f in enumerate(sorted((out / "sim" / "readings").glob("part-*.ndjson"))):
        shutil.copyfile(f, src / f.name)
        os.utime(src / f.name, (1_700_000_000 + 60 * i, 1_700_000_000 + 60 * i))
    return out


@pytest.fixture(scope="module")
def schemas():
    psycopg = pytest.importorskip("psycopg")
    made = []

    def new(city: Path) -> str:
        schema = "cv_spark_" + uuid.uuid4().hex[:10]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        made.append(schema)
        url = f"{PG_ADMIN}?options=-csearch_path%3D{schema}"
        with open_store(city / "home", url=url, migrate=True) as store:
            load_folder(store, city / "sim", readings=False)
        return url

    yield new
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for schema in made:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="module")
def spark():
    s = session("local[2]", conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"})
    yield s
    s.stop()


def snapshot(city: Path, url: str) -> dict[str, pl.DataFrame]:
    with open_store(city / "home", url=url) as store:
        out = {name: store.frame(sql) for name, sql in SNAPSHOT.items()}
        ranks = dict(store.frame("SELECT id, row_number() OVER (ORDER BY id) AS n FROM incidents").iter_rows())
    # history notes name incidents by id ("merged into incident 12"): by rank, as everywhere else
    out["incident_history"] = out["incident_history"].with_columns(pl.col("note").map_elements(
        lambda note: re.sub(r"incident (\d+)", lambda m: f"incident #{ranks.get(int(m[1]), m[1])}", note),
        return_dtype=pl.Utf8))
    return out


def assert_same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame], names=tuple(SNAPSHOT)) -> None:
    for name in names:
        assert a[name].height == b[name].height, f"{name}: {a[name].height} rows vs {b[name].height}"
        try:
            assert_frame_equal(a[name], b[name], check_exact=False, rel_tol=0, abs_tol=1e-9)
        except AssertionError as exc:
            raise AssertionError(f"{name} differs: {exc}") from None


def local_run(city: Path, url: str, folder: Path) -> None:
    with open_store(city / "home", url=url) as store:
        source = FileSource(folder)
        runner = LocalRunner(store, source, lambda: datetime.now(timezone.utc), event_time=True)
        while not source.done():
            runner.step()


@pytest.fixture(scope="module")
def local_url(city, schemas):
    """The local engine's store after the whole scenario."""
    url = schemas(city)
    local_run(city, url, city / "stream")
    return url


@pytest.fixture(scope="module")
def reference(city, local_url):
    return snapshot(city, local_url)


@pytest.fixture(scope="module")
def uninterrupted(city, schemas, spark, tmp_path_factory):
    url = schemas(city)
    ckpt = tmp_path_factory.mktemp("ckpt")
    result = stream_job(spark, str(city / "stream"), url, str(ckpt), query="parity", home=str(city / "home"))
    return url, result, snapshot(city, url), ckpt


def test_parity_with_the_local_runner(reference, uninterrupted):
    _, result, got, _ = uninterrupted
    summary = result.to_dict()
    assert summary["batches"] == 3 and summary["files"] == 3 and summary["skipped"] == 0
    assert summary["watch_batches"] == 3 and summary["watched"] == summary["accepted"]
    # the watch query's file source deleted the handoff files of the batches it recorded
    assert [p.name for p in (uninterrupted[3] / "handoff").iterdir()] == ["batch-000000000002.parquet"]
    assert reference["readings"].height > 50_000
    assert reference["quarantine"].height > 50  # the simulator's bad records
    assert reference["sign_values"]["level"].max() > 0 and reference["sign_health"].height > 0
    assert reference["alerts"].height > 10  # the burst raises alerts
    assert reference["incidents"].height > 5 and reference["cases"].height > 10  # diagnose and dispose ran
    assert_same(reference, got)


def spark_states(spark, checkpoint) -> dict[int, bytes]:
    """Each group's detector state as the watch query's checkpoint holds it (Spark's state data source)."""
    rows = (spark.read.format("statestore").option("stateVarName", "detectors")
            .load(str(Path(checkpoint) / "watch")).toArrow().to_pylist())
    return {r["key"]["group"]: bytes(r["value"]["detectors"]) for r in rows}


def test_detector_state_lives_in_the_spark_checkpoint(city, spark, local_url, uninterrupted):
    """The detectors' state is in the watch query's checkpoint, one entry per group of sensor
    kinds (every kind whole in one group), and nowhere in the store; series by series it is
    the local runner's state (the same series, each last seen at the same time, at the same
    threshold level)."""
    from cityvitals.spark.handoff import group_of
    from cityvitals.watch.runner import STATE_NAME

    url, _, _, ckpt = uninterrupted
    with open_store(city / "home", url=local_url) as store:
        _, blob = store.alerts.get_watch_state(STATE_NAME)
        kinds = dict(store.sensors.frame().select("id", "kind").iter_rows())
    with open_store(city / "home", url=url) as store:
        rows = store.frame("SELECT name, blob IS NULL AS empty FROM watch_state")
    assert rows.rows() == [("spark:parity", True)]  # only the handoff mark: no detector bytes in the store
    local = WatchState.from_bytes(blob)
    states = spark_states(spark, ckpt)
    groups = json.loads((ckpt / "watch.json").read_text())["groups"]
    assert sorted(states) == list(range(groups)) and groups == 2  # (the session's shuffle partitions)
    at = {s: i for i, s in enumerate(local.ids)}
    for group, data in states.items():
        st = WatchState.from_bytes(data)
        assert st.ids and {group_of(kinds[s], groups) for s in st.ids} == {group}
        idx = [at[s] for s in st.ids]
        assert list(local.health.last_ts[idx]) == list(st.health.last_ts[: len(st.ids)])
        assert list(local.threshold.level[idx]) == list(st.threshold.level[: len(st.ids)])
    assert sorted(s for d in states.values() for s in WatchState.from_bytes(d).ids) == sorted(local.ids)


def test_parity_fails_when_the_spark_path_levels_differently(city, schemas, spark, reference, tmp_path, monkeypatch):
    """The Spark job runs the shared level code in the driver: a changed threshold shows."""
    from cityvitals.signs import engine

    real = engine.assign_levels

    def stricter(part, conds, **kw):  # every level one step higher: a threshold that differs
        out = real(part, conds, **kw)
        return out.with_columns(pl.min_horizontal(pl.col("level") + 1, pl.lit(3)).cast(out.schema["level"]))

    monkeypatch.setattr(engine, "assign_levels", stricter)
    url = schemas(city)
    stream_job(spark, str(city / "stream"), url, str(tmp_path / "ckpt"), query="diverge", home=str(city / "home"))
    got = snapshot(city, url)
    assert_frame_equal(reference["readings"], got["readings"])
    with pytest.raises(AssertionError):
        assert_same(reference, got)
    assert (got["sign_values"]["level"] != reference["sign_values"]["level"]).any()



def test_a_registry_change_and_a_silent_kind_mid_stream(city, schemas, spark, tmp_path):
    """Two hour-files. A pm2.5 sensor ``NEW-1`` (a copy of a registered one, reading far above
    the alarm level) is registered after the first: validation on the executors refuses it in
    the first (the broadcast then) and accepts it in the second (broadcast again), and the
    watch configures it from the configuration the ingest query hands over when the registry
    version moves, and alerts on it. The most common other kind sends nothing in the second
    hour: its group is still called (the window rows) and its sensors go stale. The local
    runner, given the same files and the same registration between its two batches, ends with
    the same readings, quarantine, signs, alerts and alert events."""
    url, local = schemas(city), schemas(city)
    with open_store(city / "home", url=url) as store:
        sensors = store.sensors.frame()
    files = [(city / "stream" / f"part-0000{i}.ndjson").read_bytes().splitlines() for i in (0, 1)]
    kind_of = dict(sensors.select("id", "kind").iter_rows())

    def record(line: bytes) -> dict:  # (the simulator's files hold deliberately bad lines)
        try:
            rec = json.loads(line)
        except ValueError:
            return {}
        return rec if isinstance(rec, dict) else {}

    known = next(record(ln)["sensor_id"] for ln in files[1] if kind_of.get(record(ln).get("sensor_id")) == "pm25")
    counts: dict[str, int] = {}
    for ln in files[1]:
        k = kind_of.get(record(ln).get("sensor_id"))
        if k and k != "pm25":
            counts[k] = counts.get(k, 0) + 1
    silent = max(counts, key=lambda k: (counts[k], k))
    src = tmp_path / "src"
    src.mkdir()
    for i, lines in enumerate(files):
        keep = [ln for ln in lines if i == 0 or kind_of.get(record(ln).get("sensor_id")) != silent]
        new = [json.dumps({**rec, "sensor_id": "NEW-1", "value": 200.0}).encode() for rec in map(record, lines)
               if rec.get("sensor_id") == known and isinstance(rec.get("value"), (int, float))]
        assert new
        (src / f"part-{i}.ndjson").write_bytes(b"\n".join(keep + new) + b"\n")
        os.utime(src / f"part-{i}.ndjson", (1_700_000_000 + 60 * i,) * 2)

    def register(store) -> None:
        store.sensors.upsert(store.sensors.frame().filter(pl.col("id") == known).with_columns(pl.lit("NEW-1").alias("id")))

    def after_first(report) -> None:
        if report.batch_id == 0:
            with open_store(city / "home", url=url) as store:
                register(store)

    ckpt = tmp_path / "ckpt"
    result = stream_job(spark, str(src), url, str(ckpt), query="registry", home=str(city / "home"),
                        on_batch=after_first)
    assert [b.batch_id for b in result.batches] == [0, 1] and [w.batch_id for w in result.watch] == [0, 1]
    with open_store(city / "home", url=local) as store:
        source = FileSource(src)
        runner = LocalRunner(store, source, lambda: datetime.now(timezone.utc), event_time=True)
        runner.step()
        register(store)
        runner.step()
    with open_store(city / "home", url=url) as store:
        refused = store.frame("SELECT source, reason FROM quarantine WHERE raw LIKE '%NEW-1%'")
        stored = store.frame("SELECT count(*) AS n FROM readings WHERE sensor_id = 'NEW-1'")["n"][0]
        alerts = store.frame("SELECT source, type, level FROM alerts")
    assert set(refused["reason"]) == {"unknown_sensor"} and set(refused["source"]) == {str(src / "part-0.ndjson")}
    assert stored > 0
    assert alerts.filter((pl.col("source") == "NEW-1") & (pl.col("type") == "threshold"))["level"].to_list() == ["alarm"]
    silent_ids = {s for s, k in kind_of.items() if k == silent}
    stale = alerts.filter((pl.col("type") == "health:stale") & pl.col("source").is_in(sorted(silent_ids)))
    assert stale.height > 0
    new_state = next(st for st in map(WatchState.from_bytes, spark_states(spark, ckpt).values()) if "NEW-1" in st.ids)
    i = new_state.ids.index("NEW-1")
    assert list(new_state.threshold.thr[i]) == [75.0, 115.0, 150.0]  # configured from the handed-over registry
    got, want = snapshot(city, url), snapshot(city, local)
    watch_tables = ("readings", "quarantine", "sign_values", "sign_health", "alerts", "alert_events")
    assert_same({k: want[k] for k in watch_tables}, {k: got[k] for k in watch_tables}, watch_tables)


class Crash(RuntimeError):
    pass


def test_restart_from_the_checkpoint_neither_loses_nor_duplicates(city, schemas, spark, uninterrupted, tmp_path):
    """Both queries crash at the points that matter, in turns, and restart from their checkpoints.

    Ingest: after its handoff file is staged but before the store commit (the batch and its
    file are redone), and after the commit but before the file is published (the replay is
    skipped and publishes it). Watch: after its commit but before Spark records the batch (the
    replay is skipped) and inside its transaction (redone from the detector state Spark
    checkpointed for the batch before). Before the last restart the store's ``watch_state`` is
    emptied: the detectors' state comes from the checkpoint alone.
    """
    url = schemas(city)
    ckpt = tmp_path / "ckpt"
    run = {"query": "restart", "home": str(city / "home")}
    handoff = ckpt / "handoff"

    def go(stage: str, batch: int | None = None, point: str | None = None):
        def fault(batch_id: int, at: str) -> None:
            if batch_id == batch and at == point:
                raise Crash(f"injected crash at batch {batch_id} {at}")
        args = (spark, str(city / "stream"), url, str(ckpt))
        if point is None:
            return stream_job(*args, stages=(stage,), **run)
        with pytest.raises(Exception, match="injected crash"):
            stream_job(*args, stages=(stage,), fault=fault, **run)

    def committed(query: str) -> list[int]:
        with open_store(city / "home", url=url) as store:
            return store.frame("SELECT batch_id FROM stream_batches WHERE query = ? ORDER BY batch_id",
                               [query])["batch_id"].to_list()

    go("ingest", 1, "staged")  # batch 0 committed and published; batch 1 staged, rolled back
    assert committed("restart") == [0] and sorted(p.name for p in handoff.iterdir()) == ["batch-000000000000.parquet"]
    go("watch", 0, "watch_after_commit")  # watch of batch 0 committed, not recorded by Spark
    go("ingest", 2, "after_commit")  # batch 1 redone; batch 2 committed, its file still staged
    assert committed("restart") == [0, 1, 2] and len(list(handoff.iterdir())) == 2
    go("watch", 1, "watch_before_commit")  # batch 0 replayed (skipped), batch 1 rolled back
    assert committed("restart-watch") == [0]
    names = lambda: sorted(p.name for p in handoff.iterdir())  # noqa: E731
    # Spark recorded watch batch 0 and deleted its file; batch 1's stays for the replay
    assert names() == ["batch-000000000001.parquet"]
    last = go("ingest")  # batch 2 replayed: skipped, its file published
    assert [(b.batch_id, b.skipped) for b in last.batches] == [(2, True)]
    assert names() == ["batch-000000000001.parquet", "batch-000000000002.parquet"]
    with open_store(city / "home", url=url) as store, store.transaction() as con:
        con.execute("DELETE FROM watch_state")
    watch = go("watch")
    assert [(w.batch_id, w.skipped) for w in watch.watch] == [(1, False), (2, False)]
    assert committed("restart-watch") == [0, 1, 2] and names() == ["batch-000000000002.parquet"]
    assert_same(uninterrupted[2], snapshot(city, url))


def test_both_queries_at_once_as_a_long_running_job(city, schemas, spark, uninterrupted, tmp_path):
    """Without ``--once`` both queries run at the same time in one driver (the watch a batch or
    so behind the ingest, each sink on its own connection); stopped once the watch has
    committed every batch, the store is the uninterrupted run's."""
    import threading

    url = schemas(city)
    out: dict = {}

    def job() -> None:
        try:
            out["result"] = stream_job(spark, str(city / "stream"), url, str(tmp_path / "ckpt"), query="live",
                                       home=str(city / "home"), available_now=False, trigger_seconds=0.5)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            out["error"] = exc

    runner = threading.Thread(target=job, daemon=True)
    runner.start()
    deadline = time.monotonic() + 300
    with open_store(city / "home", url=url) as store:
        while time.monotonic() < deadline and runner.is_alive():
            n = store.frame("SELECT count(*) AS n FROM stream_batches WHERE query = 'live-watch'")["n"][0]
            if n == 3:
                break
            time.sleep(0.5)
    for q in spark.streams.active:
        if q.name in ("live", "live-watch"):
            q.stop()
    runner.join(120)
    assert not runner.is_alive() and "error" not in out, out.get("error")
    assert [w.batch_id for w in out["result"].watch] == [0, 1, 2]
    assert_same(uninterrupted[2], snapshot(city, url))


def test_kafka_reader_options_and_messages_through_the_sink(city, schemas, tmp_path):
    """No broker here: the reader options are checked, and Kafka-shaped rows go through the sink."""
    import pyarrow as pa

    opts = kafka_options("kafka://k1:9092,k2:9092/city.readings?shards=0,2&max=100000&group=cv")
    assert opts["kafka.bootstrap.servers"] == "k1:9092,k2:9092" and opts["assign"] == '{"city.readings": [0, 2]}'
    assert opts["maxOffsetsPerTrigger"] == "100000" and "subscribe" not in opts
    assert kafka_options("kafka://k1:9092/t")["subscribe"] == "t"
    with pytest.raises(Exception, match="kafka://host:port"):
        kafka_options("kafka://k1:9092")
    url = schemas(city)
    lines = (city / "stream" / "part-00000.ndjson").read_bytes().splitlines()[:500]
    rows = pa.table({"topic": ["city.readings"] * (len(lines) + 1), "partition": [3] * (len(lines) + 1),
                     "offset": list(range(1000, 1000 + len(lines) + 1)), "value": lines + [b"{not json"]})
    sink = StoreSink(url, "kafka", query="kafka", home=str(city / "home"), handoff=tmp_path / "handoff")
    try:
        first = sink.apply(rows, 0)
        again = sink.apply(rows, 0)  # a replayed micro-batch
    finally:
        sink.close()
    assert first.records == len(lines) + 1 and first.accepted > 400 and again.skipped
    assert first.handed == first.accepted and [p.name for p in (tmp_path / "handoff").iterdir()] == [
        "batch-000000000000.parquet"]
    with open_store(city / "home", url=url) as store:
        q = store.frame("SELECT source, location, reason FROM quarantine WHERE raw = '{not json'")
        n = store.frame("SELECT count(*) AS n FROM readings")["n"][0]
    assert q.rows() == [("kafka:city.readings/3", f"offset {1000 + len(lines)}", "malformed")]
    assert n == first.accepted



def test_checked_parts_survive_the_trip_from_executors_in_order(city, schemas):
    """What executor tasks return (``check_rows``) decodes into the parts the driver stores, in
    the local engine's order, whatever order the tasks' results arrive in: files by
    (modification time, name), a Kafka partition split over two tasks by offset."""
    import pyarrow as pa

    from cityvitals.ingest.checked import Checker
    from cityvitals.ingest.pipeline import registry_table
    from cityvitals.spark.executors import check_rows, decode

    url = schemas(city)
    with open_store(city / "home", url=url) as store:
        registry = registry_table(store)
    checker = Checker(registry, now=datetime.now(timezone.utc))
    lines = (city / "stream" / "part-00000.ndjson").read_bytes().splitlines()[:40]
    try:
        files = [check_rows(pa.table({"path": [f"file:/d/{name}"], "modificationTime": [datetime.fromtimestamp(t, timezone.utc)],
                                      "content": [b"\n".join(lines[:10]) + b"\n{bad\n"]}), "ndjson", checker)
                 for name, t in (("b.ndjson", 100), ("a.ndjson", 100), ("c.ndjson", 50))]
        msgs = lines[:20] + [b"{not json"]
        kafka = [check_rows(pa.table({"topic": ["t"] * len(part), "partition": [1] * len(part),
                                      "offset": list(range(first, first + len(part))), "value": part}), "kafka", checker)
                 for first, part in ((7, msgs[:11]), (18, msgs[11:]))]
    finally:
        checker.close()
    parts = decode(pa.concat_tables(files))
    assert [p.source for _, p in parts] == ["/d/c.ndjson", "/d/a.ndjson", "/d/b.ndjson"]
    reasons = [p.rows["reason"].to_pylist() for _, p in parts]
    assert reasons[0] == reasons[1] == reasons[2] and len(reasons[0]) == 11 and reasons[0][-1] == "malformed"
    split = decode(pa.concat_tables(kafka[::-1]))
    keys = [k for k, _ in split]  # (the line splitter may cut a task's messages into more than one batch)
    assert keys == sorted(keys) and set(keys) == {(1, "t", 7), (1, "t", 18)}
    seqs = [s for _, p in split for s in p.rows["seq"].to_pylist()]
    locs = [p.origins[s][1] for _, p in split for s in p.rows["seq"].to_pylist()]
    assert len(seqs) == 21 and locs == [f"offset {o}" for o in range(7, 28)]
    assert split[-1][1].rows["reason"].to_pylist()[-1] == "malformed"  # "{not json", offset 27

def test_executors_import_the_driver_s_cityvitals(spark):
    """Executor workers run this interpreter with this ``PYTHONPATH``: the operator code they run
    is the code under test, not another installed copy."""
    import cityvitals

    def where(batches):
        import pyarrow as pa

        import cityvitals as c

        for _ in batches:
            yield pa.RecordBatch.from_pydict({"f": [c.__file__]})

    where.__module__ = "__main__"  # (pickled by value: executors cannot import this test module)
    got = spark.range(4).repartition(2).mapInArrow(where, "f STRING").toArrow()["f"].to_pylist()
    assert got and set(got) == {cityvitals.__file__}


def test_run_command_local_engine_and_its_refusals(city, tmp_path):
    """``cityvitals run``: the local engine over a directory (embedded store), and clear errors."""
    from typer.testing import CliRunner

    from cityvitals.cli import app

    one = tmp_path / "one"
    one.mkdir()
    shutil.copyfile(city / "stream" / "part-00000.ndjson", one / "part-00000.ndjson")
    home = tmp_path / "home"
    with open_store(home) as store:
        load_folder(store, city / "sim", readings=False)
    cli = CliRunner()
    res = cli.invoke(app, ["run", "--engine", "local", "--source", str(one), "--home", str(home), "--once", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["batches"] == 1 and out["accepted"] > 15_000 and out["quarantined"] > 0
    with open_store(home) as store:
        assert store.frame("SELECT count(*) AS n FROM sign_values")["n"][0] > 0
    for args, message in [
        (["--engine", "spark", "--source", str(one)], "--checkpoint"),
        (["--engine", "local", "--source", "kafka://k:9092/t"], "Kafka needs --engine spark"),
        (["--engine", "local", "--source", str(tmp_path / "none")], "no such directory"),
        (["--batch", "--source", str(one)], "--from and --to"),
    ]:
        res = cli.invoke(app, ["run", *args, "--home", str(home)])
        assert res.exit_code != 0 and message in str(res.exception or res.output), (args, res.output)


def test_batch_mode_recomputes_history_from_a_parquet_archive(spark, schemas, tmp_path):
    """``--batch``: Spark reads the archive a day at a time; stored readings are duplicates on a re-run."""
    from cityvitals.spark import batch_job

    archive = tmp_path / "archive"
    run_simulation(archive / "sim", scenario="quiet_day", duration="2h", seed=3, city_sensors=200, city_districts=1)
    url = schemas(archive)
    lo, hi = datetime(2024, 7, 14, tzinfo=timezone.utc), datetime(2024, 7, 15, tzinfo=timezone.utc)
    first = batch_job(spark, str(archive / "sim" / "readings"), url, lo, hi, home=str(archive / "home"))
    again = batch_job(spark, str(archive / "sim" / "readings"), url, lo, hi, home=str(archive / "home"))
    assert first["ingest"]["accepted"] > 20_000 and first["signs"]["values"] > 0
    assert again["ingest"]["accepted"] == 0 and again["ingest"]["duplicates"] >= first["ingest"]["accepted"]
    with open_store(archive / "home", url=url) as store:
        assert store.frame("SELECT count(*) AS n FROM readings")["n"][0] == first["ingest"]["accepted"]


def test_sigkill_of_the_spark_job_at_two_moments_then_a_restart(city, schemas, uninterrupted, tmp_path):
    """The real thing: ``cityvitals run --engine spark`` in its own process group, killed with
    SIGKILL (driver, JVM and Python workers at once) once while the ingest query is between
    batches and once while the watch query is, then run again from its checkpoint to the end;
    the store is the uninterrupted run's. The moments are found from the store (the first
    committed batch of each query), so where in a batch the kill lands varies run to run, and
    every such place must be safe."""
    import signal
    import subprocess
    import sys

    url = schemas(city)
    ckpt = tmp_path / "ckpt"
    cmd = [sys.executable, "-m", "cityvitals", "run", "--engine", "spark", "--master", "local[2]",
           "--source", str(city / "stream"), "--store", url, "--home", str(city / "home"),
           "--checkpoint", str(ckpt), "--query", "kill", "--once", "--json"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}

    def committed(query: str) -> int:
        with open_store(city / "home", url=url) as store:
            return int(store.frame("SELECT count(*) AS n FROM stream_batches WHERE query = ?", [query])["n"][0])

    def kill_when(query: str, n: int) -> None:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None and committed(query) < n:
                time.sleep(0.1)
            assert proc.poll() is None, f"the job ended before {query} committed {n} batches:\n" + proc.stdout.read().decode()[-3000:]
            assert committed(query) >= n, f"{query} did not commit {n} batches in 300 s"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
            proc.stdout.close()

    kill_when("kill", 1)  # the ingest query committed batch 0: killed during batch 1 (or just after it)
    assert committed("kill") < 3
    kill_when("kill-watch", 1)  # ingest done on this run; the watch committed batch 0
    assert committed("kill-watch") < 3
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert committed("kill") == 3 and committed("kill-watch") == 3
    assert_same(uninterrupted[2], snapshot(city, url))


def test_files_merged_into_one_micro_batch_are_taken_in_the_local_engine_s_steps(city, schemas, reference, tmp_path):
    """What Spark's file source can do to a restarted query -- give it more files than
    ``maxFilesPerTrigger`` in one micro-batch (seen after a SIGKILL) -- done on purpose, without a
    JVM: the driver's sinks get file 0 as micro-batch 0 and files 1 and 2 as micro-batch 1, the
    watch query's operator body (``advance_batches``) sees both of that batch's steps at once. The
    store ends as the local engine's with one file per step."""
    import pyarrow as pa

    from cityvitals.spark.handoff import META
    from cityvitals.spark.watch import OperatorState, WatchSink, advance_batches

    url = schemas(city)
    files = sorted((city / "stream").glob("part-*.ndjson"), key=lambda p: (p.stat().st_mtime, p.name))
    assert len(files) == 3

    def rows(paths) -> pa.Table:
        return pa.table({"path": [f"file:{p}" for p in paths],
                         "modificationTime": [datetime.fromtimestamp(p.stat().st_mtime, timezone.utc) for p in paths],
                         "content": [p.read_bytes() for p in paths]})

    handoff = tmp_path / "handoff"
    ingest = StoreSink(url, "ndjson", query="merged", home=str(city / "home"), handoff=handoff)
    watch = WatchSink(url, query="merged", home=str(city / "home"))
    states: dict[int, OperatorState] = {}
    try:
        for batch_id, paths in enumerate([files[:1], files[1:]]):
            report = ingest.apply(rows(paths), batch_id)
            assert (report.files, report.steps) == (len(paths), len(paths))
            table = pl.read_parquet(handoff / f"batch-{batch_id:012d}.parquet")
            assert sorted(table["batch"].unique().to_list()) == list(range(batch_id, batch_id + len(paths)))
            outs = []
            for (group,), part in table.group_by("group", maintain_order=True):
                st = states.setdefault(group, OperatorState())
                outs.append(advance_batches(group, part, st))
                st.changed.clear()
            reports = watch.commit(pl.concat([o for o in outs if o.height]).to_arrow())
            assert [r.batch_id for r in reports] == list(range(batch_id, batch_id + len(paths)))
        assert ingest.apply(rows(files[1:]), 1).skipped  # a replay of the merged micro-batch: skipped whole
    finally:
        ingest.close()
        watch.close()
    assert set(states) == {META, 0, 1}  # (the batch row's group and both watch groups)
    assert_same(reference, snapshot(city, url))
