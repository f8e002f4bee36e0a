"""Importing administrative layers (GeoJSON polygons) into the city's tree.

A layer at level L nests under the finest stored level coarser than L. Each feature's
parent is the unit it overlaps most (by area, not by centroid: a district's centroid can
fall in a bay or in its neighbour). When nothing coarser exists a ``city`` root is made
from the union of the layer, so every tree has one top.

Re-importing a level replaces it. Units of the next finer level are then re-parented by
overlap against the new polygons (their codes are kept: codes are identities, not
paths); if that finer level is the H3 grid, the grid is rebuilt at its resolution.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import shapely
from shapely.geometry import shape
from shapely.validation import explain_validity

from cityvitals.errors import InputError
from cityvitals.space._geom import best_parent, geodesic_areas, overlaps, subdivide
from cityvitals.space._units import (
    POLYGON_LEVELS,
    ROOT_CODE,
    coarser_stored_level,
    depth_of,
    load_level,
    props_of,
    stored_polygon_levels,
)

MIN_NEST_SHARE = 0.01
"""A feature must have at least this share of its area inside some parent to nest."""

CODE_WIDTH = {"city": 1, "district": 2, "street": 3, "community": 3}
"""Digits per level in generated codes, as in the national fixed-width scheme."""


@dataclass
class _Feature:
    index: int
    name: str
    geom: Any
    code: str | None = None
    population: float | None = None
    props: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"feature {self.index} ({self.name!r})"


def import_layer(
    store,
    path: str | os.PathLike[str],
    *,
    level: str,
    name_field: str,
    code_field: str | None = None,
    population_field: str | None = None,
    city_name: str = "City",
) -> dict:
    """Import a GeoJSON layer of polygons as the units of ``level``; return counts.

    Raises ``InputError`` naming the feature (index and name) for an unreadable file,
    invalid or non-polygon geometry, a missing name or code, a duplicate code, or a
    feature that overlaps no unit of the coarser level.
    """
    if level not in POLYGON_LEVELS:
        raise InputError(f"level {level!r} is not one of {', '.join(POLYGON_LEVELS)} (the grid is made by `space grid`)")
    features = _read_features(path, name_field=name_field, code_field=code_field, population_field=population_field)
    geoms = np.empty(len(features), dtype=object)
    geoms[:] = [f.geom for f in features]

    parent_level = coarser_stored_level(store, level)
    regenerate_root = False
    if parent_level == "city":
        roots, _ = load_level(store, "city")
        root_props = [props_of(p) for p in roots["props"].to_list()]
        regenerate_root = len(roots) == 1 and root_props[0].get("generated") and root_props[0].get("from_level") == level
    rows: list[pl.DataFrame] = []
    root_created = False
    if parent_level is None or regenerate_root:
        if level != "city":
            rows.append(_root_row(geoms, features, city_name, level))
            root_created = True
            parent_codes = np.array([ROOT_CODE])
            parent_level = "city"
            parent_idx = np.zeros(len(features), dtype=np.int64)
        else:
            parent_codes = np.array([None], dtype=object)
            parent_idx = np.zeros(len(features), dtype=np.int64)
    else:
        parents, parent_geoms = load_level(store, parent_level)
        parent_codes = np.array(parents["code"].to_list(), dtype=object)
        parent_idx = _nest(features, geoms, parent_geoms, parent_level)

    codes = _codes(features, level, parent_codes, parent_idx)
    _check_clashes(store, level, codes, features, reserved={ROOT_CODE} if root_created else set())
    rows.append(_layer_rows(features, geoms, codes, level, parent_codes[parent_idx]))

    # Work out the consequences for finer levels before writing anything.
    finer = [lvl for lvl in stored_polygon_levels(store) if depth_of(lvl) > depth_of(level)]
    reparent: pl.DataFrame | None = None
    if finer:
        reparent = _reparent_rows(store, finer[0], geoms, codes, level)
    grid_resolution = None
    if not finer and "grid" in store.units.levels():
        grid_resolution = _grid_resolution(store)

    if root_created or regenerate_root:
        store.units.delete_level("city")
    store.units.delete_level(level)
    for frame in rows:
        store.units.upsert(frame)
    result: dict[str, Any] = {
        "level": level,
        "imported": len(features),
        "parent_level": parent_level if level != "city" else None,
        "city_created": root_created,
        "reparented": {},
        "grid_rebuilt": None,
    }
    if reparent is not None:
        store.units.upsert(reparent)
        result["reparented"] = {finer[0]: reparent.height}
    if grid_resolution is not None:
        from cityvitals.space.grid import build_grid

        result["grid_rebuilt"] = build_grid(store, grid_resolution)["cells"]
    return result


def _read_features(path, *, name_field: str, code_field: str | None, population_field: str | None) -> list[_Feature]:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"cannot read {os.fspath(path)}: {exc}") from exc
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
        raise InputError(f"{os.fspath(path)} is not a GeoJSON FeatureCollection")
    if not data["features"]:
        raise InputError(f"{os.fspath(path)} has no features")
    out: list[_Feature] = []
    seen_codes: dict[str, _Feature] = {}
    for i, raw in enumerate(data["features"]):
        if not isinstance(raw, dict):
            raise InputError(f"feature {i}: not a GeoJSON Feature object")
        props = raw.get("properties") or {}
        if not isinstance(props, dict):
            raise InputError(f"feature {i}: properties is not an object")
        name_value = props.get(name_field)
        name = "" if name_value is None else str(name_value).strip()
        if not name:
            fields = ", ".join(sorted(props)) or "none"
            raise InputError(f"feature {i}: missing or empty name field {name_field!r} (fields: {fields})")
        feat = _Feature(index=i, name=name, geom=None, props=props)
        feat.geom = _geometry(raw.get("geometry"), feat)
        if code_field:
            feat.code = _code_value(props.get(code_field), code_field, feat)
            if feat.code in seen_codes:
                raise InputError(f"{feat.label}: duplicate code {feat.code!r} in {code_field!r} (also {seen_codes[feat.code].label})")
            seen_codes[feat.code] = feat
        if population_field:
            feat.population = _population_value(props.get(population_field), population_field, feat)
        out.append(feat)
    return out


def _geometry(raw: Any, feat: _Feature):
    if not isinstance(raw, dict):
        raise InputError(f"{feat.label}: has no geometry")
    try:
        geom = shape(raw)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise InputError(f"{feat.label}: unreadable geometry: {exc}") from exc
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        raise InputError(f"{feat.label}: geometry is a {geom.geom_type}; only Polygon and MultiPolygon are supported")
    if geom.is_empty:
        raise InputError(f"{feat.label}: geometry is empty")
    x0, y0, x1, y1 = geom.bounds
    if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
        raise InputError(f"{feat.label}: coordinates are not longitude/latitude (bounds {geom.bounds}); reproject to WGS84 first")
    if not geom.is_valid:
        raise InputError(f"{feat.label}: invalid geometry: {explain_validity(geom)}")
    return geom


def _code_value(value: Any, field_name: str, feat: _Feature) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = "" if value is None else str(value).strip()
    if not text:
        raise InputError(f"{feat.label}: missing or empty code field {field_name!r}")
    return text


def _population_value(value: Any, field_name: str, feat: _Feature) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{feat.label}: population field {field_name!r} is not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise InputError(f"{feat.label}: population field {field_name!r} must be a non-negative number, got {value!r}")
    return number


def _nest(features: list[_Feature], geoms: np.ndarray, parent_geoms: np.ndarray, parent_level: str) -> np.ndarray:
    """Index of each feature's parent (largest overlap); error for a feature that nests nowhere."""
    cp, co = subdivide(geoms)
    pp, po = subdivide(parent_geoms)
    child, parent, area = overlaps(cp, co, pp, po)
    best, best_area, _ = best_parent(len(features), child, parent, area)
    own_area = shapely.area(geoms)
    for i in np.flatnonzero((best < 0) | (best_area < MIN_NEST_SHARE * own_area)):
        feat = features[i]
        share = best_area[i] / own_area[i] if own_area[i] else 0.0
        raise InputError(
            f"{feat.label}: nests nowhere: it overlaps no {parent_level} unit "
            f"(largest overlap {share:.1%} of its area, at least {MIN_NEST_SHARE:.0%} needed)"
        )
    return best


