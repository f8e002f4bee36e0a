"""The pipeline on Spark Structured Streaming: the same results as the local runner, exactly once.

One seeded simulator scenario (300 sensors, 3 hours, a water main burst that raises
alerts) is written as three NDJSON files. The local engine and Spark ``local[2]`` each
take them, one file per batch, into a fresh PostgreSQL schema; the stores must end equal:
readings, quarantine, indicator values and levels, health index and its explanation,
alerts and their events, the detectors' state. The restart test crashes the Spark job
at the two points that matter (before and after the store commit of a micro-batch) and
restarts it from its checkpoint; the store must end as after the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
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

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

SNAPSHOT = {
    "readings": "SELECT sensor_id, ts, value, quality, kind, unit_code FROM readings ORDER BY sensor_id, ts",
    "quarantine": "SELECT source, location, reason, message, raw FROM quarantine ORDER BY source, location, reason",
    "sign_values": "SELECT indicator, unit_code, window_start, window_end, value, level, schmitt, n, direct "
                   "FROM sign_values ORDER BY indicator, unit_code, window_start, direct",
    "sign_health": "SELECT unit_code, as_of, scope, value FROM sign_health ORDER BY unit_code, as_of, scope",
    "sign_health_explain": "SELECT unit_code, as_of, scope, indicator, category, level, value, weight, points "
                           "FROM sign_health_explain ORDER BY unit_code, as_of, scope, indicator",
    "sign_watermark": "SELECT value FROM sign_state WHERE key = 'watermark_us'",
    "alerts": "SELECT id, source, type, level, state, message, first_at, last_at, occurrences, clear_since, escalation, "
              "escalated_at, flapping, reopened, resolved_at FROM alerts ORDER BY source, type, first_at",
    "alert_events": "SELECT a.source, a.type, e.ts, e.event, e.level, e.note FROM alert_events e "
                    "JOIN alerts a ON a.id = e.alert_id ORDER BY a.source, a.type, e.ts, e.event, e.level",
    "incidents": "SELECT id, type, state, title, severity, level, confidence, top_cause, start_at, end_at, opened_at, "
                 "updated_at, closed_at, merged_into, units, population, n_alerts, n_reports FROM incidents ORDER BY id",
    "incident_members": "SELECT incident_id, ref, origin, source, type FROM incident_members "
                        "ORDER BY incident_id, ref, origin",
    "incident_causes": "SELECT incident_id, rank, cause, kind, name, score, evidence FROM incident_causes "
                       "ORDER BY incident_id, rank",
    "incident_history": "SELECT incident_id, ts, event, note FROM incident_history ORDER BY incident_id, ts, event, note",
    "cases": "SELECT id, ref, channel, description, unit_code, state, category, priority, source, reported_at, "
             "updated_at, filed_at, department, crew, dispatched_at, due_at, escalation FROM cases ORDER BY id",
    "case_events": "SELECT case_id, seq, ts, action, actor, from_state, to_state, data FROM case_events "
                   "ORDER BY case_id, seq",
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
        return {name: store.frame(sql) for name, sql in SNAPSHOT.items()}


def assert_same(a: dict[str, pl.DataFrame], b: dict[str, pl.DataFrame]) -> None:
    for name in SNAPSHOT:
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
def reference(city, schemas):
    """The local engine's store after the whole scenario."""
    url = schemas(city)
    local_run(city, url, city / "stream")
    return snapshot(city, url)


@pytest.fixture(scope="module")
def uninterrupted(city, schemas, spark, tmp_path_factory):
    url = schemas(city)
    result = stream_job(spark, str(city / "stream"), url, str(tmp_path_factory.mktemp("ckpt")), query="parity",
                        home=str(city / "home"))
    return url, result, snapshot(city, url)


def test_parity_with_the_local_runner(reference, uninterrupted):
    _, result, got = uninterrupted
    summary = result.to_dict()
    assert summary["batches"] == 3 and summary["files"] == 3 and summary["skipped"] == 0
    assert reference["readings"].height > 50_000
    assert reference["quarantine"].height > 50  # the simulator's bad records
    assert reference["sign_values"]["level"].max() > 0 and reference["sign_health"].height > 0
    assert reference["alerts"].height > 0  # the burst raises alerts
    print({k: v.height for k, v in reference.items()})
    assert_same(reference, got)


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



