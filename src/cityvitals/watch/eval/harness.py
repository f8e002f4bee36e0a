"""Run a detector over a NAB-layout corpus and score it: what ``cityvitals eval`` does.

Layout: a folder of CSV files ``timestamp,value`` (any depth) and a JSON labels file
mapping each file's path relative to the folder to a list of ``[start, end]`` windows
(timestamps, NAB's ``2014-04-10 07:15:00.000000`` or ISO). Each file is scored by a fresh
detector, point by point, causally.

>>> import tempfile, pathlib
>>> from cityvitals.watch.eval.synthetic import make_corpus, write_corpus
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_corpus(make_corpus(n_files=2, n_points=600, seed=2), d / "data", d / "labels.json")
>>> res = evaluate(d / "data", d / "labels.json", detector="windowed_gaussian")
>>> sorted(k for k in res if k in ("standard", "reward_low_fp", "reward_low_fn"))
['reward_low_fn', 'reward_low_fp', 'standard']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from cityvitals.errors import InputError
from cityvitals.watch.eval.nab import LabelledSeries, score_corpus


def _null() -> object:
    class Null:
        name = "null"

        def update_many(self, s, t, x):
            return np.zeros(np.asarray(x).size)

    return Null()


def _factories() -> dict[str, Callable[[], object]]:
    from cityvitals.watch.anomaly import AnomalyScoreDetector
    from cityvitals.watch.gaussian import WindowedGaussian
    from cityvitals.watch.seasonal import SeasonalDetector
    from cityvitals.watch.shift import LevelShiftDetector

    return {
        "cityvitals": AnomalyScoreDetector,
        "windowed_gaussian": WindowedGaussian,
        "shift": LevelShiftDetector,
        "seasonal": SeasonalDetector,
        "null": _null,
    }


DETECTOR_NAMES = ("cityvitals", "windowed_gaussian", "shift", "seasonal", "null")


def _epoch(values: list[str] | pl.Series, where: str) -> np.ndarray:
    s = pl.Series("t", values, dtype=pl.String) if not isinstance(values, pl.Series) else values.cast(pl.String)
    s = s.str.strip_chars().str.replace("T", " ")
    parsed = s.str.to_datetime(time_unit="us", strict=False)
    bad = parsed.is_null() & s.is_not_null()
    if bad.any():
        i = int(bad.arg_true()[0])
        raise InputError(f"{where}: cannot read timestamp {s[i]!r} (item {i + 1})")
    return (parsed.dt.epoch("s")).to_numpy().astype(np.int64)


def load_series(path: Path, name: str) -> tuple[LabelledSeries, pl.Series]:
    try:
        df = pl.read_csv(path, infer_schema_length=0)
    except Exception as exc:  # polars raises many kinds
        raise InputError(f"{path}: not a readable CSV ({exc})") from exc
    if "timestamp" not in df.columns or "value" not in df.columns:
        raise InputError(f"{path}: needs columns timestamp,value (has {', '.join(df.columns)})")
    raw_ts = df["timestamp"]
    ts = _epoch(raw_ts, str(path))
    val = df["value"].str.strip_chars().cast(pl.Float64, strict=False)
    bad = val.is_null() & df["value"].is_not_null() & (df["value"].str.strip_chars() != "")
    if bad.any():
        i = int(bad.arg_true()[0])
        raise InputError(f"{path}: line {i + 2}: value {df['value'][i]!r} is not a number")
    return LabelledSeries(name, ts, val.fill_null(np.nan).to_numpy().astype(np.float64)), raw_ts


def load_corpus(data_dir: Path | str, labels_file: Path | str) -> tuple[list[LabelledSeries], list[pl.Series]]:
    data_dir, labels_file = Path(data_dir), Path(labels_file)
    if not data_dir.is_dir():
        raise InputError(f"--data {data_dir}: not a folder")
    try:
        labels = json.loads(labels_file.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"--labels {labels_file}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"--labels {labels_file}: not JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(labels, dict):
        raise InputError(f"--labels {labels_file}: must map file paths to lists of [start, end]")
    series, raw = [], []
    for name in sorted(labels):
        path = data_dir / name
        if not path.is_file():
            raise InputError(f"--labels {labels_file}: {name!r} is not a file under {data_dir}")
        s, r = load_series(path, name)
        wins = labels[name] or []
        if not isinstance(wins, list) or any(not isinstance(w, list) or len(w) != 2 for w in wins):
            raise InputError(f"--labels {labels_file}: {name!r} must hold a list of [start, end] pairs")
        if wins:
            edges = _epoch([str(v) for w in wins for v in w], f"--labels {labels_file} ({name})").reshape(-1, 2)
            for k, (a, b) in enumerate(edges):
                lo = int(np.searchsorted(s.ts, a, "left"))
                hi = int(np.searchsorted(s.ts, b, "right")) - 1
                if hi < lo:
                    raise InputError(f"--labels {labels_file}: {name!r} window {k + 1} holds no point of the file")
                s.windows.append((lo, hi))
        series.append(s)
        raw.append(r)
    return series, raw


def run_detector(factory: Callable[[], object], s: LabelledSeries) -> np.ndarray:
    """Scores point by point (causal by construction: each point is scored before it is learnt)."""
    det = factory()
    out = np.zeros(len(s.ts))
    series = np.zeros(1, dtype=np.int64)
    upd = det.update_many  # type: ignore[attr-defined]
    for i in range(len(s.ts)):
        out[i] = upd(series, s.ts[i : i + 1], s.value[i : i + 1])[0]
    return np.clip(np.nan_to_num(out), 0.0, 1.0)


def evaluate(
    data_dir: Path | str, labels_file: Path | str, *, detector: str = "cityvitals",
    scores_out: Path | str | None = None, progress: Callable[[int], None] | None = None,
) -> dict:
    factories = _factories()
    if detector not in factories:
        raise InputError(f"--detector {detector!r}: not one of {', '.join(DETECTOR_NAMES)}")
    series, raw = load_corpus(data_dir, labels_file)
    scores = []
    for s, r in zip(series, raw):
        sc = run_detector(factories[detector], s)
        scores.append(sc)
        if scores_out is not None:
            out = Path(scores_out) / s.name
            out.parent.mkdir(parents=True, exist_ok=True)
            pl.DataFrame({"timestamp": r, "value": s.value, "anomaly_score": sc}).write_csv(out)
        if progress:
            progress(1)
    res = score_corpus(series, scores)
    res["detector"] = detector
    return res
