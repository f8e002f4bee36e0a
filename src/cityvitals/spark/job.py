"""The Spark session, the sources (a file directory, Kafka) and the two jobs (stream, batch).

A source directory is read with Spark's ``binaryFile`` source: one row per file, so a
micro-batch hands whole files to ``ingest_stream`` exactly as the local engine reads
them from disk (the same records, the same quarantine locations). Kafka messages are one
JSON reading each; their topic is partitioned by spatial shard (docs/scaling.md).

The stream job is two chained streaming queries: *ingest* (validation on the executors,
store, signs, the handoff file) and *watch* (the detectors in a stateful operator keyed by
sensor kind, the alerts, diagnose and dispose). See ``cityvitals.spark.handoff``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

from cityvitals.errors import InputError
from cityvitals.runtime.files import format_of, suffixes
from cityvitals.spark.handoff import HANDOFF_DDL, Handoff
from cityvitals.spark.sink import BatchReport, Fault, StoreSink
from cityvitals.spark.watch import OUT_DDL, KindGroupWatch, WatchReport, WatchSink


def java_available() -> bool:
    return bool(shutil.which("java") or os.environ.get("JAVA_HOME"))


def session(master: str = "local[2]", *, app: str = "cityvitals", conf: dict | None = None, kafka: bool = False):
    """A SparkSession for the job; small shuffles (only the watch query shuffles, its handoff
    rows by sensor kind), no UI. Executors run this interpreter, so they import the same
    cityvitals as the driver. The state store is RocksDB with changelog checkpointing: the
    watch query's operator (``transformWithStateInPandas``) needs RocksDB, and a changelog
    writes only the keys a batch changed."""
    try:
        import pyspark
        from pyspark.sql import SparkSession
    except ImportError as exc:  # the optional extra
        raise InputError("the Spark engine needs pyspark: pip install 'cityvitals[spark]'") from exc
    if int(pyspark.__version__.split(".")[0]) < 4:
        raise InputError(f"the Spark engine needs pyspark >= 4.0 (the watch's transformWithStateInPandas), "
                         f"not {pyspark.__version__}: pip install 'cityvitals[spark]'")
    if not java_available():
        raise InputError("the Spark engine needs Java 17+ (java on PATH or JAVA_HOME)")
    # PySpark starts executor workers with $PYSPARK_PYTHON (else "python3" on PATH, which may
    # lack cityvitals); a cluster deployment sets it to the interpreter its executors have
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName(app)
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false")
               # the watch query's finished handoff files are deleted in the query's own thread,
               # before its next batch, not by a pool that may lag behind (``watch_stream``)
               .config("spark.sql.streaming.fileSource.cleaner.numThreads", "0")
               .config("spark.sql.streaming.stateStore.providerClass",
                       "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
               .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
               .config("spark.sql.streaming.stopGracefullyOnShutdown", "true"))
    if kafka:
        scala = "2.13"
        builder = builder.config("spark.jars.packages", f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{pyspark.__version__}")
    for k, v in (conf or {}).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def kafka_options(url: str) -> dict[str, str]:
    """Reader options for ``kafka://host:port[,host:port]/topic[?shards=0,3&group=..&max=..]``.

    ``shards`` picks the topic partitions (one per spatial shard) this job reads, so one
    query per group of shards scales out without a shuffle; without it every partition is read.

    >>> kafka_options("kafka://k1:9092,k2:9092/cityvitals.readings?shards=0,1&max=500000")["assign"]
    '{"cityvitals.readings": [0, 1]}'
    """
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc or not parsed.path.strip("/"):
        raise InputError(f"{url!r}: a Kafka source is kafka://host:port[,host:port]/topic")
    topic = parsed.path.strip("/")
    q = parse_qs(parsed.query)
    opts = {"kafka.bootstrap.servers": parsed.netloc, "startingOffsets": q.get("start", ["earliest"])[0],
            "failOnDataLoss": "true", "includeHeaders": "false"}
    if "shards" in q:
        try:
            parts = [int(p) for p in q["shards"][0].split(",") if p.strip()]
        except ValueError as exc:
            raise InputError(f"{url!r}: shards must be partition numbers, e.g. shards=0,1,2") from exc
        import json

        opts["assign"] = json.dumps({topic: parts})
    else:
        opts["subscribe"] = topic
    if "max" in q:
        opts["maxOffsetsPerTrigger"] = str(int(q["max"][0]))
    if "group" in q:
        opts["kafka.group.id"] = q["group"][0]
    return opts


def _stream(spark, source: str, fmt: str | None, files_per_batch: int):
    if source.startswith("kafka://"):
        reader = spark.readStream.format("kafka")
        for k, v in kafka_options(source).items():
            reader = reader.option(k, v)
        return reader.load(), "kafka"
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"{source}: no such directory (a source is a directory of files or kafka://...)")
    kind = format_of(folder, fmt)
    glob = "*{" + ",".join(suffixes(kind)) + "}"
    df = (spark.readStream.format("binaryFile").schema(BINARY_FILE_SCHEMA)
          .option("pathGlobFilter", glob)
          .option("maxFilesPerTrigger", str(int(files_per_batch)))
          .option("maxFileAge", "36500d")  # a replayed archive is old; every file counts
          .load(str(folder.resolve())))
    return df, kind


BINARY_FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"
"""Spark's binaryFile schema: a streaming source must be given it."""


