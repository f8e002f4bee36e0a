"""Synthetic labelled series in the NAB layout, for tests and for tuning without real labels.

Each series has a daily and weekly cycle, a slow random walk and noise; one to three
anomalies of mixed kinds are injected (spike, level shift, dip in the daily pattern,
variance burst, slow ramp, stuck value). Windows follow NAB's convention: their total
length is 10 % of the file, shared between the anomalies, centred on each onset.

>>> from cityvitals.watch.eval.synthetic import make_corpus
>>> corpus = make_corpus(n_files=2, n_points=1000, seed=1)
>>> [len(s.ts) for s in corpus], all(len(s.windows) >= 1 for s in corpus)
([1000, 1000], True)
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cityvitals.watch.eval.nab import LabelledSeries, probation_length

KINDS = ("spike", "shift", "pattern", "variance", "ramp", "stuck")
START = 1_420_070_400  # 2015-01-01 00:00 UTC


def make_series(name: str, n_points: int, rng: np.random.Generator, step: int = 300) -> LabelledSeries:
    ts = START + np.arange(n_points, dtype=np.int64) * step
    tod = (ts % 86400) / 86400.0
    dow = ((ts // 86400) + 3) % 7
    base = rng.uniform(10, 100)
    amp = base * rng.uniform(0.0, 0.4)
    daily = amp * (np.sin(2 * np.pi * (tod - 0.3)) + 0.3 * np.sin(4 * np.pi * tod))
    weekly = np.where(dow >= 5, -0.3 * amp, 0.0)
    noise_sd = base * rng.uniform(0.01, 0.06)
    walk = np.cumsum(rng.normal(0, noise_sd * 0.05, n_points))
    x = base + daily + weekly + walk + rng.normal(0, noise_sd, n_points)
    k = int(rng.integers(1, 4))
    lo = probation_length(n_points) + n_points // 20
    onsets = np.sort(rng.choice(np.arange(lo, n_points - n_points // 20), size=k, replace=False))
    onsets = onsets[np.r_[True, np.diff(onsets) > n_points // 8]]
    win_len = max(int(0.10 * n_points / len(onsets)), 4)
    windows, kinds = [], []
    for t0 in onsets:
        kind = KINDS[int(rng.integers(len(KINDS)))]
        kinds.append(kind)
        dur = int(rng.integers(6, 60))
        sl = slice(t0, min(t0 + dur, n_points))
        mag = noise_sd * rng.uniform(5, 12) + amp * 0.3
        sign = rng.choice([-1.0, 1.0])
        if kind == "spike":
            x[t0] += sign * mag * 1.5
        elif kind == "shift":
            x[t0:] += sign * mag
        elif kind == "pattern":
            x[sl] = base + weekly[sl] + walk[sl] + rng.normal(0, noise_sd, sl.stop - sl.start) + sign * mag * 0.8
        elif kind == "variance":
            x[sl] += rng.normal(0, noise_sd * 6, sl.stop - sl.start)
        elif kind == "ramp":
            ramp_len = min(int(rng.integers(20, 80)), n_points - t0)
            x[t0 : t0 + ramp_len] += sign * mag * np.linspace(0, 1.5, ramp_len)
            x[t0 + ramp_len :] += sign * mag * 1.5
        elif kind == "stuck":
            x[sl] = x[t0]
        left = max(int(t0 - win_len // 2), 0)
        windows.append((left, min(left + win_len - 1, n_points - 1)))
    out = LabelledSeries(name, ts, x, windows)
    out.kinds = kinds  # type: ignore[attr-defined]  # for diagnostics only
    return out


def make_corpus(n_files: int = 20, n_points: int = 4000, seed: int = 0) -> list[LabelledSeries]:
    rng = np.random.default_rng(seed)
    return [make_series(f"synthetic/s{i:03d}.csv", n_points, rng) for i in range(n_files)]


def _iso(t: int) -> str:
    return datetime.fromtimestamp(int(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def write_corpus(corpus: list[LabelledSeries], data_dir: Path, labels_file: Path) -> None:
    """Write CSV files ``timestamp,value`` and NAB-style labels (``[start, end]`` timestamps)."""
    labels: dict[str, list[list[str]]] = {}
    for s in corpus:
        path = Path(data_dir) / s.name
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = ["timestamp,value"] + [f"{_iso(t)},{v:.6g}" for t, v in zip(s.ts, s.value)]
        path.write_text("\n".join(lines) + "\n")
        labels[s.name] = [[_iso(s.ts[a]) + ".000000", _iso(s.ts[b]) + ".000000"] for a, b in s.windows]
    Path(labels_file).write_text(json.dumps(labels, indent=2))
