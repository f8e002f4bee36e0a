"""Windowed Gaussian: the reference baseline for ``eval`` (NAB's simplest detector).

Why keep a weak detector: every quality figure is reported next to it, so a change that
makes our detector worse than "how far is this point from the mean of the last W points"
is caught at once. The score is ``erf(|z| / sqrt 2)``, the two-sided Gaussian probability
mass within ``|z|``. Its state is a ring buffer of ``window`` values per series, so it is
for evaluation, not for 100,000 live series.

>>> import numpy as np
>>> from cityvitals.watch.gaussian import WindowedGaussian
>>> det = WindowedGaussian(window=100)
>>> x = np.r_[np.random.default_rng(0).normal(0, 1, 200), 8.0]
>>> s = det.update_many(np.zeros(201, int), np.arange(201), x)
>>> bool(s[-1] > 0.9999), bool(np.median(s[10:200]) < 0.8)
(True, True)
>>> det.explain(s[-1])
'value 8 is 6.4 standard deviations from the mean of the last 100 points (0.024 ± 1.2)'
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cityvitals.watch._stats import erf
from cityvitals.watch.base import VectorDetector


class WindowedGaussian(VectorDetector):
    name: ClassVar[str] = "windowed_gaussian"

    def __init__(self, *, window: int = 6400):
        self.window = int(window)
        self.FIELDS = {  # instance-level: the ring's width depends on the window
            "buf": ("float64", 0.0, (self.window,)),
            "pos": ("int64", 0, ()),
            "cnt": ("int64", 0, ()),
            "sum": ("float64", 0.0, ()),
            "sumsq": ("float64", 0.0, ()),
            "last": ("float64", np.nan, ()),
        }
        super().__init__()

    def config(self) -> dict[str, Any]:
        return {"window": self.window}

    def _stats(self, idx):
        c = np.maximum(self.cnt[idx], 1)
        mean = self.sum[idx] / c
        var = np.maximum(self.sumsq[idx] / c - mean**2, 0.0)
        return mean, np.sqrt(var)

    def _score(self, idx, t, x):
        mean, sd = self._stats(idx)
        z = np.where(sd > 0, np.abs(x - mean) / np.where(sd > 0, sd, 1), 0.0)
        return np.where(self.cnt[idx] >= 2, erf(z / np.sqrt(2.0)), 0.0)

    def _learn(self, idx, t, x):
        pos = self.pos[idx]
        full = self.cnt[idx] >= self.window
        old = self.buf[idx, pos]
        self.sum[idx] += x - np.where(full, old, 0.0)
        self.sumsq[idx] += x * x - np.where(full, old * old, 0.0)
        self.buf[idx, pos] = x
        self.pos[idx] = (pos + 1) % self.window
        self.cnt[idx] = np.minimum(self.cnt[idx] + 1, self.window)
        self.last[idx] = x

    def explain(self, score: float, *, series: int = 0) -> str:
        mean, sd = (float(v[0]) for v in self._stats(np.array([series])))
        x = float(self.last[series])
        return (
            f"value {x:.4g} is {abs(x - mean) / sd if sd else 0:.2g} standard deviations from the mean of the last "
            f"{int(self.cnt[series])} points ({mean:.2g} ± {sd:.2g})"
        )