def _codes(features, level: str, parent_codes: np.ndarray, parent_idx: np.ndarray) -> list[str]:
    """The code field's values, or parent code + fixed-width rank of the name among siblings.

    The city root's code ("0") is not repeated as a prefix; a one-feature city layer
    without codes gets the root code itself.
    """
    if all(f.code is not None for f in features):
        return [f.code for f in features]
    if level == "city" and len(features) == 1:
        return [ROOT_CODE]
    counts = np.bincount(parent_idx, minlength=len(parent_codes))
    width = max(CODE_WIDTH[level], len(str(int(counts.max()))))
    codes: list[str] = [""] * len(features)
    for p in np.unique(parent_idx):
        members = sorted(np.flatnonzero(parent_idx == p), key=lambda i: (features[i].name, features[i].index))
        prefix = parent_codes[p]
        if prefix is None or prefix == ROOT_CODE:
            prefix = ""
        for seq, i in enumerate(members, start=1):
            codes[i] = f"{prefix}{seq:0{width}d}"
    return codes


def _check_clashes(store, level: str, codes: list[str], features, reserved: set[str]) -> None:
    """Codes are unique across the whole tree; refuse to overwrite another level's unit."""
    others = store.units.frame().filter((pl.col("level") != level))
    if not (reserved or others.height):
        return
    taken = dict(zip(others["code"].to_list(), others["level"].to_list()))
    taken.update({code: "city" for code in reserved})
    for code, feat in zip(codes, features):
        if code in taken:
            raise InputError(f"{feat.label}: code {code!r} is already used by a {taken[code]} unit; codes must be unique across levels")


