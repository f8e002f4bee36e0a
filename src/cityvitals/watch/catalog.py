"""Default reading thresholds per sensor kind, read from the indicator catalogue.

Why from the catalogue: the levels a duty officer cares about (pressure below 0.14 MPa,
PM2.5 above 75 ug/m3, ponding deeper than 0.15 m) are already kept there with their
sources, so ``watch`` uses the same numbers instead of a second copy. A reading is one
point, so only indicators whose value is a reading of one kind (``agg`` mean, max, min or
last, numeric ``gte``/``gt``/``lte``/``lt`` bounds) give reading thresholds; counts, sums
over windows, bands and parametrised limits stay with the indicator series (see
``cityvitals.watch.signs``). When several indicators read the same kind, the most
point-like wins: ``max``/``min`` before ``mean``, then the shortest window (PM2.5's 1-h
mean before an 8-h one). A YAML file given to ``watch run --thresholds`` overrides a kind.

>>> th = catalog_thresholds()
>>> th["water_pressure"].levels, th["water_pressure"].direction
([0.16, 0.14, 0.1], 'lower')
>>> th["pm25"].levels, th["gas_concentration"].direction
([75.0, 115.0, 150.0], 'higher')
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from cityvitals.watch.runner import Threshold

POINT_AGGS = {"max": 0, "min": 0, "last": 0, "mean": 1}
# Kinds whose catalogue levels describe a subset of the kind's sensors or an area mean, so
# applying them to every single reading would alarm on ordinary life: expressway speeds
# (arterials run slower every day), ponding depth (river gauges read metres), district
# road occupancy (single detectors pass 20% every rush hour). Give these with --thresholds.
NOT_POINTWISE = {"traffic_speed", "water_level", "road_occupancy"}
LEVEL_KEYS = ("attention", "warning", "alarm")


def indicator_levels(ind: Any) -> tuple[list[float], str] | None:
    """(levels, direction) of an indicator with plain numeric one-sided bounds, else None."""
    if ind.direction not in ("higher_is_worse", "lower_is_worse"):
        return None
    levels: list[float] = []
    for key in LEVEL_KEYS:
        cond = ind.thresholds.get(key)
        if cond is None:
            levels.append(float("nan"))
            continue
        if cond.op not in ("gte", "gt", "lte", "lt") or len(cond.bounds) != 1 or cond.bounds[0].param is not None:
            return None
        levels.append(float(cond.bounds[0].value))
    if all(np.isnan(v) for v in levels):
        return None
    return levels, "higher" if ind.direction == "higher_is_worse" else "lower"


@lru_cache(maxsize=4)
def _cached(extra: str | None) -> dict[str, tuple[tuple[float, ...], str, int]]:
    from cityvitals.signs import load_catalog

    best: dict[str, tuple[tuple, tuple[tuple[float, ...], str, int]]] = {}
    for ind in load_catalog(extra).values():
        if len(ind.kinds) != 1 or ind.kinds[0] in NOT_POINTWISE:
            continue
        if ind.agg == "count_ge" and ind.agg_arg is not None and ind.direction == "higher_is_worse":
            # "count readings >= x" says a single reading >= x is an event (a tilted manhole cover)
            if ind.kinds[0] not in best:
                nan = float("nan")
                best[ind.kinds[0]] = ((9, 0.0, ind.id), ((float(ind.agg_arg), float(ind.agg_arg), nan), "higher", 300))  # enters at warning
            continue
        if ind.agg not in POINT_AGGS or ind.agg_arg is not None:
            continue
        got = indicator_levels(ind)
        if got is None:
            continue
        rank = (POINT_AGGS[ind.agg], ind.window.size.total_seconds(), ind.id)
        dur = max(300, int(ind.min_duration.total_seconds()))
        kind = ind.kinds[0]
        if kind not in best or rank < best[kind][0]:
            best[kind] = (rank, (tuple(got[0]), got[1], dur))
    return {k: v for k, (_r, v) in best.items()}


def catalog_thresholds(extra: str | None = None) -> dict[str, Threshold]:
    """Sensor kind -> ``Threshold`` from the catalogue (``extra``: a city's overlay file)."""
    return {k: Threshold(list(lv), d, dur) for k, (lv, d, dur) in _cached(extra).items()}


@lru_cache(maxsize=4)
def _cached_sums(extra: str | None) -> dict[str, tuple[int, tuple[float, ...], str, int]]:
    from cityvitals.signs import load_catalog

    best: dict[str, tuple[tuple, tuple[int, tuple[float, ...], str, int]]] = {}
    for ind in load_catalog(extra).values():
        if len(ind.kinds) != 1 or ind.agg != "sum" or ind.agg_arg is not None:
            continue
        got = indicator_levels(ind)
        if got is None:
            continue
        size = int(ind.window.size.total_seconds())
        rank = (size, ind.id)
        if ind.kinds[0] not in best or rank < best[ind.kinds[0]][0]:
            best[ind.kinds[0]] = (rank, (size, tuple(got[0]), got[1], max(300, int(ind.min_duration.total_seconds()))))
    return {k: v for k, (_r, v) in best.items()}


def sum_thresholds(extra: str | None = None) -> dict[str, tuple[int, Threshold]]:
    """Sensor kind -> (window seconds, ``Threshold``) for kinds the catalogue judges on sums.

    Why: a rain gauge reports what fell in each interval, but rainstorm levels are on the
    last hour's sum (``wx.rain_1h``); the shortest summed window of a kind is watched on a
    rolling sum (``cityvitals.watch.rolling``) with that indicator's levels.

    >>> w, th = sum_thresholds()["rainfall"]
    >>> w, th.levels, th.direction
    (3600, [35.0, 50.0, 80.0], 'higher')
    """
    return {k: (w, Threshold(list(lv), d, dur)) for k, (w, lv, d, dur) in _cached_sums(extra).items()}
