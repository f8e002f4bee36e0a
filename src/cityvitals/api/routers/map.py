"""The map: one request returns a layer of units with simplified geometry and their state.

Drill-down is two clicks from the city to a grid cell's neighbourhood: the city shows its
districts; a district or street shows the units two levels down (communities, or grid
cells); a community shows its grid cells; a grid cell shows its siblings. ``depth`` asks
for any level under the unit instead (for example every grid cell of the city).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from cityvitals.api import state
from cityvitals.api.auth import Principal, check_unit, reader
from cityvitals.api.errors import ApiError
from cityvitals.api.geo import feature_collection
from cityvitals.api.responses import encoded_response
from cityvitals.api.routers._common import ctx_of, utc

router = APIRouter(tags=["map"])
PROPS = ("code", "name", "level", "health", "health_level", "readings_1h", "open_alerts", "has_children")


def layer_for(idx, code: str, depth: int | None) -> tuple[list[str], str | None]:
    """(codes shown, the code highlighted) for a view of ``code``."""
    info = idx.info[code]
    if depth is not None:
        return idx.at_depth(code, depth), None
    kids = idx.children.get(code, [])
    if not kids:  # a leaf: show it among its siblings
        parent = info["parent_code"]
        return (idx.children.get(parent, [code]) if parent else [code]), code
    step = 1 if info["parent_code"] is None else 2
    return idx.at_depth(code, info["depth"] + step), None


@router.get("/map", summary="A layer of units under a unit, with geometry and state (health or activity)",
            response_class=Response)
def city_map(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    unit: Annotated[str | None, Query(max_length=64, description="Default: the city, or your area.")] = None,
    at: Annotated[datetime | None, Query(description="Look back: the state at this moment (default now).")] = None,
    depth: Annotated[int | None, Query(ge=0, le=8, description="Show the units at this tree depth under the unit.")] = None,
    format: Annotated[str, Query(pattern="^(geojson|compact)$", description=(
        "geojson: a FeatureCollection; compact: columns of properties and integer-delta geometry "
        "(see cityvitals.api.geo.compact_geometry), a quarter of the size, for whole-city layers."))] = "geojson",
) -> Response:
    ctx = ctx_of(request)
    idx = ctx.units.refresh()
    if unit is None:
        unit = p.area_code or (idx.roots() or [None])[0]
        if unit is None:
            raise ApiError(404, "the store has no units yet", field="unit")
    check_unit(ctx, p, unit)
    at = utc(at, "at")
    # The answer depends on the view and the caller's area scope only (not on who else asks):
    # that is the cache key, so a scoped user never gets an answer made for another scope.
    key = ("map", unit, at, depth, format, p.area_code)
    entry = ctx.states.get(key, ctx.data_version(), lambda: map_state(ctx, idx, unit, at, depth, format, p.area_code))
    return encoded_response(request, entry)


def map_state(ctx, idx, unit: str, at: datetime | None, depth: int | None, format: str, area: str | None):
    """The map view as JSON content (compact) or bytes (GeoJSON): layer, path, state per unit."""
    layer, highlight = layer_for(idx, unit, depth)
    layer = [c for c in layer if idx.within(c, area)]
    if len(layer) > ctx.limits.max_map_units:
        raise ApiError(422, f"{len(layer):,} units in this layer; at most {ctx.limits.max_map_units:,}", field="depth")
    now = at or ctx.clock()
    health = state.health_of(ctx, layer, at)
    counts = state.readings_count(ctx, layer, *state.window_hour(now))
    alerts = state.open_alerts_by_unit(ctx, layer)
    props = []
    for c in layer:
        u = idx.info[c]
        h = health.get(c, {})
        props.append({"code": c, "name": u["name"], "level": u["level"], "health": h.get("index"),
                      "health_level": h.get("level"), "readings_1h": counts.get(c, 0), "open_alerts": alerts.get(c, 0),
                      "has_children": bool(idx.children.get(c))})
    path = [{"code": c, "name": idx.info[c]["name"], "level": idx.info[c]["level"]} for c in idx.ancestors(unit)]
    if area is not None:  # breadcrumbs start at the caller's area
        codes = [x["code"] for x in path]
        path = path[codes.index(area):] if area in codes else path
    meta = {
        "unit": path[-1], "path": path, "highlight": highlight, "at": now,
        "health_at": state.health_at(ctx, at), "colour_by": "health" if health else "readings_1h",
        "layer_level": idx.info[layer[0]]["level"] if layer else None, "n_units": len(props),
    }
    if format == "compact":
        meta["compact"] = {"codes": layer, "props": {k: [p[k] for p in props] for k in PROPS if k != "code"},
                           "geometry": ctx.geometry(layer)}
        return meta
    head = orjson.dumps(meta, default=str)
    return head[:-1] + b',"geojson":' + feature_collection(ctx.store, props) + b"}"
