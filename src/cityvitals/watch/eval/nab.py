"""NAB-style scoring of anomaly scores against labelled windows, from the NAB paper's rules.

Rules (Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms — the Numenta
Anomaly Benchmark", 2015):

* a detector emits one score in [0, 1] per point, causally; a threshold turns scores into
  detections; the first 15 % of each file (at most 750 points) is a probationary period
  whose detections are ignored;
* inside a window only the first detection counts; it earns ``A_TP * sigma(y)`` where
  ``y = -(right - i + 1) / width`` runs from -1 at the window's start to ~0 at its end and
  ``sigma(y) = 2 / (1 + exp(5 y)) - 1`` is the scaled sigmoid, so earlier is better;
* a detection outside every window costs ``A_FP * sigma(y)`` (negative) with ``y`` its
  distance past the end of the previous window over that window's width minus one (so a
  detection just after a window costs little), or ``-A_FP`` when no window precedes it;
* a window with no detection costs ``A_FN``;
* the raw score is normalised so a detector that never fires scores 0 and a perfect one
  (firing at the first point of each window) scores 100; the threshold is the one that
  maximises the profile's total over all files, chosen per profile.

>>> import numpy as np
>>> from cityvitals.watch.eval.nab import LabelledSeries, score_corpus
>>> ts = np.arange(2000) * 300
>>> s = LabelledSeries("a.csv", ts, np.zeros(2000), [(1000, 1099)])
>>> perfect = np.zeros(2000); perfect[1000] = 1.0
>>> late = np.zeros(2000); late[1090] = 1.0
>>> never = np.zeros(2000)
>>> [round(score_corpus([s], [x])["standard"], 1) for x in (perfect, late, never)]
[100.0, 62.7, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_fp": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_fn": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}
PROBATION_SHARE = 0.15


def scaled_sigmoid(y: np.ndarray | float) -> np.ndarray:
    """NAB's scoring curve: ~+0.987 at y=-1 (window start), 0 at y=0, -> -1 far past a window."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y > 3.0, -1.0, 2.0 / (1.0 + np.exp(np.minimum(5.0 * y, 700))) - 1.0)


def probation_length(n: int) -> int:
    return int(min(np.floor(PROBATION_SHARE * n), PROBATION_SHARE * 5000))


@dataclass
class LabelledSeries:
    """One labelled file: epoch-second timestamps, values, windows as inclusive index pairs."""

    name: str
    ts: np.ndarray
    value: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Prepared:
    """Per point, everything the threshold sweep needs (independent of the threshold)."""

    fp_val: np.ndarray  # unweighted sigma for detections outside windows (0 inside)
    win: np.ndarray  # global window id or -1
    tp_val: np.ndarray  # unweighted sigma for detections inside windows
    valid: np.ndarray  # after probation
    perfect_tp: np.ndarray  # per window: the best reachable tp value


def _prepare(series: LabelledSeries, win_offset: int) -> _Prepared:
    n = len(series.ts)
    idx = np.arange(n)
    valid = idx >= probation_length(n)
    win = np.full(n, -1, dtype=np.int64)
    tp_val = np.zeros(n)
    fp_val = np.full(n, -1.0)
    prev_right = np.full(n, -1, dtype=np.int64)
    prev_width = np.ones(n, dtype=np.int64)
    perfect = []
    for k, (left, right) in enumerate(sorted(series.windows)):
        left, right = max(int(left), 0), min(int(right), n - 1)
        width = right - left + 1
        sl = slice(left, right + 1)
        win[sl] = win_offset + k
        tp_val[sl] = scaled_sigmoid(-(right - idx[sl] + 1) / width)
        prev_right[right + 1 :] = right
        prev_width[right + 1 :] = width
        first_valid = max(left, probation_length(n))
        perfect.append(float(scaled_sigmoid(-(right - first_valid + 1) / width)) if first_valid <= right else 0.0)
    after = (win < 0) & (prev_right >= 0)
    fp_val[after] = scaled_sigmoid(np.abs(idx[after] - prev_right[after]) / np.maximum(prev_width[after] - 1, 1))
    fp_val[win >= 0] = 0.0
    return _Prepared(fp_val, win, tp_val, valid, np.array(perfect))


