"""The health index (0-100) of a unit: per category and overall, with its explanation.

An indicator at level L in category c costs ``penalty[L] * w / W_c`` points of the
category's 100, where ``w`` is its weight and ``W_c`` the total weight of the category's
indicators that have a value. The overall index is the category indices weighted by the
category weights present, so each indicator's overall cost is its category cost times
``cw_c / sum(cw)``. 100 minus the points listed in the explanation is exactly the index,
which is what lets a duty officer read "district X is 62 because ...".

>>> import polars as pl
>>> from cityvitals.signs.catalog import load_catalog
>>> latest = pl.DataFrame({"unit_code": ["u", "u"], "indicator": ["env.aqi", "env.o3_1h"],
...     "value": [160.0, 90.0], "level": [2, 0]})
>>> idx, exp = health_index(latest, load_catalog())
>>> idx.filter(pl.col("scope") == "overall")["value"].to_list()
[55.0]
"""

from __future__ import annotations

import polars as pl

from cityvitals.signs.catalog import LEVELS, Catalog


def health_index(latest: pl.DataFrame, cat: Catalog) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(indices: unit_code, scope, value; explain: unit_code, scope, indicator, category, level, value, weight, points).

    ``latest``: the current value and level of each (unit_code, indicator). ``scope`` is
    a category name or ``overall``.
    """
    meta = pl.DataFrame({
        "indicator": list(cat), "category": [i.category for i in cat.values()], "weight": [i.weight for i in cat.values()],
    })
    pen = pl.DataFrame({"level": list(range(len(LEVELS))), "penalty": [cat.penalty[lvl] for lvl in LEVELS]}).cast({"level": pl.Int8})
    cw = pl.DataFrame({"category": list(cat.category_weights), "cw": list(cat.category_weights.values())})
    df = (
        latest.select("unit_code", "indicator", "value", pl.col("level").cast(pl.Int8))
        .join(meta, on="indicator", how="inner")
        .filter(pl.col("weight") > 0)
        .join(pen, on="level", how="left")
        .join(cw, on="category", how="left")
        .with_columns(pl.col("weight").sum().over("unit_code", "category").alias("W"))
        .with_columns((pl.col("penalty") * pl.col("weight") / pl.col("W")).alias("points_cat"))
    )
    cats = df.group_by("unit_code", "category").agg((100.0 - pl.col("points_cat").sum()).alias("value"), pl.col("cw").first())
    cats = cats.with_columns(pl.col("cw").sum().over("unit_code").alias("CW"))
    df = df.join(cats.select("unit_code", "category", "CW"), on=["unit_code", "category"]).with_columns(
        (pl.col("points_cat") * pl.col("cw") / pl.col("CW")).alias("points_all")
    )
    overall = df.group_by("unit_code").agg((100.0 - pl.col("points_all").sum()).alias("value"))
    indices = pl.concat([
        cats.select("unit_code", pl.col("category").alias("scope"), "value"),
        overall.select("unit_code", pl.lit("overall").alias("scope"), "value"),
    ]).sort("unit_code", "scope")
    cols = ["unit_code", "scope", "indicator", "category", "level", "value", "weight"]
    explain = pl.concat([
        df.select(*[pl.col("category").alias("scope") if c == "scope" else pl.col(c) for c in cols], pl.col("points_cat").alias("points")),
        df.select(*[pl.lit("overall").alias("scope") if c == "scope" else pl.col(c) for c in cols], pl.col("points_all").alias("points")),
    ])
    return indices, explain
