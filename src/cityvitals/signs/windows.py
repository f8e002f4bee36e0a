"""Event-time windows: readings -> one value per (unit, window) for a sensor-fed indicator.

Pure and columnar. Time is handled as integer microseconds so tumbling and sliding
windows are the same arithmetic: a reading falls in the slide bucket
``floor((t + offset) / slide) * slide - offset`` and a sliding window of ``k`` slides is
the combination of ``k`` consecutive buckets' partial aggregates. Partials (sum, count,
max, min, last) combine exactly, so a sliding window costs one pass over the readings
plus a pass over buckets, never ``k`` copies of each reading. The local ``offset`` makes
daily windows start at local midnight.

Keys are dense integers (``dense.factorize``) and the partials are NumPy reductions
(``bincount``, ``maximum.at``); the only per-row work is integer arithmetic, which is
what keeps this above a million readings per second on one core.

>>> import polars as pl
>>> from datetime import datetime, timezone
>>> from cityvitals.signs.catalog import load_catalog
>>> t = [datetime(2024, 1, 1, h, m, tzinfo=timezone.utc) for h, m in ((0, 10), (0, 50), (1, 5))]
>>> r = pl.DataFrame({"sensor_id": ["s"] * 3, "ts": t, "value": [10.0, 20.0, 40.0], "unit_code": ["u"] * 3})
>>> window_values(r, load_catalog()["env.pm25"])["value"].to_list()
[15.0, 40.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from cityvitals.signs.catalog import Indicator
from cityvitals.signs.dense import factorize, group_ids, reduce_count, reduce_max, reduce_min, reduce_sum

US = 1_000_000
OUT_SCHEMA = {"unit_code": pl.String, "window_start": pl.Int64, "window_end": pl.Int64, "value": pl.Float64, "n": pl.Int64}


def to_us(col: str = "ts") -> pl.Expr:
    """A UTC datetime column as integer microseconds since the epoch."""
    return pl.col(col).cast(pl.Datetime("us", "UTC")).cast(pl.Int64)


def us_to_dt(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def bucket_expr(t: pl.Expr, ind: Indicator, offset_us: int) -> pl.Expr:
    slide = int(ind.window.slide.total_seconds() * US)
    return ((t + offset_us) // slide) * slide - offset_us


def hour_filter(t: pl.Expr, hours: tuple[int, int], offset_us: int) -> pl.Expr:
    """Local hour within [from, to), wrapping past midnight (night = [22, 6])."""
    h = ((t + offset_us) // (3600 * US)) % 24
    lo, hi = hours
    return (h >= lo) & (h < hi) if lo < hi else (h >= lo) | (h < hi)


def expand_windows(frame: pl.DataFrame, ind: Indicator, col: str = "bucket") -> pl.DataFrame:
    """Each slide bucket belongs to k windows starting at bucket - j*slide (j < k)."""
    k = ind.window.k
    slide = int(ind.window.slide.total_seconds() * US)
    if k == 1:
        return frame.with_columns(pl.col(col).alias("window_start"))
    return (
        frame.with_columns(pl.lit(list(range(k)), dtype=pl.List(pl.Int64)).alias("_j"))
        .explode("_j")
        .with_columns((pl.col(col) - pl.col("_j") * slide).alias("window_start"))
        .drop("_j")
    )


_NEEDS = {
    "mean": "sc", "sum": "sc", "count": "c", "max": "xc", "min": "nc", "last": "lc", "leq": "sc",
    "count_eq": "sc", "count_ge": "sc", "share_ge": "sc", "share_le": "sc",
}


def _empty(unit_dtype: pl.DataType = pl.String) -> pl.DataFrame:
    return pl.DataFrame(schema={**OUT_SCHEMA, "unit_code": unit_dtype})


def _transform(ind: Indicator, v: np.ndarray) -> np.ndarray:
    """The per-reading quantity that is summed: the value, an indicator (0/1), or 10^(L/10)."""
    a = ind.agg_arg
    if ind.agg == "leq":
        return 10.0 ** (v / 10.0)
    if a is None:
        return v
    if ind.agg == "count_eq":
        return (v == a).astype(float)
    if ind.agg in ("count_ge", "share_ge"):
        return (v >= a).astype(float)
    if ind.agg == "share_le":
        return (v <= a).astype(float)
    return v


def _partials(inv: np.ndarray, m: int, need: str, x: np.ndarray, v: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    out = {"c": reduce_count(inv, m)}
    if "s" in need:
        out["s"] = reduce_sum(inv, x, m)
    if "x" in need:
        out["mx"] = reduce_max(inv, v, m)
    if "n" in need:
        out["mn"] = reduce_min(inv, v, m)
    if "l" in need:  # the value of the latest reading (ties: the later row)
        order = np.lexsort((np.arange(len(t)), t, inv))
        last = np.flatnonzero(np.r_[inv[order][1:] != inv[order][:-1], True])
        out["lt"], out["lv"] = t[order][last], v[order][last]
    return out


def _slide_dense(cells: np.ndarray, part: dict, nser: int, nb: int, k: int, wlo: int, whi: int) -> tuple[np.ndarray, dict]:
    """Sliding windows wlo..whi on a (series x bucket) grid; window wi covers buckets wi-k+1..wi.

    The grid holds the buckets wlo-k+1..whi, so window wi is the sum (max, min) of k
    column-shifted views: k vectorised passes over the grid, no copy per reading.
    """
    width = nb + k - 1
    ncols, nwin = whi - wlo + k, whi - wlo + 1
    ser, col = cells // nb, cells % nb + k - 1 - wlo
    sel = (col >= 0) & (col < ncols)
    ser, col = ser[sel], col[sel]
    tmin = np.iinfo(np.int64).min
    grids: dict[str, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for name, arr in part.items():
        fill = {"mx": -np.inf, "mn": np.inf, "lt": tmin, "lv": np.nan}.get(name, 0)
        g = np.full((nser, ncols), fill, dtype=arr.dtype)
        g[ser, col] = arr[sel]
        grids[name] = g
        if name == "lv":
            continue
        views = [g[:, j: j + nwin] for j in range(k)]
        if name in ("c", "s"):
            acc = views[0].copy()
            for w in views[1:]:
                acc += w
        elif name in ("mx", "lt"):
            acc = np.maximum.reduce(views)
        else:
            acc = np.minimum.reduce(views)
        out[name] = acc
    if "lt" in part:  # the last value of a window is the one of its latest bucket
        lv = np.full((nser, nwin), np.nan)
        for j in range(k):
            lv = np.where(grids["lt"][:, j: j + nwin] == out["lt"], grids["lv"][:, j: j + nwin], lv)
        out["lv"] = lv
    keep = out["c"] > 0
    s_idx, w_idx = np.nonzero(keep)
    return s_idx.astype(np.int64) * width + (w_idx + wlo), {n: a[keep] for n, a in out.items()}


def _slide_sparse(cells: np.ndarray, part: dict, nb: int, k: int, wlo: int, whi: int) -> tuple[np.ndarray, dict]:
    """Sliding windows by copying each non-empty bucket into its k windows, then reducing."""
    width = nb + k - 1
    ser, b = cells // nb, cells % nb
    # (cell, window) pairs with the window in [wlo, whi] only: a recompute of one window
    # keeps one of each cell's k windows, so the k copies are never made
    reps = [np.flatnonzero((b + j >= wlo) & (b + j <= whi)) for j in range(k)]
    rep = np.concatenate(reps)
    wi = b[rep] + np.repeat(np.arange(k), [len(r) for r in reps])
    order = np.argsort(rep, kind="stable")  # cell by cell, windows in order: the order of the partials' sums
    rep, wi = rep[order], wi[order]
    inv, keys = group_ids(ser[rep] * width + wi)
    m = len(keys)
    out: dict[str, np.ndarray] = {"c": np.bincount(inv, weights=part["c"][rep], minlength=m).astype(np.int64)}
    if "s" in part:
        out["s"] = reduce_sum(inv, part["s"][rep], m)
    if "mx" in part:
        out["mx"] = reduce_max(inv, part["mx"][rep], m)
    if "mn" in part:
        out["mn"] = reduce_min(inv, part["mn"][rep], m)
    if "lt" in part:
        order = np.lexsort((part["lt"][rep], inv))
        last = np.flatnonzero(np.r_[inv[order][1:] != inv[order][:-1], True])
        out["lt"], out["lv"] = part["lt"][rep][order][last], part["lv"][rep][order][last]
    return keys, out


def _value(ind: Indicator, p: dict) -> np.ndarray:
    c = p["c"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        agg = ind.agg
        if agg == "mean":
            return p["s"] / c
        if agg in ("sum", "count_eq", "count_ge"):
            return p["s"]
        if agg == "count":
            return c
        if agg == "max":
            return p["mx"]
        if agg == "min":
            return p["mn"]
        if agg == "last":
            return p["lv"]
        if agg == "leq":
            return 10.0 * np.log10(p["s"] / c)
        return 100.0 * p["s"] / c  # share_ge, share_le


def _only_range(only: pl.DataFrame | None, b0: int, slide: int, off: int, k: int) -> tuple[int, int] | None:
    if only is None:
        return None
    if only.is_empty():
        return (1, 0)
    ws = only["window_start"]
    lo = (int(ws.min()) + off) // slide - b0 + k - 1
    hi = (int(ws.max()) + off) // slide - b0 + k - 1
    return lo, hi


def _between_range(between: tuple[int, int] | None, b0: int, slide: int, off: int, k: int) -> tuple[int, int] | None:
    """Window indices whose start lies in [lo, hi) µs."""
    if between is None:
        return None
    lo, hi = between
    first = -(-(lo + off) // slide)  # the first slide boundary at or after lo
    last = -(-(hi + off) // slide) - 1  # the last one before hi
    return first - b0 + k - 1, last - b0 + k - 1


@dataclass
class Partials:
    """Partial aggregates of one indicator per (series, slide bucket), the cells of a grid.

    What a window is combined from. ``window_values`` makes them from readings in one pass;
    the live signs session (``signs.session``) keeps them between runs and hands the same
    structure to ``windows_from``, so a window's value is computed by one piece of code
    whichever way its partials were gathered. A series is a unit, or a unit and sensor for
    indicators that combine per-sensor values (``series_sensor`` then names the sensor).
    """

    units: pl.Series  # distinct unit codes; a series' unit is an index into them
    series_unit: np.ndarray  # unit index of each series
    b0: int  # bucket number (slides since the epoch, local offset applied) of grid column 0
    nb: int  # grid columns (buckets) spanned
    cells: np.ndarray  # series * nb + column of every non-empty cell, ascending
    part: dict[str, np.ndarray]  # per cell: c (count), s (sum of the transformed value), mx, mn, lt/lv
    sensors: pl.Series | None = None  # sensor_combine: distinct sensor ids
    series_sensor: np.ndarray | None = None  # sensor_combine: sensor index of each series


def usable(readings: pl.DataFrame, ind: Indicator, off: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(row indices kept or None for all, ts µs, value) of the readings that count for ``ind``:
    a unit, a value that is not NaN, and the indicator's local hours."""
    t = readings["ts"].cast(pl.Datetime("us", "UTC")).cast(pl.Int64).to_numpy()
    v = readings["value"].cast(pl.Float64).to_numpy()
    keep = ~np.isnan(v)
    if readings["unit_code"].null_count():
        keep &= readings["unit_code"].is_not_null().to_numpy()
    if ind.hours:
        h = ((t + off) // (3600 * US)) % 24
        lo, hi = ind.hours
        keep &= ((h >= lo) & (h < hi)) if lo < hi else ((h >= lo) | (h < hi))
    if keep.all():
        return None, t, v
    idx = np.flatnonzero(keep)
    return idx, t[idx], v[idx]


def bucket_partials(readings: pl.DataFrame, ind: Indicator, *, utc_offset_hours: float = 0.0) -> Partials | None:
    """The readings' partial aggregates per (series, bucket); None when none counts."""
    if readings.is_empty():
        return None
    off = int(utc_offset_hours * 3600 * US)
    slide = int(ind.window.slide.total_seconds() * US)
    idx, t, v = usable(readings, ind, off)  # only the key columns this needs are gathered, not the whole frame
    if len(t) == 0:
        return None
    unit_col = readings["unit_code"] if idx is None else readings["unit_code"].gather(idx)
    unit, units = factorize(unit_col)
    sensors = series_sensor = None
    if ind.sensor_combine:
        sid = readings["sensor_id"] if idx is None else readings["sensor_id"].gather(idx)
        if sid.dtype == pl.String:  # sensors only group readings: encounter order will do, no string sort
            sid = sid.cast(pl.Categorical)
        sensor, sensors = factorize(sid)
        series_of, series_keys = group_ids(unit * len(sensors) + sensor)
        series_unit, series_sensor = series_keys // len(sensors), series_keys % len(sensors)
    else:
        series_of, series_unit = unit, np.arange(len(units))
    b = (t + off) // slide
    b0 = int(b.min())
    bi = b - b0
    nb = int(bi.max()) + 1
    need = _NEEDS[ind.agg]
    x = _transform(ind, v) if "s" in need else v
    inv, cells = group_ids(series_of * nb + bi)
    return Partials(units, series_unit, b0, nb, cells, _partials(inv, len(cells), need, x, v, t), sensors, series_sensor)


def window_values(readings: pl.DataFrame, ind: Indicator, *, utc_offset_hours: float = 0.0,
                  only: pl.DataFrame | None = None, between: tuple[int, int] | None = None) -> pl.DataFrame:
    """Aggregate readings (sensor_id, ts, value, unit_code) into windows of ``ind``.

    Returns unit_code (same dtype as the input's), window_start, window_end (µs since
    epoch), value, n (readings), sorted by unit and window. Windows with fewer than
    ``min_count`` readings produce no value. ``only`` (unit_code, window_start) restricts
    the result to those windows, which is how a batch that touches a few sliding windows
    avoids computing every window its readings fall in. ``between`` (lo, hi µs) keeps
    only the windows starting in [lo, hi): a recompute of a period.
    """
    unit_dtype = readings.schema.get("unit_code", pl.String)
    p = bucket_partials(readings, ind, utc_offset_hours=utc_offset_hours)
    if p is None:
        return _empty(unit_dtype)
    return windows_from(p, ind, utc_offset_hours=utc_offset_hours, only=only, between=between, unit_dtype=unit_dtype)


def windows_from(p: Partials, ind: Indicator, *, utc_offset_hours: float = 0.0, only: pl.DataFrame | None = None,
                 between: tuple[int, int] | None = None, unit_dtype: pl.DataType | None = None) -> pl.DataFrame:
    """The windows of ``ind`` combined from bucket partials (see ``window_values``, whose
    ``only`` and ``between`` these are)."""
    unit_dtype = unit_dtype or p.units.dtype
    units, series_unit, b0, nb, cells, part = p.units, p.series_unit, p.b0, p.nb, p.cells, p.part
    off = int(utc_offset_hours * 3600 * US)
    size = int(ind.window.size.total_seconds() * US)
    slide = int(ind.window.slide.total_seconds() * US)
    k = ind.window.k
    nser = len(series_unit)
    width = nb + k - 1
    rng = _only_range(only, b0, slide, off, k)
    span = _between_range(between, b0, slide, off, k)
    if span is not None:
        rng = span if rng is None else (max(rng[0], span[0]), min(rng[1], span[1]))
    wlo, whi = (0, width - 1) if rng is None else (max(0, rng[0]), min(width - 1, rng[1]))
    if whi < wlo:
        return _empty(unit_dtype)
    if k == 1:
        wins = (cells // nb) * width + cells % nb
        if rng is not None:
            sel = (cells % nb >= wlo) & (cells % nb <= whi)
            wins, part = wins[sel], {n: a[sel] for n, a in part.items()}
    elif nser * (whi - wlo + k) <= 4 * len(cells) + 4096:
        wins, part = _slide_dense(cells, part, nser, nb, k, wlo, whi)
    else:
        wins, part = _slide_sparse(cells, part, nb, k, wlo, whi)
    ok = part["c"] >= ind.min_count
    wins, part = wins[ok], {n: a[ok] for n, a in part.items()}
    value = _value(ind, part)
    c = part["c"]
    u = series_unit[wins // width]
    wi = wins % width
    if ind.sensor_combine:
        ginv, gkeys = group_ids(u * width + wi)
        m = len(gkeys)
        fine = ~np.isnan(value)
        op = ind.sensor_combine
        if op == "max":
            value = reduce_max(ginv[fine], value[fine], m)
        elif op == "min":
            value = reduce_min(ginv[fine], value[fine], m)
        else:
            cnt = np.bincount(ginv[fine], minlength=m)
            sums = reduce_sum(ginv[fine], value[fine], m)
            with np.errstate(divide="ignore", invalid="ignore"):
                value = np.where(cnt > 0, sums / cnt if op == "mean" else sums, np.nan)
        c = np.bincount(ginv, weights=c, minlength=m).astype(np.int64)
        u, wi = gkeys // width, gkeys % width
    fin = np.isfinite(value)
    ws = (b0 + wi[fin] - (k - 1)) * slide - off
    out = pl.DataFrame([  # typed as built: a cast of the frame afterwards cost as much as the windows
        units.gather(u[fin]).alias("unit_code").cast(unit_dtype), pl.Series("window_start", ws, pl.Int64),
        pl.Series("window_end", ws + size, pl.Int64), pl.Series("value", value[fin], pl.Float64),
        pl.Series("n", c[fin], pl.Int64),
    ])
    if only is not None:
        out = out.join(only.select("unit_code", "window_start").cast({"unit_code": unit_dtype, "window_start": pl.Int64}),
                       on=["unit_code", "window_start"], how="semi", maintain_order="left")
    return out
