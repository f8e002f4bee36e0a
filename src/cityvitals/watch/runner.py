"""``watch_readings``: run every detector over readings not yet watched and update alerts.

Why a watermark on ``ingested_at`` (not on ``ts``): late readings are still watched once,
and a re-run after a crash picks up exactly where the last committed run stopped. The
detectors' state is checkpointed in the same transaction as the watermark, so a crash
between the two cannot double-count or lose a point.

Per series (a sensor), the runner keeps: threshold levels (the indicator catalogue's
levels per sensor kind, see ``cityvitals.watch.catalog``, overridden by ``thresholds``:
kind -> levels and direction), level shift, seasonal baseline, time-to-breach towards the
next level not yet reached, and sensor health (range from the kind table, neighbours =
nearest sensors of the same kind unless the caller passes ``neighbours``). Verdicts become
alert observations: type ``threshold``, ``shift``, ``seasonal``, ``breach`` or
``health:<fault>``.

Why shift and seasonal stay silent at first: a city series changes its level every day at
the same hours (noise at 07:00 and 22:00, the rush hours), and before one day of history
have been seen nothing can tell such a change from an incident. Both detectors judge the
*seasonally adjusted* residual (value minus the time-of-day baseline) and only once that
baseline has ``MATURE_AFTER`` seconds (two days) of history; until then thresholds, time-to-breach
and sensor health (which need no history) do the watching. ``warmup`` seconds of the
oldest readings can also be learnt without raising anything (history loaded in bulk).
"""

from __future__ import annotations

import copy
import io
import json
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation, utcnow
from cityvitals.watch.breach import BreachForecaster
from cityvitals.watch.health import FLAGS, SensorHealthDetector
from cityvitals.watch.rest import RestLevels
from cityvitals.watch.rolling import RollingSum
from cityvitals.watch.seasonal import SeasonalDetector
from cityvitals.watch.shift import LevelShiftDetector
from cityvitals.watch.threshold import ThresholdDetector

STATE_NAME = "readings"
MATURE_AFTER = 2 * 86400  # seconds of history before shift / seasonal verdicts count (two days: one more than
# the baseline needs, so the slot scales have seen how one day differs from the next)
BREACH_MIN_LEVEL = 2  # forecast crossings of warning and alarm, not of attention
BREACH = {"horizon": 3600, "alpha": 0.2, "beta": 0.05, "k": 3.0, "warmup": 30}
# Sensor health as the runner configures it (tests use the same): verdicts on jumps after ten
# minutes (neighbours reporting out of phase still count), spikes as a habit (two in an hour) or
# one implausible one (25 step sd and a quarter of its level), stuck after an hour, drift when the
# offset to the neighbours (with ``drift_refs``, for a sensor with fewer than two, to far sensors
# of its kind when the kind shares one regime: ``DRIFT_REF_KINDS``) has moved by 30% of their level
# and 6 of its usual spread, held for 15 minutes while they held steady (or, for those kinds, at any
# time: they follow one curve). Drift is judged at every point: judging it every 5 minutes (``drift_every_s=300``,
# all detectors 16-22% faster) gave more false drift and disagreement alerts on the simulator (up to
# 3.75 per 100 sensor-days).
HEALTH = {
    "agree_window": 1800, "confirm_after": 600, "spike_count": 2, "spike_window": 3600, "spike_z": 25.0,
    "spike_rel": 0.25, "flat_min_s": 3600, "drift_ref_n": 60, "drift_k": 6.0, "drift_min": 0.3,
    "drift_slow_s": 86400.0, "drift_hold_s": 900.0, "drift_steady": 0.15,
}
# Kinds whose sensors a district or two apart still share one regime, so a far sensor of the
# kind is a fair drift reference: the weather and the regional air (fine particles, ozone) are
# mesoscale fields (a front, a haze episode, a humid night cover the city), and one water
# network's pressure and flow follow one demand curve. Not so for what local activity drives (a
# crowd's rush, a road's queue, a feeder's load, a plant's temperature, a leak's gas, the traffic
# exhaust of CO and NO2, a stack's SO2): a far crowd sensor rushes at its own hour, and against it
# an isolated one's morning rush looks like drift (1.67 false alerts per 100 sensor-days on the
# quiet day with every kind referenced; an isolated CO sensor's evening peak did the same).
DRIFT_REF_KINDS = frozenset({
    "temperature", "humidity", "wind_speed", "pm25", "pm10", "o3", "water_pressure", "water_flow",
})
SUM_WINDOW = 3600  # kinds the catalogue judges on a 1-hour sum are watched on a rolling 1-hour sum


@dataclass
class Threshold:
    """Levels (attention, warning, alarm) for a kind; ``direction`` 'higher' or 'lower' is worse."""

    levels: Sequence[float]
    direction: str = "higher"
    min_duration: int = 300


