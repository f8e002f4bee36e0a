"""Rolling window sums per series (rainfall over the last hour), in a few dozen bytes each.

Why: rain is judged on sums (a rainstorm signal is 35 mm *in one hour*) while a gauge
reports what fell in each interval (0.8 mm in this minute). Watching the point values
never crosses a rainstorm level and gives a forecaster nothing smooth to extrapolate;
watching the rolling 1-hour sum does both. The state is a ring of ``window / bin_s + 1``
bins (13 five-minute bins for an hour: 52 bytes plus the head bin), so late and irregular
points land in their own bin; the oldest bin, half outside the window, counts in
proportion to the part still inside (rain spread evenly over a bin).

>>> import numpy as np
>>> from cityvitals.watch.rolling import RollingSum
>>> rs = RollingSum(window=3600, bin_s=300)
>>> t = np.arange(0, 120) * 60                       # one gauge, a reading a minute
>>> s = rs.update_many(np.zeros(120, int), t, np.full(120, 0.5))   # 0.5 mm a minute = 30 mm/h
>>> float(s[29]), float(s[-1])          # 30 minutes in; two hours in (30, within a reading)
(15.0, 30.5)
>>> rs.explain(float(s[-1]))
'30.5 mm in the last 60 min'
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cityvitals.watch.base import VectorDetector

_NO_HEAD = -(2**62)


class RollingSum(VectorDetector):
    """Sum of each series' values over the last ``window`` seconds (``update_many`` returns it per point)."""

    name: ClassVar[str] = "rolling_sum"
    FIELDS: ClassVar[dict[str, tuple[str, float, tuple[int, ...]]]] = {
        "ring": ("float32", 0.0, (13,)),
        "head": ("int64", _NO_HEAD, ()),  # the newest bin seen (absolute: ts // bin_s)
        "last": ("float32", np.nan, ()),  # the last sum, for ``explain``
    }

    def __init__(self, window: int = 3600, bin_s: int = 300, unit: str = "mm"):
        if window % bin_s or window // bin_s + 1 != self.FIELDS["ring"][2][0]:
            raise ValueError(f"window {window} s must be 12 bins of bin_s ({bin_s} s)")
        self.window, self.bin_s, self.unit = int(window), int(bin_s), unit
        self.k = window // bin_s + 1
        super().__init__()

    def config(self) -> dict[str, Any]:
        return {"window": self.window, "bin_s": self.bin_s, "unit": self.unit}

    def _sum(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray, write: bool) -> np.ndarray:
        k, B = self.k, self.bin_s
        b = t // B
        hb = self.head[idx]
        head = np.maximum(hb, b)
        ring = self.ring[idx].astype(np.float64)
        ids = head[:, None] - np.arange(k)[None, :]  # bin ids the ring holds after this point, newest first
        slots = ids % k
        rows = np.arange(idx.size)[:, None]
        # bins newer than the old head start empty (the first point empties them all)
        ring[rows, slots] = np.where(ids > hb[:, None], 0.0, ring[rows, slots])
        ok = ~np.isnan(x) & (b > head - k)
        np.add.at(ring, (np.arange(idx.size)[ok], (b % k)[ok]), x[ok])
        inside = np.clip((B - (np.maximum(t, head * B) - head * B)) / B, 0.0, 1.0)
        weights = np.ones((idx.size, k))
        weights[:, -1] = inside
        out = (ring[rows, slots] * weights).sum(axis=1)
        if write:
            self.ring[idx] = ring.astype(np.float32)
            self.head[idx] = head
            self.last[idx] = out
        return out

    def _score(self, idx, t, x):
        return self._sum(idx, t, x, write=False)

    def _learn(self, idx, t, x):
        self._sum(idx, t, x, write=True)

    def _update(self, idx, t, x):
        return self._sum(idx, t, x, write=True)

    def explain(self, score: float, *, series: int = 0) -> str:
        return f"{score:.3g} {self.unit} in the last {self.window // 60} min"
