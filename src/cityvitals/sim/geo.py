"""Geometry helpers: a local metric frame around the city centre and seeded partitions.

The city is drawn in metres on a local equirectangular frame (accurate to well under
a metre over a few tens of kilometres) and converted to longitude/latitude once, so
areas, distances and Voronoi cells are computed in a metric space.

>>> f = LocalFrame(121.47, 31.23)
>>> x, y = f.to_xy(121.48, 31.23)
>>> round(float(x))
952
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPoint, Polygon
from shapely.geometry.base import BaseGeometry

_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQ = 111_320.0


@dataclass(frozen=True)
class LocalFrame:
    lon0: float
    lat0: float

    @property
    def kx(self) -> float:
        return _M_PER_DEG_LON_EQ * math.cos(math.radians(self.lat0))

    def to_xy(self, lon, lat):
        return (np.asarray(lon) - self.lon0) * self.kx, (np.asarray(lat) - self.lat0) * _M_PER_DEG_LAT

    def to_lonlat(self, x, y):
        return self.lon0 + np.asarray(x) / self.kx, self.lat0 + np.asarray(y) / _M_PER_DEG_LAT

    def geom_to_lonlat(self, geom):
        """Metric geometry (or array of them) to lon/lat, rounded to ~1 cm for stable output."""
        kx = self.kx

        def tf(c: np.ndarray) -> np.ndarray:
            out = np.empty_like(c)
            out[:, 0] = np.round(self.lon0 + c[:, 0] / kx, 7)
            out[:, 1] = np.round(self.lat0 + c[:, 1] / _M_PER_DEG_LAT, 7)
            return out

        return shapely.transform(geom, tf)


def blob(radius: float, rng: np.random.Generator, n: int = 160) -> Polygon:
    """A city outline: a circle whose radius wobbles with a few random harmonics."""
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 5, 7):
        r += rng.uniform(0.02, 0.09) / math.sqrt(k / 2) * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    return Polygon(np.c_[radius * r * np.cos(theta), radius * r * np.sin(theta)])


def points_in(poly: BaseGeometry, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform random points inside ``poly`` (rejection sampling, vectorised)."""
    if n <= 0:
        return np.zeros((0, 2))
    minx, miny, maxx, maxy = poly.bounds
    shapely.prepare(poly)
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        m = max(64, int((n - have) * 2.5))
        pts = np.c_[rng.uniform(minx, maxx, m), rng.uniform(miny, maxy, m)]
        pts = pts[shapely.contains_xy(poly, pts[:, 0], pts[:, 1])]
        out.append(pts)
        have += len(pts)
    return np.concatenate(out)[:n]


def _largest(geom: BaseGeometry) -> BaseGeometry:
    if geom.geom_type == "MultiPolygon":
        return max(geom.geoms, key=lambda g: g.area)
    if geom.geom_type == "GeometryCollection":
        polys = [g for g in geom.geoms if g.geom_type == "Polygon"]
        return max(polys, key=lambda g: g.area) if polys else geom
    return geom


def partition(parent: BaseGeometry, n: int, rng: np.random.Generator, *, lloyd: int = 2) -> list[BaseGeometry]:
    """Split ``parent`` into ``n`` cells: a relaxed Voronoi of seeded points, clipped.

    Children are intersections with the parent, so they nest inside it by construction
    and cover it without overlap. Cells stay in the order of their seed points.
    """
    if n <= 1:
        return [parent]
    pts = points_in(parent, n, rng)
    env = parent.envelope.buffer(parent.length)
    cells: list[BaseGeometry] = []
    for it in range(lloyd + 1):
        vor = shapely.voronoi_polygons(MultiPoint(pts), extend_to=env, ordered=True)
        cells = [c.intersection(parent) for c in vor.geoms]
        if it < lloyd:
            pts = np.array([[_largest(c).centroid.x, _largest(c).centroid.y] if not c.is_empty else p for c, p in zip(cells, pts)])
    out = []
    for c in cells:
        c = shapely.make_valid(c)
        if c.geom_type == "GeometryCollection":
            polys = [g for g in c.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
            c = shapely.union_all(polys)
        out.append(c)
    return [c for c in out if not c.is_empty and c.area > 0]
