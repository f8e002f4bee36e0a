"""The detector protocol every ``watch`` detector implements, and the vectorised base.

Why one protocol: the runner, the evaluation harness and the benchmark treat every
detector the same way (learn, score, checkpoint, explain), so a new detector is one
module and nothing else changes.

Why arrays: a city has ~10^5 series and each batch brings one or a few points per series.
Per-series state is kept in NumPy arrays indexed by an integer series id, so a batch of
points for many series is scored in one pass. A batch may hold several points of the same
series; the base splits it into *rounds* in which each series appears at most once and
runs the rounds in time order, so results equal a point-by-point run.

Timestamps are integer epoch seconds (``int64``); values are ``float64``.

>>> import numpy as np
>>> from cityvitals.watch.shift import LevelShiftDetector
>>> det = LevelShiftDetector()
>>> s = np.array([0, 0, 1]); t = np.array([0, 60, 0]); x = np.array([1.0, 1.0, 5.0])
>>> det.update_many(s, t, x).shape
(3,)
>>> det.n_series
2
>>> restored = LevelShiftDetector.from_bytes(det.to_bytes())
>>> restored.to_bytes() == det.to_bytes()
True
"""

from __future__ import annotations

import io
import json
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

__all__ = ["Detector", "VectorDetector", "as_batch", "dense", "rounds"]


@runtime_checkable
class Detector(Protocol):
    """What the runner, ``eval`` and ``bench`` rely on."""

    name: str

    def learn_one(self, x: float, *, series: int = 0, ts: int = 0) -> None: ...
    def score_one(self, x: float, *, series: int = 0, ts: int = 0) -> float: ...
    def learn_many(self, series: np.ndarray, ts: np.ndarray, x: np.ndarray) -> None: ...
    def score_many(self, series: np.ndarray, ts: np.ndarray, x: np.ndarray) -> np.ndarray: ...
    def update_many(self, series: np.ndarray, ts: np.ndarray, x: np.ndarray) -> np.ndarray: ...
    def state(self, series: int = 0) -> dict[str, Any]: ...
    def to_bytes(self) -> bytes: ...
    def explain(self, score: float, *, series: int = 0) -> str: ...


