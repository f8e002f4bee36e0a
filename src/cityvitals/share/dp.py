"""Differentially private counts over small units (OpenDP's discrete Laplace), with a budget.

Counts of citizen reports per community and category are what researchers want, and
exactly what can out a caller in a small community ("the only gas report in X came at
02:00"). Each released count gets discrete Laplace noise of scale ``bound / epsilon``,
where ``bound`` caps how many rows one person may contribute (rows beyond it are
dropped before counting), so the whole vector is ``epsilon``-DP per person. Every
release is charged to the dataset's budget in the store first; a release that would
exceed it is refused and nothing is drawn.

The accuracy promise: with probability ``1 - alpha`` a released count is within
``accuracy(epsilon, bound, alpha)`` of the true count (before the clamp at zero, which
only brings it closer).

>>> round(accuracy(1.0, 1, 0.05), 3)
3.376
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import polars as pl

from cityvitals.errors import InputError


def _dp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def scale_for(epsilon: float, bound: int = 1) -> float:
    if not epsilon > 0:
        raise InputError(f"epsilon must be positive, got {epsilon}")
    return bound / epsilon


def accuracy(epsilon: float, bound: int = 1, alpha: float = 0.05) -> float:
    """The half-width a noisy count stays within with probability 1 - alpha (OpenDP's own formula)."""
    return float(_dp().discrete_laplacian_scale_to_accuracy(scale_for(epsilon, bound), alpha))


def laplace_vector(counts: list[int], epsilon: float, bound: int = 1) -> list[int]:
    """Noisy counts from an OpenDP measurement; asserts the privacy map gives epsilon."""
    dp = _dp()
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    meas = dp.m.make_laplace(*space, scale=scale_for(epsilon, bound))
    spent = meas.map(bound)
    if spent > epsilon * (1 + 1e-9):
        raise InputError(f"the mechanism would spend epsilon {spent} > {epsilon}")
    return list(meas([int(c) for c in counts])) if counts else []


def bounded_counts(df: pl.DataFrame, by: list[str], person: str | None, bound: int) -> pl.DataFrame:
    """True counts per ``by`` group after keeping at most ``bound`` rows per person."""
    if person and person in df.columns:
        df = df.with_columns(pl.int_range(pl.len()).over(person).alias("_i")).filter(
            pl.col(person).is_null() | (pl.col("_i") < bound)).drop("_i")
    return df.group_by(by).len("true_count").sort(by)


def release_counts(store, dataset: str, df: pl.DataFrame, by: list[str], *, epsilon: float, bound: int = 1,
                   person: str | None = None, domain: pl.DataFrame | None = None, actor: str = "cli",
                   now: datetime | None = None, keep_true: bool = False) -> dict:
    """Charge the budget, then release noisy counts per group (zero-count groups of ``domain`` included).

    Including every group of the domain (all communities x categories), not only those
    seen, matters: leaving out empty groups would itself reveal that they are empty.
    """
    counts = bounded_counts(df, by, person, bound)
    if domain is not None:
        counts = domain.select(by).unique().join(counts, on=by, how="left").with_columns(
            pl.col("true_count").fill_null(0)).sort(by)
    charge = store.share.spend(dataset, epsilon, actor=actor, query=f"count by {','.join(by)} bound {bound}", now=now)
    noisy = np.maximum(np.asarray(laplace_vector(counts["true_count"].to_list(), epsilon, bound), dtype=np.int64), 0)
    out = counts.with_columns(pl.Series("count", noisy))
    if not keep_true:
        out = out.drop("true_count")
    a = accuracy(epsilon, bound, 0.05)
    body = {"dataset": dataset, "epsilon": epsilon, "bound": bound, "mechanism": "discrete Laplace (OpenDP)",
            "scale": scale_for(epsilon, bound), "accuracy_95": a, "budget": charge,
            "rows": out.drop("true_count", strict=False).to_dicts()}
    store.share.save_release(dataset, body, epsilon, now)
    return {**body, "frame": out}


def tail_probability(t: float, scale: float) -> float:
    """P(|noise| > t) for continuous Laplace of ``scale`` (an upper bound for the discrete one)."""
    return math.exp(-t / scale)
