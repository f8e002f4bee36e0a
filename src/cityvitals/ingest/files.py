"""The file source: NDJSON, CSV and Parquet readings into the ingest stage.

Each format turns its bytes into batches of the same decoded shape and hands them to
the ``Ingestor``; whatever a file throws at us (garbage, truncation, a wrong
encoding, a huge line, an unreadable row group) becomes quarantine, never a crash and
never a lost neighbour.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from cityvitals.errors import InputError
from cityvitals.ingest.lines import CHUNK_BYTES, MAX_RECORD_BYTES, LineBatch, Reject, iter_line_batches
from cityvitals.ingest.pipeline import Ingestor, IngestReport

FORMATS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
READING_COLUMNS = ("sensor_id", "ts", "value", "unit", "quality")

Progress = Callable[[int], None]


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        fmt = fmt.lower()
        if fmt not in {"ndjson", "csv", "parquet"}:
            raise InputError(f"--format {fmt!r} is not one of ndjson, csv, parquet")
        return fmt
    found = FORMATS.get(path.suffix.lower())
    if not found:
        raise InputError(f"{path}: cannot tell the format from the extension {path.suffix!r}; pass --format ndjson|csv|parquet")
    return found


def ingest_file(store, path: str | os.PathLike[str], fmt: str | None = None, *, ingestor: Ingestor | None = None,
                on_progress: Progress | None = None, chunk_bytes: int = CHUNK_BYTES,
                max_record_bytes: int = MAX_RECORD_BYTES) -> IngestReport:
    """Ingest one file of readings; returns the counts. Durable when it returns."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = detect_format(path, fmt)
    with open(path, "rb") as stream:
        return ingest_stream(store, stream, str(path), kind, ingestor=ingestor, on_progress=on_progress,
                             chunk_bytes=chunk_bytes, max_record_bytes=max_record_bytes)


def ingest_stream(store, stream: BinaryIO, source: str, kind: str, *, ingestor: Ingestor | None = None,
                  on_progress: Progress | None = None, chunk_bytes: int = CHUNK_BYTES,
                  max_record_bytes: int = MAX_RECORD_BYTES) -> IngestReport:
    """Ingest the bytes of one file (``kind`` ndjson, csv or parquet) named ``source``.

    Why apart from ``ingest_file``: an engine that moves files itself (Spark's file source
    hands over their content) takes the same path as a file on disk, so both store the
    same readings and quarantine the same records under the same location.
    """
    ingestor = ingestor or Ingestor(store)
    report = IngestReport()
    started = time.perf_counter()
    if kind == "parquet":
        for part in _parquet(ingestor, stream, source):
            report.merge(part)
            if on_progress:
                on_progress(part.bytes)
    else:
        batches = iter_line_batches(stream, chunk_bytes=chunk_bytes, max_record=max_record_bytes)
        if kind == "ndjson":
            for batch in batches:
                report.merge(ingestor.ingest_lines(batch, source=source))
                if on_progress:
                    on_progress(batch.nbytes)
        else:
            for part in _csv(ingestor, batches, source):
                report.merge(part)
                if on_progress:
                    on_progress(part.bytes)
    report.seconds = time.perf_counter() - started
    return report


def _csv(ingestor: Ingestor, batches: Iterator[LineBatch], source: str) -> Iterator[IngestReport]:
    """CSV with a header row; each data row is kept in quarantine as a JSON object of its fields.

    Quoted fields may not span lines (readings have no multi-line fields); such a row is
    malformed like any row whose field count does not match the header.
    """
    header: list[str] | None = None
    for batch in batches:
        lines = batch.lines.to_pylist()
        numbers = batch.line_numbers.tolist()
        rejects = list(batch.rejects)
        if header is None:
            if not lines:
                yield _rejects_only(ingestor, batch, source)
                continue
            header = [h.strip().lstrip("\ufeff") for h in next(csv.reader([lines[0].rstrip("\r\n")]))]
            missing = [c for c in ("sensor_id", "ts", "value") if c not in header]
            if missing:
                raise InputError(f"{source}: line {numbers[0]}: the CSV header lacks the column(s) {', '.join(missing)}")
            lines, numbers = lines[1:], numbers[1:]
        width = len(header)
        cols: dict[str, list] = {c: [] for c in READING_COLUMNS}
        seqs: list[int] = []
        raws: list[str] = []
        for number, row in zip(numbers, csv.reader(line.rstrip("\r\n") for line in lines)):
            if len(row) != width:
                rejects.append(Reject(number, "malformed", f"the row has {len(row)} fields; the header has {width}",
                                      ",".join(row)[:4096]))
                continue
            record = dict(zip(header, row))
            for c in READING_COLUMNS:
                cols[c].append(record.get(c))
            seqs.append(number)
            raws.append(orjson.dumps(record).decode())
        table = pa.table({**{c: pa.array(v, pa.string()) for c, v in cols.items()}})
        report = _ingest_numbered(ingestor, table, seqs, source, rejects, "line")
        report.bytes = batch.nbytes
        yield report


def _ingest_numbered(ingestor: Ingestor, table: pa.Table, seqs: list[int], source: str, rejects: list[Reject],
                     location_kind: str) -> IngestReport:
    """Rows already split into text columns, numbered by their line in the file."""
    table = table.append_column("seq", pa.array(seqs, pa.int64()))
    return ingestor.ingest_numbered(table, source=source, rejects=rejects, location_kind=location_kind)


def _rejects_only(ingestor: Ingestor, batch: LineBatch, source: str) -> IngestReport:
    empty = pa.table({c: pa.array([], pa.string()) for c in READING_COLUMNS})
    report = _ingest_numbered(ingestor, empty, [], source, list(batch.rejects), "line")
    report.bytes = batch.nbytes
    return report


def _parquet(ingestor: Ingestor, stream: BinaryIO, source: str) -> Iterator[IngestReport]:
    """Row group by row group, so one unreadable group costs only itself."""
    name = Path(source).name
    try:
        pf = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        yield _rejects_only(ingestor, LineBatch(pa.array([], pa.string()), pa.array([], pa.int64()).to_numpy(), [
            Reject(0, "malformed", f"the Parquet file cannot be opened: {exc}", f"<parquet file {name}>")
        ]), source)
        return
    row = 1
    for group in range(pf.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        try:
            table = pf.read_row_group(group)
        except (pa.ArrowException, OSError) as exc:
            reject = Reject(row, "malformed", f"row group {group} ({n} rows from row {row}) cannot be read: {exc}",
                            f"<parquet row group {group} of {name}>")
            yield _rejects_only(ingestor, LineBatch(pa.array([], pa.string()), pa.array([], pa.int64()).to_numpy(), [reject]), source)
            row += n
            continue
        keep = [c for c in table.column_names if c in READING_COLUMNS]
        report = ingestor.ingest_table(table.select(keep), source=source, first_row=row)
        report.bytes = table.nbytes
        yield report
        row += n
