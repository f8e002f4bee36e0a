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

import numpy as np
import polars as pl

from cityvitals.signs.dense import factorize, group_ids, reduce_max, reduce_min, reduce_sum

KEYS = ["indicator", "ancestor", "window_start"]
RULES = ("max", "min", "mean", "sum", "mean_population", "mean_area", "share_at_level")
OUT = {"indicator": pl.String, "unit_code": pl.String, "window_start": pl.Int64, "window_end": pl.Int64,
       "value": pl.Float64, "n": pl.Int64}


def _dense_units(leaf_units: pl.Series, closure: pl.DataFrame, units: pl.DataFrame) -> tuple:
    """One code space for leaf units, ancestors and the units table."""
    dtype = leaf_units.dtype
    allc = pl.concat([leaf_units, closure["unit_code"].cast(dtype), closure["ancestor"].cast(dtype), units["unit_code"].cast(dtype)])
    codes, names = factorize(allc)
    a, b, c = len(leaf_units), len(closure), len(closure)
    return codes[:a], codes[a:a + b], codes[a + b:a + b + c], codes[a + b + c:], names


def _tree(cu: np.ndarray, ca: np.ndarray, nu: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(parent, depth) per unit if the closure is a tree's (every ancestor set is the
    parent plus the parent's ancestors), else None."""
    depth = np.bincount(cu, minlength=nu)
    cand = depth[ca] == depth[cu] - 1
    if np.bincount(cu[cand], minlength=nu)[depth > 0].min(initial=1) != 1 or (np.bincount(cu[cand], minlength=nu) > 1).any():
        return None
    parent = np.full(nu, -1, np.int64)
    parent[cu[cand]] = ca[cand]
    other = ~cand
    if other.any():  # (u, a) with a above the parent must be (parent, a)
        pairs = np.sort(cu * nu + ca)
        want = parent[cu[other]] * nu + ca[other]
        pos = np.minimum(np.searchsorted(pairs, want), len(pairs) - 1)
        if not (pairs[pos] == want).all():
            return None
    return parent, depth


_NEEDS = {
    "max": ("c", "mx", "we"), "min": ("c", "mn", "we"), "mean": ("c", "s", "we"), "sum": ("c", "s", "we"),
    "mean_population": ("c", "s", "sp", "tp", "we"), "mean_area": ("c", "s", "sa", "ta", "we"),
    "share_at_level": ("c", "hit", "we"),
}
"""The partials each rule reads: a roll-up reduces only those of the rules present."""


def _finish(rule: str, p: dict[str, np.ndarray]) -> np.ndarray:
    """The rolled-up value of each group from its partials, by the indicator's rule."""
    c = np.maximum(p["c"], 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if rule == "max":
            return p["mx"]
        if rule == "min":
            return p["mn"]
        if rule == "sum":
            return p["s"]
        if rule == "share_at_level":
            return 100.0 * p["hit"] / c
        mean = p["s"] / c
        if rule == "mean_population":
            return np.where(p["tp"] > 0, p["sp"] / p["tp"], mean)
        if rule == "mean_area":
            return np.where(p["ta"] > 0, p["sa"] / p["ta"], mean)
        return mean


def _reduce(inv: np.ndarray, m: int, p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: reduce_sum(inv, a, m) for k, a in p.items() if k in _SUMS}
    if "mx" in p:
        out["mx"] = reduce_max(inv, p["mx"], m)
    if "mn" in p:
        out["mn"] = reduce_min(inv, p["mn"], m)
    out["we"] = np.full(m, np.iinfo(np.int64).min)
    np.maximum.at(out["we"], inv, p["we"])
    return out


_SUMS = ("c", "s", "sp", "tp", "sa", "ta", "hit")


def _own(name: str, v: np.ndarray, lu: np.ndarray, pop: np.ndarray, area: np.ndarray,
         hit: np.ndarray, we: np.ndarray) -> np.ndarray:
    """Each leaf row's own partial ``name``."""
    if name == "c":
        return np.ones(len(v))
    if name in ("s", "mx", "mn"):
        return v
    if name == "sp":
        return v * pop[lu]
    if name == "tp":
        return pop[lu]
    if name == "sa":
        return v * area[lu]
    if name == "ta":
        return area[lu]
    if name == "hit":
        return hit
    return we


def _up(g: np.ndarray, lu: np.ndarray, own: dict[str, np.ndarray], cu: np.ndarray, ca: np.ndarray, nu: int,
        tree: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Group keys (group * nu + ancestor) and their reduced partials."""
    if tree is None:  # every member under every ancestor (closure rows as CSR per unit)
        order = np.argsort(cu, kind="stable")
        anc = ca[order]
        ptr = np.concatenate(([0], np.cumsum(np.bincount(cu, minlength=nu))))
        cnt = ptr[lu + 1] - ptr[lu]
        rep = np.repeat(np.arange(len(lu)), cnt)
        within = np.arange(len(rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        inv, keys = group_ids(g[rep] * nu + anc[np.repeat(ptr[lu], cnt) + within])
        return keys, _reduce(inv, len(keys), {k: a[rep] for k, a in own.items()})
    parent, depth = tree
    parents = np.flatnonzero(np.bincount(parent[parent >= 0], minlength=nu))  # units with members: a few hundred
    slot = np.full(nu + 1, -1, np.int64)  # unit -> its index among the parents (slot[-1]: none)
    slot[parents] = np.arange(len(parents))
    npar = max(len(parents), 1)
    pend_g, pend_u, pend = g, lu, own
    parts = []
    for d in range(int(depth[lu].max()) if len(lu) else 0, 0, -1):
        at = depth[pend_u] == d
        up = np.where(at, parent[pend_u], -1)
        go = up >= 0
        # (group, parent slot): a key space of groups x parents, not groups x units, so the
        # group lookup table stays small however many units there are
        if go.all():  # the usual first step: every row moves up, no copies
            inv, small = group_ids(pend_g * npar + slot[up])
            red = _reduce(inv, len(small), pend)
        else:
            idx = np.flatnonzero(go)
            inv, small = group_ids(pend_g[idx] * npar + slot[up[idx]])
            red = _reduce(inv, len(small), {k: a[idx] for k, a in pend.items()})
        keys = (small // npar) * nu + parents[small % npar]
        parts.append((keys, red))
        rest = np.flatnonzero(~at)
        pend_g = np.concatenate([pend_g[rest], keys // nu])
        pend_u = np.concatenate([pend_u[rest], keys % nu])
        pend = {k: np.concatenate([pend[k][rest], red[k]]) for k in pend}
    if not parts:
        return np.zeros(0, np.int64), {k: np.zeros(0, a.dtype) for k, a in own.items()}
    return np.concatenate([k for k, _ in parts]), {k: np.concatenate([r[k] for _, r in parts]) for k in parts[0][1]}


def rollup(leaf: pl.DataFrame, closure: pl.DataFrame, units: pl.DataFrame, rules: pl.DataFrame) -> pl.DataFrame:
    """Ancestor values: indicator, unit_code (the ancestor), window_start, window_end, value, n (members).

    Every row carries the partials its rules read (count, sums, weighted sums, max,
    min, units at level) and all rules roll up in one pass: the grouping is computed
    once, and each group's value is finished by its indicator's rule. On a tree (the usual case) the partials
    of each unit's members are pushed to its parent one depth at a time, with
    NumPy reductions on dense keys: the big step is the deepest level, the others are
    small. Partials add up exactly, so this equals grouping every member under every
    ancestor, which is what happens when the closure is not a tree's.
    """
    ind_dtype = leaf.schema.get("indicator", pl.String)
    unit_dtype = leaf.schema.get("unit_code", pl.String)
    if leaf.is_empty() or closure.is_empty():
        return pl.DataFrame(schema=OUT | {"indicator": ind_dtype, "unit_code": unit_dtype})
    lu, cu, ca, uu, names = _dense_units(leaf["unit_code"], closure, units)
    nu = len(names)
    pop = np.zeros(nu)
    area = np.zeros(nu)
    pop[uu] = units["population"].cast(pl.Float64).fill_null(0.0).to_numpy()
    area[uu] = units["area_m2"].cast(pl.Float64).fill_null(0.0).to_numpy()
    ind_code, inds = factorize(leaf["indicator"])
    rmap = {str(r["indicator"]): (r["rule"] or "max", 2 if r["rule_level"] is None else int(r["rule_level"]))
            for r in rules.iter_rows(named=True)}
    spec = [rmap.get(i, ("max", 2)) for i in inds.cast(pl.String).to_list()]
    rule_of = np.array([RULES.index(r) for r, _ in spec], dtype=np.int64)
    level_of = np.array([lv for _, lv in spec], dtype=np.int64)
    ws_code, wss = factorize(leaf["window_start"])
    nw = len(wss)
    v = leaf["value"].cast(pl.Float64).to_numpy()
    lvl = leaf["level"].cast(pl.Int64).fill_null(0).to_numpy() if "level" in leaf.columns else np.zeros(leaf.height, np.int64)
    hit = (lvl >= level_of[ind_code]).astype(float)
    we = leaf["window_end"].to_numpy()
    g = ind_code * nw + ws_code  # (indicator, window) group of each row
    tree = _tree(cu, ca, nu)
    present = [RULES[int(r)] for r in np.unique(rule_of)]  # every indicator in rule_of has rows
    needs = sorted({k for rule in present for k in _NEEDS[rule]})
    own = {k: _own(k, v, lu, pop, area, hit, we) for k in needs}
    # every rule at once: a group's rows (and so the order its partials are summed in) are
    # the same as when each rule is rolled up on its own, since a group is one indicator
    keys, p = _up(g, lu, own, cu, ca, nu, tree)
    group_rule = rule_of[(keys // nu) // nw]
    value = np.empty(len(keys))
    for rule in present:
        sel = group_rule == RULES.index(rule)
        value[sel] = _finish(rule, {k: p[k][sel] for k in _NEEDS[rule]})
    gi = keys // nu
    return pl.DataFrame({
        "indicator": inds.gather(gi // nw), "unit_code": names.gather(keys % nu),
        "window_start": wss.gather(gi % nw).cast(pl.Int64), "window_end": p["we"], "value": value,
        "n": p["c"].astype(np.int64),
    })