def as_batch(series: Any, ts: Any, x: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(series, dtype=np.int64).reshape(-1)
    t = np.asarray(ts, dtype=np.int64).reshape(-1)
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if t.size == 1 and s.size > 1:
        t = np.full(s.size, t[0], dtype=np.int64)
    if not (s.size == t.size == v.size):
        raise ValueError(f"series, ts and x must have the same length ({s.size}, {t.size}, {v.size})")
    return s, t, v


def dense(idx: np.ndarray) -> np.ndarray | slice:
    """``slice(0, n)`` when ``idx`` is exactly ``0..n-1``, else ``idx`` itself.

    Why: a city sends every series at every step, so a round's index is almost always the
    full range; state arrays indexed by a slice are read as views and written by one copy,
    instead of a gather and a scatter per field (the same values either way). Callers must
    not keep a view across a write to the same field.

    >>> dense(np.arange(4)), dense(np.array([0, 2, 1]))
    (slice(0, 4, None), array([0, 2, 1]))
    """
    m = idx.size
    if m and idx[0] == 0 and idx[m - 1] == m - 1 and (m == 1 or bool((idx[1:] > idx[:-1]).all())):
        return slice(0, m)
    return idx


def rounds(series: np.ndarray, ts: np.ndarray) -> list[np.ndarray]:
    """Index arrays, one per round; within a round each series appears once, in time order.

    The common case (each series at most once) costs one ``np.bincount`` and returns one round.
    """
    n = series.size
    if n == 0:
        return []
    if np.bincount(series).max() <= 1:  # the common case, ~20x cheaper than sorting
        return [np.arange(n)]
    order = np.lexsort((ts, series))  # by series, then time
    s_sorted = series[order]
    first = np.ones(n, dtype=bool)
    first[1:] = s_sorted[1:] != s_sorted[:-1]
    if first.all():
        return [np.arange(n)]
    starts = np.flatnonzero(first)
    group_start = np.repeat(starts, np.diff(np.append(starts, n)))
    rank = np.arange(n) - group_start
    out = []
    by_rank = np.argsort(rank, kind="stable")
    r_sorted = rank[by_rank]
    bounds = np.flatnonzero(np.diff(r_sorted)) + 1
    for chunk in np.split(by_rank, bounds):
        out.append(order[chunk])
    return out


class VectorDetector:
    """Base for detectors whose per-series state is a set of same-length arrays.

    Subclasses declare ``FIELDS`` (name -> (dtype, initial value)) and implement
    ``_score(idx, t, x)`` (no state change) and ``_learn(idx, t, x)`` for a round in
    which every series index is unique. ``update_many`` = score then learn, per round.
    Fields may be 2-D (``shape`` in the spec) for per-slot state.
    """

    name: ClassVar[str] = "detector"
    FIELDS: ClassVar[dict[str, tuple[str, float, tuple[int, ...]]]] = {}

    def __init__(self) -> None:
        self._n = 0
        self._cap = 0
        self._arrays: dict[str, np.ndarray] = {}
        self._grow(16)

    # ---- state arrays -------------------------------------------------
    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, int(self._cap * 1.5) + 16)
        for field, (dtype, init, shape) in self.FIELDS.items():
            new = np.full((cap, *shape), init, dtype=dtype)
            old = self._arrays.get(field)
            if old is not None:
                new[: self._cap] = old[: self._cap]
            self._arrays[field] = new
            setattr(self, field, new)
        self._cap = cap

    def _touch(self, series: np.ndarray) -> None:
        if series.size:
            top = int(series.max()) + 1
            if top > self._cap:
                self._grow(top)
            if top > self._n:
                self._n = top

    @property
    def n_series(self) -> int:
        return self._n

    @property
    def bytes_per_series(self) -> int:
        """State size of one series in bytes (what a checkpoint costs per series)."""
        total = 0
        for dtype, _init, shape in self.FIELDS.values():
            total += np.dtype(dtype).itemsize * int(np.prod(shape or (1,)))
        return total + self._extra_bytes_per_series()

    def _extra_bytes_per_series(self) -> int:
        return 0

    # ---- hooks --------------------------------------------------------
    def _score(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _learn(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> None:
        raise NotImplementedError

    def _update(self, idx: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        out = self._score(idx, t, x)
        self._learn(idx, t, x)
        return out

    # ---- batch API ----------------------------------------------------
    def score_many(self, series: Any, ts: Any, x: Any) -> np.ndarray:
        """Scores in [0, 1] for each point against the state as it is (nothing learnt)."""
        s, t, v = as_batch(series, ts, x)
        self._touch(s)
        out = np.zeros(s.size)
        for r in rounds(s, t):
            out[r] = self._score(s[r], t[r], v[r])
        return out

    def learn_many(self, series: Any, ts: Any, x: Any) -> None:
        s, t, v = as_batch(series, ts, x)
        self._touch(s)
        for r in rounds(s, t):
            self._learn(s[r], t[r], v[r])

    def update_many(self, series: Any, ts: Any, x: Any) -> np.ndarray:
        """The streaming step: score each point causally, then learn it."""
        s, t, v = as_batch(series, ts, x)
        self._touch(s)
        out = np.zeros(s.size)
        rs = rounds(s, t)
        if len(rs) == 1:  # one round is the whole batch in its order: no gathers of it
            out[:] = self._update(s, t, v)
            return out
        for r in rs:
            out[r] = self._update(s[r], t[r], v[r])
        return out

    # ---- one point ----------------------------------------------------
    def learn_one(self, x: float, *, series: int = 0, ts: int = 0) -> None:
        self.learn_many([series], [ts], [x])

    def score_one(self, x: float, *, series: int = 0, ts: int = 0) -> float:
        return float(self.score_many([series], [ts], [x])[0])

    def update_one(self, x: float, *, series: int = 0, ts: int = 0) -> float:
        return float(self.update_many([series], [ts], [x])[0])

    # ---- state --------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) so ``from_bytes`` rebuilds the same detector."""
        return {}

    def state(self, series: int = 0) -> dict[str, Any]:
        """One series' state as plain numbers (small: see ``bytes_per_series``)."""
        out: dict[str, Any] = {}
        for field in self.FIELDS:
            v = self._arrays[field][series]
            out[field] = v.tolist() if isinstance(v, np.ndarray) else v.item()
        return out

    def to_bytes(self) -> bytes:
        """Whole detector (config + arrays for the series seen) as one ``.npz`` blob."""
        buf = io.BytesIO()
        arrays = {f"f_{k}": v[: self._n] for k, v in self._arrays.items()}
        arrays.update(self._extra_arrays())
        meta = json.dumps({"name": self.name, "config": self.config(), "n": self._n})
        np.savez(buf, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _load_extra(self, data: Any) -> None:
        return None

    @classmethod
    def from_bytes(cls, blob: bytes) -> "VectorDetector":
        data = np.load(io.BytesIO(blob), allow_pickle=False)
        meta = json.loads(bytes(data["__meta__"]).decode())
        if meta["name"] != cls.name:
            raise ValueError(f"blob holds a {meta['name']!r} detector, not {cls.name!r}")
        det = cls(**meta["config"])
        n = int(meta["n"])
        det._grow(max(n, 16))
        det._n = n
        for field in det.FIELDS:
            if f"f_{field}" in data.files:  # a field added since the checkpoint keeps its default
                det._arrays[field][:n] = data[f"f_{field}"]
        det._load_extra(data)
        return det

    def explain(self, score: float, *, series: int = 0) -> str:
        return f"{self.name}: score {score:.2f}"
