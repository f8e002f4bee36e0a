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

import numpy as np
import polars as pl

from cityvitals.signs.catalog import LEVELS, Catalog
from cityvitals.signs.dense import codes_in, factorize

EXPLAIN = {"unit_code": pl.String, "scope": pl.Categorical, "indicator": pl.Categorical, "category": pl.Categorical, "level": pl.Int8,
           "value": pl.Float64, "weight": pl.Float64, "points": pl.Float64}


def health_index(latest: pl.DataFrame, cat: Catalog) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(indices: unit_code, scope, value; explain: unit_code, scope, indicator, category, level, value, weight, points).

    ``latest``: the current value and level of each (unit_code, indicator). ``scope`` is
    a category name or ``overall``. Indices are sorted by unit and scope. The sums per
    (unit, category) and per unit are ``np.bincount`` over dense keys.
    """
    ids = list(cat)
    cats = cat.categories()
    nc = len(cats)
    weight = np.array([cat[i].weight for i in ids], dtype=float)
    cat_of = np.array([cats.index(cat[i].category) for i in ids])
    cw_of = np.array([cat.category_weights.get(c, 1.0) for c in cats], dtype=float)
    penalty = np.array([cat.penalty[lvl] for lvl in LEVELS], dtype=float)
    ind = codes_in(latest["indicator"], ids)
    keep = ind >= 0
    keep[keep] = weight[ind[keep]] > 0
    rows = latest.filter(pl.Series(keep)) if not keep.all() else latest
    ind = ind[keep]
    unit_dtype = latest.schema["unit_code"]
    if rows.is_empty():
        return (pl.DataFrame(schema={"unit_code": unit_dtype, "scope": pl.Categorical, "value": pl.Float64}),
                pl.DataFrame(schema=EXPLAIN | {"unit_code": unit_dtype}))
    u, names = factorize(rows["unit_code"])
    nu = len(names)
    c = cat_of[ind]
    w = weight[ind]
    level = rows["level"].cast(pl.Int64).fill_null(0).to_numpy()
    uc = u * nc + c
    W = np.bincount(uc, weights=w, minlength=nu * nc)
    points_cat = penalty[level] * w / W[uc]
    present = np.bincount(uc, minlength=nu * nc) > 0
    cat_value = 100.0 - np.bincount(uc, weights=points_cat, minlength=nu * nc)
    CW = (present.reshape(nu, nc) * cw_of).sum(axis=1)
    points_all = points_cat * cw_of[c] / CW[u]
    overall = 100.0 - np.bincount(u, weights=points_all, minlength=nu)
    # indices in (unit, scope) order: one column per scope, scopes sorted by name
    scopes = sorted(cats + ["overall"])
    rank = np.array([scopes.index(x) for x in cats])
    grid = np.full((nu, nc + 1), np.nan)
    has = np.zeros((nu, nc + 1), bool)
    grid[:, rank] = cat_value.reshape(nu, nc)
    has[:, rank] = present.reshape(nu, nc)
    grid[:, scopes.index("overall")] = overall
    has[:, scopes.index("overall")] = True
    ui, si = np.nonzero(has)
    scope_s = pl.Series("scope", scopes, pl.Categorical)
    indices = pl.DataFrame({"unit_code": names.gather(ui), "scope": scope_s.gather(si), "value": grid[ui, si]})
    cat_s = pl.Series("category", cats, pl.Categorical)
    base = rows.select(  # ids as Categorical: storing the explanation maps them to integers without hashing a string per row
        "unit_code", pl.col("indicator").cast(pl.Categorical), pl.col("value").cast(pl.Float64), pl.col("level").cast(pl.Int8),
    ).with_columns(cat_s.gather(c).alias("category"), pl.Series("weight", w))
    cols = ["unit_code", "scope", "indicator", "category", "level", "value", "weight", "points"]
    explain = pl.concat([
        base.with_columns(pl.col("category").alias("scope"), pl.Series("points", points_cat)).select(cols),
        base.with_columns(pl.lit("overall", pl.Categorical).alias("scope"), pl.Series("points", points_all)).select(cols),
    ])
    return indices, explain
