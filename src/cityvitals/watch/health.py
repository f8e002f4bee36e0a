"""Sensor health: stale, flat-line, spike, drift, out of range, disagreeing with neighbours.

Why it matters: most "incidents" in raw city data are broken sensors. This detector tells
a sensor fault apart from a real event using the neighbours (sensors of the same kind
nearby, given by the caller as series -> neighbour series): one sensor jumping while its
neighbours stay put is a fault (``disagree``); many jumping together is an ``event`` and
is *not* a fault. Drift is measured against the neighbours too (a slowly growing offset
from their mean), so a city-wide heat wave is not drift; a sensor with fewer than two
neighbours can be given far references of its kind for drift only (``set_neighbours``). A
spike is a jump that comes straight back: a fault when it is a habit (``spike_count`` within
``spike_window``) or physically implausible (``spike_z`` step deviations and ``spike_rel`` of
its level) and most neighbours did not spike with it.

Flags (bit mask per series, see ``FLAGS``): the score is 1 when any fault flag is set.

>>> import numpy as np
>>> from cityvitals.watch.health import SensorHealthDetector
>>> det = SensorHealthDetector(valid_range=(0.0, 2.5))
>>> det.set_neighbours({0: [1, 2, 3], 1: [0, 2, 3], 2: [0, 1, 3], 3: [0, 1, 2]})
>>> rng = np.random.default_rng(0)
>>> for i in range(60):      # four pressure sensors, one point a minute
...     _ = det.update_many([0, 1, 2, 3], [60 * i] * 4, 0.4 + rng.normal(0, 0.005, 4))
>>> det.update_many([0, 1, 2, 3], [3600] * 4, [0.9, 0.4, 0.4, 0.4]).tolist()  # only sensor 0 jumps
[1.0, 0.0, 0.0, 0.0]
>>> det.faults(0)
['disagree']
>>> det.explain(1.0, series=0)
'sensor fault: disagree (jumped 0.51 (z = 80) while 0 of 3 neighbours moved with it)'
>>> _ = det.update_many([0, 1, 2, 3], [3660] * 4, [0.4] * 4)
>>> det.update_many([0, 1, 2, 3], [3720] * 4, [0.2, 0.2, 0.21, 0.2]).tolist()  # all drop: an event
[0.0, 0.0, 0.0, 0.0]
>>> det.events(0)
True
>>> det.check_stale(now=3720 + 600, series=[0]).tolist()   # 10 minutes without data
[True]
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from cityvitals.watch.base import VectorDetector, as_batch, dense

FLAGS = {"stale": 1, "flat": 2, "spike": 4, "drift": 8, "out_of_range": 16, "disagree": 32, "unit": 128}
EVENT = 64  # neighbours agree: a real change, not a fault
FAULT_MASK = sum(FLAGS.values())
# Unit mix-ups a sensor can make silently (km/h for m/s, mph for km/h, mg for ug, x10, x100):
# a jump whose ratio is one of these, both sides well clear of zero, is a unit fault.
UNIT_FACTORS = np.log(np.array([3.6, 1.609344, 1000.0, 10.0, 100.0]))
UNIT_TOL = 0.12  # on the log scale (12%)
SHARED = 128  # ``kbits``: the kind shares one regime across the city


class SensorHealthDetector(VectorDetector):
    name: ClassVar[str] = "health"
    FIELDS: ClassVar[dict[str, tuple[str, float, tuple[int, ...]]]] = {
        "n": ("int32", 0, ()),
        "last_ts": ("int64", 0, ()),
        "dt": ("float32", 0.0, ()),
        "last": ("float64", np.nan, ()),
        "before": ("float32", np.nan, ()),
        "dvar": ("float32", 0.0, ()),
        "jz": ("float32", 0.0, ()),
        "jump": ("float32", 0.0, ()),
        "flat": ("int16", 0, ()),
        "prep": ("float32", 0.0, ()),  # how often this series repeats its last value
        "moved": ("uint8", 0, ()),  # 1: has moved; 2: rests on its floor at times; 4: drifting at the last judgement
        "off": ("float32", 0.0, ()),
        "off_ref": ("float32", np.nan, ()),
        "off_sd": ("float32", 0.0, ()),
        "agree": ("int16", 0, ()),
        "jt": ("int64", -(2**62), ()),  # time of the last big jump
        "js": ("int8", 0, ()),  # its sign
        "pending": ("uint8", 0, ()),  # a jump whose verdict (fault or event) is not given yet
        "jb": ("float16", np.nan, ()),  # the value before that jump (coarse is enough: compared at 3 sd)
        "nspk": ("uint8", 0, ()),  # spikes seen lately x 32, decaying with ``spike_window`` (fits 1 KB)
        "lo": ("float32", -np.inf, ()),
        "hi": ("float32", np.inf, ()),
        "flags": ("uint8", 0, ()),
        "sticky": ("uint8", 0, ()),  # OR of flags since the last ``take_flags``
        "nnear": ("uint8", 0, ()),
        "dhold": ("uint16", 0, ()),  # seconds the drift condition has held in a row (capped)
        # bit i < 5: the kind accepts a unit ``UNIT_FACTORS[i]`` away (``set_units``); bit 7: the
        # kind shares one regime across the city (``set_shared``)
        "kbits": ("uint8", 0, ()),
        "nbs": ("float32", np.nan, ()),  # the neighbours' robust mean over the last hours (are they steady?)  # how many of its CSR entries are near neighbours (the rest: drift references)
    }

    def __init__(
        self, *, valid_range: Sequence[float] | None = None, stale_k: float = 3.0, flat_k: int = 10,
        jump_z: float = 6.0, agree_share: float = 0.5, drift_k: float = 4.0, warmup: int = 20,
        alpha: float = 0.05, drift_alpha: float = 0.01, agree_window: int = 0, confirm_after: int = 0,
        spike_count: float = 1.0, spike_window: int = 3600, flat_min_s: int = 0, drift_ref_n: int | None = None,
        spike_z: float = np.inf, spike_rel: float = 0.25, drift_hold_s: float = 0.0, drift_steady: float = np.inf,
        drift_every_s: int = 0,
        drift_fast_s: float = 1800.0, drift_slow_s: float = 8 * 3600.0, drift_min: float = 0.1,
    ):
        # drift: the relative offset to the neighbours smoothed over ``drift_fast_s`` against its
        # slow average over ``drift_slow_s`` (started after ``drift_ref_n`` points, default
        # ``5 * warmup``); a gap wider than ``drift_min`` (a share of the neighbours' level) and
        # than ``drift_k`` times its noise is a drift. ``drift_alpha`` is kept for old checkpoints.
        self.drift_ref_n = drift_ref_n
        self.drift_fast_s, self.drift_slow_s, self.drift_min = float(drift_fast_s), float(drift_slow_s), float(drift_min)
        # One-off glitches are part of every real series (and of the simulator's): a spike
        # fault is a *habit*, so ``spike_count`` spikes within about ``spike_window`` seconds
        # are needed; a stuck sensor is one flat for ``flat_min_s`` seconds, not a few points.
        # ... unless the one spike is physically implausible: a jump of ``spike_z`` times the
        # series' own step spread that comes straight back (a glitch of a healthy sensor is a
        # few quanta, a broken one's is tens of its usual steps)
        self.spike_count, self.spike_window, self.flat_min_s = spike_count, spike_window, flat_min_s
        self.spike_z, self.spike_rel = float(spike_z), float(spike_rel)
        # drift must hold ``drift_hold_s`` seconds in a row (a ramp keeps going; a ratio that
        # wanders for an hour at night, when flows are small, comes back)
        self.drift_hold_s, self.drift_steady = float(drift_hold_s), float(drift_steady)
        # drift moves over half-hours: judging it once per ``drift_every_s`` seconds of a
        # series' time (0: every point) keeps most of a step's work off most steps
        self.drift_every_s = int(drift_every_s)
        self.agree_window, self.confirm_after = agree_window, confirm_after
        self.valid_range = None if valid_range is None else [float(v) for v in valid_range]
        self.stale_k, self.flat_k, self.jump_z, self.agree_share = stale_k, flat_k, jump_z, agree_share
        self.drift_k, self.warmup, self.alpha, self.drift_alpha = drift_k, warmup, alpha, drift_alpha
        self._nb_ptr = np.zeros(1, dtype=np.int32)
        self._nb_idx = np.zeros(0, dtype=np.int32)
        super().__init__()
        self._defaults(0, self._cap)

    def config(self) -> dict[str, Any]:
        return {
            "valid_range": self.valid_range, "stale_k": self.stale_k, "flat_k": self.flat_k, "jump_z": self.jump_z,
            "agree_share": self.agree_share, "drift_k": self.drift_k, "warmup": self.warmup, "alpha": self.alpha,
            "drift_alpha": self.drift_alpha, "agree_window": self.agree_window, "confirm_after": self.confirm_after,
            "spike_count": self.spike_count, "spike_window": self.spike_window, "flat_min_s": self.flat_min_s,
            "drift_ref_n": self.drift_ref_n, "drift_fast_s": self.drift_fast_s, "drift_slow_s": self.drift_slow_s,
            "drift_min": self.drift_min, "spike_z": self.spike_z, "spike_rel": self.spike_rel,
            "drift_hold_s": self.drift_hold_s, "drift_steady": self.drift_steady, "drift_every_s": self.drift_every_s,
        }

    def _grow(self, need: int) -> None:
        old = self._cap
        super()._grow(need)
        if hasattr(self, "valid_range"):
            self._defaults(old, self._cap)

    def _defaults(self, lo: int, hi: int) -> None:
        if self.valid_range is not None:
            self.lo[lo:hi], self.hi[lo:hi] = self.valid_range
        ptr = self._nb_ptr
        if ptr.size < hi + 1:
            self._nb_ptr = np.concatenate([ptr, np.full(hi + 1 - ptr.size, ptr[-1], dtype=np.int32)])

    def _extra_bytes_per_series(self) -> int:
        return 4 + 4 * int(np.ceil(self._nb_idx.size / max(self._n, 1)))

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"nb_ptr": self._nb_ptr[: self._n + 1], "nb_idx": self._nb_idx}

    def _load_extra(self, data: Any) -> None:
        ptr = data["nb_ptr"]
        self._nb_ptr = np.concatenate([ptr, np.full(self._cap + 1 - ptr.size, ptr[-1], dtype=np.int32)]).astype(np.int32)
        self._nb_idx = data["nb_idx"].astype(np.int32)
        # (checkpoints from before ``kbits`` keep 0: no unit slip looked for under a full jump and
        # no shared regime, as before, for the series configured then)
        if "f_nnear" not in data:  # checkpoints from before drift references: every entry is a near neighbour
            self.nnear[: self._n] = np.minimum(np.diff(self._nb_ptr[: self._n + 1]), 255)

    # ---- configuration -------------------------------------------------
    def set_range(self, series: Any, lo: Any, hi: Any) -> None:
        s = np.asarray(series, dtype=np.int64).reshape(-1)
        self._touch(s)
        self.lo[s], self.hi[s] = lo, hi

    def set_units(self, series: Any, factors: Sequence[float]) -> None:
        """The conversion factors of the units the series' kind accepts (a slip into one of them is plausible).

        Why: a unit slip is looked for from half a jump on only where the kind has such a unit
        (a traffic-speed sensor can report mph, a crowd sensor cannot report km/h); elsewhere a
        chance ratio of a half-size jump is noise.
        """
        s = np.asarray(series, dtype=np.int64).reshape(-1)
        self._touch(s)
        lf = np.abs(np.log(np.asarray([f for f in factors if f and f > 0], dtype=np.float64)))
        bits = np.abs(lf[:, None] - UNIT_FACTORS[None, :]) < UNIT_TOL if lf.size else np.zeros((0, UNIT_FACTORS.size), bool)
        self.kbits[s] = (self.kbits[s] & SHARED) | int(sum(1 << i for i in np.flatnonzero(bits.any(axis=0))))

    def set_shared(self, series: Any, shared: bool = True) -> None:
        """Mark series whose kind shares one regime across the city (one network's demand, the weather).

        Why: drift needs the neighbours steady because a ratio to them wanders while each
        follows its own local cycle (roads emptying at night, each by its own factor); where
        all follow one curve (a water network's morning demand) the ratio holds through the
        ramp, and a drift that starts in it is seen there.
        """
        s = np.asarray(series, dtype=np.int64).reshape(-1)
        self._touch(s)
        self.kbits[s] = np.where(shared, self.kbits[s] | SHARED, self.kbits[s] & ~np.uint8(SHARED))

    def set_neighbours(self, mapping: Mapping[int, Sequence[int]],
                       references: Mapping[int, Sequence[int]] | None = None) -> None:
        """Neighbour lists (same kind, nearby), and drift references for series with too few of them.

        Neighbours judge jumps (fault or event) and drift; ``references`` (same kind, farther
        away: the district's or the city's) only drift, for a sensor with fewer than two
        neighbours: one neighbour cannot say which of the two moved, none says nothing, and a
        slow ramp of a sensor against its own history is hidden by the daily cycle on the
        first day. Both are stored as one CSR array per series, its neighbours first
        (``nnear`` of them), so the checks stay vectorised.
        """
        references = references or {}
        keys = set(mapping) | set(references)
        allv = [int(v) for m in (mapping, references) for vs in m.values() for v in vs]
        top = max([int(k) for k in keys] + allv + [-1]) + 1
        rows = [(int(k), int(v), False) for k, vs in mapping.items() for v in vs]
        rows += [(int(k), int(v), True) for k, vs in references.items() for v in vs if v not in mapping.get(k, ())]
        arr = np.array([r[:2] for r in rows], dtype=np.int64).reshape(-1, 2)
        order = np.argsort(arr[:, 0], kind="stable")
        self.set_neighbour_rows(arr[order, 0], arr[order, 1], np.array([r[2] for r in rows], dtype=bool)[order], top)

    def set_neighbour_rows(self, series: np.ndarray, near: np.ndarray, ref: np.ndarray, top: int | None = None) -> None:
        """``set_neighbours`` from rows: a series, one of its neighbours (``ref``: a drift
        reference), ordered by series and within one, near neighbours first, each list in its
        order. A caller with thousands of series builds these with array operations (the
        watch's runner: joins) where a Python list per series cost a fifth of a second for
        20,000. ``top``: one past the highest series they name (computed when not given)."""
        series, near = np.asarray(series, dtype=np.int64), np.asarray(near, dtype=np.int64)
        ref = np.asarray(ref, dtype=bool)
        if top is None:
            top = int(max(series.max(initial=-1), near.max(initial=-1))) + 1
        self._touch(np.array([top - 1]) if top > 0 else np.zeros(0, dtype=np.int64))
        counts = np.bincount(series, minlength=self._cap)
        self.nnear[:] = np.minimum(np.bincount(series[~ref], minlength=self._cap), 255)
        ptr = np.zeros(self._cap + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        self._nb_ptr, self._nb_idx = ptr.astype(np.int32), near.astype(np.int32)
        self._plan_cache = None

    # ---- per point -----------------------------------------------------
    def _point_flags(self, idx, t, x):
        ix = dense(idx)  # views instead of gathers when every series is in the round
        n = self.n[ix]
        last = self.last[ix]
        has_last = ~np.isnan(last)
        d = np.where(has_last, x - last, 0.0)
        dsd = np.sqrt(self.dvar[ix].astype(np.float64)) + 1e-9 * (1 + np.abs(np.nan_to_num(last)))
        jz = d / dsd
        warm = n >= self.warmup
        flags = np.zeros(idx.size, dtype=np.uint8)
        flags |= np.where((x < self.lo[ix]) | (x > self.hi[ix]), FLAGS["out_of_range"], 0).astype(np.uint8)
        flat = np.where(has_last & (d == 0), self.flat[ix] + 1, 0)
        # stuck: a run of equal values that this series' own repeat rate makes very unlikely
        # (quantised series such as rainfall or status codes repeat all the time)
        p = np.clip(self.prep[ix].astype(np.float64), 1e-6, 0.999)
        unlikely = flat * np.log(p) < np.log(1e-6)
        # resting at the physical floor or ceiling (no rain, no gas, status 0, saturated
        # humidity) is a state, not a fault
        long_enough = flat * np.maximum(self.dt[ix].astype(np.float64), 1.0) >= self.flat_min_s
        stuck = warm & (flat >= self.flat_k) & ((self.moved[ix] & 1) > 0) & unlikely & long_enough
        # ... but only for series that rest there at times: one that never touched its floor in
        # its first ``warmup`` points and now sits flat on it has stuck (a unit slip to 0)
        at_floor_ok = (x == self.lo[ix]) & ((self.moved[ix] & 2) > 0)
        stuck &= ~at_floor_ok & (x != self.hi[ix])
        flags |= np.where(stuck, FLAGS["flat"], 0).astype(np.uint8)
        # spike: the previous step was a big jump and this one comes straight back
        prev_jz = self.jz[ix]
        back = np.abs(x - self.before[ix]) < 0.25 * np.abs(last - self.before[ix])
        spike = warm & (np.abs(prev_jz) >= self.jump_z) & (np.sign(jz) == -np.sign(prev_jz)) & back
        step = np.maximum(self.dt[ix].astype(np.float64), 1.0)
        nspk = self.nspk[ix] / 32.0 * np.exp(-step / max(self.spike_window, 1)) + spike
        # a wrong unit: a big jump by a known conversion factor, both values clear of zero
        # (checked on the rare big jumps only: this runs for every point)
        # A sensor with neighbours is a candidate from half a jump on: a slow road read in mph
        # at night drops by 38%, about 6 step deviations (seed 4 at 400 sensors: 5.98), and the
        # neighbours' verdict ten minutes later (still displaced from them) keeps chance matches out
        ufac = self.kbits[ix] & ~np.uint8(SHARED)
        half = np.where((self.nnear[ix] > 0) & (ufac > 0), 0.5, 1.0) if self._nb_idx.size else 1.0
        big_jump = np.flatnonzero(warm & has_last & (np.abs(jz) >= self.jump_z * half))
        if big_jump.size:
            xa, la, sa = np.abs(x[big_jump]), np.abs(last[big_jump]), dsd[big_jump]
            big, small = np.maximum(xa, la), np.minimum(xa, la)
            with np.errstate(divide="ignore", invalid="ignore"):
                lr = np.abs(np.log(xa / la))
            # the tolerance widens with the step noise relative to the smaller side (a light wind
            # of 2 m/s read as 8.3 km/h is 4.2x, not 3.6x)
            tol = UNIT_TOL + sa / np.maximum(small, 1e-12)
            near = np.abs(lr[:, None] - UNIT_FACTORS[None, :]) < np.minimum(tol, 0.25)[:, None]
            # below a full jump only the factors of the kind's own units count
            allowed = (ufac[big_jump, None].astype(np.int64) >> np.arange(UNIT_FACTORS.size)[None, :]) & 1 > 0
            near &= allowed | (np.abs(jz[big_jump]) >= self.jump_z)[:, None]
            # x10 and more: the small side may sit near zero; 3.6 and 1.6: both sides must be clear of it
            clear = np.where(near[:, 2:].any(axis=1), (big > 3 * sa) & (small > 0), small > 3 * sa)
            unit = near.any(axis=1) & clear
            flags[big_jump[unit]] |= np.uint8(FLAGS["unit"])
        # ``nspk`` decays continuously, so "``spike_count`` spikes within ``spike_window``" is a
        # sum of at least 1 + (count - 1) / e (the older ones decayed by at most a window)
        habit = nspk >= 1.0 + (self.spike_count - 1.0) * np.exp(-1.0) - 1e-6
        # implausible: far outside its step spread *and* a large share of its level
        size = np.abs(np.nan_to_num(last - self.before[ix]))
        implausible = (np.abs(prev_jz) >= self.spike_z) & (size >= self.spike_rel * np.abs(np.nan_to_num(self.before[ix])))
        # a series that rests on repeated values or on its floor (rain, a dry pond, no gas)
        # rises and falls in a step or two by nature: no spike verdict there
        resting = (self.prep[ix] >= 0.5) | (self.before[ix] == self.lo[ix])
        flags |= np.where(spike & (habit | implausible) & ~resting, FLAGS["spike"], 0).astype(np.uint8)
        return flags, jz, d, flat, warm, nspk, spike

    def _score(self, idx, t, x):
        flags = self._point_flags(idx, t, x)[0]
        return (flags & FAULT_MASK > 0).astype(np.float64)

    def _learn(self, idx, t, x):
        ok = ~np.isnan(x)
        if not ok.all():  # three gathers saved on the usual round without gaps
            idx, t, x = idx[ok], t[ok], x[ok]
        ix = dense(idx)
        flags, jz, d, flat, warm, nspk, _spike = self._point_flags(idx, t, x)
        self.nspk[ix] = np.clip(np.floor(nspk * 32.0), 0, 255).astype(np.uint8)
        n = self.n[ix]
        a = np.maximum(self.alpha, 1.0 / (n + 1.0))
        gap = (t - self.last_ts[ix]).astype(np.float64)
        self.dt[ix] = np.where(n == 0, 0.0, np.where(self.dt[ix] == 0, gap, (1 - a) * self.dt[ix] + a * gap))
        dsd = np.sqrt(self.dvar[ix])
        dl = np.where(warm, np.clip(d, -4 * dsd, 4 * dsd), d)
        self.dvar[ix] = np.where(n >= 1, (1 - a) * self.dvar[ix] + a * dl * dl, self.dvar[ix])
        self.moved[ix] |= (d != 0).astype(np.uint8) | np.where((x == self.lo[ix]) & (n < self.warmup), 2, 0).astype(np.uint8)
        # learn the repeat rate from short repeats only, so a stuck run does not teach itself
        rep = (d == 0) & ~np.isnan(self.last[ix]) & (self.flat[ix] < self.flat_k)
        ar = np.maximum(0.01, 1.0 / (n + 1.0))
        self.prep[ix] = np.where(n >= 1, (1 - ar) * self.prep[ix] + ar * rep, self.prep[ix])
        self.before[ix] = self.last[ix]
        self.last[ix] = x
        self.last_ts[ix] = t
        self.jz[ix] = np.where(warm, jz, 0.0)
        self.jump[ix] = d
        self.flat[ix] = np.minimum(flat, 32000)
        self.flags[ix] = flags
        # with neighbours, a unit-factor jump is only a candidate until they have had their say
        # (rain can triple in a minute across a whole city): see ``_neighbour_pass``
        has_nb = self.nnear[ix] > 0
        # ... and so is a spike (neighbours that spiked with it make it an event)
        self.sticky[ix] |= np.where(has_nb, flags & ~np.uint8(FLAGS["unit"] | FLAGS["spike"]), flags).astype(np.uint8)
        self.n[ix] = n + 1

    def update_many(self, series: Any, ts: Any, x: Any) -> np.ndarray:
        s, t, v = as_batch(series, ts, x)
        prev = self.last_ts.copy() if self._nb_idx.size and self.drift_every_s > 0 else None
        super().update_many(s, t, v)
        if self._nb_idx.size:
            self._neighbour_pass(np.flatnonzero(np.bincount(s)), prev)  # unique ids; bincount beats np.unique here
        return (self.flags[s] & FAULT_MASK > 0).astype(np.float64)

    def _update(self, idx, t, x):
        self._learn(idx, t, x)
        return (self.flags[idx] & FAULT_MASK > 0).astype(np.float64)

    def _plan(self, u: np.ndarray):
        """The gather plan of a step (series with neighbours, their edge rows and columns).

        Why cached: a city sends every series at every step, so the plan of the last step
        is almost always the plan of this one (a 10^5-element comparison instead of five
        10^5-edge repeats). ``set_neighbours`` drops it.
        """
        c = getattr(self, "_plan_cache", None)
        if c is not None and c[0].size == u.size and np.array_equal(c[0], u):
            return c[1]
        counts = (self._nb_ptr[u + 1] - self._nb_ptr[u]).astype(np.int64)
        has = counts > 0
        uu, counts = u[has], counts[has]
        rows = np.repeat(np.arange(uu.size), counts)
        start = np.cumsum(counts) - counts
        within = np.arange(rows.size) - np.repeat(start, counts)
        cols = self._nb_idx[np.repeat(self._nb_ptr[uu].astype(np.int64), counts) + within]
        # every series with the same number of entries (k nearest): sums over a reshape, not bincounts
        k = int(counts[0]) if counts.size and counts.min() == counts.max() else 0
        # ... laid out one neighbour rank per row, so the sums run over contiguous rows
        cols_t = cols.reshape(-1, k).T.copy() if k else None
        plan = (uu, counts, rows, start, within, cols, k, cols_t)
        self._plan_cache = (u.copy(), plan)
        return plan

    def _neighbour_pass(self, u: np.ndarray, prev: np.ndarray | None = None) -> None:
        u, counts, rows, start, within, cols, k, cols_t = self._plan(u)
        if u.size == 0:
            return
        iu = dense(u)  # views instead of gathers when every series has neighbours

        def edges(sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Group rows and edge positions of the series ``u[sel]``."""
            cs = counts[sel]
            rs = np.repeat(np.arange(sel.size), cs)
            return rs, np.repeat(start[sel], cs) + (np.arange(rs.size) - np.repeat(np.cumsum(cs) - cs, cs))

        def gsum(v: np.ndarray) -> np.ndarray:
            return v.reshape(-1, k).sum(axis=1) if k else np.bincount(rows, weights=v, minlength=u.size)

        # jumps are judged by the near neighbours only (the first ``nnear`` entries); drift by all
        nn = self.nnear[iu].astype(np.int64)
        ju = self.jz[iu]
        now_u = self.last_ts[iu]
        cand = (self.flags[iu] & FLAGS["unit"]) > 0
        jumped = (np.abs(ju) >= self.jump_z) | (cand & (np.abs(ju) >= 0.5 * self.jump_z))
        # a jump straight back to where a pending jump started is the end of a glitch:
        # it settles that jump (no verdict needed) instead of opening a new one
        gap = 0.5 * self.jump_z * np.sqrt(self.dvar[iu].astype(np.float64))
        back = jumped & (self.pending[iu] > 0) & (np.sign(ju) == -self.js[iu]) & (
            np.abs(self.last[iu] - self.jb[iu].astype(np.float64)) <= gap)  # (<=: exactly back, even with no spread yet)
        if back.any():
            self.pending[iu] = np.where(back, 0, self.pending[iu])
            jumped &= ~back
        any_jump = bool(jumped.any())
        if any_jump:
            self.jt[iu] = np.where(jumped, now_u, self.jt[iu])
            self.js[iu] = np.where(jumped, np.sign(ju), self.js[iu]).astype(np.int8)
            self.jb[iu] = np.where(jumped, self.before[iu], self.jb[iu])
        pending = np.where(jumped, np.where(cand, 2, 1), self.pending[iu])
        # Verdict once ``confirm_after`` has passed, so neighbours that follow a few minutes
        # later (a wave through the city, sensors reporting out of phase) still count.
        due = (pending > 0) & (now_u - self.jt[iu] >= self.confirm_after)
        # agreement is counted only where a verdict is due or a spike came back (rare: the
        # per-edge gathers are the costliest part of a step)
        agree = np.zeros(u.size)
        shared_n = np.zeros(u.size)
        sel = np.flatnonzero(due | back)
        if sel.size:
            rs, es = edges(sel)
            cc, us = cols[es], u[sel][rs]
            near = within[es] < nn[sel][rs]
            step = 2 * np.maximum(self.dt[us], 1)
            win = np.maximum(self.agree_window, step)
            same_jump = (np.abs(self.jt[cc] - self.jt[us]) <= win) & (self.js[cc] == self.js[us]) & near
            recent = np.abs(self.last_ts[cc] - self.last_ts[us]) <= step
            moving = recent & (np.sign(self.jz[cc]) == self.js[us]) & (np.abs(self.jz[cc]) >= self.jump_z / 2) & near
            agree[sel] = np.bincount(rs, weights=same_jump | moving, minlength=sel.size)
            shared_n[sel] = np.bincount(rs, weights=same_jump, minlength=sel.size)
        # the neighbours' mean is needed where drift is judged this step and where a jump
        # verdict is due
        every = self.drift_every_s
        if every > 0 and prev is not None:
            p_u = prev[u] if prev.size > int(u.max()) else np.zeros(u.size, dtype=np.int64)
            judge = (p_u == 0) | (now_u // every != p_u // every)
        else:
            judge = np.ones(u.size, dtype=bool)
        need = np.flatnonzero(judge | due)
        all_ = need.size == u.size
        nb_mean = np.full(u.size, np.nan)
        wsum = np.zeros(u.size)
        # healthy neighbours only, so one broken sensor does not make its neighbours "drift"
        if k:
            ct = cols_t if all_ else cols_t[:, need]
            last_c = self.last[ct]
            w = ((self.flags[ct] & FAULT_MASK) == 0) & ~np.isnan(last_c)
            wsum[need] = w.sum(axis=0, dtype=np.float64)
            # a robust mean of the neighbours: one neighbour in an incident (a tilted cover, a
            # leak) must not make all the others look as if they drifted
            nb_mean[need] = _robust_mean_t(last_c, w)
        else:
            rs, es = (rows, np.arange(rows.size)) if all_ else edges(need)
            last_c = self.last[cols[es]]
            w = ((self.flags[cols[es]] & FAULT_MASK) == 0) & ~np.isnan(last_c)
            wsum[need] = np.bincount(rs, weights=w, minlength=need.size)
            nb_mean[need] = _robust_group_mean(rs, last_c, w, need.size)
        ok_nb = (wsum > 0) & ~np.isnan(self.last[iu])
        # relative to the geometric mean of its own and the neighbours' level, each plus a few
        # steps of noise (a series near 0 is not "infinitely" off): symmetric (x3 and /3 give the
        # same size) and unbounded, where the larger of the two levels capped an upward drift's
        # offset below 1 (an isolated pm2.5 sensor read 3.5x its far references at +0.72, under
        # six of its spreads)
        nz = 3.0 * np.sqrt(self.dvar[iu].astype(np.float64)) + 1e-9
        den = np.sqrt((np.abs(nb_mean) + nz) * (np.abs(np.nan_to_num(self.last[iu])) + nz))
        # (capped at 2, about x5: beyond that it is a step or a unit slip, the jump checks' business,
        # and four hours of a slip by 1000 must not drag the day-long reference with them)
        rel_now = np.where(ok_nb, np.clip((self.last[iu] - nb_mean) / den, -2.0, 2.0), np.nan)
        if due.any():
            self.agree[iu] = np.where(due, agree, self.agree[iu]).astype(np.int16)
        # without near neighbours there is no one to agree: no jump verdict, but the jump is
        # settled all the same (a pending jump holds the drift spread still)
        settled = due
        due = due & (nn > 0)
        # (verdicts, jumps and pinned sensors are rare: their work is done only on the steps
        # where some series has one, with the same outcome as doing it for all every step)
        any_due = bool(due.any())
        if any_due:
            event = due & (agree >= self.agree_share * nn)
            # a jump that has already come back (a one-off glitch) is no disagreement: only a
            # sensor still displaced when the verdict is due (a step, a wrong unit) is at fault
            # (strictly: a rain gauge back at exactly 0 after its first drop of the day, with no
            # step spread learnt yet, is not displaced)
            displaced = np.abs(self.last[iu] - self.jb[iu].astype(np.float64)) > 0.5 * self.jump_z * np.sqrt(self.dvar[iu])
            # ... and displaced from its neighbours: its offset to them now is off its slow average
            # offset by more than the usual spread, so a daily change the neighbours make a few
            # minutes apart is not a fault (while a return from a drift, alone, still is)
            sd0 = self.off_sd[iu]
            # (a jump by a unit factor is judged against the slow average itself: the fast one has
            # taken in a third of the step by the time the verdict is due)
            ref0 = np.where((pending == 2) & ~np.isnan(self.off_ref[iu]), self.off_ref[iu], self.off[iu])
            off_far = ~(sd0 > 0) | ~(np.abs(rel_now - ref0) <= self.drift_k * sd0)
            # ... or, for a unit candidate, its level moved by a factor its neighbours' did not
            # (against their level of the last hours): the offset's noise floor (three step
            # deviations) swallows most of a light, gusty wind's x3.6 slip to km/h (1.4 m/s with
            # one neighbour: 0.88 against a bar of 0.94, held-out seed 9), a ratio does not
            unit_c = pending == 2
            if unit_c.any():
                jb = self.jb[iu].astype(np.float64)
                nbs = self.nbs[iu].astype(np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    own = np.log(np.abs(self.last[iu] / jb))
                    theirs = np.log(np.abs(nb_mean / nbs))
                    alone = unit_c & ok_nb & (np.abs(own) >= np.log(1.5)) & (np.abs(own - theirs) >= 0.5 * np.abs(own))
                off_far |= np.nan_to_num(alone, nan=False).astype(bool)
            displaced &= off_far
            fault = due & ~event & displaced
        if any_due or any_jump or bool(settled.any()):
            self.pending[iu] = np.where(settled, 0, pending).astype(np.uint8)
        fl = self.flags[iu] & ~np.uint8(FLAGS["unit"])
        # pinned at the top of its range (saturated humidity, a full gauge) is a state when the
        # neighbours are up there too, and a fault when they are well below it
        last_u = self.last[iu].astype(np.float64)
        hi = self.hi[iu].astype(np.float64)
        pinned = last_u == hi
        if pinned.any():
            pinned &= np.isfinite(hi) & (self.flat[iu] >= self.flat_k) & (
                self.flat[iu] * np.maximum(self.dt[iu].astype(np.float64), 1.0) >= self.flat_min_s)
            lone = pinned & ok_nb & (hi - nb_mean > 0.05 * np.maximum(np.abs(hi), 1e-9)) & (hi - nb_mean > self.drift_k * np.sqrt(
                self.dvar[iu].astype(np.float64)))
            fl = np.where(lone, fl | FLAGS["flat"], fl)
        if any_due:
            fl = np.where(fault, fl | np.where(pending == 2, FLAGS["unit"], FLAGS["disagree"]), fl)
            fl = np.where(event, (fl | EVENT) & ~np.uint8(FLAGS["spike"]), fl)
        # a spike that came back now: shared by most neighbours (they jumped the same way
        # within the agreement window) it was an event, not a glitch
        if back.any():
            shared = shared_n >= self.agree_share * nn
            fl = np.where(back & shared & (nn > 0), (fl | EVENT) & ~np.uint8(FLAGS["spike"]), fl)
        # drift: a steady divergence from the neighbours' robust mean that they do not share.
        # The offset is taken *relative* to the neighbours' level (flows, loads and noise differ
        # in scale from one sensor to the next, and their gaps grow and shrink with the daily
        # cycle; their ratio barely moves), smoothed over ``drift_fast_s`` seconds and compared
        # with a slow average of itself over ``drift_slow_s``: a ramp opens a growing gap
        # between the two from its first hours, a step (a jump, judged by ``disagree``) or an
        # event the neighbours share does not. So drift is seen on the first day, with no
        # day-long reference to wait for.
        ix = np.flatnonzero(judge)
        # between judgements a series keeps its last verdict (bit 4 of ``moved``)
        if ix.size == u.size:  # all judged this step (the default): no verdict kept, no gathers
            fl = self._drift(u, rel_now, nb_mean, wsum, ok_nb, den, fl, ix, edges, cols, within, nn, counts)
        else:
            kept = ~judge & ((self.moved[iu] & 4) > 0)
            fl = np.where(kept, fl | FLAGS["drift"], fl)
            if ix.size:
                fl[ix] = self._drift(u[ix], rel_now[ix], nb_mean[ix], wsum[ix], ok_nb[ix], den[ix], fl[ix], ix, edges,
                                     cols, within, nn, counts)
        self.flags[iu] = fl.astype(np.uint8)
        self.sticky[iu] |= self.flags[iu]

    def _drift(self, u, rel_now, nb_mean, wsum, ok_nb, den, fl, ix, edges, cols, within, nn, counts):
        """Judge drift for the series ``u`` (positions ``ix`` in the step's plan); returns their flags."""
        iu = dense(u)
        n = self.n[iu]
        # the time since the last judgement: a step, or ``drift_every_s`` when judged less often
        step_s = np.maximum(self.dt[iu].astype(np.float64), max(self.drift_every_s, 1.0))
        dts = step_s
        af = 1.0 - np.exp(-step_s / max(self.drift_fast_s, 1.0))
        aslow = 1.0 - np.exp(-step_s / max(self.drift_slow_s, 1.0))
        old = self.off[iu].astype(np.float64)
        off = np.where((n <= 1) | np.isnan(old), rel_now, (1 - af) * old + af * rel_now)
        off = np.where(ok_nb, off, old)
        ref = self.off_ref[iu].astype(np.float64)
        fresh = np.isnan(ref)
        ref_ready = n >= (5 * self.warmup if self.drift_ref_n is None else self.drift_ref_n)
        new_ref = np.where(fresh, np.where(ref_ready & ok_nb, off, np.nan), np.where(ok_nb, (1 - aslow) * ref + aslow * off, ref))
        # the spread of the relative offset around its smoothed value, learnt winsorised so a
        # step or a drift does not widen its own yardstick
        g = np.where(n < 5 * self.warmup, 0.05, 0.005)
        if self.drift_every_s > 0:  # the same rate per second when judged less often than every point
            g = 1.0 - (1.0 - g) ** (step_s / np.maximum(self.dt[iu].astype(np.float64), 1.0))
        dev = np.where(ok_nb, rel_now - off, 0.0)
        lim = np.where((n < self.warmup) | ~(self.off_sd[iu] > 0), np.inf, 3.0 * self.off_sd[iu])
        dev = np.clip(np.nan_to_num(dev), -lim, lim)
        sd = np.sqrt((1 - g) * np.nan_to_num(self.off_sd[iu]) ** 2 + g * dev**2)
        # ... nor does a jump while its verdict is pending: in a young series (fast learning) ten
        # minutes of a unit slip had widened the spread fivefold by the time the verdict was due,
        # and the slip no longer looked displaced (mph on a traffic-speed sensor, seed 3)
        sd = np.where(self.pending[iu] > 0, np.nan_to_num(self.off_sd[iu]), sd)
        self.off[iu], self.off_ref[iu], self.off_sd[iu] = off, new_ref, sd
        # the neighbours' level over the last ``4 * drift_fast_s``: a ratio to them means
        # something only while they hold steady (traffic falls by a factor at night, each road
        # by its own: its ratio to the others wanders for hours without any fault)
        nbs_old = self.nbs[iu].astype(np.float64)
        anb = 1.0 - np.exp(-dts / max(4 * self.drift_fast_s, 1.0))
        nbs = np.where(ok_nb, np.where(np.isnan(nbs_old), nb_mean, (1 - anb) * nbs_old + anb * nb_mean), nbs_old)
        self.nbs[iu] = nbs
        steady = np.abs(nb_mean - nbs) <= self.drift_steady * (np.abs(nbs) + 3.0 * np.sqrt(self.dvar[iu].astype(np.float64)))
        steady |= (self.kbits[iu] & SHARED) > 0
        # a recent jump is a step, not a ramp: ``disagree`` (or an event) speaks for it
        calm = self.last_ts[iu] - self.jt[iu] > 2 * self.drift_fast_s
        # with one neighbour a divergence cannot say which of the two moved; a series that rests
        # on repeated values (rain at 0, a dry pond, a status code) moves in steps, not ramps
        calm &= (wsum >= 2) & (self.prep[iu] < 0.5) & steady
        gap_fs = np.abs(off - new_ref)
        drift = ~np.isnan(new_ref) & calm & (gap_fs > np.maximum(self.drift_min, self.drift_k * sd))
        held = np.where(drift, self.dhold[iu].astype(np.float64) + dts, 0.0)
        self.dhold[iu] = np.minimum(held, 65535).astype(np.uint16)
        drift &= held >= self.drift_hold_s
        # many moving together is an event: a neighbour whose own offset opened the same way
        # (an accident slowing a whole corridor) clears the verdict; so does a neighbour already
        # called drifting (its drift, or leaving it out of the mean, opens a mirror gap here)
        if drift.any():
            rs, es = edges(ix)
            cc = cols[es]
            g_cols = np.nan_to_num(self.off[cc].astype(np.float64) - self.off_ref[cc])
            g_u = np.nan_to_num(off - new_ref)[rs]
            shared = (np.sign(g_cols) == np.sign(g_u)) & (np.abs(g_cols) > 0.5 * self.drift_min)
            nb_drift = (self.flags[cc] & FLAGS["drift"]) > 0
            # ... and a near neighbour whose own offset opened further, the other way, is the one
            # that moved: it left the mean while it was off and opens a mirror gap here when it
            # comes back (a pressure sensor beside a burst main, as the zone's pressure returned)
            mirror = (np.sign(g_cols) == -np.sign(g_u)) & (np.abs(g_cols) > np.abs(g_u))
            nb_drift |= mirror & (within[es] < nn[ix][rs])
            # ... one near neighbour is enough; far references (a district or two away) each
            # have their own incidents, so it takes most of them
            near_e = within[es] < nn[ix][rs]
            by_near = np.bincount(rs, weights=(shared | nb_drift) & near_e, minlength=ix.size)
            by_ref = np.bincount(rs, weights=(shared | nb_drift) & ~near_e, minlength=ix.size)
            n_ref = counts[ix] - nn[ix]
            drift &= (by_near == 0) & ~((n_ref > 0) & (by_ref >= self.agree_share * n_ref))
        self.moved[iu] = np.where(drift, self.moved[iu] | 4, self.moved[iu] & ~np.uint8(4)).astype(np.uint8)
        return np.where(drift, fl | FLAGS["drift"], fl)

    # ---- queries -------------------------------------------------------
    def check_stale(self, now: int, series: Any = None) -> np.ndarray:
        """True where a series has had no data for ``stale_k`` of its usual intervals."""
        s = np.arange(self._n) if series is None else np.asarray(series, dtype=np.int64)
        dt = self.dt[s].astype(np.float64)
        stale = (self.n[s] > 1) & (dt > 0) & (now - self.last_ts[s] > self.stale_k * dt)
        self.flags[s] = np.where(stale, self.flags[s] | FLAGS["stale"], self.flags[s] & ~np.uint8(FLAGS["stale"]))
        return stale

    def take_flags(self) -> np.ndarray:
        """Flags raised since the last call (for every series), then forget them."""
        out = self.sticky[: self._n].copy()
        self.sticky[: self._n] = 0
        return out

    def faults(self, series: int) -> list[str]:
        f = int(self.flags[series])
        return [name for name, bit in FLAGS.items() if f & bit]

    def events(self, series: int) -> bool:
        """Did the last point move together with the neighbours (a real event, not a fault)?"""
        return bool(self.flags[series] & EVENT)

    def explain(self, score: float, *, series: int = 0) -> str:
        faults = self.faults(series)
        if not faults:
            if self.events(series):
                return f"moved with {int(self.agree[series])} neighbours: a real change, not a sensor fault"
            return "sensor healthy"
        why = []
        for f in faults:
            if f == "disagree":
                k = int(self.nnear[series])
                why.append(
                    f"jumped {float(self.jump[series]):.2g} (z = {float(self.jz[series]):.2g}) "
                    f"while {int(self.agree[series])} of {k} neighbours moved with it"
                    if self.jt[series] == self.last_ts[series] else
                    f"jumped alone; {int(self.agree[series])} of {k} neighbours moved with it"
                )
            elif f == "out_of_range":
                why.append(f"value {float(self.last[series]):.4g} outside [{float(self.lo[series]):.4g}, {float(self.hi[series]):.4g}]")
            elif f == "flat":
                why.append(f"same value {int(self.flat[series]) + 1} times in a row")
            elif f == "stale":
                why.append(f"no data for over {self.stale_k:g} usual intervals of {float(self.dt[series]):.0f} s")
            elif f == "drift":
                why.append(f"offset from the neighbours' level moved from {100 * float(self.off_ref[series]):+.0f}% "
                           f"to {100 * float(self.off[series]):+.0f}% while they held steady")
            elif f == "spike":
                why.append("repeated one-point spikes")
            elif f == "unit":
                why.append(f"jumped by a unit-conversion factor (last step {float(self.jump[series]):.3g})")
        return f"sensor fault: {', '.join(faults)} ({'; '.join(why)})"



def _robust_mean_t(vals: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``_robust_group_mean`` for groups of equal size laid out as columns: ``vals[j, g]`` is member j of group g.

    >>> _robust_mean_t(np.array([[1.0, 4.0], [1.2, np.nan], [0.8, 2.0], [60.0, 3.0]]),
    ...                np.array([[1, 1], [1, 0], [1, 1], [1, 1]], bool)).round(2).tolist()
    [1.0, 3.0]
    """
    v = np.where(w, vals, 0.0)
    cnt = np.maximum(w.sum(axis=0), 1)
    mean = v.sum(axis=0) / cnt
    dev = np.abs(v - mean) * w
    mad = dev.sum(axis=0) / cnt
    keep = w & (dev <= 1.5 * mad + 1e-12)
    kc = keep.sum(axis=0)
    out = (v * keep).sum(axis=0) / np.maximum(kc, 1)
    return np.where(kc > 0, out, mean)


def _robust_group_mean(rows: np.ndarray, vals: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """Mean per group of the weighted values, leaving out those far from it (0 for empty groups).

    Far: more than 1.5 x the group's mean absolute deviation from the group's mean, so one
    outlier among a handful of neighbours does not move the result (three bincounts; a
    sorted median costs a sort per step).

    >>> _robust_group_mean(np.array([0, 0, 0, 0, 1]), np.array([1.0, 1.2, 0.8, 60.0, 4.0]), np.ones(5, bool), 3).round(2).tolist()
    [1.0, 4.0, 0.0]
    """
    wf = w.astype(np.float64)
    v = np.where(w, vals, 0.0)
    cnt = np.bincount(rows, weights=wf, minlength=n)
    mean = np.bincount(rows, weights=v, minlength=n) / np.maximum(cnt, 1)
    dev = np.abs(v - mean[rows]) * wf
    mad = np.bincount(rows, weights=dev, minlength=n) / np.maximum(cnt, 1)
    keep = wf * (dev <= 1.5 * mad[rows] + 1e-12)
    kc = np.bincount(rows, weights=keep, minlength=n)
    out = np.bincount(rows, weights=v * keep, minlength=n) / np.maximum(kc, 1)
    return np.where(kc > 0, out, mean)
