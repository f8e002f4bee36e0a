"""Point → unit: the ``locate`` stage's core, built once and applied to whole columns.

With a grid, a point's H3 cell *is* its unit: one hash per point and a sorted-array
lookup. Only points in border cells (hexagons that stick out of the city) need an exact
test, against small pieces of the city's polygons. Without a grid the finest polygons
are searched through an STRtree. Points outside the city get ``None``: being outside is
an answer, not an error.

>>> import numpy as np
>>> from cityvitals.store import open_store
>>> import tempfile, json, pathlib
>>> home = pathlib.Path(tempfile.mkdtemp())
>>> layer = home / "d.geojson"
>>> _ = layer.write_text(json.dumps({"type": "FeatureCollection", "features": [
...     {"type": "Feature", "properties": {"name": "West"},
...      "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}},
...     {"type": "Feature", "properties": {"name": "East"},
...      "geometry": {"type": "Polygon", "coordinates": [[[1, 0], [2, 0], [2, 1], [1, 1], [1, 0]]]}}]}))
>>> from cityvitals.space import import_layer
>>> with open_store(home) as store:
...     _ = import_layer(store, layer, level="district", name_field="name")
...     loc = Locator.from_store(store)
>>> loc.locate(np.array([0.5, 1.5, 5.0]), np.array([0.5, 0.5, 0.5])).tolist()
['02', '01', None]
>>> [p["name"] for p in loc.locate_one(0.5, 0.5)["path"]]
['West', 'City']
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import h3
import h3.api.basic_int as h3int
import numpy as np
import shapely

from cityvitals.errors import InputError
from cityvitals.space._geom import hexagons, subdivide
from cityvitals.space._units import load_level, props_of, stored_polygon_levels


@dataclass
class _Unit:
    name: str
    level: str
    parent: str | None


class Locator:
    """Assigns points (lon, lat in WGS84) to the finest spatial unit of the stored tree."""

    def __init__(
        self,
        units: dict[str, _Unit],
        polygon_codes: np.ndarray,
        pieces: np.ndarray,
        piece_owner: np.ndarray,
        grid_cells: np.ndarray | None = None,
        grid_codes: np.ndarray | None = None,
        grid_border: np.ndarray | None = None,
        resolution: int | None = None,
    ):
        self.units = units
        self.polygon_codes = polygon_codes
        self.pieces = pieces
        self.piece_owner = piece_owner
        self.tree = shapely.STRtree(pieces)
        self.resolution = resolution
        self.has_grid = grid_cells is not None and len(grid_cells) > 0
        if self.has_grid:
            order = np.argsort(grid_cells)
            self.grid_cells = grid_cells[order]
            self.grid_codes = grid_codes[order]
            self.grid_border = grid_border[order]
            self._prepare_border()

    @classmethod
    def from_store(cls, store) -> "Locator":
        """Read the tree once: unit names and parents, the finest polygons, the grid."""
        levels = stored_polygon_levels(store)
        if not levels:
            raise InputError("the store has no spatial units: import a layer with `cityvitals space import` first")
        meta = store.units.frame()
        units = {
            code: _Unit(name, level, parent)
            for code, name, level, parent in zip(
                meta["code"].to_list(), meta["name"].to_list(), meta["level"].to_list(), meta["parent_code"].to_list()
            )
        }
        finest, geoms = load_level(store, levels[-1])
        pieces, owner = subdivide(geoms)
        polygon_codes = np.array(finest["code"].to_list(), dtype=object)
        grid = meta.filter(meta["level"] == "grid")
        if grid.height == 0:
            return cls(units, polygon_codes, pieces, owner)
        cell_strs = grid["h3_cell"].to_list()
        cells = np.fromiter((h3.str_to_int(c) for c in cell_strs), dtype=np.uint64, count=len(cell_strs))
        border = np.array([props_of(p).get("border", True) for p in grid["props"].to_list()], dtype=bool)
        return cls(
            units, polygon_codes, pieces, owner,
            grid_cells=cells,
            grid_codes=np.array(grid["code"].to_list(), dtype=object),
            grid_border=border,
            resolution=h3.get_resolution(cell_strs[0]),
        )

    def _prepare_border(self) -> None:
        """For each border cell, the polygon pieces it touches (CSR arrays)."""
        border_idx = np.flatnonzero(self.grid_border)
        self._border_rank = np.full(len(self.grid_cells), -1, dtype=np.int64)
        self._border_rank[border_idx] = np.arange(len(border_idx))
        hexes = hexagons([h3.int_to_str(int(c)) for c in self.grid_cells[border_idx]])
        b, p = self.tree.query(hexes, predicate="intersects") if len(hexes) else (np.empty(0, int), np.empty(0, int))
        order = np.argsort(b, kind="stable")
        self._border_pieces = p[order]
        self._border_offsets = np.concatenate([[0], np.cumsum(np.bincount(b, minlength=len(border_idx)))])

    def locate(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Finest unit code for each point (object array); ``None`` where the point is outside."""
        lon = np.asarray(lon, dtype=float).ravel()
        lat = np.asarray(lat, dtype=float).ravel()
        if lon.shape != lat.shape:
            raise ValueError("lon and lat must have the same length")
        out = np.full(len(lon), None, dtype=object)
        valid = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
        vi = np.flatnonzero(valid)
        if len(vi) == 0:
            return out
        if self.has_grid:
            self._locate_grid(vi, lon, lat, out)
        else:
            self._locate_polygons(vi, lon, lat, out)
        return out

    def _locate_grid(self, vi: np.ndarray, lon: np.ndarray, lat: np.ndarray, out: np.ndarray) -> None:
        cells = np.fromiter(
            map(h3int.latlng_to_cell, lat[vi].tolist(), lon[vi].tolist(), repeat(self.resolution)),
            dtype=np.uint64, count=len(vi),
        )
        pos = np.minimum(np.searchsorted(self.grid_cells, cells), len(self.grid_cells) - 1)
        hit = self.grid_cells[pos] == cells
        vi, pos = vi[hit], pos[hit]
        on_border = self.grid_border[pos]
        if on_border.any():
            inside = self._inside(self._border_rank[pos[on_border]], lon[vi[on_border]], lat[vi[on_border]])
            keep = np.ones(len(vi), dtype=bool)
            keep[np.flatnonzero(on_border)[~inside]] = False
            vi, pos = vi[keep], pos[keep]
        out[vi] = self.grid_codes[pos]

    def _inside(self, rank: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Exact test of points in border cells against the pieces each cell touches."""
        starts = self._border_offsets[rank]
        counts = self._border_offsets[rank + 1] - starts
        point = np.repeat(np.arange(len(rank)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        piece = self._border_pieces[np.arange(len(point)) - first + np.repeat(starts, counts)]
        ok = shapely.intersects_xy(self.pieces[piece], x[point], y[point])
        return np.bincount(point[ok], minlength=len(rank)) > 0

    def _locate_polygons(self, vi: np.ndarray, lon: np.ndarray, lat: np.ndarray, out: np.ndarray) -> None:
        points = shapely.points(lon[vi], lat[vi])
        pi, gi = self.tree.query(points, predicate="intersects")
        if len(pi) == 0:
            return
        owner = self.piece_owner[gi]
        order = np.lexsort((owner, pi))  # on a shared border the lower unit index wins, deterministically
        pi, owner = pi[order], owner[order]
        first = np.ones(len(pi), dtype=bool)
        first[1:] = pi[1:] != pi[:-1]
        out[vi[pi[first]]] = self.polygon_codes[owner[first]]

    def path(self, code: str) -> list[dict]:
        """The unit and its ancestors up to the city, finest first, as {code, name, level}."""
        out: list[dict] = []
        seen: set[str] = set()
        current: str | None = code
        while current is not None and current in self.units and current not in seen:
            seen.add(current)
            unit = self.units[current]
            out.append({"code": current, "name": unit.name, "level": unit.level})
            current = unit.parent
        return out

    def ancestor(self, codes: np.ndarray, level: str) -> np.ndarray:
        """For each code, the code of its ancestor (or itself) at ``level``; ``None`` if there is none.

        Vectorised over distinct codes, so rolling a million readings up to districts
        costs one lookup per unit.
        """
        codes = np.asarray(codes, dtype=object)
        out = np.full(len(codes), None, dtype=object)
        present = np.flatnonzero(codes != None)  # noqa: E711 (element-wise comparison)
        if len(present) == 0:
            return out
        distinct, inverse = np.unique(codes[present].astype(str), return_inverse=True)
        found = np.array(
            [next((p["code"] for p in self.path(c) if p["level"] == level), None) for c in distinct], dtype=object
        )
        out[present] = found[inverse]
        return out

    def locate_one(self, lon: float, lat: float) -> dict | None:
        """The finest unit at a point with its path up to the city, or ``None`` outside."""
        code = self.locate(np.array([lon]), np.array([lat]))[0]
        if code is None:
            return None
        path = self.path(code)
        return {"code": code, "name": path[0]["name"], "level": path[0]["level"], "path": path}