def test_a_registry_change_reaches_the_executors(city, schemas, spark, tmp_path):
    """Validation runs on the executors against the broadcast registry: a sensor registered
    after micro-batch 0 is unknown there and known in micro-batch 1 (the broadcast is renewed)."""
    url = schemas(city)
    lines = (city / "stream" / "part-00000.ndjson").read_bytes().splitlines()[:1200]
    known = json.loads(lines[0])["sensor_id"]
    src = tmp_path / "src"
    src.mkdir()
    for i, part in enumerate((lines[:600], lines[600:])):
        new = [ln.replace(known.encode(), b"NEW-1") for ln in part if json.loads(ln)["sensor_id"] == known]
        assert new
        (src / f"part-{i}.ndjson").write_bytes(b"\n".join(part + new) + b"\n")
        os.utime(src / f"part-{i}.ndjson", (1_700_000_000 + 60 * i,) * 2)

    def register(report) -> None:
        if report.batch_id == 0:
            with open_store(city / "home", url=url) as store:
                row = store.sensors.frame().filter(pl.col("id") == known).with_columns(pl.lit("NEW-1").alias("id"))
                store.sensors.upsert(row)

    result = stream_job(spark, str(src), url, str(tmp_path / "ckpt"), query="registry", home=str(city / "home"),
                        on_batch=register)
    assert [b.batch_id for b in result.batches] == [0, 1]
    with open_store(city / "home", url=url) as store:
        refused = store.frame("SELECT source, reason FROM quarantine WHERE raw LIKE '%NEW-1%'")
        stored = store.frame("SELECT count(*) AS n FROM readings WHERE sensor_id = 'NEW-1'")["n"][0]
    assert set(refused["reason"]) == {"unknown_sensor"} and set(refused["source"]) == {str(src / "part-0.ndjson")}
    assert stored == sum(1 for ln in lines[600:] if json.loads(ln)["sensor_id"] == known) > 0

class Crash(RuntimeError):
    pass


def test_restart_from_the_checkpoint_neither_loses_nor_duplicates(city, schemas, spark, uninterrupted, tmp_path):
    url = schemas(city)
    ckpt = str(tmp_path / "ckpt")
    run = {"query": "restart", "home": str(city / "home")}

    def crash_at(batch: int, point: str):
        def fault(batch_id: int, at: str) -> None:
            if batch_id == batch and at == point:
                raise Crash(f"injected crash at batch {batch_id} {at}")
        return fault

    # 1) dies after batch 0 is committed to the store, before Spark records it as done
    with pytest.raises(Exception, match="injected crash"):
        stream_job(spark, str(city / "stream"), url, ckpt, fault=crash_at(0, "after_commit"), **run)
    # 2) Spark replays batch 0 (found in stream_batches: skipped), then dies inside batch 1's transaction
    with pytest.raises(Exception, match="injected crash"):
        stream_job(spark, str(city / "stream"), url, ckpt, fault=crash_at(1, "before_commit"), **run)
    # 3) replays batch 1 (rolled back: applied now) and finishes
    last = stream_job(spark, str(city / "stream"), url, ckpt, **run)
    assert [b.batch_id for b in last.batches] == [1, 2] and not any(b.skipped for b in last.batches)
    with open_store(city / "home", url=url) as store:
        done = store.frame("SELECT batch_id, files FROM stream_batches WHERE query = 'restart' ORDER BY batch_id")
    assert done["batch_id"].to_list() == [0, 1, 2] and done["files"].to_list() == [1, 1, 1]
    assert_same(uninterrupted[2], snapshot(city, url))


def test_kafka_reader_options_and_messages_through_the_sink(city, schemas):
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
    sink = StoreSink(url, "kafka", query="kafka", home=str(city / "home"))
    try:
        first = sink.apply(rows, 0)
        again = sink.apply(rows, 0)  # a replayed micro-batch
    finally:
        sink.close()
    assert first.records == len(lines) + 1 and first.accepted > 400 and again.skipped
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