def sweep(prepared: Sequence[_Prepared], scores: Sequence[np.ndarray], profile: dict[str, float]) -> dict:
    """Best threshold over all files for one profile, exactly (every distinct score tried)."""
    tpw, fpw, fnw = profile["tp"], profile["fp"], profile["fn"]
    n_windows = sum(p.perfect_tp.size for p in prepared)
    null = -fnw * n_windows
    perfect = sum(float(np.sum(tpw * p.perfect_tp)) for p in prepared)
    sc = np.concatenate([np.asarray(s, dtype=np.float64)[p.valid] for p, s in zip(prepared, scores)]) if prepared else np.zeros(0)
    win = np.concatenate([p.win[p.valid] for p in prepared]) if prepared else np.zeros(0, np.int64)
    tpv = np.concatenate([p.tp_val[p.valid] for p in prepared]) if prepared else np.zeros(0)
    fpv = np.concatenate([p.fp_val[p.valid] for p in prepared]) if prepared else np.zeros(0)
    sc = np.nan_to_num(sc, nan=0.0)
    order = np.argsort(-sc, kind="stable")
    sc, win, tpv, fpv = sc[order], win[order], tpv[order], fpv[order]
    delta = np.where(win < 0, fpw * fpv, 0.0)
    inw = np.flatnonzero(win >= 0)
    if inw.size:
        w = win[inw]
        o = np.lexsort((inw, w))  # by window, then by sweep position
        w_o, v_o, pos_o = w[o], tpv[inw][o], inw[o]
        start = np.ones(w_o.size, dtype=bool)
        start[1:] = w_o[1:] != w_o[:-1]
        # running max of tp value per window, in sweep order
        run = v_o.copy()
        seg_id = np.cumsum(start) - 1
        big = (seg_id * 10.0)  # offsets keep segments apart (tp values lie in (-1, 1))
        run = np.maximum.accumulate(run + big) - big
        prev = np.where(start, np.nan, np.r_[np.nan, run[:-1]])
        d = np.where(start, tpw * run + fnw, tpw * (run - np.nan_to_num(prev)))
        delta[pos_o] += d
    total = null + np.cumsum(delta)
    # only thresholds at the end of a run of equal scores are reachable
    ends = np.ones(sc.size, dtype=bool)
    if sc.size:
        ends[:-1] = sc[:-1] != sc[1:]
    cand_total = total[ends]
    cand_thr = sc[ends]
    best_raw, best_thr = null, float(sc[0]) + 1e-9 if sc.size else 1.0
    if cand_total.size and cand_total.max() > null:
        k = int(np.argmax(cand_total))
        best_raw, best_thr = float(cand_total[k]), float(cand_thr[k])
    denom = perfect - null
    norm = 100.0 * (best_raw - null) / denom if denom > 0 else 0.0
    return {"score": norm, "raw": best_raw, "threshold": best_thr, "null": null, "perfect": perfect}


def detection_metrics(series: Sequence[LabelledSeries], scores: Sequence[np.ndarray], threshold: float) -> dict:
    """Window-level precision/recall/F1 and mean detection delay at one threshold."""
    tp = fn = fp = 0
    delays: list[float] = []
    for s, sc in zip(series, scores):
        n = len(s.ts)
        det = np.asarray(sc) >= threshold
        det[: probation_length(n)] = False
        inside = np.zeros(n, dtype=bool)
        for left, right in s.windows:
            left, right = max(int(left), 0), min(int(right), n - 1)
            inside[left : right + 1] = True
            hits = np.flatnonzero(det[left : right + 1])
            if hits.size:
                tp += 1
                delays.append(float(s.ts[left + hits[0]] - s.ts[left]))
            else:
                fn += 1
        fp += int(np.sum(det & ~inside))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold, "windows": tp + fn, "detected_windows": tp, "missed_windows": fn,
        "false_detections": fp, "precision": precision, "recall": recall, "f1": f1,
        "mean_detection_delay_s": float(np.mean(delays)) if delays else None,
    }


def score_corpus(series: Sequence[LabelledSeries], scores: Sequence[np.ndarray]) -> dict:
    """Normalised score per profile (keys ``standard``, ``reward_low_fp``, ``reward_low_fn``),
    the threshold each used, and detection metrics at the standard profile's threshold."""
    prepared, offset = [], 0
    for s in series:
        prepared.append(_prepare(s, offset))
        offset += len(s.windows)
    out: dict = {"files": len(series), "points": int(sum(len(s.ts) for s in series)), "windows": offset}
    details = {}
    for name, prof in PROFILES.items():
        res = sweep(prepared, scores, prof)
        out[name] = float(res["score"])
        details[name] = res
    out["profiles"] = details
    out["metrics"] = detection_metrics(series, scores, details["standard"]["threshold"])
    return out
