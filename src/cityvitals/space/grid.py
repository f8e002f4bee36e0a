"""The unit grid: H3 cells under the finest imported polygons, the minimum spatial units.

Every cell that overlaps the city at all is kept (a sensor on the shore must land
somewhere), and belongs to exactly one parent: the polygon it overlaps most. The full
hexagon is stored; ``props.border`` says whether part of it lies outside the city, which
is where the locator needs an exact point-in-polygon test. A cell's code is its H3 index,
so the same resolution always gives the same codes.

A parent's population is shared among its cells in proportion to the parent's area each
cell holds, so the cells of a parent add up to exactly its population.
"""

from __future__ import annotations

import time

import h3
import numpy as np
import polars as pl
import shapely

from cityvitals.errors import InputError
from cityvitals.space._geom import best_parent, cover_cells, hexagons, overlaps, subdivide
from cityvitals.space._units import depth_of, load_level, stored_polygon_levels

MAX_CELLS = 5_000_000
"""Refuse grids that would not fit comfortably in memory; the estimate comes first."""

_COVERED = 1 - 1e-9
"""Share of a cell inside the city above which it counts as interior (float noise below)."""


def build_grid(store, resolution: int) -> dict:
    """Replace the grid with H3 cells at ``resolution`` under the finest polygon level.

    Returns counts: resolution, parent level, parents, cells, border cells, seconds.
    """
    started = time.perf_counter()
    if not isinstance(resolution, (int, np.integer)) or not 0 <= int(resolution) <= 15:
        raise InputError(f"resolution must be an integer from 0 to 15, got {resolution!r}")
    resolution = int(resolution)
    levels = stored_polygon_levels(store)
    if not levels:
        raise InputError("no polygon layer to put a grid under: import one first with `cityvitals space import`")
    parent_level = levels[-1]
    parents, parent_geoms = load_level(store, parent_level)
    area_m2 = float(np.nansum(parents["area_m2"].to_numpy()))
    estimate = area_m2 / h3.average_hexagon_area(resolution, unit="m^2")
    if estimate > MAX_CELLS:
        raise InputError(
            f"resolution {resolution} would make about {estimate:,.0f} cells (limit {MAX_CELLS:,}); choose a coarser resolution"
        )

    pieces, owner = subdivide(parent_geoms)
    cells = cover_cells(pieces, resolution)
    hexes = hexagons(cells)
    cell_idx, parent_idx, overlap = overlaps(hexes, np.arange(len(hexes)), pieces, owner)
    best, best_area, total = best_parent(len(cells), cell_idx, parent_idx, overlap)
    keep = best >= 0
    cells, hexes, best, best_area, total = cells[keep], hexes[keep], best[keep], best_area[keep], total[keep]

    hex_area = shapely.area(hexes)
    coverage = np.minimum(total / hex_area, 1.0)
    border = coverage < _COVERED
    population = _share_population(parents["population"].to_numpy(), best, best_area)

    centres = [h3.cell_to_latlng(c) for c in cells]
    parent_codes = np.array(parents["code"].to_list(), dtype=object)
    frame = pl.DataFrame(
        {
            "code": list(cells),
            "name": list(cells),
            "level": ["grid"] * len(cells),
            "depth": [depth_of("grid")] * len(cells),
            "parent_code": list(parent_codes[best]),
            "geometry_wkb": list(shapely.to_wkb(hexes)),
            "centroid_lon": [c[1] for c in centres],
            "centroid_lat": [c[0] for c in centres],
            "area_m2": [h3.cell_area(c, unit="m^2") for c in cells],
            "population": pl.Series(population, dtype=pl.Float64).fill_nan(None),
            "h3_cell": list(cells),
            "props": [  # formatted directly: json.dumps per cell costs more than the geometry work
                f'{{"border": {"true" if b else "false"}, "coverage": {c:.6f}, "resolution": {resolution}}}'
                for b, c in zip(border.tolist(), coverage.tolist())
            ],
        },
        schema_overrides={"population": pl.Float64, "geometry_wkb": pl.Binary, "parent_code": pl.Utf8},
    )
    store.units.delete_level("grid")
    store.units.upsert(frame)
    return {
        "resolution": resolution,
        "parent_level": parent_level,
        "parents": parents.height,
        "cells": len(cells),
        "border_cells": int(border.sum()),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _share_population(parent_pop: np.ndarray, best: np.ndarray, best_area: np.ndarray) -> np.ndarray:
    """Each cell's part of its parent's population, by the parent area the cell holds."""
    held = np.bincount(best, weights=best_area, minlength=len(parent_pop))
    pop = np.asarray(parent_pop, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = best_area / held[best]
    return pop[best] * share  # NaN where the parent has no population
