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

import polars as pl

from cityvitals.signs.catalog import LEVELS, Bound, Condition

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


def assign_levels(
    frame: pl.DataFrame, conds: dict[str, Condition], *, hysteresis: float = 0.0, min_windows: int = 1,
) -> pl.DataFrame:
    """Add ``schmitt`` and ``level`` (Int8) to one indicator's rows.

    ``frame``: unit_code, window_start, value, threshold parameter columns ``p_<name>``,
    and optionally ``ctx`` (bool) / ``ctx_schmitt`` for context rows from earlier batches
    (the caller drops them afterwards). Rows are processed in (unit_code, window_start)
    order.
    """
    f = frame.sort(SERIES, "window_start")
    if "ctx" not in f.columns:
        f = f.with_columns(pl.lit(False).alias("ctx"), pl.lit(None, pl.Int8).alias("ctx_schmitt"))
    v = pl.col("value")
    states, debounced = [], []
    for k, name in enumerate(LEVELS):
        if k == 0 or name not in conds:
            continue
        c = conds[name]
        st = (
            pl.when(pl.col("ctx")).then((pl.col("ctx_schmitt") >= k).cast(pl.Int8))
            .when(condition(c, v)).then(pl.lit(1, pl.Int8))
            .when(released(c, v, hysteresis)).then(pl.lit(0, pl.Int8))
            .otherwise(pl.lit(None, pl.Int8))
            .forward_fill().over(SERIES).fill_null(0)
        )
        f = f.with_columns(st.alias(f"_s{k}"))
        states.append(pl.col(f"_s{k}") * k)
        if min_windows > 1:
            deb = pl.col(f"_s{k}").rolling_min(min_windows, min_samples=min_windows).over(SERIES).fill_null(0)
        else:
            deb = pl.col(f"_s{k}")
        debounced.append(deb * k)
    if not states:
        return f.with_columns(pl.lit(0, pl.Int8).alias("schmitt"), pl.lit(0, pl.Int8).alias("level"))
    return f.with_columns(
        pl.max_horizontal(states).cast(pl.Int8).alias("schmitt"),
        pl.max_horizontal(debounced).cast(pl.Int8).alias("level"),
    ).drop([c for c in f.columns if c.startswith("_s")])
