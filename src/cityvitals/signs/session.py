"""The live signs stage's memory: bucket partials kept between runs (``SignsSession``).

Why: an incremental run (``compute_signs``) recomputes each window that new readings
touched from *all* its stored readings. In a server that runs the stage every few
seconds, that re-reads the whole current hour (day) of every hourly (daily) indicator on
each run: with 20,000 sensors reporting once a minute, up to 1.2 million rows for one
hourly indicator at the end of the hour, for a few thousand new ones.

A window is a combination of per-slide-bucket partial aggregates (``windows.Partials``:
count, sum of the transformed value, max, min), and those combine exactly when readings
are added. A session keeps them per (indicator, series, bucket) for the buckets that open
windows still need; each run reads only the readings stored since the session's last run
(by ``ingested_at``, never past a batch still in flight: see ``readings.settled``), merges
their partials in, and combines the touched windows from the held partials with the same
code a recompute uses (``windows.windows_from``). Everything after the window values --
levels, derived indicators, roll-up, health snapshot, the stage's state -- is
``engine._compute`` and ``compute_signs`` as for every other run.

What the session serves, and what it leaves to the store path (``engine._store_windows``,
which reads every reading of the windows, as before):

- aggregations whose partials merge (``mean``, ``sum``, ``count``, ``max``, ``min``,
  ``leq``, ``count_eq``, ``count_ge``, ``share_ge``, ``share_le``), with or without
  ``sensor_combine`` (a series is then a unit and sensor), ``hours``, ``min_count`` and
  sliding windows; ``last`` is left to the store path (two sensors of a unit reporting the
  same instant are told apart by row order, which partials do not keep);
- an indicator's first touched run fills its partials from the store once: every unit's
  readings of its kinds from the earliest window the run touches, stored by the run's
  instant (``cover``: from that bucket on, the session has every reading of every unit);
- windows that start before ``cover`` (late readings for windows still open, after a start
  or a restart) are read from the store, as before;
- buckets no open window needs (``window_start + size + lateness <= watermark`` for the
  latest window holding them) are dropped after each run, and ``cover`` moves up with them.

A session is only valid while the stage's stored cursor (``sign_state.last_ingested_at``)
is the one it advanced itself; any other value (a restart, another process that ran the
stage, a run that failed half way) makes it forget everything, and the next run fills it
from the store again. Results are those of ``compute_signs`` without a session, up to the
order in which floating-point sums are added (a bucket's sum is built run by run instead
of in one pass): tests/test_signs_session.py holds them to a relative 1e-9.

Not seen by a running session: readings removed from the store (``db retention`` or an
erasure reaching into windows still open) stay in its partials until their buckets drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from cityvitals.signs.catalog import Catalog, Indicator
from cityvitals.signs.dense import factorize, partition
from cityvitals.signs.windows import _NEEDS, US, Partials, bucket_partials, windows_from

_MAX_US = 2**62
MERGEABLE = frozenset({"mean", "sum", "count", "max", "min", "leq", "count_eq", "count_ge", "share_ge", "share_le"})
"""Aggregations the session serves from partials; the others are read from the store."""
_FILL = {"c": 0, "s": 0.0, "mx": -np.inf, "mn": np.inf}


def serves(ind: Indicator) -> bool:
    """Whether the session keeps partials for ``ind`` (else its windows come from the store)."""
    return ind.input_kind == "sensor" and ind.agg in MERGEABLE


def _slide(ind: Indicator) -> int:
    return int(ind.window.slide.total_seconds() * US)


@dataclass
class _Held:
    """One indicator's partials: per bucket number, one array per partial over its series.

    Dense over series (a bucket holds every series, empty ones at the fill value) because
    nearly every series reports in every open bucket, and a dense array makes merging a
    run's readings and gathering a window's buckets plain NumPy indexing.
    """

    cover: int  # bucket number from which the partials hold every stored reading of every unit
    names: tuple[str, ...]  # the partials kept: c plus s, mx or mn
    spec: tuple  # what the partials were made for (``_spec``): a changed definition is not served from them
    series: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"unit_code": pl.String, "sensor_id": pl.String, "sid": pl.Int64}))
    buckets: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        return len(next(iter(self.buckets.values()))["c"]) if self.buckets else 0

    def nbytes(self) -> int:
        return sum(a.nbytes for b in self.buckets.values() for a in b.values()) + int(self.series.estimated_size())

    def series_ids(self, units: pl.Series, sensors: pl.Series | None) -> np.ndarray:
        """The series id of each (unit, sensor) pair, giving new pairs the next ids."""
        keys = pl.DataFrame({"unit_code": units.cast(pl.String),
                             "sensor_id": sensors.cast(pl.String) if sensors is not None else pl.repeat("", len(units), eager=True)})
        found = keys.join(self.series, on=["unit_code", "sensor_id"], how="left", maintain_order="left")["sid"]
        new = found.is_null()
        if new.any():
            fresh = keys.filter(new)
            n = self.series.height
            ids = pl.Series("sid", np.arange(n, n + fresh.height), pl.Int64)
            self.series = pl.concat([self.series, fresh.with_columns(ids)])
            found = found.scatter(np.flatnonzero(new.to_numpy()), ids)
            self._grow(self.series.height)
        return found.to_numpy()

    def _grow(self, n: int) -> None:
        if n <= self.capacity:
            return
        cap = max(n, 2 * self.capacity, 64)
        for b, arrs in self.buckets.items():
            for name, a in arrs.items():
                g = np.full(cap, _FILL[name], a.dtype)
                g[: len(a)] = a
                arrs[name] = g

    def merge(self, p: Partials) -> None:
        """Add readings' partials (cells in buckets before ``cover`` are not held: left out)."""
        col = p.cells % p.nb
        bucket = p.b0 + col
        keep = bucket >= self.cover
        if not keep.any():
            return
        units = p.units.gather(p.series_unit)
        sensors = p.sensors.gather(p.series_sensor) if p.sensors is not None else None
        sid_of_series = self.series_ids(units, sensors)
        cells, bucket = p.cells[keep], bucket[keep]
        sid = sid_of_series[cells // p.nb]
        part = {n: a[keep] for n, a in p.part.items()}
        cap = max(self.capacity, self.series.height, 64)
        order = np.argsort(bucket, kind="stable")
        starts = np.flatnonzero(np.r_[True, bucket[order][1:] != bucket[order][:-1]])
        for lo, hi in zip(starts, np.r_[starts[1:], len(order)]):  # one pass per bucket (a few per run)
            rows = order[lo:hi]
            b = int(bucket[rows[0]])
            arrs = self.buckets.get(b)
            if arrs is None:
                arrs = self.buckets[b] = {n: np.full(cap, _FILL[n], np.int64 if n == "c" else np.float64) for n in self.names}
            s = sid[rows]  # distinct within a bucket: one cell per series
            arrs["c"][s] += part["c"][rows]
            if "s" in arrs:
                arrs["s"][s] += part["s"][rows]
            if "mx" in arrs:
                arrs["mx"][s] = np.maximum(arrs["mx"][s], part["mx"][rows])
            if "mn" in arrs:
                arrs["mn"][s] = np.minimum(arrs["mn"][s], part["mn"][rows])

    def gather(self, ind: Indicator, touched: pl.DataFrame, off: int) -> Partials | None:
        """The partials of every series of the touched units over the buckets of the touched windows."""
        slide = _slide(ind)
        sel = self.series.filter(pl.col("unit_code").is_in(touched["unit_code"].cast(pl.String).unique().implode()))
        ws = touched["window_start"]
        b_lo = (int(ws.min()) + off) // slide
        b_hi = (int(ws.max()) + off) // slide + ind.window.k - 1
        present = [b for b in range(b_lo, b_hi + 1) if b in self.buckets]
        if sel.is_empty() or not present:
            return None
        sids = sel["sid"].to_numpy()
        nb = b_hi - b_lo + 1
        grids = {n: np.full((len(sids), nb), _FILL[n], np.int64 if n == "c" else np.float64) for n in self.names}
        for b in present:  # one column per bucket
            arrs = self.buckets[b]
            for n, g in grids.items():
                g[:, b - b_lo] = arrs[n][sids]
        cells = np.flatnonzero(grids["c"].ravel() > 0)  # row-major: series * nb + column, ascending
        if len(cells) == 0:
            return None
        unit, units = factorize(sel["unit_code"].cast(pl.Categorical))
        return Partials(units, unit, b_lo, nb, cells, {n: g.ravel()[cells] for n, g in grids.items()})

    def drop_before(self, floor: int) -> None:
        for b in [b for b in self.buckets if b < floor]:
            del self.buckets[b]
        self.cover = max(self.cover, floor)


class SignsSession:
    """Bucket partials of the sensor-fed indicators, kept between the live signs runs of one
    process (``compute_signs(store, session=...)``; ``LiveStages`` holds one). Only one
    process may run the stage on a store while a session is alive (as for ``WatchSession``)."""

    def __init__(self) -> None:
        self.held: dict[str, _Held] = {}
        self.cursor: datetime | None = None  # ingested_at up to which the partials hold every reading
        self._valid = False
        self.stats: dict[str, int] = {}  # what the last run read: new readings, readings filled from the store, windows read
        self._new: pl.DataFrame | None = None  # the run's new rows, between ``read`` and ``windows``

    def reset(self) -> None:
        """Forget every partial: the next run fills them from the store again."""
        self.held.clear()
        self.cursor, self._valid = None, False

    def nbytes(self) -> int:
        """Bytes held in partials and series keys."""
        return sum(h.nbytes() for h in self.held.values())

    def begin(self, stored_cursor: datetime | None) -> None:
        """Start a run: keep the partials only if the stage's stored cursor is the one this
        session left (anything else -- a first run, a restart, another process running the
        stage, a run that failed after merging -- means they may not match the store)."""
        if not (self._valid and self.cursor is not None and stored_cursor == self.cursor):
            self.reset()
        self.stats = {"new_readings": 0, "filled_readings": 0, "store_windows": 0}

    def read(self, repo, cat: Catalog, after: datetime | None) -> tuple[pl.DataFrame, dict]:
        """The run's one read of the store's new rows (``repo.new_readings``), kept for
        ``windows``; returns what ``repo.reading_minutes`` returns for the same rows: per
        (kind, unit, minute) their count, and the count, latest time and latest stamp.

        A session that holds nothing yet (a start, a restart, after a failure) fills every
        touched indicator from the store in ``windows`` anyway, so it asks ``reading_minutes``
        instead: the first run then reads what a run without a session reads, and does not
        bring every row stored since the cursor (on a store never computed, all of them) into
        memory only to read them again."""
        if not self.held:
            self._new = None
            return repo.reading_minutes(ingested_after=after)
        combine = sorted({k for i in cat.computable() if i.input_kind == "sensor" and i.sensor_combine for k in i.kinds})
        r = self._new = repo.new_readings(after, combine)
        self.stats["new_readings"] = r.height
        if r.is_empty():
            return pl.DataFrame(schema={"kind": pl.Categorical, "unit_code": pl.Categorical, "minute": pl.Int64,
                                        "n": pl.Int64}), {"max_ingested_at": None, "max_ts_us": None, "n": 0}
        minutes = r.group_by("kind", "unit_code", (pl.col("ts") // 60_000_000 * 60_000_000).alias("minute")).agg(
            pl.len().cast(pl.Int64).alias("n"))
        return minutes, {"max_ingested_at": r["ingested_at"].max(), "max_ts_us": int(r["ts"].max()), "n": r.height}

    def windows(self, repo, cat: Catalog, touched: dict[str, pl.DataFrame], *, until: datetime,
                store_windows) -> dict[str, pl.DataFrame]:
        """Values of the touched windows (as ``engine._store_windows``), from the partials where
        the session can serve them, else from the store (``store_windows``, bounded by
        ``until``, the latest stamp ``read`` saw). Merges the rows ``read`` kept into the partials."""
        self._valid = False  # until this run's merge is complete: a failure half way leaves nothing to trust
        off_h = cat.utc_offset_hours
        off = int(off_h * 3600 * US)
        active = {i.id: i for i in cat.computable() if i.input_kind == "sensor"}
        hit = {iid: t for iid, t in touched.items() if iid in active and t is not None and not t.is_empty()}
        for iid in [iid for iid, h in self.held.items() if iid not in active or h.spec != _spec(active[iid], off)]:
            del self.held[iid]  # an indicator redefined (another catalogue): filled again from the store
        fill = [active[iid] for iid in hit if serves(active[iid]) and iid not in self.held]
        self._fill(repo, fill, hit, until, off_h, off)
        filled = {i.id for i in fill}
        merge = [i for iid, i in active.items() if iid in self.held and iid not in filled]
        self._merge_new(merge, off_h)
        self._new = None
        self.cursor, self._valid = until, True
        out: dict[str, pl.DataFrame] = {}
        from_store: dict[str, pl.DataFrame] = {}
        for iid, t in hit.items():
            h = self.held.get(iid)
            if h is None:  # not served: every window from the store
                from_store[iid] = t
                continue
            ind = active[iid]
            first = (t["window_start"] + off) // _slide(ind)
            mine, early = t.filter(first >= h.cover), t.filter(first < h.cover)
            if not early.is_empty():
                from_store[iid] = early
            p = h.gather(ind, mine, off) if not mine.is_empty() else None
            if p is not None:
                out[iid] = windows_from(p, ind, utc_offset_hours=off_h, only=mine, unit_dtype=pl.Categorical)
        if from_store:
            self.stats["store_windows"] = sum(t.height for t in from_store.values())
            for iid, v in store_windows(repo, cat, from_store, ingested_until=until).items():
                out[iid] = v if iid not in out else pl.concat([out[iid], v], how="vertical_relaxed")
        return out

    def _fill(self, repo, inds: list[Indicator], touched: dict[str, pl.DataFrame], until: datetime, off_h: float,
              off: int) -> None:
        """An indicator's first partials: every unit's readings of its kinds from the first
        bucket its touched windows need on, stored by ``until`` (one scan for all of them)."""
        if not inds:
            return
        cover = {i.id: (int(touched[i.id]["window_start"].min()) + off) // _slide(i) for i in inds}
        spans = pl.DataFrame([(k, cover[i.id] * _slide(i) - off, _MAX_US, i.sensor_combine is not None)
                              for i in inds for k in i.kinds], orient="row",
                             schema={"kind": pl.String, "lo": pl.Int64, "hi": pl.Int64, "sensors": pl.Boolean}
                             ).group_by("kind", maintain_order=True).agg(pl.col("lo").min(), pl.col("hi").max(),
                                                                          pl.col("sensors").any())
        r = repo.readings(spans, ingested_until=until)
        self.stats["filled_readings"] = r.height
        by_kind = partition(r, "kind", include_key=False)
        for ind in inds:
            h = self.held[ind.id] = _Held(cover[ind.id], _names(ind), _spec(ind, off))
            parts = [by_kind[k] for k in ind.kinds if k in by_kind]
            if not parts:
                continue
            p = bucket_partials(parts[0] if len(parts) == 1 else pl.concat(parts), ind, utc_offset_hours=off_h)
            if p is not None:
                h.merge(p)  # buckets before the cover (a kind read from further back for another indicator) are left out

    def _merge_new(self, inds: list[Indicator], off_h: float) -> None:
        """Merge the rows ``read`` kept into the held indicators' partials."""
        r = self._new
        if not inds or r is None or r.is_empty():
            return
        by_kind = partition(r.drop("ingested_at"), "kind", include_key=False)
        for ind in inds:
            parts = [by_kind[k] for k in ind.kinds if k in by_kind]
            if not parts:
                continue
            p = bucket_partials(parts[0] if len(parts) == 1 else pl.concat(parts), ind, utc_offset_hours=off_h)
            if p is not None:
                self.held[ind.id].merge(p)

    def advance(self, cat: Catalog, watermark_us: int) -> None:
        """After a run is stored: drop the buckets whose every window is closed at the new watermark."""
        off = int(cat.utc_offset_hours * 3600 * US)
        for iid, h in self.held.items():
            ind = cat.get(iid)
            if ind is None:
                continue
            slide = _slide(ind)
            reach = int((ind.window.size + ind.lateness).total_seconds() * US)
            # bucket b's last window starts at b*slide - off and is closed once start + reach <= watermark
            h.drop_before((watermark_us - reach + off) // slide + 1)


def _names(ind: Indicator) -> tuple[str, ...]:
    need = _NEEDS[ind.agg]
    return ("c",) + (("s",) if "s" in need else ()) + (("mx",) if "x" in need else ()) + (("mn",) if "n" in need else ())


def _spec(ind: Indicator, off: int) -> tuple:
    """Everything an indicator's bucket partials depend on."""
    return (ind.kinds, ind.agg, ind.agg_arg, ind.window.slide, ind.hours, ind.sensor_combine is not None, off)