@dataclass
class StreamResult:
    query: str
    batches: list[BatchReport] = field(default_factory=list)
    watch: list[WatchReport] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    query_seconds: dict = field(default_factory=dict)  # wall time of each query (run one after the other)
    trigger_ms: dict = field(default_factory=dict)  # each query's micro-batches as Spark timed them (triggerExecution)
    watch_groups: int = 0

    def to_dict(self) -> dict:
        done = [b for b in self.batches if not b.skipped]
        watched = [w for w in self.watch if not w.skipped]
        last = watched[-1] if watched else None
        return {"query": self.query, "batches": len(self.batches), "skipped": len(self.batches) - len(done),
                "files": sum(b.files for b in done), "records": sum(b.records for b in done),
                "accepted": sum(b.accepted for b in done), "quarantined": sum(b.quarantined for b in done),
                "watch_batches": len(self.watch), "watch_skipped": len(self.watch) - len(watched),
                "watched": sum(w.points for w in watched),
                "watch_series": last.series if last else 0, "watch_state_bytes": last.state_bytes if last else 0,
                "watch_groups": self.watch_groups, "seconds": round(self.seconds, 3),
                **{f"{name}_seconds": round(v, 3) for name, v in self.query_seconds.items()},
                **{f"{name}_trigger_ms": v for name, v in self.trigger_ms.items()},
                "driver_cpu_seconds": round(self.cpu_seconds, 3)}


@dataclass(frozen=True)
class Layout:
    """Where one job keeps its books under ``--checkpoint``: each query's Spark checkpoint and
    the handoff directory between them (published files, and their staging directory)."""

    root: Path

    @property
    def ingest(self) -> str:
        return str(self.root / "ingest")

    @property
    def watch(self) -> str:
        return str(self.root / "watch")

    @property
    def handoff(self) -> str:
        return str(self.root / "handoff")

    def check(self) -> None:
        if (self.root / "offsets").is_dir() or (self.root / "commits").is_dir():
            raise InputError(f"{self.root}: a checkpoint of the one-query Spark job (before the watch moved into Spark "
                             "state); start a new --checkpoint directory with a new --query name (the store knows "
                             "committed micro-batches by query name and batch id)")

    def watch_groups(self, requested: int | None, default: int) -> int:
        """The number of operator groups the sensor kinds are hashed into, fixed when the job
        first runs: the watch state is keyed by group, so another count would put kinds in
        groups whose state never saw them."""
        meta = self.root / "watch.json"
        if meta.exists():
            stored = int(json.loads(meta.read_text())["groups"])
            if requested is not None and requested != stored:
                raise InputError(f"--watch-groups {requested}: this checkpoint's watch state is kept in {stored} groups; "
                                 "keep that number, or start from a new --checkpoint directory")
            return stored
        groups = int(requested or default)
        if groups < 1:
            raise InputError(f"--watch-groups {groups}: must be at least 1")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps({"groups": groups}))
        os.replace(tmp, meta)
        return groups


def stream_job(spark, source: str, store_url: str, checkpoint: str, *, fmt: str | None = None, files_per_batch: int = 1,
               query: str = "cityvitals", available_now: bool = True, trigger_seconds: float = 2.0,
               home: str | None = None, fault: Fault | None = None,
               on_batch: Callable[[BatchReport], None] | None = None,
               on_watch: Callable[[WatchReport], None] | None = None, watch_groups: int | None = None,
               stages: tuple[str, ...] = ("ingest", "watch")) -> StreamResult:
    """Run both streaming queries until the source is drained (``available_now``: the ingest
    query to the end, then the watch query over every handoff) or until interrupted (both run
    at once, the watch a micro-batch or so behind); a failure inside a micro-batch is raised
    here. ``stages`` runs only one of the two (tests restart them apart). ``watch_groups``:
    how many groups of sensor kinds the watch's state is kept in (default: the shuffle
    partitions; fixed by the checkpoint's first run)."""
    layout = Layout(Path(checkpoint))
    layout.check()
    groups = layout.watch_groups(watch_groups, int(spark.conf.get("spark.sql.shuffle.partitions")))
    result = StreamResult(query, watch_groups=groups)
    started, cpu0 = time.perf_counter(), time.process_time()
    ingest_sink = watch_sink = None
    try:
        queries = []  # (stage, writer)
        if "ingest" in stages:
            df, kind = _stream(spark, source, fmt, files_per_batch)
            ingest_sink = StoreSink(store_url, kind, handoff=layout.handoff, watch_groups=groups, query=query,
                                    files_per_batch=files_per_batch,
                                    home=home, fault=fault, on_batch=on_batch)
            writer = (df.writeStream.queryName(query).option("checkpointLocation", layout.ingest)
                      .foreachBatch(ingest_sink))
            queries.append(("ingest", writer))
        if "watch" in stages:
            Handoff(layout.handoff)  # the directory must exist before the file source reads it
            watch_sink = WatchSink(store_url, query=query, home=home, fault=fault, on_batch=on_watch)
            writer = (watch_stream(spark, layout.handoff).writeStream.queryName(f"{query}-watch")
                      .option("checkpointLocation", layout.watch).foreachBatch(watch_sink))
            queries.append(("watch", writer))
        if available_now:
            for stage, writer in queries:  # one after the other: the watch query sees every handoff the ingest made
                t0 = time.perf_counter()
                q = writer.trigger(availableNow=True).start()
                try:
                    q.awaitTermination()
                except KeyboardInterrupt:
                    q.stop()
                    break
                finally:
                    result.query_seconds[stage] = time.perf_counter() - t0
                    result.trigger_ms[stage] = [p.durationMs.get("triggerExecution") for p in q.recentProgress
                                                if p.numInputRows]
        else:
            running = [w.trigger(processingTime=f"{trigger_seconds} seconds").start() for _, w in queries]
            try:
                # until one query ends (stopped, or failed: awaitTermination raises its failure)
                while all(q.isActive for q in running):
                    running[0].awaitTermination(1.0)
            except KeyboardInterrupt:
                pass
            finally:
                for q in running:
                    q.stop()
            for q in running:
                if q.exception() is not None:
                    q.awaitTermination()  # raises the query's failure
    finally:
        result.batches = list(ingest_sink.reports) if ingest_sink else []
        result.watch = list(watch_sink.reports) if watch_sink else []
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu0
        for sink in (ingest_sink, watch_sink):
            if sink is not None:
                sink.close()
    return result


