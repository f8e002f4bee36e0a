"""Levels (normal 0, attention 1, warning 2, alarm 3) with hysteresis and minimum duration.

Each threshold k behaves as a Schmitt trigger per series: it switches on when the value
meets the condition and off only when the value has moved ``hysteresis`` past it, and
otherwise keeps its previous state (a forward fill within the series, so the whole batch
is evaluated column-wise). A raised state then only counts once it has held for
``min_windows`` consecutive windows (a rolling minimum). The level is the highest k
whose debounced state is on. The un-debounced level (``schmitt``) is stored so the
next batch can resume the series exactly: thresholds are nested, so that one number
restores every trigger's state.

>>> import polars as pl
>>> from cityvitals.signs.catalog import Condition, Bound
>>> conds = {"warning": Condition("gte", (Bound(50.0),))}
>>> f = pl.DataFrame({"unit_code": ["u"] * 5, "window_start": range(5), "value": [49.0, 51.0, 48.0, 44.0, 52.0]})
>>> assign_levels(f, conds, hysteresis=5)["level"].to_list()
[0, 2, 2, 0, 2]
>>> assign_levels(f, conds, hysteresis=5, min_windows=2)["level"].to_list()
[0, 0, 2, 0, 0]
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cityvitals.signs.catalog import LEVELS, Bound, Condition
from cityvitals.signs.dense import factorize

SERIES = "unit_code"


def _bound(b: Bound) -> pl.Expr:
    return pl.lit(b.value) if b.param is None else pl.col(f"p_{b.param}") + b.value


def condition(cond: Condition, v: pl.Expr) -> pl.Expr:
    op = cond.op
    if op == "outside":
        return (v < _bound(cond.bounds[0])) | (v > _bound(cond.bounds[1]))
    if op == "in":
        return v.is_in(list(cond.members))
    b = _bound(cond.bounds[0])
    return {"gte": v >= b, "gt": v > b, "lte": v <= b, "lt": v < b}[op]


def released(cond: Condition, v: pl.Expr, h: float) -> pl.Expr:
    """True when the value has moved far enough back (hysteresis h) to leave the level."""
    if h <= 0 or cond.op == "in":
        return ~condition(cond, v)
    if cond.op == "outside":
        lo, hi = _bound(cond.bounds[0]) + h, _bound(cond.bounds[1]) - h
        return ~((v < lo) | (v > hi))
    shifted = v + h if cond.op in ("gte", "gt") else v - h
    return ~condition(cond, shifted)


def _np_flags(f: pl.DataFrame, conds: dict[str, Condition], ks: list[int], h: float) -> dict[str, np.ndarray] | None:
    """The on/off flags of each threshold as NumPy comparisons: the same as ``condition``
    and ``released`` when the value and parameter columns hold no null or NaN (else None:
    the caller uses the Polars expressions)."""
    if any(conds[LEVELS[k]].op == "in" for k in ks):
        return None
    cols = {"value"} | {f"p_{b.param}" for k in ks for b in conds[LEVELS[k]].bounds if b.param is not None}
    arr = {}
    for c in cols:
        s = f[c]
        if s.null_count():
            return None
        a = s.cast(pl.Float64).to_numpy()
        if np.isnan(a).any():
            return None
        arr[c] = a
    v = arr["value"]

    def bound(b: Bound, shift: float = 0.0):
        return (b.value if b.param is None else arr[f"p_{b.param}"] + b.value) + shift

    def test(cond: Condition, x: np.ndarray) -> np.ndarray:
        op = cond.op
        if op == "outside":
            return (x < bound(cond.bounds[0])) | (x > bound(cond.bounds[1]))
        if op == "in":
            return np.isin(x, np.array(cond.members, dtype=float))
        b = bound(cond.bounds[0])
        return {"gte": x >= b, "gt": x > b, "lte": x <= b, "lt": x < b}[op]

    out = {}
    for k in ks:
        cond = conds[LEVELS[k]]
        out[f"on{k}"] = test(cond, v)
        if h <= 0 or cond.op == "in":
            out[f"off{k}"] = ~out[f"on{k}"]
        elif cond.op == "outside":
            out[f"off{k}"] = ~((v < bound(cond.bounds[0], h)) | (v > bound(cond.bounds[1], -h)))
        else:
            out[f"off{k}"] = ~test(cond, v + h if cond.op in ("gte", "gt") else v - h)
    return out


def _segment_starts(series: np.ndarray) -> np.ndarray:
    """For rows sorted by series: the row index where each row's series begins."""
    n = len(series)
    first = np.ones(n, bool)
    first[1:] = series[1:] != series[:-1]
    return np.maximum.accumulate(np.where(first, np.arange(n), 0))


