"""Split a byte stream into records without trusting it.

Files arrive truncated, in the wrong encoding, with binary garbage or with a single
line of gigabytes. This reader walks the bytes in bounded chunks, hands the good lines
on as a zero-copy Arrow string array, and turns every line it cannot hand on into a
reject with its line number -- so the good records around a bad one are never lost and
memory never holds more than one chunk plus one record limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa

CHUNK_BYTES = 16 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
KEEP_RAW_BYTES = 4096
"""How much of an oversized record the quarantine keeps: enough to recognise it."""


@dataclass
class Reject:
    line: int
    reason: str
    message: str
    raw: str
    truncated: bool = False


@dataclass
class LineBatch:
    """Good lines (UTF-8, within the size limit) and the rejects found while splitting."""

    lines: pa.StringArray
    line_numbers: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    nbytes: int = 0
    line_count: int = 0
    """Lines the batch's bytes span (kept, blank and rejected): where the next batch starts."""


def _show(raw: bytes) -> str:
    return raw[:KEEP_RAW_BYTES].decode("utf-8", errors="backslashreplace")


def _valid_ranges(arr: pa.StringArray, lo: int, hi: int, out: list[tuple[int, int]], bad: list[int]) -> None:
    """Bisect [lo, hi) into valid-UTF-8 runs; cost grows with the number of bad lines only."""
    if lo >= hi:
        return
    try:
        arr.slice(lo, hi - lo).validate(full=True)
        out.append((lo, hi))
        return
    except pa.ArrowInvalid:
        if hi - lo == 1:
            bad.append(lo)
            return
    mid = (lo + hi) // 2
    _valid_ranges(arr, lo, mid, out, bad)
    _valid_ranges(arr, mid, hi, out, bad)


def _split(part: bytes, first_line: int, max_record: int) -> LineBatch:
    data = np.frombuffer(part, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    spanned = len(newlines)  # the newline bytes: a last line without one ends the input
    if len(part) and (len(newlines) == 0 or newlines[-1] != len(part) - 1):
        newlines = np.append(newlines, len(part))  # last line without a newline (truncated file)
    starts = np.empty(len(newlines), dtype=np.int64)
    starts[0:1] = 0
    starts[1:] = newlines[:-1] + 1
    ends = newlines.astype(np.int64)
    numbers = np.arange(first_line, first_line + len(starts), dtype=np.int64)
    lengths = ends - starts
    rejects: list[Reject] = []

    # Blank lines are not records; oversized lines are rejected here so they never reach SQL.
    keep = lengths > 0
    blank_candidates = np.flatnonzero(keep & (lengths <= 16))  # whitespace-only lines are short
    for i in blank_candidates:
        if not part[starts[i]:ends[i]].strip():
            keep[i] = False
    for i in np.flatnonzero(lengths > max_record):
        keep[i] = False
        rejects.append(
            Reject(int(numbers[i]), "too_large",
                   f"record of {int(lengths[i]):,} bytes exceeds the limit of {max_record:,} bytes",
                   _show(part[starts[i]:ends[i]]), True)
        )
    if not keep.all():
        starts, ends, numbers = starts[keep], ends[keep], numbers[keep]

    # Each value spans its line plus the newline after it, so one offsets buffer over the
    # chunk describes every line without copying; JSON and CSV parsing ignore the trailing
    # whitespace.
    n = len(starts)
    if n == 0:
        return LineBatch(pa.array([], pa.string()), numbers, rejects, len(part), spanned)
    contiguous = np.array_equal(starts[1:], ends[:-1] + 1)
    if contiguous:
        offsets = np.empty(n + 1, dtype=np.int32)  # a chunk is far below 2 GiB
        offsets[:n] = starts
        offsets[n] = ends[-1]
        arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(part))
    else:  # blank or rejected lines in between: gather the kept lines (one copy)
        arr = pa.array([part[s:e] for s, e in zip(starts, ends)], pa.binary()).cast(pa.string(), safe=False)
    runs: list[tuple[int, int]] = []
    bad: list[int] = []
    _valid_ranges(arr, 0, n, runs, bad)
    if bad:
        for i in bad:
            rejects.append(Reject(int(numbers[i]), "bad_encoding", "the record is not valid UTF-8",
                                  _show(part[starts[i]:ends[i]])))
        arr = pa.concat_arrays([arr.slice(a, b - a) for a, b in runs]) if runs else pa.array([], pa.string())
        numbers = np.concatenate([numbers[a:b] for a, b in runs]) if runs else numbers[:0]
    return LineBatch(arr, numbers, rejects, len(part), spanned)


def iter_line_batches(
    stream: BinaryIO, *, chunk_bytes: int = CHUNK_BYTES, max_record: int = MAX_RECORD_BYTES, first_line: int = 1
) -> Iterator[LineBatch]:
    """Yield batches of good lines with their 1-based line numbers, and every reject.

    >>> import io
    >>> batches = list(iter_line_batches(io.BytesIO(b'{"a":1}\\n\\xff\\xfe\\n\\n{"b":2}')))
    >>> [line for b in batches for line in b.lines.to_pylist()]
    ['{"a":1}\\n', '{"b":2}']
    >>> [(r.line, r.reason) for b in batches for r in b.rejects]
    [(2, 'bad_encoding')]
    """
    line = first_line
    pending = b""
    skipping: Reject | None = None  # inside an oversized line, discarding until its newline
    skipped_bytes = 0
    while True:
        chunk = stream.read(chunk_bytes)
        if not chunk:
            break
        if skipping is not None:
            cut = chunk.find(b"\n")
            if cut < 0:
                skipped_bytes += len(chunk)
                continue
            skipped_bytes += cut
            skipping.message = f"record of {skipped_bytes:,} bytes exceeds the limit of {max_record:,} bytes"
            yield LineBatch(pa.array([], pa.string()), np.empty(0, np.int64), [skipping], 0)
            skipping = None
            line += 1
            chunk = chunk[cut + 1:]
        buf = pending + chunk if pending else chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            if len(buf) > max_record:
                skipping = Reject(line, "too_large", "", _show(buf), True)
                skipped_bytes = len(buf)
                pending = b""
            else:
                pending = buf
            continue
        part, pending = buf[: cut + 1], buf[cut + 1:]
        batch = _split(part, line, max_record)
        line += batch.line_count
        yield batch
    if skipping is not None:
        skipping.message = f"record of {skipped_bytes:,} bytes exceeds the limit of {max_record:,} bytes (file ends inside it)"
        yield LineBatch(pa.array([], pa.string()), np.empty(0, np.int64), [skipping], 0)
    elif pending:
        yield _split(pending, line, max_record)
