"""Event-time windows: readings -> one value per (unit, window) for a sensor-fed indicator.

Pure and columnar. Time is handled as integer microseconds so tumbling and sliding
windows are the same arithmetic: a reading falls in the slide bucket
``floor((t + offset) / slide) * slide - offset`` and a sliding window of ``k`` slides is
the combination of ``k`` consecutive buckets' partial aggregates. Partials (sum, count,
max, min, last) combine exactly, so a sliding window costs one pass over the readings
plus a pass over buckets, never ``k`` passes over readings. The local ``offset`` makes
daily windows start at local midnight.

>>> import polars as pl
>>> from datetime import datetime, timezone
>>> from cityvitals.signs.catalog import load_catalog
>>> t = [datetime(2024, 1, 1, h, m, tzinfo=timezone.utc) for h, m in ((0, 10), (0, 50), (1, 5))]
>>> r = pl.DataFrame({"sensor_id": ["s"] * 3, "ts": t, "value": [10.0, 20.0, 40.0], "unit_code": ["u"] * 3})
>>> window_values(r, load_catalog()["env.pm25"])["value"].to_list()
[15.0, 40.0]
"""

from __future__ import annotations

import polars as pl

from cityvitals.signs.catalog import Indicator

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


def _slide(part: pl.DataFrame, keys: list[str], ind: Indicator) -> pl.DataFrame:
    """Combine the partials of k consecutive slide buckets into each sliding window.

    Two exact strategies, chosen by size: on a per-series grid of every bucket (gaps
    filled) k-row rolling sums/max/min, which is linear in the data for dense series; or,
    for sparse series where that grid would be larger, each bucket copied into its k
    windows and grouped.
    """
    k = ind.window.k
    slide = int(ind.window.slide.total_seconds() * US)
    span = part.group_by(keys).agg(pl.col("bucket").min().alias("b0"), pl.col("bucket").max().alias("b1")).sort(keys)
    grid_rows = int(((span["b1"] - span["b0"]) // slide + k).sum())
    if grid_rows > part.height * k:
        return (
            expand_windows(part, ind)
            .group_by(keys + ["window_start"])
            .agg(
                pl.col("s").sum(), pl.col("c").sum(), pl.col("mx").max(), pl.col("mn").min(),
                pl.col("lv").sort_by("lt").last(), pl.col("lt").max(),
            )
        )
    grid = (
        span.with_columns(pl.int_ranges(pl.col("b0"), pl.col("b1") + k * slide, slide).alias("bucket"))
        .explode("bucket").select(keys + ["bucket"])
        .join(part, on=keys + ["bucket"], how="left", maintain_order="left")  # grid order = sorted by construction
        .with_columns(pl.col("s").fill_null(0.0), pl.col("c").fill_null(0))
    )
    # No per-series `over`: each series' grid ends with k-1 empty buckets, so a k-row
    # window that reaches back into the previous series only sees empty rows there.
    roll = dict(window_size=k, min_samples=1)
    return grid.with_columns(
        pl.col("s").rolling_sum(**roll),
        pl.col("c").rolling_sum(**roll),
        pl.col("mx").rolling_max(**roll),
        pl.col("mn").rolling_min(**roll),
        pl.col("lv").forward_fill(limit=k - 1),
        pl.col("lt").forward_fill(limit=k - 1),
        (pl.col("bucket") - (k - 1) * slide).alias("window_start"),
    ).filter(pl.col("c") > 0).drop("bucket")


def window_values(readings: pl.DataFrame, ind: Indicator, *, utc_offset_hours: float = 0.0,
                  only: pl.DataFrame | None = None) -> pl.DataFrame:
    """Aggregate readings (sensor_id, ts, value, unit_code) into windows of ``ind``.

    Returns unit_code, window_start, window_end (µs since epoch), value, n (readings).
    Windows with fewer than ``min_count`` readings produce no value. ``only`` (unit_code,
    window_start) restricts the result to those windows, which is how a batch that touches
    a few sliding windows avoids computing every window its readings fall in.
    """
    if readings.is_empty():
        return pl.DataFrame(schema=OUT_SCHEMA)
    off = int(utc_offset_hours * 3600 * US)
    size = int(ind.window.size.total_seconds() * US)
    df = readings.lazy().select("sensor_id", "unit_code", to_us("ts").alias("t"), pl.col("value").cast(pl.Float64))
    if ind.hours:
        df = df.filter(hour_filter(pl.col("t"), ind.hours, off))
    v = pl.col("value")
    a = ind.agg_arg
    x = {
        "leq": 10.0 ** (v / 10.0),
        "count_eq": (v == a).cast(pl.Float64) if a is not None else v,
        "count_ge": (v >= a).cast(pl.Float64) if a is not None else v,
        "share_ge": (v >= a).cast(pl.Float64) if a is not None else v,
        "share_le": (v <= a).cast(pl.Float64) if a is not None else v,
    }.get(ind.agg, v)
    keys = ["unit_code", "sensor_id"] if ind.sensor_combine else ["unit_code"]
    part = (
        df.with_columns(bucket_expr(pl.col("t"), ind, off).alias("bucket"), x.alias("x"))
        .group_by(keys + ["bucket"])
        .agg(
            pl.col("x").sum().alias("s"), pl.len().cast(pl.Int64).alias("c"),
            v.max().alias("mx"), v.min().alias("mn"),
            v.sort_by("t").last().alias("lv"), pl.col("t").max().alias("lt"),
        )
    )
    if ind.window.k > 1 and only is not None:
        part = (
            expand_windows(part.collect(), ind).lazy()
            .join(only.lazy().select("unit_code", "window_start"), on=["unit_code", "window_start"], how="semi")
            .group_by(keys + ["window_start"])
            .agg(
                pl.col("s").sum(), pl.col("c").sum(), pl.col("mx").max(), pl.col("mn").min(),
                pl.col("lv").sort_by("lt").last(), pl.col("lt").max(),
            )
        )
    elif ind.window.k > 1:
        part = _slide(part.collect(), keys, ind).lazy()
    else:
        part = part.rename({"bucket": "window_start"})
        if only is not None:
            part = part.join(only.lazy().select("unit_code", "window_start"), on=["unit_code", "window_start"], how="semi")
    s, c = pl.col("s"), pl.col("c")
    value = {
        "mean": s / c, "sum": s, "count": c.cast(pl.Float64), "max": pl.col("mx"), "min": pl.col("mn"),
        "last": pl.col("lv"), "leq": 10.0 * (s / c).log10(), "count_eq": s, "count_ge": s,
        "share_ge": 100.0 * s / c, "share_le": 100.0 * s / c,
    }[ind.agg]
    out = part.filter(c >= ind.min_count).with_columns(value.alias("value"))
    if ind.sensor_combine:
        comb = {"max": pl.col("value").max(), "min": pl.col("value").min(), "mean": pl.col("value").mean(), "sum": pl.col("value").sum()}
        out = out.group_by(["unit_code", "window_start"]).agg(comb[ind.sensor_combine].alias("value"), c.sum().alias("c"))
    return (
        out.select(
            "unit_code", "window_start", (pl.col("window_start") + size).alias("window_end"),
            "value", pl.col("c").alias("n"),
        )
        .filter(pl.col("value").is_not_null() & pl.col("value").is_finite())
        .sort("unit_code", "window_start")
        .collect()
        .cast(OUT_SCHEMA)
    )
