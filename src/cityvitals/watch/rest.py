"""A series' own resting level, for gauges judged by how far they rose above it (wet wells).

See ``cityvitals.watch.levels`` (``relative_thresholds``) for which sensors, and the runner
for how the levels are applied: before each window, from what was learnt before it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

REST_UP_S = 86400.0  # the resting level follows a higher level over about a day (a storm does not move it)...
REST_DOWN_S = 600.0  # ...and a lower one within minutes (the well pumped down: its true rest)


class RestLevels:
    """The resting level of a few series, learnt from their own readings, and levels above it.

    Why asymmetric: a gauge's rest is the level it returns to between events, so a lower
    reading is taken within minutes (``REST_DOWN_S``) while a higher one moves it only over
    about a day (``REST_UP_S``): a four-hour storm raises it by a sixth of its rise, and a
    well whose normal really moved (new pump settings) is followed by the next day. Each
    window contributes its median, so one stray reading (a spike, a dropout to 0) does not
    move it. Until a series' first window is learnt it has no levels (nothing to judge by).
    """

    def __init__(self) -> None:
        self.idx = np.zeros(0, dtype=np.int64)  # series index
        self.off = np.zeros((0, 3), dtype=np.float64)  # offsets above rest (NaN: level absent)
        self.rest = np.zeros(0, dtype=np.float64)  # NaN until the first window is learnt
        self.last_t = np.zeros(0, dtype=np.int64)

    def add(self, series: Sequence[int], offsets: Sequence[float]) -> None:
        s = np.asarray(series, dtype=np.int64).reshape(-1)
        s = s[~np.isin(s, self.idx)]
        off = np.full(3, np.nan)
        off[: len(offsets[:3])] = offsets[:3]
        self.idx = np.r_[self.idx, s]
        self.off = np.vstack([self.off, np.broadcast_to(off, (s.size, 3))])
        self.rest = np.r_[self.rest, np.full(s.size, np.nan)]
        self.last_t = np.r_[self.last_t, np.zeros(s.size, dtype=np.int64)]

    def levels(self) -> tuple[np.ndarray, np.ndarray]:
        """(series, (n, 3) levels): rest + offsets (NaN rows for series not learnt yet)."""
        return self.idx, self.rest[:, None] + self.off

    def learn(self, s: np.ndarray, t: np.ndarray, x: np.ndarray) -> None:
        """One window of points (any series; only this object's are used)."""
        if not self.idx.size:
            return
        row = np.full(int(max(s.max(), self.idx.max())) + 1, -1, dtype=np.int64)
        row[self.idx] = np.arange(self.idx.size)
        r = row[s]
        on = (r >= 0) & np.isfinite(x)
        if not on.any():
            return
        pl_ = pl.DataFrame({"r": r[on], "t": t[on], "x": x[on]}).group_by("r").agg(
            pl.col("x").median(), pl.col("t").max())
        rr, med, tt = pl_["r"].to_numpy(), pl_["x"].to_numpy(), pl_["t"].to_numpy().astype(np.int64)
        cur = self.rest[rr]
        dt = np.maximum(tt - self.last_t[rr], 1).astype(np.float64)
        tau = np.where(med < cur, REST_DOWN_S, REST_UP_S)
        w = 1.0 - np.exp(-dt / tau)
        self.rest[rr] = np.where(np.isnan(cur), med, cur + w * (med - cur))
        self.last_t[rr] = tt

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"rest_idx": self.idx, "rest_off": self.off, "rest": self.rest, "rest_t": self.last_t}

    @classmethod
    def from_arrays(cls, data) -> "RestLevels":
        out = cls()
        if "rest_idx" in data:  # (checkpoints from before resting levels have none)
            out.idx, out.off = np.asarray(data["rest_idx"]), np.asarray(data["rest_off"])
            out.rest, out.last_t = np.asarray(data["rest"]), np.asarray(data["rest_t"])
        return out