def watch_stream(spark, handoff: str):
    """The watch query's plan: the handoff files, one per micro-batch, through ``KindGroupWatch``
    by group of sensor kinds; the output goes to ``WatchSink``.

    The file source deletes a handoff file once Spark has recorded the batch that read it
    (``cleanSource``; Spark does it when it plans the next batch, so a batch replayed after a
    crash still finds its file, and the newest file stays until more arrive): the directory
    holds what the watch has not finished, not the job's whole history."""
    df = (spark.readStream.schema(HANDOFF_DDL).option("maxFilesPerTrigger", "1")
          .option("maxFileAge", "36500d").option("pathGlobFilter", "batch-*.parquet")
          .option("cleanSource", "delete").parquet(handoff))
    return df.groupBy("group").transformWithStateInPandas(KindGroupWatch(), OUT_DDL, "Append", "None")


def batch_job(spark, folder: str, store_url: str, start: datetime, end: datetime, *, home: str | None = None,
              day: timedelta = timedelta(days=1)) -> dict:
    """Recompute history: read the Parquet archive for [start, end) a day at a time, store
    what is missing (idempotent: stored readings are duplicates), then recompute every
    window of the period with the catalogue as it is now."""
    from pyspark.sql import functions as F

    from cityvitals.ingest import Ingestor, IngestReport
    from cityvitals.signs import compute_signs
    from cityvitals.store import open_store

    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    if end <= start:
        raise InputError("--to must be after --from")
    keep = ["sensor_id", "ts", "value", "unit", "quality"]
    df = spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", "*.parquet").parquet(str(folder))
    df = df.select(*[c for c in keep if c in df.columns])
    first = True
    total = IngestReport()
    started, cpu0 = time.perf_counter(), time.process_time()
    # one pass for the archive's extent, so empty days cost no job; each day is then one
    # filtered read (an archive partitioned by day is pruned to that day's files)
    ext = df.where((F.col("ts") >= F.lit(start)) & (F.col("ts") < F.lit(end))).agg(
        F.unix_micros(F.min("ts")).alias("lo"), F.unix_micros(F.max("ts")).alias("hi")).collect()[0]
    last = start
    t = start
    if ext["lo"] is not None:  # as epoch microseconds: no local-time conversion on the way to Python
        lo = datetime.fromtimestamp(ext["lo"] / 1e6, tz=timezone.utc)
        last = datetime.fromtimestamp(ext["hi"] / 1e6, tz=timezone.utc)
        t = start + ((lo - start) // day) * day
    with open_store(home, url=store_url) as store:
        ingestor = Ingestor(store)
        while t < end and (t <= last or first):
            hi = min(t + day, end)
            in_day = (F.col("ts") >= F.lit(t)) & (F.col("ts") < F.lit(hi))
            # a row without a time belongs to no day: it goes with the first, to be quarantined
            part = df.where(in_day | F.col("ts").isNull() if first else in_day).toArrow()
            first = False
            if part.num_rows:
                total.merge(ingestor.ingest_table(part, source=f"{folder} {t.date().isoformat()}"))
            t = hi
        signs = compute_signs(store, start, end)
    return {"ingest": total.to_dict(), "signs": signs.to_dict(), "seconds": round(time.perf_counter() - started, 3),
            "driver_cpu_seconds": round(time.process_time() - cpu0, 3)}
