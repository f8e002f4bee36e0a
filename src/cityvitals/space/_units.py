"""Reading the stored tree back as arrays: which levels exist, and their polygons."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import shapely

from cityvitals.store.duck.units import LEVELS

POLYGON_LEVELS = ("city", "district", "street", "community")
"""Levels imported from polygon layers; ``grid`` is generated under the finest of them."""

ROOT_CODE = "0"
"""Code of the city root created when no city layer is imported."""


def depth_of(level: str) -> int:
    """Depth is the level's rank, so it stays the same whatever levels a city skips."""
    return LEVELS.index(level)


def stored_polygon_levels(store) -> list[str]:
    """Polygon levels present in the store, coarse to fine."""
    present = set(store.units.levels())
    return [lvl for lvl in POLYGON_LEVELS if lvl in present]


def coarser_stored_level(store, level: str) -> str | None:
    """The finest stored polygon level that is coarser than ``level`` (where it nests)."""
    coarser = [lvl for lvl in stored_polygon_levels(store) if depth_of(lvl) < depth_of(level)]
    return coarser[-1] if coarser else None


def load_level(store, level: str) -> tuple[pl.DataFrame, np.ndarray]:
    """Units of one level and their geometries (a shapely array aligned with the rows)."""
    df = store.units.frame(level, geometry=True)
    wkb = df["geometry_wkb"].to_list()
    geoms = shapely.from_wkb(np.array(wkb, dtype=object)) if wkb else np.empty(0, dtype=object)
    return df.drop("geometry_wkb"), geoms


def props_of(raw: str | None) -> dict:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
