"""Ingest validation away from the store: the entry point Spark's executors run.

Why a subclass of ``Ingestor``: the splitting of files and messages into batches
(``ingest_stream``, the line splitter) and the decoding and rules (``validate_sql``) are the
ingest stage's own, and an executor must run exactly those. A ``Checker`` takes every batch
through the same entry points as the store-bound ingestor (``ingest_lines``,
``ingest_table``, ``ingest_numbered``); only its one path (``_run``) differs: it validates on
a private DuckDB connection that holds a copy of the sensor registry (state in: the
registry, broadcast by the Spark job) and keeps the result (state out: ``CheckedPart``)
instead of writing it. Whoever holds the store hands each part to
``Ingestor.write_checked``, which dedupes against the store and writes, as ``_run`` would
have: the same readings and the same quarantine rows under the same locations.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa

from cityvitals.ingest.lines import Reject
from cityvitals.ingest.pipeline import (
    CHECKED_COLUMNS,
    Ingestor,
    IngestReport,
    load_kind_tables,
    load_sensor_table,
)
from cityvitals.ingest.validate import validate_sql
from cityvitals.registry.kinds import load_kinds


@dataclass
class CheckedPart:
    """One validated batch: the rows (``CHECKED_COLUMNS``), the records refused before
    decoding, where records came from when they differ by record (``origins``), and the
    counts the entry point set on its report (records, bytes)."""

    source: str
    location_kind: str
    rows: pa.Table
    rejects: list[Reject]
    origins: dict[int, tuple[str, str]] = field(default_factory=dict)
    report: IngestReport = field(default_factory=IngestReport)


class Checker(Ingestor):
    """An ``Ingestor`` without a store: validates against ``registry`` (``registry_table``)
    as of ``now`` and collects the batches in ``parts``."""

    def __init__(self, registry: pa.Table, *, now: datetime, future_tolerance_s: int = 300, kinds=None,
                 threads: int = 1):
        # Not Ingestor.__init__: that one binds to a store's connection and registry.
        self.store = None
        self.now = now
        self.clock = lambda: self.now
        self.future_tolerance_s = int(future_tolerance_s)
        # the SQL rules alone, whatever the batch size: the compiled fast path writes through a
        # store (``Ingestor._run_lines``), and a checker has none; the two paths give the same
        # fates (tests/test_ingest_fast.py), so the driver stores the same rows either way
        self.private = True
        self.fast_min_lines = sys.maxsize
        self.lock = threading.RLock()
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"SET threads = {int(threads)}")  # an executor task is one core
        load_kind_tables(self.con, kinds or load_kinds())
        load_sensor_table(self.con, registry)
        self.parts: list[CheckedPart] = []

    def _refresh_sensors(self) -> None:
        """The registry came with the checker; a changed registry is a new checker."""

    def take(self) -> list[CheckedPart]:
        parts, self.parts = self.parts, []
        return parts

    def close(self) -> None:
        self.con.close()

    def _run(self, raw: pa.Table, decode_sql: str, raw_sql: str, rejects: list[Reject], *, source: str,
             location_kind: str, replay: bool = False, origins: dict[int, tuple[str, str]] | None = None) -> IngestReport:
        if replay:
            raise ValueError("replaying quarantine needs the store; it runs where the store is")
        cols = ", ".join(f"v.{c}" if c != "raw" else "r.raw" for c in CHECKED_COLUMNS)
        with self.lock:
            con = self.con
            con.register("_batch_raw", raw)
            try:
                con.execute(validate_sql(decode_sql), {"now": self.now, "tolerance": self.future_tolerance_s})
                rows = con.sql(f"SELECT {cols} FROM _val v JOIN ({raw_sql}) r USING (seq) ORDER BY v.seq").to_arrow_table()
            finally:
                con.unregister("_batch_raw")
        report = IngestReport(records=raw.num_rows + len(rejects))
        self.parts.append(CheckedPart(source, location_kind, rows, list(rejects), dict(origins or {}), report))
        return report
