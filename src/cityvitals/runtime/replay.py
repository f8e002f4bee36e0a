"""Release a simulated folder's readings as simulated time reaches them.

The simulator writes its readings in time blocks (``readings/part-NNNNN.parquet`` or
``.ndjson``, with the bad records Parquet cannot hold beside them as
``part-NNNNN-malformed.ndjson``). Rows are released when their timestamp is due; a row
that sits in a later block than its timestamp (a late arrival) is released when its block
opens, so lateness survives the replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


@dataclass
class Due:
    """What became due: a table of readings and the side files of bad records to ingest."""

    readings: pa.Table | None
    files: list[Path]


class ReplaySource:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        parts = sorted((self.folder / "readings").glob("part-*"))
        self._blocks = [p for p in parts if p.suffix == ".parquet" and not p.stem.endswith("-malformed")]
        self._side = {p.stem.replace("-malformed", ""): p for p in parts if p.stem.endswith("-malformed")}
        if not self._blocks:
            raise FileNotFoundError(f"{self.folder}: no readings/part-*.parquet to replay")
        self._next = 0
        self._pending: pa.Table | None = None
        self._opens = [self._block_start(p) for p in self._blocks]

    @staticmethod
    def _block_start(path: Path) -> datetime:
        """A block opens at its typical first timestamp (the 1st percentile, so late rows don't count)."""
        return _quantile_ts(pq.read_table(path, columns=["ts"])["ts"], 0.01)

    @property
    def start(self) -> datetime:
        return self._opens[0]

    @property
    def end(self) -> datetime:
        return pc.max(pq.read_table(self._blocks[-1], columns=["ts"])["ts"]).as_py()

    def done(self) -> bool:
        return self._next >= len(self._blocks) and (self._pending is None or self._pending.num_rows == 0)

    def due(self, until: datetime) -> Due:
        files: list[Path] = []
        while self._next < len(self._blocks) and self._opens[self._next] <= until:
            block = self._blocks[self._next]
            table = pq.read_table(block)
            self._pending = table if self._pending is None else pa.concat_tables([self._pending, table])
            if block.stem in self._side:
                files.append(self._side[block.stem])
            self._next += 1
        if self._pending is None or self._pending.num_rows == 0:
            return Due(None, files)
        mask = pc.less_equal(self._pending["ts"], pa.scalar(until, self._pending.schema.field("ts").type))
        mask = pc.fill_null(mask, True)  # a null ts is a bad record: release it at once
        ready = self._pending.filter(mask)
        self._pending = self._pending.filter(pc.invert(mask))
        return Due(ready if ready.num_rows else None, files)


def _quantile_ts(ts: pa.ChunkedArray, q: float) -> datetime:
    valid = pc.drop_null(ts)
    as_int = pc.cast(valid, pa.int64())
    value = int(pc.quantile(as_int, q=q, interpolation="lower")[0].as_py())
    return pa.scalar(value, pa.int64()).cast(valid.type).as_py()
