"""Sensors: the registry, filtered by kind, spatial unit (with everything under it) and department."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cityvitals.api.auth import Principal, check_unit, reader, scope_codes
from cityvitals.api.errors import ApiError
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of, rows

router = APIRouter(prefix="/sensors", tags=["sensors"])
COLS = "id, kind, unit, lon, lat, department, installed, unit_code, meta"


def unit_filter(ctx, p: Principal, unit: str | None) -> list[str] | None:
    """Codes a query may touch: the unit and all under it, cut to the caller's area."""
    if unit is not None:
        check_unit(ctx, p, unit)
        return ctx.units.descendants(unit)
    return scope_codes(ctx, p)


@router.get("", summary="List sensors")
def list_sensors(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    kind: Annotated[str | None, Query(max_length=64)] = None,
    unit: Annotated[str | None, Query(max_length=64, description="A spatial unit: sensors in it or under it.")] = None,
    department: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict:
    ctx = ctx_of(request)
    where, params = [], []
    for col, val in (("kind", kind), ("department", department)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    codes = unit_filter(ctx, p, unit)
    if codes is not None:
        where.append("list_contains(?, unit_code)")
        params.append(codes)
    after = decode_cursor(cursor)
    if after:
        where.append("id > ?")
        params.append(after[0])
    sql = f"SELECT {COLS} FROM sensors" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ?"
    return page(rows(ctx.store, sql, params + [limit + 1]), limit, lambda r: [r["id"]])


@router.get("/{sensor_id}", summary="One sensor")
def get_sensor(request: Request, sensor_id: str, p: Annotated[Principal, Depends(reader)]) -> dict:
    ctx = ctx_of(request)
    found = rows(ctx.store, f"SELECT {COLS} FROM sensors WHERE id = ?", [sensor_id])
    if not found:
        raise ApiError(404, f"no sensor with id {sensor_id!r}", field="sensor_id")
    s = found[0]
    if not (s["unit_code"] and ctx.units.within(s["unit_code"], p.area_code)) and p.area_code is not None:
        raise ApiError(403, f"sensor {sensor_id!r} is outside your area {p.area_code!r}", field="sensor_id")
    return s
