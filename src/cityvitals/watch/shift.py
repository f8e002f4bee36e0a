"""Rate of change and level shifts: local-trend forecast, two-sided CUSUM, standardised jumps.

Why a local linear trend (Holt) as the baseline: city series ramp up and down every day
(the morning rush, the evening load), and a flat mean would call each ramp a "shift". The
one-step forecast ``level + trend`` follows smooth ramps, so what is left is what the
series did *not* announce: a burst main, a tripped feeder. Why CUSUM on those residuals:
a step of a few standard deviations adds up within a few points before the forecast
adapts; a sudden jump is also caught by the standardised first difference. After a shift
is declared the baseline moves to the new level so the same shift is reported once.

The score is ``max(cusum / h, |jump z| / jump_z)`` clipped to [0, 1]; 1 means "shift".

>>> from cityvitals.watch.shift import LevelShiftDetector
>>> det = LevelShiftDetector(warmup=10)
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = np.r_[rng.normal(10, 0.5, 60), rng.normal(13, 0.5, 20)]
>>> scores = det.update_many(np.zeros(80, int), np.arange(80) * 60, x)
>>> bool(scores[:60].max() < 1.0), int(np.argmax(scores >= 1.0))
(True, 61)
>>> det2 = LevelShiftDetector(warmup=10)
>>> last = [det2.update_one(v, ts=60 * i) for i, v in enumerate(x[:62])][-1]
>>> det2.explain(last)
'level now 12.42, baseline was 10.22 ± 0.53: shift up by +2.19'
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cityvitals.watch.base import VectorDetector, dense


class LevelShiftDetector(VectorDetector):
    name: ClassVar[str] = "shift"
    FIELDS: ClassVar[dict[str, tuple[str, float, tuple[int, ...]]]] = {
        "n": ("int32", 0, ()),
        "mean": ("float32", 0.0, ()),  # float32: residuals of a few sd are far above its rounding
        "trend": ("float32", 0.0, ()),
        "var": ("float32", 0.0, ()),
        "dvar": ("float32", 0.0, ()),
        "last": ("float32", np.nan, ()),
        "cpos": ("float32", 0.0, ()),
        "cneg": ("float32", 0.0, ()),
        "prev_mean": ("float32", np.nan, ()),
        "prev_sd": ("float32", np.nan, ()),
    }

    def __init__(
        self, *, alpha: float = 0.2, beta: float = 0.05, var_alpha: float = 0.02, k: float = 0.5, h: float = 8.0,
        jump_z: float = 8.0, warmup: int = 20,
    ):
        self.alpha, self.beta, self.var_alpha, self.k, self.h, self.jump_z, self.warmup = alpha, beta, var_alpha, k, h, jump_z, warmup
        super().__init__()

    def config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha, "beta": self.beta, "var_alpha": self.var_alpha, "k": self.k, "h": self.h,
            "jump_z": self.jump_z, "warmup": self.warmup,
        }

    def _parts(self, idx: np.ndarray, x: np.ndarray):
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        sd = np.sqrt(self.var[ix]) + 1e-9 * (1 + np.abs(self.mean[ix]))
        pred = self.mean[ix] + self.trend[ix]
        z = np.clip((x - pred) / sd, -50, 50)
        cpos = np.maximum(0.0, self.cpos[ix] + z - self.k)
        cneg = np.maximum(0.0, self.cneg[ix] - z - self.k)
        dsd = np.sqrt(self.dvar[ix]) + 1e-9 * (1 + np.abs(self.mean[ix]))
        dz = np.where(np.isnan(self.last[ix]), 0.0, (x - self.last[ix]) / dsd)
        warm = self.n[ix] >= self.warmup
        cpos = np.where(warm, cpos, 0.0)
        cneg = np.where(warm, cneg, 0.0)
        score = np.where(warm, np.maximum(np.maximum(cpos, cneg) / self.h, np.abs(dz) / self.jump_z), 0.0)
        return np.clip(np.nan_to_num(score), 0.0, 1.0), z, cpos, cneg, warm

    def _score(self, idx, t, x):
        return self._parts(idx, x)[0]

    def _update(self, idx, t, x):
        ok = ~np.isnan(x)
        if ok.all():  # the usual round without gaps: no masking, no gathers
            score, z, cpos, cneg, warm = self._parts(idx, x)
        else:
            score, z, cpos, cneg, warm = self._parts(idx, np.where(ok, x, self.mean[idx]))
            idx, x, score, z, cpos, cneg, warm = idx[ok], x[ok], score[ok], z[ok], cpos[ok], cneg[ok], warm[ok]
        ix = dense(idx)  # a view, not a gather, when the round holds every series
        n = self.n[ix]
        a = np.maximum(self.alpha, 1.0 / (n + 1.0))
        g = np.maximum(self.var_alpha, 1.0 / (n + 1.0))
        shifted = warm & (np.maximum(cpos, cneg) >= self.h)
        mean, var, trend = self.mean[ix], self.var[ix], self.trend[ix]
        first = n == 0
        pred = np.where(first, x, mean + trend)
        sd = np.sqrt(var)
        # Winsorise what we learn so one outlier does not drag the forecast.
        r = x - pred
        rl = np.where(warm, np.clip(r, -3 * sd, 3 * sd), r)
        new_mean = pred + a * rl
        new_trend = np.where(n >= 2, trend + a * self.beta * rl, np.where(n == 1, 0.0, trend))
        rv = np.where(warm, np.clip(r, -4 * sd, 4 * sd), r)
        new_var = np.where(first, 0.0, (1 - g) * var + g * rv * rv)
        last = self.last[ix]
        dd = np.where(np.isnan(last), 0.0, x - last)
        dsd = np.sqrt(self.dvar[ix])
        ddl = np.where(warm, np.clip(dd, -4 * dsd, 4 * dsd), dd)
        self.dvar[ix] = np.where(np.isnan(last), self.dvar[ix], (1 - g) * self.dvar[ix] + g * ddl * ddl)
        self.prev_mean[ix] = np.where(shifted, pred, self.prev_mean[ix])
        self.prev_sd[ix] = np.where(shifted, sd, self.prev_sd[ix])
        self.mean[ix] = np.where(shifted, x, new_mean)
        self.trend[ix] = np.where(shifted, 0.0, new_trend)
        self.var[ix] = new_var
        self.cpos[ix] = np.where(shifted, 0.0, cpos)
        self.cneg[ix] = np.where(shifted, 0.0, cneg)
        self.last[ix] = x
        self.n[ix] = n + 1
        out = np.zeros(ok.size)
        out[ok] = score
        return out

    def _learn(self, idx, t, x):
        self._update(idx, t, x)

    def explain(self, score: float, *, series: int = 0) -> str:
        last, mean = self.last[series], self.mean[series]
        if np.isfinite(self.prev_mean[series]) and score >= 1.0:
            base, sd = self.prev_mean[series], self.prev_sd[series]
            way = "up" if last > base else "down"
            return f"level now {last:.4g}, baseline was {base:.4g} ± {sd:.2g}: shift {way} by {last - base:+.3g}"
        sd = float(np.sqrt(self.var[series]))
        return f"level {last:.4g} against baseline {mean:.4g} ± {sd:.4g}; shift score {score:.2f} (1 = shift)"
