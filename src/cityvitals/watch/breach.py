"""Forecast time-to-breach: when will a rising (or falling) series cross its level?

Why Holt's local linear trend: it is the smallest model that can say "heading up at
2 cm/min, will cross 4.5 m in about 25 minutes", it updates in O(1) per point with
irregular spacing, and its state is six numbers per series. The interval comes from the
spread of the trend's own innovations (how sure we are of the slope) and of the
one-step residuals (how noisy the level is), so a steady climb gives a tight window and a
noisy one a wide one.

The score rises from 0 to 1 as the predicted crossing comes nearer than ``horizon``
seconds (1 when the level is already crossed); it stays 0 while the slope is not
distinguishable from noise.

>>> import numpy as np
>>> from cityvitals.watch.breach import BreachForecaster
>>> det = BreachForecaster(level=4.5, horizon=3600)
>>> t = np.arange(0, 40) * 60                         # one point a minute
>>> rng = np.random.default_rng(1)
>>> x = 3.0 + 0.02 * np.arange(40) + rng.normal(0, 0.005, 40)    # water rising 2 cm/min
>>> s = det.update_many(np.zeros(40, int), t, x)
>>> mid, lo, hi = det.eta([0])
>>> bool(30 * 60 < mid[0] < 40 * 60), bool(lo[0] < mid[0] < hi[0])
(True, True)
>>> det.explain(s[-1])
'heading up at 0.02 per min towards 4.5 (now 3.8): crossing in about 36 min (32–42 min)'
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cityvitals.watch.base import VectorDetector, dense


class BreachForecaster(VectorDetector):
    name: ClassVar[str] = "breach"
    FIELDS: ClassVar[dict[str, tuple[str, float, tuple[int, ...]]]] = {
        "thr": ("float32", np.nan, ()),
        "sign": ("int8", 1, ()),
        "lvl": ("float64", np.nan, ()),
        "trend": ("float64", 0.0, ()),  # per second
        "tvar": ("float32", 0.0, ()),  # variance of instantaneous slope
        "rvar": ("float32", 0.0, ()),  # variance of one-step residuals
        "last_ts": ("int64", 0, ()),
        "n": ("int32", 0, ()),
    }

    def __init__(
        self, level: float | None = None, *, direction: str = "higher", alpha: float = 0.5, beta: float = 0.2,
        horizon: int = 3600, k: float = 2.0, warmup: int = 5,
    ):
        self.default_level, self.direction = level, direction
        self.alpha, self.beta, self.horizon, self.k, self.warmup = alpha, beta, horizon, k, warmup
        super().__init__()
        self._defaults(0, self._cap)

    def config(self) -> dict[str, Any]:
        return {
            "level": self.default_level, "direction": self.direction, "alpha": self.alpha, "beta": self.beta,
            "horizon": self.horizon, "k": self.k, "warmup": self.warmup,
        }

    def _grow(self, need: int) -> None:
        old = self._cap
        super()._grow(need)
        if hasattr(self, "direction"):
            self._defaults(old, self._cap)

    def _defaults(self, lo: int, hi: int) -> None:
        if self.default_level is not None:
            self.thr[lo:hi] = self.default_level
        self.sign[lo:hi] = 1 if self.direction == "higher" else -1

    def set_levels(self, series: Any, level: Any, direction: Any = "higher") -> None:
        """The level each series must not cross (for example its alarm threshold)."""
        s = np.asarray(series, dtype=np.int64).reshape(-1)
        self._touch(s)
        self.thr[s] = np.asarray(level, dtype=np.float32)
        self.sign[s] = np.where(np.asarray(direction) == "lower", -1, 1).astype(np.int8)

    def eta(self, series: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Seconds from each series' last point to the predicted crossing: (mid, early, late).

        ``inf`` where the series is not heading towards its level; 0 where it has crossed.
        """
        s = np.asarray(series, dtype=np.int64).reshape(-1)
        si = dense(s)  # a view, not a gather, when the round holds every series
        sg = self.sign[si].astype(np.float64)
        gap = sg * (self.thr[si].astype(np.float64) - self.lvl[si])
        rate = sg * self.trend[si]
        tsd = np.sqrt(self.tvar[si].astype(np.float64) * self.beta / (2 - self.beta))
        rsd = np.sqrt(self.rvar[si].astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            mid = np.where(rate > 0, gap / rate, np.inf)
            fast = rate + self.k * tsd
            slow = rate - self.k * tsd
            lo = np.where(fast > 0, np.maximum(gap - self.k * rsd, 0) / fast, np.inf)
            hi = np.where(slow > 0, (gap + self.k * rsd) / slow, np.inf)
        crossed = gap <= 0
        ok = (self.n[si] >= self.warmup) & np.isfinite(gap)
        mid = np.where(crossed, 0.0, np.where(ok, mid, np.inf))
        lo = np.where(crossed, 0.0, np.where(ok, np.minimum(lo, mid), np.inf))
        hi = np.where(crossed, 0.0, np.where(ok, np.maximum(hi, mid), np.inf))
        return mid, lo, hi

    def _score_from_state(self, idx: np.ndarray) -> np.ndarray:
        return self.score_of_eta(*self.eta(idx))

    def score_of_eta(self, mid: np.ndarray, _lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The score of ``eta``'s answer (for a caller that needs both: one ``eta``, not two)."""
        sig = np.isfinite(hi) | (mid == 0)  # slope clearly positive (or crossed)
        return np.where(sig, np.clip(1.0 - mid / self.horizon, 0.0, 1.0), 0.0)

    def _step(self, idx, t, x):
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        n = self.n[ix]
        first = (n == 0) | np.isnan(self.lvl[ix])
        dt = np.maximum((t - self.last_ts[ix]).astype(np.float64), 1.0)
        lvl0 = np.where(first, x, self.lvl[ix])
        tr0 = np.where(first, 0.0, self.trend[ix])
        pred = lvl0 + tr0 * dt
        resid = np.where(first, 0.0, x - pred)
        a, b = self.alpha, self.beta
        lvl = a * x + (1 - a) * pred
        inst = (lvl - lvl0) / dt
        second = n == 1
        tr = np.where(first, 0.0, np.where(second, (x - lvl0) / dt, b * inst + (1 - b) * tr0))
        g = np.maximum(0.1, 1.0 / np.maximum(n, 1))
        tvar = np.where(first | second, 0.0, (1 - g) * self.tvar[ix] + g * (inst - tr0) ** 2)
        rvar = np.where(first, 0.0, (1 - g) * self.rvar[ix] + g * resid**2)
        return lvl, tr, tvar, rvar

    def _learn(self, idx, t, x):
        ok = ~np.isnan(x)
        if not ok.all():  # three gathers saved on the usual round without gaps
            idx, t, x = idx[ok], t[ok], x[ok]
        lvl, tr, tvar, rvar = self._step(idx, t, x)
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        self.lvl[ix], self.trend[ix], self.tvar[ix], self.rvar[ix] = lvl, tr, tvar, rvar
        self.last_ts[ix] = t
        self.n[ix] += 1

    def _score(self, idx, t, x):
        """Score as if the point were learnt, without keeping it."""
        saved = {f: self._arrays[f][idx].copy() for f in self.FIELDS}
        self._learn(idx, t, x)
        out = self._score_from_state(idx)
        for f, v in saved.items():
            self._arrays[f][idx] = v
        return out

    def _update(self, idx, t, x):
        self._learn(idx, t, x)
        return self._score_from_state(idx)

    def explain(self, score: float, *, series: int = 0) -> str:
        mid, lo, hi = (float(v[0]) for v in self.eta([series]))
        thr, lvl = float(self.thr[series]), float(self.lvl[series])
        if mid == 0.0:
            return f"{lvl:.4g} has crossed {thr:.4g}"
        if not np.isfinite(mid):
            return f"not heading towards {thr:.4g} (now {lvl:.4g})"
        way = "up" if self.trend[series] > 0 else "down"
        late = "?" if not np.isfinite(hi) else f"{hi / 60:.0f}"
        return (
            f"heading {way} at {abs(self.trend[series]) * 60:.2g} per min towards {thr:.4g} (now {lvl:.2g}): "
            f"crossing in about {mid / 60:.0f} min ({lo / 60:.0f}–{late} min)"
        )
