"""The derived-indicator vocabulary: a small set of declared functions, never eval.

Each function takes the input indicators' values on the same (unit, window) grid and
returns the derived value. Missing inputs: ``max_of`` uses the inputs that exist (the
AQI of an hour is the maximum over the pollutants measured that hour); ``sum``,
``weighted_sum`` and ``ratio`` need every input, otherwise no value.

>>> piecewise_np([35.0, 35.4, 600.0], [[0, 0], [35, 50], [75, 100]], round_="ceil", above="clamp").tolist()
[50.0, 51.0, 100.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from cityvitals.signs.catalog import Indicator

KEYS = ["unit_code", "window_start"]


def piecewise_np(values: Any, breakpoints: list, *, round_: str = "none", above: str = "clamp") -> np.ndarray:
    """Linear interpolation between breakpoints [[x, y], ...] (x strictly increasing).

    Values below the first x take the first y; above the last x: ``clamp`` to the last y,
    ``null`` (NaN) or ``extrapolate`` the last segment. ``ceil`` rounding first drops
    float noise (1e-9) so an exact breakpoint is not pushed up by representation error.
    """
    v = np.asarray(values, dtype=float)
    xs = np.array([float(p[0]) for p in breakpoints])
    ys = np.array([float(p[1]) for p in breakpoints])
    i = np.clip(np.searchsorted(xs, v, side="left") - 1, 0, len(xs) - 2)
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    out = y0 + (y1 - y0) * (v - x0) / (x1 - x0)
    out = np.where(v <= xs[0], ys[0], out)
    if above == "clamp":
        out = np.where(v > xs[-1], ys[-1], out)
    elif above == "null":
        out = np.where(v > xs[-1], np.nan, out)
    if round_ == "ceil":
        out = np.ceil(np.round(out, 9))
    elif round_ == "floor":
        out = np.floor(np.round(out, 9))
    elif round_ == "round":
        out = np.floor(out + 0.5)
    return out


def input_keys(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The (unit_code, window_start) keys a derived indicator is computed on: those of any
    of its inputs. Inputs usually share their keys (the same units and windows, in the same
    order); then they are the keys as they stand, and ``evaluate`` needs no join."""
    if all(p.equals(parts[0]) for p in parts[1:]):
        return parts[0]
    return pl.concat(parts).unique(maintain_order=True)


def evaluate(ind: Indicator, inputs: dict[str, pl.DataFrame], keys: pl.DataFrame, population: pl.DataFrame | None = None) -> pl.DataFrame:
    """Derived values on ``keys`` (unit_code, window_start) from ``inputs`` id -> (KEYS, value)."""
    fn, args = ind.derived_fn, ind.derived_args
    size = int(ind.window.size.total_seconds() * 1_000_000)
    frame = keys.select(KEYS).unique(maintain_order=True)
    key_types = {"unit_code": frame.schema["unit_code"], "window_start": pl.Int64}
    for i, dep in enumerate(ind.inputs()):
        src = inputs.get(dep)
        if src is not None and src.height == frame.height and src.select(KEYS).equals(frame):  # aligned: no join
            frame = frame.with_columns(src["value"].alias(f"_in{i}"))
            continue
        col = pl.DataFrame(schema={**key_types, "value": pl.Float64}) if src is None else src.select(KEYS + ["value"])
        frame = frame.join(col.cast(key_types).rename({"value": f"_in{i}"}), on=KEYS, how="left")
    ins = [pl.col(f"_in{i}") for i in range(len(ind.inputs()))]
    if fn == "max_of":
        value = pl.max_horizontal(ins)
    elif fn == "sum":
        value = pl.sum_horizontal(ins)
        value = pl.when(pl.any_horizontal([c.is_null() for c in ins])).then(None).otherwise(value)
    elif fn == "weighted_sum":
        ws = [float(w) for w in args.values()]
        value = pl.sum_horizontal([c * w for c, w in zip(ins, ws)])
        value = pl.when(pl.any_horizontal([c.is_null() for c in ins])).then(None).otherwise(value)
    elif fn == "ratio":
        scale = float(args.get("scale", 1.0))
        value = pl.when(ins[1] != 0).then(ins[0] / ins[1] * scale).otherwise(None)
    elif fn == "per_capita":
        per = float(args.get("per", 10000))
        pop = population if population is not None else pl.DataFrame(schema={"unit_code": pl.String, "population": pl.Float64})
        frame = frame.join(pop.select(pl.col("unit_code").cast(key_types["unit_code"]), "population"), on="unit_code", how="left")
        value = pl.when(pl.col("population") > 0).then(ins[0] / pl.col("population") * per).otherwise(None)
    elif fn == "piecewise":
        arr = piecewise_np(frame["_in0"].to_numpy(allow_copy=True).astype(float), args["breakpoints"],
                           round_=args.get("round", "none"), above=args.get("above", "clamp"))
        frame = frame.with_columns(pl.Series("_pw", arr))
        value = pl.when(pl.col("_in0").is_null()).then(None).otherwise(pl.col("_pw"))
    else:  # pragma: no cover - check_catalog refuses unknown functions
        raise ValueError(f"unknown derived function {fn!r}")
    return (
        frame.with_columns(value.cast(pl.Float64).alias("value"))
        .filter(pl.col("value").is_not_null() & ~pl.col("value").is_nan())
        .select("unit_code", "window_start", (pl.col("window_start") + size).alias("window_end"), "value", pl.lit(None, pl.Int64).alias("n"))
    )
