"""Unit geometry as compact GeoJSON: simplified, rounded, assembled without re-parsing.

Shapely's vectorised functions simplify and encode all polygons of a layer at once; the
features are then joined as text, so a layer of tens of thousands of grid cells costs one
pass of C code, not a Python loop over coordinates.
"""

from __future__ import annotations

import numpy as np
import orjson
import shapely


def geometries(store, codes: list[str]) -> dict[str, bytes]:
    """WKB geometry by unit code (units without geometry are left out)."""
    if not codes:
        return {}
    with store.lock:
        rows = store.con.execute(
            "SELECT code, geometry_wkb FROM units WHERE list_contains(?, code) AND geometry_wkb IS NOT NULL", [codes]
        ).fetchall()
    return {c: bytes(g) for c, g in rows}


def tolerance_for(geoms: np.ndarray, pixels: float = 1500.0) -> float:
    """A simplification tolerance of about one pixel when the layer fills ``pixels``."""
    if geoms.size == 0:
        return 0.0
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    return float(max(x1 - x0, y1 - y0) / pixels)


def feature_collection(store, props: list[dict], *, simplify: bool = True, precision: float = 1e-5) -> bytes:
    """A GeoJSON FeatureCollection (bytes) for units; ``props`` rows need a ``code``."""
    wkb = geometries(store, [p["code"] for p in props])
    props = [p for p in props if p["code"] in wkb]
    if not props:
        return b'{"type":"FeatureCollection","features":[]}'
    geoms = shapely.from_wkb(np.array([wkb[p["code"]] for p in props], dtype=object))
    if simplify:
        tol = tolerance_for(geoms)
        if tol > 0:
            geoms = shapely.simplify(geoms, tol, preserve_topology=True)
    geoms = shapely.set_precision(geoms, precision)
    texts = shapely.to_geojson(geoms)
    parts = [
        b'{"type":"Feature","id":' + orjson.dumps(p["code"]) + b',"properties":' + orjson.dumps(p, default=str)
        + b',"geometry":' + t.encode() + b"}"
        for p, t in zip(props, texts)
    ]
    return b'{"type":"FeatureCollection","features":[' + b",".join(parts) + b"]}"


def geometry_json(wkb: bytes | None, *, simplify_tolerance: float = 0.0) -> dict | None:
    if wkb is None:
        return None
    g = shapely.from_wkb(bytes(wkb))
    if simplify_tolerance > 0:
        g = shapely.simplify(g, simplify_tolerance, preserve_topology=True)
    return orjson.loads(shapely.to_geojson(g))