@dataclass
class WatchState:
    ids: list[str] = field(default_factory=list)
    threshold: ThresholdDetector = field(default_factory=lambda: ThresholdDetector(min_duration=300))
    shift: LevelShiftDetector = field(default_factory=lambda: LevelShiftDetector(k=1.5, h=12.0, jump_z=10.0))
    seasonal: SeasonalDetector = field(default_factory=lambda: SeasonalDetector(z_lo=4.0, z_hi=8.0, min_age=MATURE_AFTER))
    # a smooth trend (alpha 0.2, beta 0.05), a 3-sigma slope and half an hour of history
    # before forecasting: minute-to-minute wobble is not a heading (see the simulator eval)
    breach: BreachForecaster = field(default_factory=lambda: BreachForecaster(**BREACH))
    health: SensorHealthDetector = field(default_factory=lambda: SensorHealthDetector(**HEALTH))
    configured: int = 0  # series whose thresholds/ranges are set
    categorical: list[int] = field(default_factory=list)  # series of code-valued kinds (status codes)
    # series judged on their rolling 1-hour sum (rain gauges: rainstorm levels are mm per hour);
    # ``sums`` holds one ring per such series, at its position in ``summed``
    summed: list[int] = field(default_factory=list)
    sums: RollingSum = field(default_factory=lambda: RollingSum(window=SUM_WINDOW, bin_s=SUM_WINDOW // 12))
    # series whose levels sit above their own resting level (wet-well gauges, ``levels.relative_thresholds``)
    rest: RestLevels = field(default_factory=RestLevels)
    # ``ids`` as a frame (sensor_id, sidx), rebuilt when series are added: a live run looks up a
    # few thousand readings among every series, and building it from the list each run cost
    # more than the lookup (not saved: derived from ``ids``)
    _id_frame: pl.DataFrame | None = field(default=None, repr=False, compare=False)

    def id_frame(self) -> pl.DataFrame:
        """``ids`` as a frame: ``sensor_id`` and its series index ``sidx``."""
        if self._id_frame is None or self._id_frame.height != len(self.ids):
            self._id_frame = pl.DataFrame({"sensor_id": pl.Series(self.ids, dtype=pl.Utf8),
                                           "sidx": np.arange(len(self.ids), dtype=np.int64)})
        return self._id_frame

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        blobs = {name: np.frombuffer(getattr(self, name).to_bytes(), dtype=np.uint8) for name in (*_DETS, "sums")}
        meta = json.dumps({"ids": self.ids, "configured": self.configured, "categorical": self.categorical,
                           "summed": self.summed}).encode()
        np.savez(buf, __meta__=np.frombuffer(meta, dtype=np.uint8), **blobs, **self.rest.to_arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "WatchState":
        data = np.load(io.BytesIO(blob), allow_pickle=False)
        meta = json.loads(bytes(data["__meta__"]).decode())
        st = cls(ids=meta["ids"], configured=meta["configured"], categorical=meta.get("categorical", []),
                 summed=meta.get("summed", []))
        for name, kls in _DETS.items():
            setattr(st, name, kls.from_bytes(bytes(data[name])))
        if "sums" in data:  # (checkpoints from before rolling sums have none)
            st.sums = RollingSum.from_bytes(bytes(data["sums"]))
        st.rest = RestLevels.from_arrays(data)
        return st

    def summed_view(self, n: int) -> np.ndarray:
        """Series index -> its row in ``sums`` (-1: watched point by point)."""
        row = np.full(n, -1, dtype=np.int64)
        if self.summed:
            row[np.asarray(self.summed, dtype=np.int64)] = np.arange(len(self.summed))
        return row


_DETS = {
    "threshold": ThresholdDetector, "shift": LevelShiftDetector, "seasonal": SeasonalDetector,
    "breach": BreachForecaster, "health": SensorHealthDetector,
}


class WatchSession:
    """The watch's state kept in memory between runs by a long-running process (``serve``).

    A run on its own loads the detectors' checkpoint from the store and writes it back
    (about 14 MB for 20,000 sensors: most of a run's cost when runs follow every ingest
    batch). A session keeps the state and the watermark in memory and checkpoints them
    every ``checkpoint_seconds`` and at ``close()``. A crash then loses at most that much
    of the watch's progress, not data: the next run restarts from the last checkpoint and
    watches those readings again (the same computation from the same state; alerts already
    open are observed again, not doubled). The process holding a session must be the only
    one watching this store while it runs.

    With ``background_store`` (a store of its own, or the shared one of an embedded store)
    a due checkpoint is written from a thread of its own: the run that makes it due only
    copies the state (about 15 ms for 20,000 sensors) instead of serialising and writing
    14 MB (0.1-0.3 s, which delayed that run's alerts). One is written at a time; a
    checkpoint that falls due while the last is still being written waits for the next run.
    ``checkpoint()`` (and so ``close()``) writes in the caller's thread, after any in flight.
    """

    def __init__(self, checkpoint_seconds: float = 10.0, clock: Callable[[], float] | None = None,
                 background_store=None):
        self.checkpoint_seconds = checkpoint_seconds
        self._mono = clock or time.monotonic
        self.state: WatchState | None = None
        self.watermark: datetime | None = None
        self._dirty = False
        self._saved_at = self._mono()
        self.background_store = background_store
        self._writer: threading.Thread | None = None
        self.checkpoint_errors: list[str] = []  # background writes that failed
        # (registry version, its sensors frame, neighbour_rows of it per drift_refs): see ``config``
        self._registry: tuple[int, pl.DataFrame, dict] | None = None

    def warm(self, store, **config) -> None:
        """Load the checkpoint and compute the configuration (``config``'s parameters) now:
        what a server does at start, before it takes traffic, so its first batch's alerts do
        not wait for them."""
        self.load(store)
        self.config(store, **config)

    def reset(self) -> None:
        """Forget the state and watermark (the next run reloads the last checkpoint), keep the
        configuration: after a run that failed halfway."""
        self.state, self.watermark, self._dirty = None, None, False
        self._saved_at = self._mono()

    def config(self, store, *, thresholds: Mapping[str, Threshold] | None = None,
               neighbours: Mapping[str, Sequence[str]] | None = None, use_catalog: bool = True,
               drift_refs: bool | str | frozenset[str] = True) -> WatchConfig:
        """``watch_config`` with its neighbours computed; the registry's frame and its
        neighbours are kept until the registry changes (``store.sensors.version``).

        Why: series are configured when they first report, which at a server's start is every
        sensor over its first batches, and each time the nearest neighbours of the whole
        registry were computed again (most of a second for 20,000 sensors, inside those
        batches' publish-to-alert time). Levels from assets are still read each time."""
        version = store.sensors.version
        if self._registry is None or self._registry[0] != version:
            self._registry = (version, store.sensors.frame(), {})
        _, sensors, near = self._registry
        cfg = watch_config(store, thresholds=thresholds, neighbours=neighbours, use_catalog=use_catalog,
                           drift_refs=drift_refs, sensors=sensors)
        if neighbours is not None:  # the caller's: nothing to compute
            return cfg.with_neighbours()
        key = frozenset(drift_refs) if isinstance(drift_refs, (set, list, tuple)) else drift_refs
        if key not in near:
            near[key] = cfg.with_neighbours().near
        return replace(cfg, near=near[key])

    def load(self, store) -> tuple[datetime | None, WatchState]:
        if self.state is None:
            watermark, blob = store.alerts.get_watch_state(STATE_NAME)
            self.state = WatchState.from_bytes(blob) if blob else WatchState()
            self.watermark = watermark
        return self.watermark, self.state

    def advance(self, store, watermark, now: datetime) -> None:
        self.watermark = watermark
        self._dirty = True
        if self._mono() - self._saved_at >= self.checkpoint_seconds:
            if self.background_store is None:
                self.checkpoint(store, now)
            elif self._writer is None or not self._writer.is_alive():
                self._write_behind(now)

    def _write_behind(self, now: datetime) -> None:
        """Copy the state and watermark as they are now and write the copy from a thread."""
        snapshot, watermark, out = copy.deepcopy(self.state), self.watermark, self.background_store
        self._dirty = False
        self._saved_at = self._mono()

        def write() -> None:
            try:
                blob = snapshot.to_bytes()
                with out.transaction() as con:
                    out.alerts.put_watch_state(con, STATE_NAME, watermark, blob, now)
            except Exception as exc:  # noqa: BLE001  (kept for the caller; tried again when the next is due)
                self.checkpoint_errors.append(repr(exc))
                self._dirty = True

        self._writer = threading.Thread(target=write, daemon=True, name="watch-checkpoint")
        self._writer.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a checkpoint being written in the background, if any."""
        if self._writer is not None:
            self._writer.join(timeout)

    def checkpoint(self, store, now: datetime | None = None) -> None:
        """Write the state and watermark to the store (one transaction) if they changed, after
        any checkpoint still being written in the background (the newer must land last)."""
        self.wait()
        if not self._dirty or self.state is None:
            return
        with store.transaction() as con:
            store.alerts.put_watch_state(con, STATE_NAME, self.watermark, self.state.to_bytes(), now or utcnow())
        self._dirty = False
        self._saved_at = self._mono()


def nearest_neighbours(sensors: pl.DataFrame, k: int = 5, max_km: float = 3.0) -> dict[str, list[str]]:
    """Up to ``k`` nearest sensors of the same kind within ``max_km`` (equirectangular distance)."""
    return _nearest(sensors, k, max_km)


def drift_references(sensors: pl.DataFrame, near: Mapping[str, Sequence[str]], k: int = 5,
                     min_near: int = 2, kinds: frozenset[str] | None = None) -> dict[str, list[str]]:
    """For sensors with fewer than ``min_near`` neighbours: the ``k`` nearest of the same kind, at any distance.

    ``kinds``: only sensors of these kinds get references (all kinds when None); the runner
    passes ``DRIFT_REF_KINDS``.

    Why: drift is a sensor slowly leaving what its kind does; with one neighbour it cannot be
    told which of the two moved, with none it cannot be seen at all on the first day. The
    same kind a district or two away shares the weather, the network's demand and the
    daily cycle well enough for a ratio that should hold steady over hours.
    """
    if kinds is not None:
        sensors = sensors.filter(pl.col("kind").is_in(sorted(kinds)))
    few = sensors.filter(~pl.col("id").is_in([s for s, ns in near.items() if len(ns) >= min_near]))
    if few.height == 0:
        return {}
    far = _nearest(sensors, k + min_near, np.inf, only=set(few["id"].to_list()))
    return {s: [n for n in ns if n not in set(near.get(s, ()))][:k] for s, ns in far.items()}


def _nearest(sensors: pl.DataFrame, k: int, max_km: float, only: set[str] | None = None) -> dict[str, list[str]]:
    """The ``k`` nearest of the same kind within ``max_km`` for every sensor (or those in ``only``).

    A k-d tree on a local projection (longitudes scaled by the cosine of the group's mean
    latitude) proposes candidates, and the equirectangular distance of each pair (the
    cosine of the pair's own mid-latitude) ranks them: the same answer as comparing every
    pair, in O(n log n) rather than O(n²) (20,000 sensors: a fraction of a second instead
    of seconds on the watch's first run). Over a city the projection is off by well under
    1% (0.3% across a 30 km box at 31°N), so the exact k nearest are among three times ``k``
    candidates (checked against the all-pairs answer on 20,000 random sensors in the tests).
    """
    from scipy.spatial import cKDTree

    out: dict[str, list[str]] = {}
    for (kind,), grp in sensors.drop_nulls(["lon", "lat"]).group_by(["kind"]):
        ids = grp["id"].to_list()
        n = len(ids)
        if n < 2:
            continue
        lon = np.radians(grp["lon"].to_numpy().astype(np.float64))
        lat = np.radians(grp["lat"].to_numpy().astype(np.float64))
        kk = min(k, n - 1)
        cands = min(n, 3 * kk + 1)  # the point itself comes back first
        tree = cKDTree(np.column_stack([lon * np.cos(lat.mean()), lat]))
        _, near = tree.query(np.column_stack([lon * np.cos(lat.mean()), lat]), k=cands)
        near = near.reshape(n, -1)
        dx = (lon[:, None] - lon[near]) * np.cos((lat[:, None] + lat[near]) / 2)
        d = 6371.0 * np.hypot(dx, lat[:, None] - lat[near])
        d[near == np.arange(n)[:, None]] = np.inf
        order = np.argsort(d, axis=1, kind="stable")[:, :kk]
        for i in range(n):
            if only is not None and ids[i] not in only:
                continue
            row = near[i, order[i]]
            dist = d[i, order[i]]
            keep = [ids[j] for j, dj in zip(row, dist) if np.isfinite(dj) and dj <= max_km]
            if keep:
                out[ids[i]] = keep
    return out


NEAR_SCHEMA = {"sensor_id": pl.Utf8, "near_id": pl.Utf8, "ref": pl.Boolean}


def neighbour_rows(sensors: pl.DataFrame, neighbours: Mapping[str, Sequence[str]] | None = None,
                   drift_refs: bool | str | frozenset[str] = True) -> pl.DataFrame:
    """The neighbours and drift references the watch gives the registry's ``sensors``, a row
    each (``NEAR_SCHEMA``; ``ref``: a drift reference), each sensor's neighbours before its
    references and each list in its order: the caller's ``neighbours`` (then no drift
    references), else the nearest of each kind and, as ``drift_refs`` says, far references
    for sensors with too few of them (a reference that is also a neighbour is not repeated).

    Why rows: the series in the watch's state are a subset of the registry that grows as
    sensors first report, and a join maps these rows onto it at once."""
    if neighbours is not None:
        nb, refs = neighbours, {}
    else:
        nb = nearest_neighbours(sensors)
        refs = {}
        if drift_refs:
            kinds = None if drift_refs == "all" else DRIFT_REF_KINDS if drift_refs is True else frozenset(drift_refs)
            refs = drift_references(sensors, nb, kinds=kinds)
    rows = [(s, n, False) for s, ns in nb.items() for n in ns]
    rows += [(s, r, True) for s, rs in refs.items() for r in rs if r not in nb.get(s, ())]
    return pl.DataFrame(rows, schema=NEAR_SCHEMA, orient="row")


def _configure(st: WatchState, sensors: pl.DataFrame, thresholds: Mapping[str, Threshold],
               neighbours: Mapping[str, Sequence[str]] | None, per_sensor: Mapping[str, Threshold],
               use_assets: bool = True,
               user_kinds: frozenset[str] = frozenset(), drift_refs: bool | str | frozenset[str] = True,
               rest_levels: Mapping[str, Threshold] | None = None, near: pl.DataFrame | None = None) -> None:
    """Ranges, levels (kind, then per sensor from its asset unless the caller set the kind) and neighbours.

    Kinds the catalogue judges on a 1-hour sum (rainfall) get that indicator's levels on a
    rolling 1-hour sum, unless the caller gave levels for the kind (then those, on the sum).
    ``near``: ``neighbour_rows`` of these sensors, when already computed (``WatchConfig.near``).
    """
    from cityvitals.registry import load_kinds
    from cityvitals.watch.catalog import sum_thresholds

    kinds = load_kinds()
    pos = {sid: i for i, sid in enumerate(st.ids)}
    kind_of = dict(zip(sensors["id"].to_list(), sensors["kind"].to_list()))
    idx = np.arange(st.configured, len(st.ids))
    kind_arr = np.array([kind_of.get(st.ids[i], "") for i in idx], dtype=object)
    sums = {k: th for k, (w, th) in sum_thresholds().items() if w == SUM_WINDOW} if use_assets else {}
    for kind in set(kind_arr.tolist()):
        sel = idx[kind_arr == kind]
        if kind in sums:
            st.summed.extend(int(i) for i in sel)
            if kind not in thresholds:
                thresholds = {**thresholds, kind: sums[kind]}
        if kind in kinds:
            st.health.set_range(sel, kinds[kind].min, kinds[kind].max)
            st.health.set_units(sel, [f for f, off in kinds[kind].accepts.values() if not off])
            if kinds[kind].unit == "code":  # a status code: only thresholds and staleness mean anything
                st.categorical.extend(int(i) for i in sel)
        st.health.set_shared(sel, kind in DRIFT_REF_KINDS)
        th = thresholds.get(kind)
        if th is not None:
            st.threshold.set_levels(sel, th.levels, th.direction, th.min_duration)
            first = [v for v in th.levels if v is not None and np.isfinite(v)][0]
            st.breach.set_levels(sel, first, th.direction)
    if use_assets:
        new = set(st.ids[i] for i in idx)
        for sid, th in per_sensor.items():
            if sid in new and kind_of.get(sid) not in user_kinds:
                i = pos[sid]
                st.threshold.set_levels([i], th.levels, th.direction, th.min_duration)
                st.breach.set_levels([i], th.levels[0], th.direction)
        for sid, th in (rest_levels or {}).items():  # no levels until their rest is learnt
            if sid in new and kind_of.get(sid) not in user_kinds:
                st.threshold.set_levels([pos[sid]], [np.nan] * 3, th.direction, th.min_duration)
                st.rest.add([pos[sid]], th.levels)
    st.configured = len(st.ids)
    rows = near if near is not None else neighbour_rows(sensors, neighbours, drift_refs)
    # onto the series in the state: rows of sensors (or naming neighbours) not in it yet drop out
    ids = st.id_frame()
    rows = (rows.join(ids, on="sensor_id", how="inner", maintain_order="left")
            .join(ids.rename({"sensor_id": "near_id", "sidx": "nidx"}), on="near_id", how="inner", maintain_order="left")
            .sort("sidx", maintain_order=True))
    st.health.set_neighbour_rows(rows["sidx"].to_numpy(), rows["nidx"].to_numpy(), rows["ref"].to_numpy())


def watch_readings(
    store, *, thresholds: Mapping[str, Threshold] | None = None, neighbours: Mapping[str, Sequence[str]] | None = None,
    policy: AlertPolicy | None = None, clock: Callable[[], datetime] = utcnow, window_seconds: int = 300,
    step_seconds: int = 60, warmup: int = 0, use_catalog: bool = True, anomaly_alerts: bool = False,
    progress: Callable[[int], None] | None = None, session: WatchSession | None = None,
    drift_refs: bool | str | frozenset[str] = True,
) -> dict:
    """Watch readings ingested since the last run; returns counts of points, series and alert changes.

    ``session``: keep the detectors' state in memory between runs (see ``WatchSession``)
    instead of loading and checkpointing it on every run.

    ``thresholds`` override the catalogue's levels per kind and the asset-derived levels of
    that kind (``use_catalog=False``: only them, no catalogue and no asset levels); readings
    in the first ``warmup`` seconds of this batch are learnt, not alerted on. Level-shift and
    seasonal verdicts always run and learn, but raise alerts only with ``anomaly_alerts``:
    on the simulator's third quiet day they still gave about 17 false alerts per 100
    sensor-days (weather-driven days, night noise), against a bar of 1. ``drift_refs`` (on by
    default) also judges drift, for sensors with fewer than two neighbours, against far sensors
    of their kind (``drift_references``), for the kinds in ``DRIFT_REF_KINDS`` (``True``), the
    kinds given, every kind (``"all"``: an isolated crowd sensor's morning rush then looks
    like drift) or none (``False``).

    The run is two steps with the store only in the second: ``advance`` takes the detectors
    over the readings and returns their verdicts as a table; ``apply_verdicts`` applies them
    to the alerts window by window. (The Spark engine runs the first in a stateful operator,
    through ``advance_series``: ``cityvitals.spark.watch``.)
    """
    if session is not None:
        watermark, st = session.load(store)
    else:
        watermark, blob = store.alerts.get_watch_state(STATE_NAME)
        st = WatchState.from_bytes(blob) if blob else WatchState()
    df = pl.from_arrow(store.readings.since(watermark))  # backend-neutral
    result = {"points": df.height, "series": 0, "alerts": {}}
    mgr = AlertManager(store, policy or AlertPolicy(), clock)
    if df.height == 0:
        result["escalated"] = len(mgr.escalate())
        return result

    def config() -> WatchConfig:  # (read only when new series appear)
        kw = {"thresholds": thresholds, "neighbours": neighbours, "use_catalog": use_catalog, "drift_refs": drift_refs}
        return session.config(store, **kw) if session is not None else watch_config(store, **kw)

    t_all = df["t"].to_numpy().astype(np.int64)
    windows = watch_windows(t_all, int(clock().timestamp()), window_seconds, warmup)
    events = advance(st, df.select("sensor_id", "t", "value"), windows, config, window_seconds=window_seconds,
                     step_seconds=step_seconds,
                     anomaly_alerts=anomaly_alerts, reconfigure=neighbours is not None)
    result["alerts"], result["escalated"] = apply_verdicts(mgr, events, windows, clock, progress)
    now = clock()
    result["series"] = df["sensor_id"].n_unique()
    if session is not None:
        session.advance(store, df["ingested_at"].max(), now)
        return result
    with store.transaction() as con:
        store.alerts.put_watch_state(con, STATE_NAME, df["ingested_at"].max(), st.to_bytes(), now)
    return result


@dataclass
class WatchConfig:
    """What configuring new series needs: the registry's sensors, levels per kind and per
    sensor (from its asset), neighbours. Plain data, so it can be shipped to where the
    detectors run."""

    sensors: pl.DataFrame
    thresholds: Mapping[str, Threshold]
    asset_levels: Mapping[str, Threshold] = field(default_factory=dict)
    rest_levels: Mapping[str, Threshold] = field(default_factory=dict)  # wet wells: levels above their rest
    neighbours: Mapping[str, Sequence[str]] | None = None
    use_assets: bool = True
    user_kinds: frozenset[str] = frozenset()
    drift_refs: bool | str | frozenset[str] = True
    # ``neighbour_rows(sensors, neighbours, drift_refs)`` when computed ahead (``with_neighbours``):
    # for 20,000 sensors they cost most of a second, which a server pays at start and a
    # stateful operator once on its driver, not on the first batch of every series
    near: pl.DataFrame | None = None

    def with_neighbours(self) -> "WatchConfig":
        """This configuration with its neighbours and drift references computed."""
        if self.near is not None:
            return self
        return replace(self, near=neighbour_rows(self.sensors, self.neighbours, self.drift_refs))


def watch_config(store, *, thresholds: Mapping[str, Threshold] | None = None,
                 neighbours: Mapping[str, Sequence[str]] | None = None, use_catalog: bool = True,
                 drift_refs: bool | str | frozenset[str] = True, sensors: pl.DataFrame | None = None) -> WatchConfig:
    """The configuration ``watch_readings`` uses (its parameters mean the same), read from the
    store (``sensors``: the registry's frame, when the caller holds it already)."""
    user_kinds = frozenset(thresholds or {})
    per_sensor: Mapping[str, Threshold] = {}
    rest: Mapping[str, Threshold] = {}
    if use_catalog:
        from cityvitals.watch.catalog import catalog_thresholds
        from cityvitals.watch.levels import asset_thresholds, relative_thresholds

        thresholds = {**catalog_thresholds(), **(thresholds or {})}
        per_sensor = asset_thresholds(store)
        rest = relative_thresholds(store)
    return WatchConfig(store.sensors.frame() if sensors is None else sensors, thresholds or {}, per_sensor, rest,
                       neighbours, use_catalog, user_kinds, drift_refs)


def advance_series(state: bytes | None, readings: pl.DataFrame, windows: pl.DataFrame, config: WatchConfig, *,
                   window_seconds: int = 300, step_seconds: int = 60,
                   anomaly_alerts: bool = False) -> tuple[bytes, pl.DataFrame]:
    """``advance`` from state bytes to state bytes: the form a stateful operator holds.

    Why it can hold the series of one sensor kind apart from the rest: every check that
    compares series (neighbours, drift references) compares sensors of one kind, and
    staleness is judged at the instants ``windows`` gives, the same for every kind. Watching
    each kind's readings this way and applying all verdicts with ``apply_verdicts`` gives the
    alerts of one ``watch_readings`` over every series (tests/test_watch_runner.py).
    """
    st = WatchState.from_bytes(state) if state else WatchState()
    events = advance(st, readings, windows, lambda: config, window_seconds=window_seconds, step_seconds=step_seconds,
                     anomaly_alerts=anomaly_alerts)
    return st.to_bytes(), events


WINDOW_SCHEMA = {"window": pl.Int64, "t_end": pl.Int64, "stale_at": pl.Int64, "quiet": pl.Boolean, "points": pl.Int64}
VERDICT_SCHEMA = {"window": pl.Int64, "ord": pl.Int64, "source": pl.Utf8, "type": pl.Utf8, "level": pl.Int64,
                  "at": pl.Int64, "message": pl.Utf8, "clear": pl.Boolean}


def watch_windows(t: np.ndarray, now: int, window_seconds: int = 300, warmup: int = 0) -> pl.DataFrame:
    """The windows a batch of readings (``t``: epoch seconds, ascending) is watched in.

    Why a table: a backlog is replayed in windows of ``window_seconds`` so each alert carries
    the time its condition was seen, as if watch had been running all along, and staleness is
    judged at each window's last reading time over *all* series (``stale_at``; at the last
    window, at ``now``, the clock). Whoever advances only some series (one sensor kind) is
    given this table to judge at the same instants.
    """
    t = np.asarray(t, dtype=np.int64)
    win_of = t // window_seconds
    bounds = np.r_[0, np.flatnonzero(np.diff(win_of)) + 1, t.size]
    ends = t[bounds[1:] - 1]
    stale_at = ends.copy()
    if stale_at.size:
        stale_at[-1] = now
    quiet_until = int(t[0]) + int(warmup) if t.size else 0
    return pl.DataFrame({"window": win_of[bounds[:-1]], "t_end": ends, "stale_at": stale_at,
                         "quiet": ends < quiet_until, "points": np.diff(bounds)}, schema=WINDOW_SCHEMA)


def advance(st: WatchState, readings: pl.DataFrame, windows: pl.DataFrame, config: Callable[[], WatchConfig], *,
            window_seconds: int = 300, step_seconds: int = 60, anomaly_alerts: bool = False,
            reconfigure: bool = False) -> pl.DataFrame:
    """Take the detectors in ``st`` over ``readings`` (sensor_id, t, value; ascending t) and
    return their verdicts (``VERDICT_SCHEMA``), one group per window of ``windows``.

    No store: series not seen before are added and configured from ``config()`` (called only
    then), so the same call serves the local runner (every series in one state) and a
    stateful operator holding some of them. Clear verdicts are given for every touched series
    whose condition is clear (``clear``): only the alert lifecycle knows which are open.
    """
    seen = readings.select(pl.col("sensor_id").unique())
    new_ids = sorted(seen.join(st.id_frame(), on="sensor_id", how="anti")["sensor_id"].to_list())
    st.ids.extend(new_ids)
    if new_ids or reconfigure:
        c = config()
        _configure(st, c.sensors, c.thresholds, c.neighbours, c.asset_levels, c.use_assets, c.user_kinds,
                   c.drift_refs, rest_levels=c.rest_levels, near=c.near)
    # verdicts read every series' arrays, also of series new in this batch that have no reading
    # in a window yet (a kind's first windows, when its state is advanced apart): capacity only,
    # so the state's bytes do not change
    for name in _DETS:
        getattr(st, name)._grow(len(st.ids))
    df = readings.join(st.id_frame(), on="sensor_id", how="left")
    s_all = df["sidx"].to_numpy()
    t_all = df["t"].to_numpy().astype(np.int64)
    x_all = df["value"].to_numpy().astype(np.float64)
    st.health.take_flags()
    sum_row = st.summed_view(len(st.ids))
    win_of = t_all // window_seconds
    out: list[pl.DataFrame] = []
    for w, stale_at, quiet in windows.select("window", "stale_at", "quiet").iter_rows():
        a, b = np.searchsorted(win_of, [w, w + 1])
        touched, first_t, peak, flags = advance_window(st, s_all[a:b], t_all[a:b], x_all[a:b], stale_at, sum_row,
                                                       step_seconds)
        if quiet:
            continue
        if not anomaly_alerts:
            peak = {k: np.zeros_like(v) for k, v in peak.items()}
        out.append(verdicts(st, touched, first_t, peak, flags).with_columns(pl.lit(w, pl.Int64).alias("window")))
    if not out:
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    return pl.concat(out).select(list(VERDICT_SCHEMA))


def advance_window(st: WatchState, s: np.ndarray, t: np.ndarray, x: np.ndarray, stale_at: int, sum_row: np.ndarray,
                   step_seconds: int = 60) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """One window's readings through every detector, then staleness at ``stale_at``.

    Returns the series touched, each one's first time in the window, the shift and seasonal
    peak scores and the health flags raised.
    """
    n = len(st.ids)
    peak = {name: np.zeros(n) for name in ("shift", "seasonal")}
    if s.size:
        # rain gauges are judged (and forecast) on their rolling 1-hour sum, not per interval
        xs = x
        if st.summed:
            row = sum_row[s]
            on = row >= 0
            if on.any():
                xs = x.copy()
                xs[on] = st.sums.update_many(row[on], t[on], x[on])
        if st.rest.idx.size:  # levels above the rest learnt before this window, then learn it
            rs, lv = st.rest.levels()
            st.threshold.thr[rs] = lv
            st.threshold.update_many(s, t, xs)
            st.rest.learn(s, t, xs)
        else:
            st.threshold.update_many(s, t, xs)
        # time-to-breach aims at the next level the series has not reached yet, warning or
        # above (a forecast attention is not worth a duty officer's call)
        # (a series new in this batch without levels of its kind has no breach state yet)
        nxt = np.clip(st.threshold.level[s].astype(np.int64), BREACH_MIN_LEVEL - 1, 2)
        st.breach._touch(s)
        st.breach.thr[s] = st.threshold.thr[s, nxt]
        st.breach.update_many(s, t, xs)
        if st.health._nb_idx.size:  # the neighbour check compares readings of one time step
            step_bounds = np.r_[0, np.flatnonzero(np.diff(t // step_seconds)) + 1, t.size]
            for c, d in zip(step_bounds[:-1], step_bounds[1:]):
                st.health.update_many(s[c:d], t[c:d], x[c:d])
        else:
            st.health.update_many(s, t, x)
        # shift on the seasonally adjusted residual, judged only where the baseline is mature
        st.seasonal._touch(s)
        _loc, _sd, mature = st.seasonal.baseline(s, t)
        loc = st.seasonal.smooth_location(s, t)
        sc = st.seasonal.update_many(s, t, x)
        np.maximum.at(peak["seasonal"], s, np.where(mature, sc, 0.0))
        if mature.any():
            sc = st.shift.update_many(s[mature], t[mature], x[mature] - loc[mature])
            np.maximum.at(peak["shift"], s[mature], sc)
    touched = np.flatnonzero(np.bincount(s, minlength=n))
    first_t = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_t, s, t)
    flags = st.health.take_flags()
    # staleness at the end of every window (a dropout inside a backlog is seen too),
    # and against the clock at the last one
    st.health.check_stale(int(stale_at))
    flags |= st.health.flags[:n] & FLAGS["stale"]
    return touched, first_t, peak, flags


def apply_verdicts(mgr: AlertManager, events: pl.DataFrame, windows: pl.DataFrame, clock: Callable[[], datetime],
                   progress: Callable[[int], None] | None = None) -> tuple[dict[str, int], int]:
    """Apply ``advance``'s verdicts to the alerts window by window, in window order.

    Clear verdicts count only for alerts open at that window (the lifecycle's hysteresis
    starts from them); escalation is judged at each window's last reading time. Returns the
    alert changes and the number of escalations.
    """
    by_window = events.partition_by("window", as_dict=True, maintain_order=True) if events.height else {}
    totals: dict[str, int] = {}
    escalated = 0
    for w, t_end, quiet, points in windows.select("window", "t_end", "quiet", "points").iter_rows():
        if not quiet:
            ev = by_window.get((w,))
            obs: list[Observation] = []
            if ev is not None:
                # most verdicts are clears of alerts that are not open: dropped before Python sees
                # them, first by source (cheap: a clear of a source with nothing open goes), then by key
                opened = mgr.repo.open_alerts()
                ev = ev.filter(~pl.col("clear") | pl.col("source").is_in(sorted({a["source"] for a in opened})))
                open_keys = [f"{a['source']}\x00{a['type']}" for a in opened]
                ev = ev.filter(~pl.col("clear") | pl.concat_str("source", "type", separator="\x00").is_in(open_keys))
                obs = [Observation(source, type_, level, _at(at), message) for source, type_, level, at, message
                       in ev.select("source", "type", "level", "at", "message").iter_rows()]
            for k, v in mgr.observe(obs).items():
                totals[k] = totals.get(k, 0) + v
            escalated += len(mgr.escalate(min(clock(), _at(int(t_end)))))
        if progress:
            progress(int(points))
    return totals, escalated


def _at(ts: int) -> datetime:
    return datetime.fromtimestamp(int(ts), tz=timezone.utc)


def verdicts(st: WatchState, touched: np.ndarray, first_t: np.ndarray, peak: dict[str, np.ndarray],
             flags: np.ndarray) -> pl.DataFrame:
    """Verdicts for series that fire, and candidate clears for touched series whose condition is clear.

    A clear verdict is given at the moment the condition is known to have been clear since
    (so auto-resolve hysteresis counts from then) and at the series' last point; it counts
    only where that alert is open (``apply_verdicts``).

    Why the clears are built as arrays: they are two per touched series and alert type
    (eleven types), some 75,000 rows for a live batch of 3,500 readings and nearly half a
    million for the first run over 20,000 sensors, of which only the few of open alerts
    matter. As Python lists they cost more than the detectors themselves; as NumPy arrays
    turned into columns by one gather of the series' ids they cost about a millisecond.
    Only firing series (few) pay a Python call each, for their message.
    """
    last_t = st.health.last_ts
    # per alert type, in order: its firing rows, then its clears (the order ``ord`` keeps)
    rows: list[tuple[np.ndarray, int, np.ndarray | int, np.ndarray, bool]] = []
    messages: list[str] = []
    names: list[str] = []

    def add(type_: str, levels: np.ndarray, det, scores: np.ndarray | None = None, clear_from: np.ndarray | None = None) -> None:
        code = len(names)
        names.append(type_)
        fire = np.flatnonzero(levels > 0)
        if fire.size:
            sc = scores[fire] if scores is not None else levels[fire] / 3
            messages.extend(det.explain(float(v), series=int(i)) for i, v in zip(fire, sc))
            rows.append((fire, code, levels[fire].astype(np.int64), last_t[fire].astype(np.int64), False))
        since = first_t if clear_from is None else clear_from
        calm = touched[levels[touched] == 0]
        if calm.size:  # two verdicts each: clear since, clear at the last point
            lt = last_t[calm].astype(np.int64)
            at = np.column_stack([np.minimum(since[calm], lt), lt]).ravel()
            rows.append((np.repeat(calm, 2), code, 0, at, True))

    n = len(st.ids)
    numeric = np.ones(n, dtype=bool)
    numeric[[i for i in st.categorical if i < n]] = False
    flags = np.where(numeric, flags, flags & (FLAGS["stale"] | FLAGS["out_of_range"]))
    # rain gauges report what fell in each interval: a shower is a one- or two-point spike by nature
    if st.summed:
        summed = np.asarray([i for i in st.summed if i < n], dtype=np.int64)
        flags[summed] &= ~np.uint8(FLAGS["spike"])
    # a one-point spike that the neighbours did not share is reported once, as disagreement
    flags = np.where(flags & FLAGS["disagree"], flags & ~np.uint8(FLAGS["spike"]), flags)
    peak = {k: np.where(numeric, v[:n], 0.0) for k, v in peak.items()}
    add("threshold", st.threshold.level[:n].astype(np.int64), st.threshold, clear_from=st.threshold.since[:n])
    add("shift", np.where(peak["shift"][:n] >= 1.0, 2, 0), st.shift, peak["shift"])
    add("seasonal", np.where(peak["seasonal"][:n] >= 1.0, 2, 0), st.seasonal, peak["seasonal"])
    mid, lo, late = st.breach.eta(np.arange(n))
    breach_score = st.breach.score_of_eta(mid, lo, late)
    crossed = mid == 0
    # warn when even the late end of the interval crosses within two horizons: a confident heading
    sure = late <= 2 * st.breach.horizon
    add("breach", np.where((breach_score >= 0.5) & sure & ~crossed & numeric, 2, 0), st.breach, breach_score)
    for name, bit in FLAGS.items():
        add(f"health:{name}", np.where(flags & bit, 2, 0), st.health, np.ones(n))
    return _verdict_frame(st, rows, messages, names)


def _verdict_frame(st: WatchState, rows: list, messages: list[str], names: list[str]) -> pl.DataFrame:
    """The verdict rows (series, type, level, time, clear; firing rows' messages in order) as a frame."""
    schema = {k: VERDICT_SCHEMA[k] for k in ("ord", "source", "type", "level", "at", "message", "clear")}
    if not rows:
        return pl.DataFrame(schema=schema)
    sizes = [r[0].size for r in rows]
    sidx = np.concatenate([r[0] for r in rows])
    code = np.repeat(np.array([r[1] for r in rows], dtype=np.int64), sizes)
    level = np.concatenate([np.broadcast_to(np.asarray(r[2], dtype=np.int64), r[0].shape) for r in rows])
    at = np.concatenate([r[3] for r in rows])
    clear = np.repeat(np.array([r[4] for r in rows], dtype=bool), sizes)
    message = pl.Series("message", [""], dtype=pl.Utf8).gather(np.zeros(sidx.size, dtype=np.int64))
    if messages:
        message = message.scatter(np.flatnonzero(~clear), pl.Series(messages, dtype=pl.Utf8))
    return pl.DataFrame({
        "ord": np.arange(sidx.size, dtype=np.int64),
        "source": st.id_frame()["sensor_id"].gather(sidx),
        "type": pl.Series(names, dtype=pl.Utf8).gather(code),
        "level": level, "at": at, "message": message, "clear": clear,
    }, schema=schema)
