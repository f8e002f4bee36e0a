"""Run a scenario: build or load the city, stream readings block by block, write the truth.

The loop per block is: true values from the model → threshold crossings recorded for
the truth (before faults and loss, i.e. what the city really did) → sensor faults and
missing data applied → the emitter writes the block. Nothing accumulates across
blocks except small states (AR noise, ponding, held-back late rows, crossing times),
so memory is bounded by the block size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cityvitals.errors import InputError
from cityvitals.sim._rng import stream
from cityvitals.sim.city import City, generate_city, load_city, write_city
from cityvitals.sim.emit import Emitter
from cityvitals.sim.index import CityIndex
from cityvitals.sim.model import Model
from cityvitals.sim.scenarios import Incident, Plan, Track, build_plan, parse_scenarios
from cityvitals.sim.weather import apply_rain_humidity, make_weather

DEFAULT_START = "2024-07-15T00:00:00+08:00"
MISSING_RATE = 0.003
TARGET_BLOCK_ROWS = 2_000_000


def parse_start(text: str | None) -> datetime:
    text = text or DEFAULT_START
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--start {text!r}: expected an ISO 8601 time such as {DEFAULT_START}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone(timedelta(hours=8)))
    return t


def parse_duration(text: str | None, what: str = "--duration") -> float:
    """``90s``, ``15m``, ``6h``, ``1d`` or plain seconds → seconds.

    >>> parse_duration("6h"), parse_duration("60s"), parse_duration("1d")
    (21600.0, 60.0, 86400.0)
    """
    if text is None:
        raise InputError(f"{what}: missing")
    s = str(text).strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if s and s[-1] in mult:
            v = float(s[:-1]) * mult[s[-1]]
        else:
            v = float(s)
    except ValueError:
        raise InputError(f"{what} {text!r}: expected a duration such as 90s, 15m, 6h or 1d") from None
    if not v > 0:
        raise InputError(f"{what} {text!r}: must be positive")
    return v


@dataclass
class _TrackState:
    event: Incident
    track: Track
    first: np.ndarray
    last: np.ndarray


class Tracker:
    """First and last step at which each tracked sensor crosses each tracked level."""

    def __init__(self, plan: Plan, ix: CityIndex, dt: float):
        self.states = [
            _TrackState(ev, tr, np.full(len(tr.sensors), -1, np.int64), np.full(len(tr.sensors), -1, np.int64))
            for ev in plan.all_events() for tr in ev.track if len(tr.sensors)
        ]
        self.rain_idx = ix.by_kind.get("rainfall", np.zeros(0, np.int64))
        self.win = max(1, int(round(3600.0 / dt)))
        self.rain_buf = np.zeros((0, len(self.rain_idx)))

    def update(self, k0: int, V: np.ndarray) -> None:
        T = V.shape[0]
        rain1h = None
        if any(s.track.transform == "sum_1h" for s in self.states):
            R = np.concatenate([self.rain_buf, V[:, self.rain_idx]])
            cs = np.cumsum(np.concatenate([np.zeros((1, R.shape[1])), R]), axis=0)
            lo = np.maximum(np.arange(len(self.rain_buf), len(R)) + 1 - self.win, 0)
            rain1h = cs[len(self.rain_buf) + 1:] - cs[lo]
            self.rain_buf = R[-(self.win - 1):] if self.win > 1 else R[:0]
        steps = np.arange(k0, k0 + T)
        for st in self.states:
            ev, tr = st.event, st.track
            if ev.start > steps[-1]:
                continue
            if tr.transform == "sum_1h":
                vals = rain1h[:, np.searchsorted(self.rain_idx, tr.sensors)]
            else:
                vals = V[:, tr.sensors]
            thr = tr.value if np.isscalar(tr.value) else np.asarray(tr.value)[None, :]
            cond = {"<": vals < thr, "<=": vals <= thr, ">": vals > thr, ">=": vals >= thr}[tr.op]
            cond &= (steps >= ev.start)[:, None]
            anyc = cond.any(0)
            if not anyc.any():
                continue
            first = k0 + cond.argmax(0)
            new = anyc & (st.first < 0)
            st.first[new] = first[new]
            last = k0 + T - 1 - cond[::-1].argmax(0)
            st.last[anyc] = last[anyc]


def _apply_faults(plan: Plan, k0: int, V: np.ndarray, present: np.ndarray, seed: int) -> None:
    T = V.shape[0]
    steps = np.arange(k0, k0 + T)
    for f in plan.faults:
        on = (steps >= f.start) & (steps < f.end)
        if not on.any():
            continue
        j = f.sensor
        if f.type == "stuck":
            if "held" not in f.params:
                f.params["held"] = float(V[int(np.argmax(on)), j])
            V[on, j] = f.params["held"]
        elif f.type == "drift":
            frac = np.clip((steps - f.start) / max(1, f.end - f.start), 0, 1)
            V[on, j] += f.params["total"] * frac[on]
        elif f.type == "spikes":
            rng = stream(seed, "fault", f.id, k0)
            hit = on & (rng.uniform(size=T) < f.params["rate"])
            V[hit, j] += f.params["size"] * rng.choice([-1.0, 1.0], int(hit.sum()))
        elif f.type == "wrong_unit":
            V[on, j] *= f.params["factor"]
        elif f.type == "dropout":
            present[on, j] = False


def _iso(t0: datetime, step: int, dt: float) -> str:
    return (t0 + timedelta(seconds=step * dt)).isoformat()


def _block_steps(n_sensors: int, steps_per_file: int) -> int:
    target = max(1, TARGET_BLOCK_ROWS // max(1, n_sensors))
    best = 1
    for d in range(1, steps_per_file + 1):
        if steps_per_file % d == 0 and d <= target:
            best = d
    return best


def ensure_city(out: Path, *, seed: int, districts: int = 7, centre=None, sensors: int = 5000, resolution: int = 9) -> City:
    if (out / "city.json").exists():
        return load_city(out)
    from cityvitals.sim.city import DEFAULT_CENTRE

    city = generate_city(seed, districts=districts, centre=centre or DEFAULT_CENTRE, sensors=sensors, resolution=resolution)
    write_city(city, out)
    return load_city(out)  # the run always works from the files, so a rerun is identical


def run_simulation(
    out: str | Path,
    *,
    scenario: str | None = "quiet_day",
    start: str | None = None,
    duration: str | float = "1d",
    seed: int = 1,
    random_incidents: int = 0,
    interval: str | float = "60s",
    fmt: str = "parquet",
    bad_rate: float = 0.002,
    city_sensors: int = 5000,
    city_districts: int = 7,
    progress: Callable[[int, int], None] | None = None,
    write_reports: bool = True,
) -> dict[str, Any]:
    """Simulate into ``out``; returns a summary (also written as truth.json with the truth)."""
    out = Path(out)
    names = parse_scenarios(scenario)
    if fmt not in ("parquet", "ndjson"):
        raise InputError(f"--format {fmt!r}: choose parquet or ndjson")
    if not 0 <= bad_rate <= 0.5:
        raise InputError(f"--bad-rate {bad_rate}: must be between 0 and 0.5")
    dt = parse_duration(interval, "--interval") if not isinstance(interval, (int, float)) else float(interval)
    dur = parse_duration(duration) if not isinstance(duration, (int, float)) else float(duration)
    if dt < 1:
        raise InputError(f"--interval {interval}: must be at least 1 second")
    t0 = parse_start(start)
    steps = int(dur // dt)
    if steps < 1:
        raise InputError(f"--duration {duration}: shorter than one interval ({dt:g} s)")
    out.mkdir(parents=True, exist_ok=True)
    city = ensure_city(out, seed=seed, sensors=city_sensors, districts=city_districts)
    ix = CityIndex(city)
    offset = float(city.params.get("utc_offset_hours", 8))
    t_epoch = t0.timestamp() + np.arange(steps) * dt
    radius = float(np.sqrt(city.outline.area / np.pi))
    weather = make_weather(seed, t_epoch, offset, radius)
    plan = build_plan(ix, weather, names, seed, steps, dt, random_incidents)
    apply_rain_humidity(weather)
    model = Model(ix, weather, plan, seed, dt)
    tracker = Tracker(plan, ix, dt)
    spf = max(1, int(round(3600.0 / dt)))
    T = _block_steps(ix.n, spf)
    rdir = out / "readings"
    if rdir.exists():
        for p in rdir.iterdir():
            if p.is_file() and p.suffix in (".parquet", ".ndjson"):
                p.unlink()
    em = Emitter(rdir, city.sensors, start_epoch=t0.timestamp(), dt=dt, fmt=fmt, bad_rate=bad_rate, seed=seed,
                 utc_offset_h=offset, steps_per_file=spf)
    offline = [ev for ev in plan.background if ev.type == "sensor_offline"]
    started = time.perf_counter()
    for k0 in range(0, steps, T):
        Tb = min(T, steps - k0)
        V, _ = model.block(k0, Tb)
        tracker.update(k0, V)
        rng = stream(seed, "run", "missing", k0)
        present = rng.random((Tb, ix.n), dtype=np.float32) >= MISSING_RATE
        bsteps = np.arange(k0, k0 + Tb)
        for ev in offline:
            on = (bsteps >= ev.start) & (bsteps < ev.end)
            if on.any():
                present[on, ev.sensors[0]] = False
        _apply_faults(plan, k0, V, present, seed)
        np.clip(V, model.lo, model.hi, out=V)
        em.write_block(k0, V, present)
        if progress:
            progress(k0 + Tb, steps)
    em.flush()
    elapsed = time.perf_counter() - started

    from cityvitals.sim.truth import build_truth

    truth = build_truth(city, ix, plan, tracker, t0=t0, dt=dt, steps=steps, seed=seed, names=names, fmt=fmt,
                        emitter=em, random_incidents=random_incidents, bad_rate=bad_rate)
    if write_reports:
        from cityvitals.sim.reports import generate_reports

        n_reports = generate_reports(city, ix, truth, out / "reports.ndjson", seed=seed, t0=t0, dt=dt, steps=steps)
        truth["emitted"]["reports"] = n_reports
    (out / "truth.json").write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return {
        "out": str(out),
        "scenarios": names,
        "sensors": ix.n,
        "steps": steps,
        "readings": em.counts["readings"],
        "files": len(em.files),
        "seconds": round(elapsed, 3),
        "readings_per_second": round(em.counts["readings"] / max(elapsed, 1e-9)),
        "incidents": len(truth["incidents"]),
        "faults": len(truth["faults"]),
        "bad_records": truth["emitted"]["bad"],
        "reports": truth["emitted"].get("reports", 0),
    }
