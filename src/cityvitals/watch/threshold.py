"""Catalogue thresholds with hysteresis and a minimum duration.

Why hysteresis and duration: a value wobbling around a threshold must not raise and clear
an alert every minute. A level is entered only after the value has stayed past its
threshold for ``min_duration`` seconds, and left only once the value is back beyond the
threshold by ``hysteresis`` (a fraction of the threshold's distance to the previous level,
or absolute when ``hysteresis_abs`` is set) for the same duration.

Levels: 0 normal, 1 attention, 2 warning, 3 alarm; the score is ``level / 3``.
Thresholds are per series (set with ``set_levels``) or a default for all.

>>> from cityvitals.watch.threshold import ThresholdDetector
>>> det = ThresholdDetector(levels=(50, 70, 90), min_duration=120, hysteresis_abs=5)
>>> [round(det.update_one(v, ts=60 * i) * 3) for i, v in enumerate([40, 75, 75, 75, 68, 66, 60])]
[0, 0, 0, 2, 2, 2, 2]
>>> [round(det.update_one(v, ts=60 * (7 + i)) * 3) for i, v in enumerate([60, 60, 40, 40, 40])]
[2, 1, 1, 1, 0]
>>> det.explain(0.0)
'level normal: last value 40 (attention at 50, warning at 70, alarm at 90; higher is worse)'
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from cityvitals.watch.base import VectorDetector, dense

LEVEL_NAMES = ("normal", "attention", "warning", "alarm")


class ThresholdDetector(VectorDetector):
    name: ClassVar[str] = "threshold"
    FIELDS: ClassVar[dict[str, tuple[str, float, tuple[int, ...]]]] = {
        "thr": ("float32", np.nan, (3,)),  # attention, warning, alarm (NaN: not set)
        "sign": ("int8", 1, ()),  # +1 higher is worse, -1 lower is worse
        "level": ("int8", 0, ()),
        "cand": ("int8", 0, ()),
        "since": ("int64", 0, ()),
        "last": ("float32", np.nan, ()),
        "dur": ("int32", -1, ()),  # per-series minimum duration (s); -1: the detector's default
    }

    def __init__(
        self,
        levels: Sequence[float] | None = None,
        *,
        direction: str = "higher",
        min_duration: int = 0,
        hysteresis: float = 0.1,
        hysteresis_abs: float | None = None,
    ) -> None:
        if direction not in ("higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', not {direction!r}")
        self.default_levels = None if levels is None else [float(v) for v in levels]
        self.direction = direction
        self.min_duration = int(min_duration)
        self.hysteresis = float(hysteresis)
        self.hysteresis_abs = hysteresis_abs
        super().__init__()
        self._apply_default(0, self._cap)

    def config(self) -> dict[str, Any]:
        return {
            "levels": self.default_levels, "direction": self.direction, "min_duration": self.min_duration,
            "hysteresis": self.hysteresis, "hysteresis_abs": self.hysteresis_abs,
        }

    def _grow(self, need: int) -> None:
        old = self._cap
        super()._grow(need)
        if hasattr(self, "direction"):
            self._apply_default(old, self._cap)

    def _apply_default(self, lo: int, hi: int) -> None:
        if self.default_levels is not None:
            self.thr[lo:hi] = _levels3(self.default_levels)
        self.sign[lo:hi] = 1 if self.direction == "higher" else -1

    def set_levels(
        self, series: Any, levels: Any, direction: str | Sequence[str] = "higher", min_duration: int | None = None
    ) -> None:
        """Thresholds for some series: ``levels`` is (n, 3) or (3,) (NaN where a level is absent)."""
        s = np.asarray(series, dtype=np.int64).reshape(-1)
        self._touch(s)
        lv = np.asarray(levels, dtype=np.float32)
        self.thr[s] = lv if lv.ndim == 2 else np.broadcast_to(_levels3(lv), (s.size, 3))
        d = np.asarray(direction).reshape(-1)
        self.sign[s] = np.where(d == "lower", -1, 1).astype(np.int8)
        if min_duration is not None:
            self.dur[s] = int(min_duration)

    def _raw(self, idx: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        sg = self.sign[ix].astype(np.float64)
        thr = self.thr[ix].astype(np.float64) * sg[:, None]
        v = x * sg
        if self.hysteresis_abs is not None:
            gap = np.full_like(thr, float(self.hysteresis_abs))
        else:
            prev = np.concatenate([thr[:, :1] - np.abs(thr[:, :1]), thr[:, :2]], axis=1)
            gap = np.abs(thr - prev) * self.hysteresis
            gap = np.where(np.isfinite(gap), gap, 0.0)
        with np.errstate(invalid="ignore"):
            up = (v[:, None] >= thr).sum(axis=1)
            hold = (v[:, None] >= thr - gap).sum(axis=1)
        return up, hold

    def _next(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        up, hold = self._raw(idx, x)
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        cur = self.level[ix].astype(np.int64)
        target = np.where(up > cur, up, np.where(hold < cur, hold, cur))
        target = np.where(np.isnan(x), cur, target)
        cand = self.cand[ix].astype(np.int64)
        since = np.where(cand != target, t, self.since[ix])
        dur = self.dur[ix]
        need = np.where(dur >= 0, dur, self.min_duration)
        new = np.where((target != cur) & (t - since >= need), target, cur)
        return new, target, since

    def _score(self, idx, t, x):
        new, _, _ = self._next(idx, t, x)
        return new / 3.0

    def _learn(self, idx, t, x):
        new, target, since = self._next(idx, t, x)
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        self.level[ix] = new
        self.cand[ix] = np.where(new == target, new, target)
        self.since[ix] = since
        self.last[ix] = x

    def _update(self, idx, t, x):
        self._learn(idx, t, x)
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        return self.level[ix] / 3.0

    def explain(self, score: float, *, series: int = 0) -> str:
        lvl = int(round(score * 3))
        thr = self.thr[series]
        parts = [f"{n} at {_fmt(v)}" for n, v in zip(LEVEL_NAMES[1:], thr) if np.isfinite(v)]
        worse = "higher" if self.sign[series] > 0 else "lower"
        return (
            f"level {LEVEL_NAMES[lvl]}: last value {_fmt(self.last[series])} "
            f"({', '.join(parts) or 'no thresholds'}; {worse} is worse)"
        )


def _levels3(levels: Any) -> np.ndarray:
    lv = np.full(3, np.nan, dtype=np.float32)
    arr = np.asarray(levels, dtype=np.float32).reshape(-1)[:3]
    lv[: arr.size] = arr
    return lv


def _fmt(v: float) -> str:
    return f"{float(v):.4g}"
