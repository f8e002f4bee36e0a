"""A directory of reading files as a stream of batches, in the order Spark's file source takes them.

Why this order (modification time, then name): ``cityvitals run --engine local`` and
``--engine spark`` must see the same batches in the same order to be comparable, and
Spark's file source picks the oldest files first. A file that appears later (a new
upload) joins the stream at the next ``due``.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from cityvitals.errors import InputError
from cityvitals.ingest.files import FORMATS
from cityvitals.runtime.replay import Due

STREAM_FORMATS = ("ndjson", "parquet")


def format_of(folder: Path, fmt: str | None) -> str:
    """The one format of a source directory (a stream has one schema): given, or told by the files."""
    if fmt:
        if fmt not in STREAM_FORMATS:
            raise InputError(f"--format {fmt!r}: a stream source is ndjson or parquet")
        return fmt
    found = {FORMATS.get(p.suffix.lower()) for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_"))}
    found.discard(None)
    found &= set(STREAM_FORMATS)
    if len(found) != 1:
        raise InputError(f"{folder}: {'no' if not found else 'mixed'} reading files ({', '.join(sorted(found)) or 'none'}); "
                         "a source directory holds NDJSON or Parquet files, or pass --format")
    return found.pop()


def suffixes(fmt: str) -> tuple[str, ...]:
    return tuple(s for s, f in FORMATS.items() if f == fmt and s != ".json")


def ordered(paths: list[Path]) -> list[Path]:
    """Oldest first, then by name: how both engines queue files."""
    return sorted(paths, key=lambda p: (os.stat(p).st_mtime_ns // 1_000_000, p.name))


class FileSource:
    """``due()`` releases the next ``files_per_batch`` files not yet taken (``Due.files``)."""

    def __init__(self, folder: str | Path, fmt: str | None = None, *, files_per_batch: int = 1):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: no such directory")
        self.format = format_of(self.folder, fmt)
        self.files_per_batch = max(1, int(files_per_batch))
        self._taken: set[str] = set()

    def _waiting(self) -> list[Path]:
        ends = suffixes(self.format)
        return ordered([p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in ends
                        and not p.name.startswith((".", "_")) and p.name not in self._taken])

    def done(self) -> bool:
        return not self._waiting()

    def due(self, until: datetime | None = None) -> Due:
        files = self._waiting()[: self.files_per_batch]
        self._taken.update(p.name for p in files)
        return Due(None, files)
