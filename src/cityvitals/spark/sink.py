"""The foreachBatch sink: one micro-batch through the shared stage cores, committed once.

Why a batch id table and one transaction: Spark guarantees a micro-batch is re-run with
the same id and the same data after a failure, not that it runs once. The sink opens one
PostgreSQL transaction, returns at once if ``stream_batches`` already holds the id (the
batch committed before the crash), else ingests, runs the stages and records the id,
and commits. The stages' own transactions nest inside it as savepoints.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlparse

import pyarrow as pa

from cityvitals.ingest import Ingestor, IngestReport
from cityvitals.ingest.files import ingest_stream
from cityvitals.ingest.lines import iter_line_batches
from cityvitals.runtime.stages import Downstream

log = logging.getLogger("cityvitals.spark")

Fault = Callable[[int, str], None]
"""Called with (batch id, point) at ``"before_commit"`` and ``"after_commit"``: how the
restart tests make the job die where a crash hurts most."""


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


def local_path(uri: str) -> str:
    """Spark names files by URI (``file:/tmp/a.ndjson``); the store names them by path, as
    ``cityvitals ingest`` and the local engine do."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri


class StoreSink:
    """``foreachBatch`` target. ``kind``: ``ndjson`` / ``parquet`` (file rows: path,
    modificationTime, content) or ``kafka`` (rows: topic, partition, offset, value).

    The store is opened lazily in the driver process on the first batch and kept for the
    query's life (the watch and diagnose caches live in ``Downstream``).
    """

    def __init__(self, store_url: str, kind: str, *, query: str = "cityvitals", home: str | None = None,
                 fault: Fault | None = None, on_batch: Callable[[BatchReport], None] | None = None):
        self.store_url = store_url
        self.kind = kind
        self.query = query
        self.home = home
        self.fault = fault
        self.on_batch = on_batch
        self.store = None
        self.reports: list[BatchReport] = []

    def _open(self):
        if self.store is None:
            from cityvitals.store import open_store

            store = open_store(self.home, url=self.store_url)
            if not hasattr(store, "pg"):
                store.close()
                raise ValueError("the Spark job writes to a PostgreSQL store (--store postgresql://...): "
                                 "its exactly-once commit needs the stream_batches table in the same transaction")
            self.store = store
            self.ingestor = Ingestor(store)
            self.downstream = Downstream(store)
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def __call__(self, df, batch_id: int) -> None:
        """Spark's entry point: the micro-batch comes to the driver as Arrow."""
        cols = ["topic", "partition", "offset", "value"] if self.kind == "kafka" else ["path", "modificationTime", "content"]
        self.apply(df.select(*cols).toArrow(), int(batch_id))

    def apply(self, rows: pa.Table, batch_id: int) -> BatchReport:
        started = time.perf_counter()
        store = self._open()
        report = BatchReport(batch_id)
        with store.transaction():
            done = store.pg.execute("SELECT 1 FROM stream_batches WHERE query = %s AND batch_id = %s",
                                    [self.query, batch_id]).fetchall()
            if done:
                report.skipped = True
                log.info("micro-batch %s of %s was committed before a restart; skipped", batch_id, self.query)
            else:
                ing = self._ingest(rows, report)
                report.accepted, report.quarantined, report.records = ing.accepted, ing.quarantined_total, ing.records
                if ing.accepted or ing.quarantined_total:
                    report.stages = self.downstream.run(None)
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
        report.seconds = time.perf_counter() - started
        self.reports.append(report)
        if self.on_batch:
            self.on_batch(report)
        return report

    def _ingest(self, rows: pa.Table, report: BatchReport) -> IngestReport:
        total = IngestReport()
        if self.kind == "kafka":
            for part in _kafka_parts(rows):
                total.merge(self._ingest_kafka(*part))
            return total
        # the order the local engine takes files in: oldest first, then by name
        order = sorted(range(rows.num_rows), key=lambda i: (_ms(rows["modificationTime"][i].as_py()),
                                                              Path(local_path(rows["path"][i].as_py())).name))
        for i in order:
            path = local_path(rows["path"][i].as_py())
            content = rows["content"][i].as_py()
            total.merge(ingest_stream(self.store, io.BytesIO(content), path, self.kind, ingestor=self.ingestor))
            report.files += 1
        return total

    def _ingest_kafka(self, topic: str, partition: int, offsets: list[int], values: list[bytes]) -> IngestReport:
        """One topic partition's messages in offset order; quarantine rows name the offset."""
        source = f"kafka:{topic}/{partition}"
        total = IngestReport()
        body = b"\n".join(v.replace(b"\n", b" ") for v in values)
        for batch in iter_line_batches(io.BytesIO(body)):
            origins = {int(n): (source, f"offset {offsets[int(n) - 1]}") for n in batch.line_numbers}
            origins.update({r.line: (source, f"offset {offsets[r.line - 1]}") for r in batch.rejects})
            total.merge(self.ingestor.ingest_lines(batch, source=source, location_kind="message", origins=origins))
        return total


def _kafka_parts(rows: pa.Table):
    by: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    for topic, part, off, value in zip(*(rows[c].to_pylist() for c in ("topic", "partition", "offset", "value"))):
        by.setdefault((topic, int(part)), []).append((int(off), value or b""))
    for (topic, part), msgs in sorted(by.items()):
        msgs.sort()
        yield topic, part, [o for o, _ in msgs], [v for _, v in msgs]


def _ms(ts) -> int:
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return int(ts.timestamp() * 1000)
    return int(ts)
