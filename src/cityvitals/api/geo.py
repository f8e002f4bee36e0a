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


def wkb_table(store, codes: list[str]) -> list[bytes | None]:
    """WKB geometry for ``codes`` in their order (None where a unit has none).

    The codes go in as a registered Arrow table and are joined, not passed as a list
    parameter: ``list_contains`` over 40,000 codes is a scan per row.
    """
    import pyarrow as pa

    if not codes:
        return []
    want = pa.table({"code": pa.array(codes, pa.string()), "i": pa.array(range(len(codes)), pa.int64())})
    with store.lock:
        con = store.con
        con.register("_geo_codes", want)
        try:
            got = con.execute("SELECT w.i, u.geometry_wkb FROM _geo_codes w JOIN units u ON u.code = w.code").fetchall()
        finally:
            con.unregister("_geo_codes")
    out: list[bytes | None] = [None] * len(codes)
    for i, g in got:
        out[i] = bytes(g) if g is not None else None
    return out


def compact_geometry(store, codes: list[str], *, pixels: float = 1500.0, scale: int = 100_000) -> dict:
    """A layer's polygons as flat integer columns: what the dashboard draws 40,000 units from.

    Coordinates are simplified to about a pixel, quantised to 1/``scale`` degree (about a
    metre) and written as deltas from the previous point, so most numbers are two or three
    digits; the closing point of each ring is left out. Nesting is given by counts:
    ``parts[i]`` polygons for unit ``codes[i]``, ``rings[j]`` rings for polygon ``j``,
    ``points[k]`` points for ring ``k``; ``xy`` holds x, y deltas in that order, starting
    from ``origin``. About a quarter of the size of GeoJSON, and NumPy makes it in one pass.

    >>> import shapely, polars as pl
    >>> from cityvitals.store import open_store
    >>> s = open_store(":memory:")
    >>> _ = s.units.upsert(pl.DataFrame({"code": ["A"], "level": ["grid"], "depth": [0],
    ...     "geometry_wkb": [shapely.to_wkb(shapely.box(116.0, 39.0, 116.001, 39.002))]}))
    >>> c = compact_geometry(s, ["A", "B"])
    >>> c["parts"].tolist(), c["rings"].tolist(), c["points"].tolist(), c["xy"].tolist()
    ([1, 0], [1], [4], [100, 0, 0, 200, -100, 0, 0, -200])
    """
    wkb = wkb_table(store, codes)
    has = np.array([w is not None for w in wkb], dtype=bool)
    geoms = np.empty(len(codes), dtype=object)
    if has.any():
        geoms[has] = shapely.from_wkb(np.array([w for w in wkb if w is not None], dtype=object))
    valid = geoms[has]
    tol = tolerance_for(valid, pixels) if valid.size else 0.0
    if tol > 0:
        geoms[has] = shapely.simplify(valid, tol, preserve_topology=True)
    polys, feat = shapely.get_parts(geoms, return_index=True)
    parts = np.bincount(feat, minlength=len(codes)).astype(np.int32)
    rings, poly = shapely.get_rings(polys, return_index=True)
    rcount = np.bincount(poly, minlength=len(polys)).astype(np.int32)
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    counts = np.bincount(ring, minlength=len(rings))
    keep = np.ones(len(xy), dtype=bool)
    keep[np.cumsum(counts)[counts > 0] - 1] = False  # the closing point repeats the first
    xy = xy[keep]
    # the origin lies on the quantisation grid, so origin + sum(deltas) / scale is exact
    x0, y0 = (np.floor(shapely.total_bounds(valid)[:2] * scale) / scale) if len(xy) else (0.0, 0.0)
    q = np.round((xy - [x0, y0]) * scale).astype(np.int64)
    deltas = np.diff(q, axis=0, prepend=np.zeros((1, 2), np.int64)).reshape(-1)
    return {"origin": [float(x0), float(y0)], "scale": scale, "parts": parts, "rings": rcount,
            "points": (counts - 1).astype(np.int32), "xy": deltas.astype(np.int32)}