def _root_row(geoms: np.ndarray, features, city_name: str, from_level: str) -> pl.DataFrame:
    union = shapely.union_all(geoms)
    pops = [f.population for f in features if f.population is not None]
    centroid = shapely.centroid(union)
    return pl.DataFrame(
        {
            "code": [ROOT_CODE],
            "name": [city_name],
            "level": ["city"],
            "depth": [depth_of("city")],
            "parent_code": [None],
            "geometry_wkb": [shapely.to_wkb(union)],
            "centroid_lon": [centroid.x],
            "centroid_lat": [centroid.y],
            "area_m2": [float(geodesic_areas([union])[0])],
            "population": [float(sum(pops)) if pops else None],
            "h3_cell": [None],
            "props": [json.dumps({"generated": True, "from_level": from_level})],
        },
        schema_overrides={"parent_code": pl.Utf8, "population": pl.Float64, "h3_cell": pl.Utf8},
    )


def _layer_rows(features, geoms: np.ndarray, codes: list[str], level: str, parents: np.ndarray) -> pl.DataFrame:
    centroids = shapely.centroid(geoms)
    return pl.DataFrame(
        {
            "code": codes,
            "name": [f.name for f in features],
            "level": [level] * len(features),
            "depth": [depth_of(level)] * len(features),
            "parent_code": [None if p is None else str(p) for p in parents],
            "geometry_wkb": list(shapely.to_wkb(geoms)),
            "centroid_lon": shapely.get_x(centroids),
            "centroid_lat": shapely.get_y(centroids),
            "area_m2": geodesic_areas(geoms),
            "population": [f.population for f in features],
            "h3_cell": [None] * len(features),
            "props": [json.dumps(f.props, ensure_ascii=False, default=str) for f in features],
        },
        schema_overrides={"parent_code": pl.Utf8, "population": pl.Float64, "h3_cell": pl.Utf8, "geometry_wkb": pl.Binary},
    )


def _reparent_rows(store, finer_level: str, new_geoms: np.ndarray, new_codes: list[str], level: str) -> pl.DataFrame:
    """The next finer level's units with parents recomputed against the new layer."""
    units, geoms = load_level(store, finer_level)
    cp, co = subdivide(geoms)
    pp, po = subdivide(new_geoms)
    child, parent, area = overlaps(cp, co, pp, po)
    best, best_area, _ = best_parent(units.height, child, parent, area)
    own_area = shapely.area(geoms)
    bad = np.flatnonzero((best < 0) | (best_area < MIN_NEST_SHARE * own_area))
    if len(bad):
        i = int(bad[0])
        raise InputError(
            f"the new {level} layer leaves {len(bad)} stored {finer_level} unit(s) nesting nowhere, "
            f"e.g. {units['code'][i]!r} ({units['name'][i]!r}); re-import the {finer_level} layer after this one"
        )
    codes = np.array(new_codes, dtype=object)
    return units.with_columns(
        pl.Series("parent_code", list(codes[best]), dtype=pl.Utf8),
        pl.Series("geometry_wkb", list(shapely.to_wkb(geoms)), dtype=pl.Binary),
    )


def _grid_resolution(store) -> int:
    import h3

    cells = store.units.frame("grid")["h3_cell"].head(1).to_list()
    return h3.get_resolution(cells[0])
