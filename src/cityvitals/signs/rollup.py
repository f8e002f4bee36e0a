"""Roll indicator values up the spatial tree by each indicator's declared rule.

Values are aggregated from the units where readings land ("direct" units) straight to
every ancestor in one group-by over a closure table (unit, ancestor). For max, min, sum
and weighted means this equals rolling up level by level; ``share_at_level`` is the
percentage of direct units under the ancestor whose level is at least the declared one.

>>> import polars as pl
>>> leaf = pl.DataFrame({"indicator": ["x", "x"], "unit_code": ["a", "b"], "window_start": [0, 0],
...     "window_end": [1, 1], "value": [10.0, 30.0], "level": [0, 2]})
>>> closure = pl.DataFrame({"unit_code": ["a", "b"], "ancestor": ["p", "p"]})
>>> units = pl.DataFrame({"unit_code": ["a", "b"], "population": [300.0, 100.0], "area_m2": [1.0, 1.0]})
>>> rules = pl.DataFrame({"indicator": ["x"], "rule": ["mean_population"], "rule_level": [2]})
>>> rollup(leaf, closure, units, rules)["value"].to_list()
[15.0]
"""

from __future__ import annotations

import polars as pl

KEYS = ["indicator", "ancestor", "window_start"]


def rollup(leaf: pl.DataFrame, closure: pl.DataFrame, units: pl.DataFrame, rules: pl.DataFrame) -> pl.DataFrame:
    """Ancestor values: indicator, unit_code (the ancestor), window_start, window_end, value, n (members)."""
    if leaf.is_empty():
        return pl.DataFrame(schema={"indicator": pl.String, "unit_code": pl.String, "window_start": pl.Int64,
                                    "window_end": pl.Int64, "value": pl.Float64, "n": pl.Int64})
    df = (
        leaf.lazy()
        .join(closure.lazy(), on="unit_code", how="inner")
        .join(units.lazy().select("unit_code", "population", "area_m2"), on="unit_code", how="left")
        .join(rules.lazy(), on="indicator", how="left")
        .with_columns(pl.col("population").fill_null(0.0), pl.col("area_m2").fill_null(0.0))
    )
    v = pl.col("value")

    def wmean(w: str) -> pl.Expr:
        tw = pl.col(w).sum()
        return pl.when(tw > 0).then((v * pl.col(w)).sum() / tw).otherwise(v.mean())

    g = df.group_by(KEYS).agg(
        pl.col("window_end").max(), pl.len().cast(pl.Int64).alias("n"), pl.col("rule").first(),
        v.max().alias("_max"), v.min().alias("_min"), v.mean().alias("_mean"), v.sum().alias("_sum"),
        wmean("population").alias("_mean_population"), wmean("area_m2").alias("_mean_area"),
        (100.0 * (pl.col("level") >= pl.col("rule_level")).cast(pl.Float64).mean()).alias("_share_at_level"),
    )
    rule = pl.col("rule").fill_null("max")
    value = pl.lit(None, pl.Float64)
    for r in ("max", "min", "mean", "sum", "mean_population", "mean_area", "share_at_level"):
        value = pl.when(rule == r).then(pl.col(f"_{r}")).otherwise(value)
    return (
        g.select("indicator", pl.col("ancestor").alias("unit_code"), "window_start", "window_end", value.alias("value"), "n")
        .collect()
    )
