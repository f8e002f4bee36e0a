"""Incidents: list with filters, one incident with its ranked causes, evidence, members and history.

An incident's place is its affected units; area scope keeps an incident visible to a
principal when any of its units lies in their area. The area comes as GeoJSON.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cityvitals.api.auth import Principal, reader
from cityvitals.api.errors import ApiError
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of

router = APIRouter(prefix="/incidents", tags=["incidents"])


def _visible(ctx, p: Principal, units: list[str]) -> bool:
    if p.area_code is None:
        return True
    return any(ctx.units.within(u, p.area_code) for u in units)


@router.get("", summary="Incidents, newest first")
def list_incidents(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    state: Annotated[str, Query(pattern="^(open|closed|merged|all)$")] = "open",
    type: Annotated[str | None, Query(max_length=40)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict:
    ctx = ctx_of(request)
    after = decode_cursor(cursor)
    got = ctx.store.incidents.list(state=state, type_=type, limit=(limit + 1) * (1 if p.area_code is None else 20),
                                   before_id=int(after[0]) if after else None)
    got = [r for r in got if _visible(ctx, p, r["units"])]
    return page(got[: limit + 1], limit, lambda r: [r["id"]])


@router.get("/{incident_id}", summary="One incident with ranked causes, evidence, members and history")
def get_incident(request: Request, incident_id: int, p: Annotated[Principal, Depends(reader)]) -> dict:
    import shapely

    ctx = ctx_of(request)
    inc = ctx.store.incidents.get(incident_id)
    if inc is None:
        raise ApiError(404, f"no incident {incident_id}", field="incident_id")
    if not _visible(ctx, p, inc["units"]):
        raise ApiError(403, f"incident {incident_id} is outside your area {p.area_code!r}", field="incident_id")
    wkb = inc.pop("area_wkb", None)
    inc["area"] = json.loads(shapely.to_geojson(shapely.from_wkb(wkb))) if wkb else None
    return inc
