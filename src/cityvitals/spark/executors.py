"""Ingest validation and locate on Spark's executors (``mapInArrow``), with the registry broadcast.

Why here and not in the sink: validating a micro-batch (parsing every record, the rules,
the unit conversion, the sensor → kind/unit/unit-code lookup) is per record and needs only
the registry, so it spreads over executor cores; deduplication against stored readings and
the write need the store, so they stay in the driver's transaction. Each executor task
takes its files (or Kafka messages) through ``ingest_stream`` with a ``Checker`` (the ingest
stage's own splitting and rules, see ``cityvitals.ingest.checked``) and returns the
validated batches as one flat Arrow table (``CHECKED_SCHEMA``); the driver decodes it back
into parts (``decode``) in the order the local engine takes files, and stores each with
``Ingestor.write_checked``.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from cityvitals.ingest.checked import CheckedPart, Checker
from cityvitals.ingest.files import ingest_stream
from cityvitals.ingest.lines import Reject, iter_line_batches
from cityvitals.ingest.pipeline import CHECKED_COLUMNS, IngestReport

HEADER, RECORD, REJECT = 0, 1, 2
"""Row types of the flat table: a part's header (its source, location kind, bytes), a
validated record, a record refused before decoding."""

TS = pa.timestamp("us", tz="UTC")
CHECKED_ARROW = pa.schema([
    ("o1", pa.int64()), ("o2", pa.string()), ("o3", pa.int64()), ("part", pa.int64()), ("row_type", pa.int8()),
    ("source", pa.string()), ("location", pa.string()), ("nbytes", pa.int64()),
    ("seq", pa.int64()), ("raw", pa.string()), ("sensor_id", pa.string()), ("ts", TS), ("value", pa.float64()),
    ("quality", pa.string()), ("kind", pa.string()), ("unit_code", pa.string()), ("reason", pa.string()),
    ("message", pa.string()), ("truncated", pa.bool_()),
])
"""(o1, o2, o3, part) orders the parts as the local engine takes them: a file by (modification
ms, name), Kafka messages by (partition, topic, first offset); ``part`` numbers the batches of one."""

CHECKED_SCHEMA = ("o1 BIGINT, o2 STRING, o3 BIGINT, part BIGINT, row_type TINYINT, source STRING, location STRING, "
                  "nbytes BIGINT, seq BIGINT, raw STRING, sensor_id STRING, ts TIMESTAMP, value DOUBLE, "
                  "quality STRING, kind STRING, unit_code STRING, reason STRING, message STRING, truncated BOOLEAN")
"""``CHECKED_ARROW`` as Spark's DDL: the declared output of the ``mapInArrow`` stage."""

_EMPTY = pa.table({c: pa.array([], CHECKED_ARROW.field(c).type) for c in CHECKED_COLUMNS})

FILE_COLUMNS = ("path", "modificationTime", "content")
KAFKA_COLUMNS = ("topic", "partition", "offset", "value")


def columns(kind: str) -> tuple[str, ...]:
    return KAFKA_COLUMNS if kind == "kafka" else FILE_COLUMNS


def check_rows(rows: pa.Table, kind: str, checker: Checker) -> pa.Table:
    """Validate source rows (files: path, modificationTime, content; Kafka: topic, partition,
    offset, value) into the flat table. Runs on an executor, or in the driver for a table
    that is already there (``StoreSink.apply``)."""
    keyed: list[tuple[tuple, list[CheckedPart]]] = []
    if kind == "kafka":
        for topic, partition, offsets, values in kafka_partitions(rows):
            kafka_lines(checker, topic, partition, offsets, values)
            # (partition, topic, first offset): a topic partition split over several tasks
            # (the Kafka source's minPartitions) stays in offset order, its pieces apart
            keyed.append(((partition, topic, offsets[0] if offsets else 0), checker.take()))
    else:
        for path, mtime, content in zip(*(rows[c].to_pylist() for c in FILE_COLUMNS)):
            path = local_path(path)
            ingest_stream(None, io.BytesIO(content or b""), path, kind, ingestor=checker)
            # an empty file still counts as taken: it gets one empty part
            parts = checker.take() or [CheckedPart(path, "line", _EMPTY, [])]
            keyed.append(((_ms(mtime), Path(path).name, 0), parts))
    return encode(keyed)


def kafka_lines(ingestor, topic: str, partition: int, offsets: list[int], values: list[bytes]) -> None:
    """One topic partition's messages in offset order, as JSON lines; quarantine rows name the offset."""
    source = f"kafka:{topic}/{partition}"
    body = b"\n".join(v.replace(b"\n", b" ") for v in values)
    for batch in iter_line_batches(io.BytesIO(body)):
        origins = {int(n): (source, f"offset {offsets[int(n) - 1]}") for n in batch.line_numbers}
        origins.update({r.line: (source, f"offset {offsets[r.line - 1]}") for r in batch.rejects})
        ingestor.ingest_lines(batch, source=source, location_kind="message", origins=origins)


def kafka_partitions(rows: pa.Table):
    by: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
    for topic, part, off, value in zip(*(rows[c].to_pylist() for c in KAFKA_COLUMNS)):
        by.setdefault((topic, int(part)), []).append((int(off), value or b""))
    for (topic, part), msgs in sorted(by.items()):
        msgs.sort()
        yield topic, part, [o for o, _ in msgs], [v for _, v in msgs]


