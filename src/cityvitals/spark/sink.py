"""The ingest query's foreachBatch sink: one micro-batch validated on the executors, then
stored, taken through signs and handed to the watch query, committed once.

Why a batch id table and one transaction: Spark guarantees a micro-batch is re-run with
the same id and the same data after a failure, not that it runs once. The sink has the
executors validate the batch (``cityvitals.spark.executors``: ``mapInArrow`` with the
registry broadcast), then opens one PostgreSQL transaction, returns at once if
``stream_batches`` already holds the id (the batch committed before the crash), else
stores the validated parts, runs signs, stages the batch's handoff file for the watch query
(``cityvitals.spark.handoff``: what the store accepted, the window table, the event clock),
records the id, and commits; the handoff file is published after the commit. The stages'
own transactions nest inside it as savepoints.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa

from cityvitals.ingest import Ingestor, IngestReport
from cityvitals.ingest.checked import Checker
from cityvitals.ingest.pipeline import registry_table
from cityvitals.runtime.stages import Downstream
from cityvitals.spark.executors import CHECKED_SCHEMA, check_rows, columns, decode, on_executors
from cityvitals.spark.handoff import Handoff, batch_table, config_slices

HANDOFF_STATE = "spark:{query}"
"""The ``watch_state`` row holding how far the ingest query has handed readings to the watch
query (its ``ingested_at`` mark; no blob: the detectors' state is in Spark's checkpoint)."""

log = logging.getLogger("cityvitals.spark")

Fault = Callable[[int, str], None]
"""Called with (batch id, point) at ``"staged"`` (the handoff file written, the store not
committed), ``"before_commit"``, ``"after_commit"`` (committed, the handoff not published) and,
in the watch query, ``"watch_before_commit"`` and ``"watch_after_commit"``: how the restart
tests make the job die where a crash hurts most."""


@dataclass
class BatchReport:
    batch_id: int
    skipped: bool = False
    files: int = 0
    records: int = 0
    accepted: int = 0
    quarantined: int = 0
    stages: dict = field(default_factory=dict)
    seconds: float = 0.0
    handed: int = 0  # readings handed to the watch query
    steps: int = 0  # steps handed to the watch (one, or more after a restart: ``StoreSink._steps``)


class StoreSink:
    """``foreachBatch`` target. ``kind``: ``ndjson`` / ``parquet`` (file rows: path,
    modificationTime, content) or ``kafka`` (rows: topic, partition, offset, value).

    The store is opened lazily in the driver process on the first batch and kept for the
    query's life, and so is the registry's broadcast, renewed when the registry changes.
    ``handoff``: the directory the watch query reads (``cityvitals.spark.handoff``);
    ``watch_groups``: how many operator groups the sensor kinds are hashed into there;
    ``files_per_batch``: the files of one step (``_steps``), as the query asks of its source.
    """

    def __init__(self, store_url: str, kind: str, *, handoff: str | Path, watch_groups: int = 2,
                 query: str = "cityvitals", home: str | None = None, fault: Fault | None = None,
                 on_batch: Callable[[BatchReport], None] | None = None, files_per_batch: int = 1):
        self.store_url = store_url
        self.kind = kind
        self.files_per_batch = max(1, int(files_per_batch))
        self.query = query
        self.home = home
        self.fault = fault
        self.on_batch = on_batch
        self.handoff = Handoff(handoff)
        self.watch_groups = int(watch_groups)
        self.store = None
        self.reports: list[BatchReport] = []
        self._now = datetime.now(timezone.utc)
        self._registry: tuple[int, pa.Table] | None = None
        self._broadcast = None
        self._config_sent: int | None = None  # the registry version whose watch configuration was handed over

    def _open(self):
        if self.store is None:
            from cityvitals.store import open_store

            store = open_store(self.home, url=self.store_url)
            if not hasattr(store, "pg"):
                store.close()
                raise ValueError("the Spark job writes to a PostgreSQL store (--store postgresql://...): "
                                 "its exactly-once commit needs the stream_batches table in the same transaction")
            self.store = store
            # validation ran on the executors as of the micro-batch's start; the write uses the same instant
            self.ingestor = Ingestor(store, clock=lambda: self._now)
            self.downstream = Downstream(store)
        return self.store

    def close(self) -> None:
        if self._broadcast is not None:
            self._broadcast.unpersist()
            self._broadcast = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def registry(self) -> pa.Table:
        """The registry copy validation needs, re-read only when the store's version moved."""
        store = self._open()
        version = int(store.sensors.version)
        if self._registry is None or self._registry[0] != version:
            self._registry = (version, registry_table(store))
            if self._broadcast is not None:
                self._broadcast.unpersist()
                self._broadcast = None
        return self._registry[1]

    def __call__(self, df, batch_id: int) -> None:
        """Spark's entry point: the executors validate their rows; the driver gets the result as Arrow."""
        self._now = datetime.now(timezone.utc)
        registry = self.registry()
        if self._broadcast is None:
            sink = io.BytesIO()
            with pa.ipc.new_stream(sink, registry.schema) as w:
                w.write_table(registry)
            self._broadcast = df.sparkSession.sparkContext.broadcast(sink.getvalue())
            self._broadcast_key = uuid.uuid4().hex
        fn = on_executors(self.kind, self._broadcast, self._broadcast_key, self._now, self.ingestor.future_tolerance_s)
        self.commit(df.select(*columns(self.kind)).mapInArrow(fn, CHECKED_SCHEMA).toArrow(), int(batch_id))

    def apply(self, rows: pa.Table, batch_id: int) -> BatchReport:
        """A micro-batch's source rows already in the driver: validated here with the same
        code the executors run, then committed."""
        self._now = datetime.now(timezone.utc)
        checker = Checker(self.registry(), now=self._now, future_tolerance_s=self.ingestor.future_tolerance_s)
        try:
            checked = check_rows(rows, self.kind, checker)
        finally:
            checker.close()
        return self.commit(checked, batch_id)

    def commit(self, checked: pa.Table, batch_id: int) -> BatchReport:
        """Store the validated micro-batch, run signs and hand the batch to the watch, once per batch id."""
        started = time.perf_counter()
        store = self._open()
        report = BatchReport(batch_id)
        sent = None
        with store.transaction():
            done = store.pg.execute("SELECT 1 FROM stream_batches WHERE query = %s AND batch_id = %s",
                                    [self.query, batch_id]).fetchall()
            if done:
                report.skipped = True
                log.info("micro-batch %s of %s was committed before a restart; skipped", batch_id, self.query)
            else:
                parts = decode(checked)
                report.files = 0 if self.kind == "kafka" else len({key for key, _ in parts})
                first = self._next_step(store)
                tables = []
                for k, group in enumerate(self._steps(parts)):
                    ing = IngestReport()
                    for _, part in group:
                        ing.merge(self.ingestor.write_checked(part.rows, part.rejects, source=part.source,
                                                              location_kind=part.location_kind, origins=part.origins,
                                                              nbytes=part.report.bytes))
                    report.accepted += ing.accepted
                    report.quarantined += ing.quarantined_total
                    report.records += ing.records
                    # the local runner runs the stages after ingest when a batch stored or refused anything
                    ran = bool(ing.accepted or ing.quarantined_total)
                    clock = None
                    if ran:
                        report.stages = self.downstream.signs()
                        clock = self.downstream.batch_clock()()
                    table, step_sent, handed = self._handoff(store, first + k, clock, ran, sent)
                    sent = step_sent if step_sent is not None else sent
                    report.handed += handed
                    tables.append(table)
                store.pg.execute("INSERT INTO store_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE "
                                 "SET value = EXCLUDED.value", [self._step_key, first + len(tables)])
                report.steps = len(tables)
                self.handoff.stage(batch_id, pa.concat_tables(tables))
                if self.fault:
                    self.fault(batch_id, "staged")
                store.pg.execute(
                    "INSERT INTO stream_batches (query, batch_id, files, records, accepted, quarantined, committed_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [self.query, batch_id, report.files, report.records, report.accepted, report.quarantined,
                     datetime.now(timezone.utc)],
                )
                if self.fault:
                    self.fault(batch_id, "before_commit")
        if self.fault and not report.skipped:
            self.fault(batch_id, "after_commit")
        # committed (now, or by the run that crashed before publishing): the watch query may read it
        if self.handoff.publish(batch_id) and sent is not None:
            self._config_sent = sent
        report.seconds = time.perf_counter() - started
        self.reports.append(report)
        if self.on_batch:
            self.on_batch(report)
        return report

    @property
    def _step_key(self) -> str:
        return f"spark_step:{self.query}"

    def _next_step(self, store) -> int:
        """The number of the next step handed to the watch (``_steps``): one per micro-batch
        until a restart merges files, then ahead of Spark's batch ids; kept in ``store_meta``
        and moved in the batch's transaction."""
        row = store.pg.execute("SELECT value FROM store_meta WHERE key = %s", [self._step_key]).fetchall()
        if row:
            return int(row[0][0])
        last = store.pg.execute("SELECT max(batch_id) FROM stream_batches WHERE query = %s", [self.query]).fetchall()
        return 0 if last[0][0] is None else int(last[0][0]) + 1

    def _steps(self, parts: list) -> list[list]:
        """A micro-batch's parts as the local engine's steps: ``files_per_batch`` files each.

        Why: Spark's file source can give a restarted query more files than
        ``maxFilesPerTrigger`` in one micro-batch (when the job died after the source had
        logged its next file but before the query logged the micro-batch; seen after a
        SIGKILL). The signs, the health snapshot and the watch depend on where batches end,
        so the files are taken in the steps an uninterrupted run would have taken, each with
        its own handoff step. Kafka has no such steps: its micro-batch is one."""
        if self.kind == "kafka" or not parts:
            return [parts]
        keys: list = []
        for key, _ in parts:
            if not keys or keys[-1] != key:
                keys.append(key)
        step_of = {key: i // self.files_per_batch for i, key in enumerate(keys)}
        steps: list[list] = [[] for _ in range(max(step_of.values()) + 1)]
        for key, part in parts:
            steps[step_of[key]].append((key, part))
        return steps

    def _handoff(self, store, step: int, clock: datetime | None, ran: bool,
                 sent: int | None = None) -> tuple[pa.Table, int | None, int]:
        """The step's handoff rows: the readings the watch has not taken yet (read as the local
        runner's watch reads them, and the mark moved past them), the window table and clock, and
        the watch configuration when the registry moved since it was last handed over (or, for a
        later step of the same micro-batch, since ``sent``)."""
        import polars as pl

        from cityvitals.watch.runner import watch_config

        registry = self.registry()
        version = self._registry[0]
        # every kind's slice, and kind "" (readings of a sensor no longer registered: configured as no kind)
        kinds = sorted({k for k in registry.column("kind").to_pylist() if k is not None} | {""})
        readings = pl.DataFrame(schema={"sensor_id": pl.Utf8, "t": pl.Int64, "value": pl.Float64, "kind": pl.Utf8})
        if ran:
            name = HANDOFF_STATE.format(query=self.query)
            mark, _ = store.alerts.get_watch_state(name)
            new = pl.from_arrow(store.readings.since(mark))
            if new.height:
                kind_of = pl.from_arrow(registry.select(["id", "kind"])).rename({"id": "sensor_id"})
                # a sensor no longer in the registry: kind "" (the local runner configures it as such)
                readings = (new.with_row_index("_seq").join(kind_of, on="sensor_id", how="left").sort("_seq")
                            .select("sensor_id", "t", "value", pl.col("kind").fill_null("")))
                with store.transaction() as con:
                    store.alerts.put_watch_state(con, name, new["ingested_at"].max(), None, datetime.now(timezone.utc))
        configs: dict[str, bytes] = {}
        if self._config_sent != version and sent != version:
            configs = config_slices(watch_config(store), kinds)
        table = batch_table(step, clock, ran, readings, configs, self.watch_groups)
        return table, (version if configs else None), readings.height
