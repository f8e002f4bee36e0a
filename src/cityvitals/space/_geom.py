"""Geometry helpers shared by the layer import, the grid and the locator.

Administrative polygons have tens of thousands of vertices (a coastline), and every
spatial test against such a polygon walks all of them. Cutting each polygon into small
pieces first (``subdivide``) turns thousands of slow tests into thousands of fast ones,
which is what keeps a 50,000-cell grid and a million-point lookup within seconds.

>>> import shapely
>>> square = shapely.box(0, 0, 1, 1).segmentize(0.01)   # 401 vertices
>>> pieces, owner = subdivide([square], max_vertices=64)
>>> len(pieces) > 1, round(float(shapely.area(pieces).sum()), 9), set(owner.tolist())
(True, 1.0, {0})
"""

from __future__ import annotations

from collections.abc import Sequence

import h3
import numpy as np
import shapely
from pyproj import Geod

_GEOD = Geod(ellps="WGS84")

MAX_PIECE_VERTICES = 256
"""Pieces smaller than this make intersections and point tests cheap; larger ones cost more splits."""


def geodesic_areas(geoms: Sequence[shapely.Geometry] | np.ndarray) -> np.ndarray:
    """Areas in m² on the WGS84 ellipsoid (planar degrees would be wrong by cos(latitude))."""
    return np.array([abs(_GEOD.geometry_area_perimeter(g)[0]) for g in geoms], dtype=float)


def subdivide(
    geoms: Sequence[shapely.Geometry] | np.ndarray, max_vertices: int = MAX_PIECE_VERTICES
) -> tuple[np.ndarray, np.ndarray]:
    """Cut polygons into polygon pieces of at most ``max_vertices`` vertices.

    Returns the pieces and, for each piece, the index of the polygon it came from. The
    pieces of a polygon cover it exactly (halving boxes, so areas add up).
    """
    pieces: list[shapely.Geometry] = []
    owner: list[int] = []
    for i, geom in enumerate(geoms):
        stack = [p for p in shapely.get_parts(geom) if not p.is_empty]
        while stack:
            g = stack.pop()
            if shapely.get_num_coordinates(g) <= max_vertices:
                pieces.append(g)
                owner.append(i)
                continue
            x0, y0, x1, y1 = g.bounds
            if x1 - x0 >= y1 - y0:
                m = (x0 + x1) / 2
                halves = ((x0, y0, m, y1), (m, y0, x1, y1))
            else:
                m = (y0 + y1) / 2
                halves = ((x0, y0, x1, m), (x0, m, x1, y1))
            for half in halves:
                # clip_by_rect is ~10x faster than a full overlay; its rare invalid output is repaired below
                part = shapely.clip_by_rect(g, *half)
                stack.extend(_polygons(part))
    arr = np.empty(len(pieces), dtype=object)
    arr[:] = pieces
    owners = np.asarray(owner, dtype=np.int64)
    invalid = np.flatnonzero(~shapely.is_valid(arr)) if len(arr) else np.empty(0, dtype=np.int64)
    if len(invalid):
        repaired = [_polygons(shapely.make_valid(g)) for g in arr[invalid]]
        keep = np.ones(len(arr), dtype=bool)
        keep[invalid] = False
        extra = np.empty(sum(len(r) for r in repaired), dtype=object)
        extra[:] = [p for r in repaired for p in r]
        owners = np.concatenate([owners[keep], np.repeat(owners[invalid], [len(r) for r in repaired])])
        arr = np.concatenate([arr[keep], extra])
    shapely.prepare(arr)
    return arr, owners


def _polygons(geom: shapely.Geometry) -> list[shapely.Geometry]:
    """The non-empty polygon parts of a geometry (clipping can leave lines and points)."""
    return [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty and p.area > 0]


def hexagons(cells: Sequence[str] | np.ndarray) -> np.ndarray:
    """Shapely polygons (lon/lat) of H3 cells, built in one vectorised call."""
    if len(cells) == 0:
        return np.empty(0, dtype=object)
    rings = [h3.cell_to_boundary(c) for c in cells]
    counts = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    latlng = np.array([p for r in rings for p in r], dtype=float)
    # close each ring: repeat its first vertex at its end
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    closed = np.insert(latlng, np.cumsum(counts), latlng[starts], axis=0)
    ring_index = np.repeat(np.arange(len(rings)), counts + 1)
    lines = shapely.linearrings(closed[:, 1], closed[:, 0], indices=ring_index)
    return shapely.polygons(lines)


def cover_cells(pieces: np.ndarray, resolution: int) -> np.ndarray:
    """Candidate H3 cells (sorted strings) overlapping the bounding box of any piece.

    Covering small boxes is far cheaper for H3 than covering a 27,000-vertex coastline;
    the caller keeps only cells that really intersect a piece.
    """
    cells: set[str] = set()
    for x0, y0, x1, y1 in shapely.bounds(pieces):
        box = h3.LatLngPoly([(y0, x0), (y0, x1), (y1, x1), (y1, x0)])
        cells.update(h3.h3shape_to_cells_experimental(box, resolution, contain="overlap"))
    return np.array(sorted(cells), dtype=object)


def overlaps(
    child_pieces: np.ndarray, child_owner: np.ndarray, parent_pieces: np.ndarray, parent_owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planar overlap area of every (child, parent) pair that overlaps at all.

    Returns ``(child, parent, area)`` arrays, one row per overlapping pair, in degrees²:
    only ever compared between parents of the same child (same latitude), so the
    planar unit is fine and far cheaper than geodesic areas.
    """
    tree = shapely.STRtree(parent_pieces)
    ci, pi = tree.query(child_pieces, predicate="intersects")
    if len(ci) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=float)
    area = np.empty(len(ci), dtype=float)
    inside = shapely.contains_properly(parent_pieces[pi], child_pieces[ci])
    area[inside] = shapely.area(child_pieces[ci[inside]])
    rest = ~inside
    area[rest] = shapely.area(shapely.intersection(child_pieces[ci[rest]], parent_pieces[pi[rest]]))
    # sum the piece pairs into (child, parent) pairs
    child = child_owner[ci]
    parent = parent_owner[pi]
    n_parent = int(parent_owner.max()) + 1 if len(parent_owner) else 1
    key = child.astype(np.int64) * n_parent + parent
    keys, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, weights=area, minlength=len(keys))
    keep = total > 0
    keys, total = keys[keep], total[keep]
    return keys // n_parent, keys % n_parent, total


def best_parent(n_children: int, child: np.ndarray, parent: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each child: the parent with the largest overlap (-1 if none), that overlap, and the sum of all overlaps.

    Ties go to the lower parent index, so the choice is deterministic.
    """
    best = np.full(n_children, -1, dtype=np.int64)
    best_area = np.zeros(n_children, dtype=float)
    total = np.bincount(child, weights=area, minlength=n_children) if len(child) else np.zeros(n_children)
    if len(child):
        order = np.lexsort((parent, -area, child))
        first = np.ones(len(order), dtype=bool)
        first[1:] = child[order][1:] != child[order][:-1]
        chosen = order[first]
        best[child[chosen]] = parent[chosen]
        best_area[child[chosen]] = area[chosen]
    return best, best_area, total
