"""Seasonal anomaly against robust, adapting time-of-day / day-type baselines.

Why this shape: city series follow the clock (rush hours, night minimum, weekends). Each
series keeps, for each of 24 hourly slots x {weekday, weekend}, a robust location (a
Huber-clipped running median approximation) and a scale (a clipped running mean absolute
deviation): 48 x 2 float32 + a small count per slot, under 0.5 KB per series. Both adapt
with a forgetting factor, so the baseline follows slow change (seasons, growth) but not
the anomaly itself, which is clipped before it is learnt.

Local time: ``utc_offset`` seconds (the city's offset; DST is ignored on purpose: an hour
of error twice a year is cheaper than a time-zone table per point).

>>> import numpy as np
>>> from cityvitals.watch.seasonal import SeasonalDetector
>>> det = SeasonalDetector()
>>> t = np.arange(0, 21 * 86400, 3600)                 # three weeks, hourly
>>> x = 0.40 + 0.05 * np.sin(2 * np.pi * t / 86400)    # pressure with a daily cycle
>>> _ = det.update_many(np.zeros(t.size, int), t, x)
>>> tue8 = 19 * 86400 + 8 * 3600                       # 1970-01-20 was a Tuesday
>>> round(det.score_one(0.21, ts=tue8), 2), round(det.score_one(0.4 + 0.05 * np.sin(2*np.pi*8/24), ts=tue8), 2)
(1.0, 0.0)
>>> _ = det.update_one(0.21, ts=tue8)
>>> det.explain(1.0)
'seasonal baseline for Tuesday 08:00 is 0.4425 ± 0.006; observed 0.21 (z = -40)'
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cityvitals.watch.base import VectorDetector, dense

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
N_SLOTS = 48


def slot_of(ts: np.ndarray, utc_offset: int = 0) -> np.ndarray:
    """Slot 0..47: hour of day, +24 on Saturday and Sunday."""
    if one_time(ts):  # a city's step: one time for all series, so one division, not 10^5
        return np.full(ts.size, slot_of(ts[:1], utc_offset)[0], dtype=np.int64)
    local = ts + utc_offset
    day = local // 86400
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    hour = (local % 86400) // 3600
    return (hour + 24 * (weekday >= 5)).astype(np.int64)


def one_time(ts: np.ndarray) -> bool:
    """True for a batch of many points that all carry the same time (cheap to test, costly to divide)."""
    return ts.size > 64 and ts[0] == ts[-1] and bool((ts == ts[0]).all())


def _at(table: np.ndarray, cell) -> np.ndarray:
    """The cells of a slot table (see ``SeasonalDetector._cells``)."""
    return table[cell] if isinstance(cell, tuple) else table.reshape(-1).take(cell)


def _put(table: np.ndarray, cell, v: np.ndarray) -> None:
    if isinstance(cell, tuple):
        table[cell] = v
    else:
        table.reshape(-1)[cell] = v


class SeasonalDetector(VectorDetector):
    name: ClassVar[str] = "seasonal"
    FIELDS: ClassVar[dict[str, tuple[str, float, tuple[int, ...]]]] = {
        "loc": ("float32", 0.0, (N_SLOTS,)),
        "mad": ("float32", 0.0, (N_SLOTS,)),
        "cnt": ("uint8", 0, (N_SLOTS,)),
        "gloc": ("float32", 0.0, ()),
        "gmad": ("float32", 0.0, ()),
        "gn": ("int32", 0, ()),
        "last": ("float32", np.nan, ()),
        "last_ts": ("int64", 0, ()),
        "first_ts": ("int64", 0, ()),
    }

    def __init__(
        self, *, alpha: float = 0.05, min_count: int = 3, z_lo: float = 3.0, z_hi: float = 6.0,
        utc_offset: int = 0, rel_floor: float = 1e-4, min_age: int = 2 * 86400,
    ):
        self.min_age = min_age
        self.alpha, self.min_count, self.z_lo, self.z_hi = alpha, min_count, z_lo, z_hi
        self.utc_offset, self.rel_floor = utc_offset, rel_floor
        super().__init__()

    def config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "min_count": self.min_count, "z_lo": self.z_lo, "z_hi": self.z_hi,
            "utc_offset": self.utc_offset, "rel_floor": self.rel_floor, "min_age": self.min_age,
        }

    def baseline(self, idx: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(location, standard deviation, ready) for each (series, time)."""
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        cell = self._cells(idx, ix, t)
        cnt = _at(self.cnt, cell)
        ready = cnt >= self.min_count
        loc = np.where(ready, _at(self.loc, cell), self.gloc[ix])
        mad = np.where(ready, _at(self.mad, cell), self.gmad[ix])
        floor = self.rel_floor * (np.abs(loc) + 1e-12) + 0.05 * self.gmad[ix] * ready
        sd = 1.2533 * np.maximum(mad, floor)
        # a baseline of time-of-day needs days of history, not points: judge nothing before ``min_age``
        old_enough = (self.gn[ix] > 0) & (t - self.first_ts[ix] >= self.min_age)
        return loc.astype(np.float64), sd, (ready | (self.gn[ix] >= 10 * self.min_count)) & old_enough

    def _cells(self, idx, ix, t, slot=None):
        """Where the round's (series, slot) cells sit in the slot tables.

        Every series at one time (a city's step): one column, read and written as a strided
        view. Otherwise flat indices into the raveled table (1-D take is ~5x faster than 2-D
        fancy indexing).
        """
        if isinstance(ix, slice) and one_time(t):
            return (ix, int(slot_of(t[:1], self.utc_offset)[0]))
        return idx * N_SLOTS + (slot_of(t, self.utc_offset) if slot is None else slot)

    def smooth_location(self, idx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The baseline location interpolated linearly between hourly slot centres.

        Why: the slot table is a step function of the hour, and a residual against it jumps
        at every hour boundary; a level-shift detector on such residuals would see 24 shifts
        a day. Where a neighbouring slot is not ready the slot's own value is used.
        """
        h = 1800
        s1 = idx * N_SLOTS + slot_of(t - h, self.utc_offset)
        s2 = idx * N_SLOTS + slot_of(t + h, self.utc_offset)
        w = ((t + self.utc_offset - h) % 3600) / 3600.0
        locs, cnts = self.loc.reshape(-1), self.cnt.reshape(-1)
        own, _sd, _ready = self.baseline(idx, t)
        l1 = np.where(cnts.take(s1) >= self.min_count, locs.take(s1), own)
        l2 = np.where(cnts.take(s2) >= self.min_count, locs.take(s2), own)
        return (1 - w) * l1 + w * l2

    def zscore(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        loc, sd, ready = self.baseline(idx, t)
        return np.where(ready, (x - loc) / sd, 0.0)

    def _score(self, idx, t, x):
        z = np.abs(np.nan_to_num(self.zscore(idx, t, x)))
        return np.clip((z - self.z_lo) / (self.z_hi - self.z_lo), 0.0, 1.0)

    def _learn(self, idx, t, x):
        ok = ~np.isnan(x)
        if not ok.all():  # three gathers saved on the usual round without gaps
            idx, t, x = idx[ok], t[ok], x[ok]
        slot = slot_of(t, self.utc_offset)
        # global robust baseline (fallback while slots warm up)
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        gn = self.gn[ix]
        self.first_ts[ix] = np.where(gn == 0, t, self.first_ts[ix])
        a = np.maximum(self.alpha * 0.2, 1.0 / (gn + 1.0))
        r = x - self.gloc[ix]
        gm = self.gmad[ix]
        lim = np.where(gn > 10, 4 * gm, np.inf)
        self.gloc[ix] += a * np.clip(r, -lim, lim)
        self.gmad[ix] = (1 - a) * gm + a * np.minimum(np.abs(r), lim)
        self.gn[ix] = gn + 1
        # per-slot robust baseline (cells: see ``_cells``)
        cell = self._cells(idx, ix, t, slot)
        cnt = _at(self.cnt, cell).astype(np.float64)
        loc = _at(self.loc, cell).astype(np.float64)
        mad = _at(self.mad, cell).astype(np.float64)
        first = cnt == 0
        b = np.maximum(self.alpha, 1.0 / (cnt + 1.0))
        rr = x - loc
        scale = np.maximum(mad, self.rel_floor * np.abs(loc) + 1e-12)
        clip = np.where(cnt >= self.min_count, 3.0 * scale, np.inf)
        rc = np.clip(rr, -clip, clip)
        new_loc = np.where(first, x, loc + b * rc)
        new_mad = np.where(first, self.gmad[ix], (1 - b) * mad + b * np.minimum(np.abs(rr), clip))
        _put(self.loc, cell, new_loc)
        _put(self.mad, cell, new_mad)
        _put(self.cnt, cell, np.minimum(cnt + 1, 255).astype(np.uint8))
        self.last[ix] = x
        self.last_ts[ix] = t

    def explain(self, score: float, *, series: int = 0) -> str:
        t = np.array([self.last_ts[series]])
        s = np.array([series])
        slot = int(slot_of(t, self.utc_offset)[0])
        # the baseline as it was before the last point was learnt is close enough to the one now
        loc, sd, _ = self.baseline(s, t)
        local = int(t[0]) + self.utc_offset
        day = DAYS[(local // 86400 + 3) % 7]
        hour = (local % 86400) // 3600
        kind = "seasonal baseline" if self.cnt[series, slot] >= self.min_count else "overall baseline (slot still learning)"
        z = (float(self.last[series]) - loc[0]) / sd[0]
        return (
            f"{kind} for {day} {hour:02d}:00 is {loc[0]:.4g} ± {sd[0]:.1g}; "
            f"observed {float(self.last[series]):.4g} (z = {z:.2g})"
        )