def assign_levels(
    frame: pl.DataFrame, conds: dict[str, Condition], *, hysteresis: float = 0.0, min_windows: int = 1,
) -> pl.DataFrame:
    """Add ``schmitt`` and ``level`` (Int8) to one indicator's rows.

    ``frame``: unit_code, window_start, value, threshold parameter columns ``p_<name>``,
    and optionally ``ctx`` (bool) / ``ctx_schmitt`` for context rows from earlier batches
    (the caller drops them afterwards). Rows are returned in (unit_code, window_start)
    order. The conditions are Polars expressions (they may read parameter columns); the
    per-series forward fill and the minimum-duration check are NumPy passes over the
    sorted rows with the series boundaries as indices, so no per-series grouping.
    """
    n = frame.height
    key = frame[SERIES]
    # any integer per series will do (only equality and order within a series matter):
    # a Categorical's physical ids cost nothing
    series = key.to_physical().to_numpy().astype(np.int64) if key.dtype == pl.Categorical else factorize(key)[0]
    ws = frame["window_start"].to_numpy()
    ds = np.diff(series)
    if n and not ((ds > 0) | ((ds == 0) & (np.diff(ws) > 0))).all():  # not yet in (series, window) order
        order = np.lexsort((ws, series))
        f = frame[order]
        series = series[order]
    else:
        f = frame
    v = pl.col("value")
    ks = [k for k, name in enumerate(LEVELS) if k and name in conds]
    if not ks or n == 0:
        return f.with_columns(pl.lit(0, pl.Int8).alias("schmitt"), pl.lit(0, pl.Int8).alias("level"))
    flags = _np_flags(f, conds, ks, hysteresis)
    if flags is None:  # nulls or NaN: Polars' null and NaN semantics decide
        flags = f.select(
            *[condition(conds[LEVELS[k]], v).fill_null(False).alias(f"on{k}") for k in ks],
            *[released(conds[LEVELS[k]], v, hysteresis).fill_null(False).alias(f"off{k}") for k in ks],
        )
        flags = {c: flags[c].to_numpy() for c in flags.columns}
    if "ctx" in f.columns:
        ctx = f["ctx"].fill_null(False).to_numpy()
        cs = f["ctx_schmitt"].fill_null(0).cast(pl.Int8).to_numpy()
    else:  # no context rows from earlier batches
        ctx = np.zeros(n, bool)
        cs = np.zeros(n, np.int8)
    if not ctx.any() and (n < 2 or (series[1:] != series[:-1]).all()):  # one window per series, nothing to resume
        schmitt = np.zeros(n, np.int8)
        level = np.zeros(n, np.int8)
        for k in ks:  # a single row's trigger is on exactly when it meets the condition
            on = flags[f"on{k}"].astype(np.int8) * k
            schmitt = np.maximum(schmitt, on)
            if min_windows <= 1:
                level = np.maximum(level, on)
        return f.with_columns(pl.Series("schmitt", schmitt, pl.Int8), pl.Series("level", level, pl.Int8))
    start = _segment_starts(series)
    rows = np.arange(n)
    schmitt = np.zeros(n, np.int8)
    level = np.zeros(n, np.int8)
    for k in ks:
        on, off = flags[f"on{k}"], flags[f"off{k}"]
        raw = np.where(ctx, (cs >= k).astype(np.int8), np.where(on, 1, np.where(off, 0, -1))).astype(np.int8)
        last = np.maximum.accumulate(np.where(raw >= 0, rows, -1))  # last decided row so far
        st = np.where(last >= start, raw[np.maximum(last, 0)], 0).astype(np.int8)
        schmitt = np.maximum(schmitt, st * k)
        if min_windows > 1:  # held for min_windows consecutive rows of the same series
            cum = np.concatenate(([0], np.cumsum(st, dtype=np.int64)))
            lo = np.maximum(rows + 1 - min_windows, 0)
            held = (cum[rows + 1] - cum[lo] == min_windows) & (rows - start + 1 >= min_windows)
            st = held.astype(np.int8)
        level = np.maximum(level, st * k)
    return f.with_columns(pl.Series("schmitt", schmitt, pl.Int8), pl.Series("level", level, pl.Int8))