def encode(keyed: list[tuple[tuple, list[CheckedPart]]]) -> pa.Table:
    """Parts as one flat table: per part a header row, its records, its rejects (columnar:
    the records' columns are taken over whole, not row by row)."""
    tables = []
    for (o1, o2, o3), parts in keyed:
        for i, p in enumerate(parts):
            rows = p.rows.combine_chunks()
            n, m = rows.num_rows, len(p.rejects)
            org = [p.origins.get(s) for s in rows.column("seq").to_pylist()] if p.origins else None
            rej_org = [p.origins.get(r.line) for r in p.rejects]
            head = {"row_type": [HEADER], "source": [p.source], "location": [p.location_kind], "nbytes": [p.report.bytes]}
            rec = {c: rows.column(c) for c in CHECKED_COLUMNS}
            rec.update({"row_type": pa.nulls(n, pa.int8()).fill_null(RECORD),
                        "source": [o and o[0] for o in org] if org else pa.nulls(n, pa.string()),
                        "location": [o and o[1] for o in org] if org else pa.nulls(n, pa.string())})
            rej = {"row_type": [REJECT] * m, "source": [o and o[0] for o in rej_org],
                   "location": [o and o[1] for o in rej_org], "seq": [r.line for r in p.rejects],
                   "raw": [r.raw for r in p.rejects], "reason": [r.reason for r in p.rejects],
                   "message": [r.message for r in p.rejects], "truncated": [bool(r.truncated) for r in p.rejects]}
            for cols, size in ((head, 1), (rec, n), (rej, m)):
                if size == 0 and cols is not head:
                    continue
                cols.update({"o1": [o1] * size, "o2": [o2] * size, "o3": [o3] * size, "part": [i] * size})
                tables.append(_table(cols, size))
    return pa.concat_tables(tables) if tables else CHECKED_ARROW.empty_table()


def _table(cols: dict, size: int) -> pa.Table:
    out = []
    for f in CHECKED_ARROW:
        v = cols.get(f.name)
        if v is None:
            out.append(pa.nulls(size, f.type))
        elif isinstance(v, list):
            out.append(pa.array(v, f.type))
        else:
            out.append(v.cast(f.type))
    return pa.Table.from_arrays(out, schema=CHECKED_ARROW)


def decode(table: pa.Table) -> list[tuple[tuple, CheckedPart]]:
    """The parts of a flat table with their source's key (o1, o2, o3), in the local engine's
    order (oldest file first, then by name; Kafka by partition, topic and offset), each batch
    of a file in its order."""
    if table.num_rows == 0:
        return []
    table = table.sort_by([("o1", "ascending"), ("o2", "ascending"), ("o3", "ascending"), ("part", "ascending"),
                           ("row_type", "ascending"), ("seq", "ascending")])
    kinds = table.column("row_type").to_numpy()
    starts = np.flatnonzero(kinds == HEADER)  # sorted: every part begins with its header row
    ends = np.r_[starts[1:], len(kinds)]
    heads = table.take(pa.array(starts)).to_pylist()
    out: list[tuple[tuple, CheckedPart]] = []
    for start, end, head in zip(starts, ends, heads):
        n = int(np.count_nonzero(kinds[start:end] == RECORD))
        rec = table.slice(start + 1, n)
        rej = table.slice(start + 1 + n, end - start - 1 - n).to_pylist()
        origins: dict[int, tuple[str, str]] = {}
        if rec.column("source").null_count < n:
            origins = {s: (src, loc) for s, src, loc in zip(*(rec[c].to_pylist() for c in ("seq", "source", "location")))
                       if src is not None}
        origins.update({r["seq"]: (r["source"], r["location"]) for r in rej if r["source"] is not None})
        report = IngestReport(records=n + len(rej))
        report.bytes = head["nbytes"] or 0
        out.append(((head["o1"], head["o2"], head["o3"]), CheckedPart(
            head["source"], head["location"], rec.select(list(CHECKED_COLUMNS)),
            [Reject(r["seq"], r["reason"], r["message"], r["raw"], bool(r["truncated"])) for r in rej],
            origins, report)))
    return out


def local_path(uri: str) -> str:
    """Spark names files by URI (``file:/tmp/a.ndjson``); the store names them by path, as
    ``cityvitals ingest`` and the local engine do."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("file", "") else uri


def _ms(ts) -> int:
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return int(ts.timestamp() * 1000)
    return int(ts)


_CHECKERS: dict[str, Checker] = {}
"""One checker per Python worker and registry broadcast: a worker is reused across tasks
(``spark.python.worker.reuse``), so the registry is loaded into DuckDB once, not per task."""


def on_executors(kind: str, registry, key: str, now: datetime, tolerance_s: int):
    """The ``mapInArrow`` function: ``registry`` is a broadcast of ``registry_table`` as Arrow
    IPC, ``key`` names that broadcast (a new one for every registry copy the driver sends)."""

    def check(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = pa.Table.from_batches(list(batches))
        if rows.num_rows == 0:
            return
        checker = _CHECKERS.get(key)
        if checker is None:
            for old in _CHECKERS.values():
                old.close()
            _CHECKERS.clear()
            checker = _CHECKERS[key] = Checker(pa.ipc.open_stream(registry.value).read_all(), now=now,
                                                        future_tolerance_s=tolerance_s)
        checker.now = now
        yield from check_rows(rows, kind, checker).to_batches()

    return check
