"""Units: the city's tree, one unit with its geometry, children, search by name or code."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cityvitals.api.auth import Principal, check_unit, reader, scope_codes
from cityvitals.api.errors import ApiError
from cityvitals.api.geo import geometry_json
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of, rows

router = APIRouter(prefix="/units", tags=["units"])

COLS = "code, name, level, depth, parent_code, centroid_lon, centroid_lat, area_m2, population, h3_cell"
MAX_TREE_NODES = 5000


@router.get("", summary="List or search units")
def list_units(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    q: Annotated[str | None, Query(min_length=1, max_length=100, description="Part of the name, or a code prefix.")] = None,
    level: Annotated[str | None, Query(max_length=32)] = None,
    parent: Annotated[str | None, Query(max_length=64, description="Only children of this unit.")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict:
    ctx = ctx_of(request)
    where, params = [], []
    if q:
        where.append("(contains(lower(name), lower(?)) OR starts_with(code, ?))")
        params += [q, q]
    if level:
        where.append("level = ?")
        params.append(level)
    if parent:
        check_unit(ctx, p, parent, "parent")
        where.append("parent_code = ?")
        params.append(parent)
    scope = scope_codes(ctx, p)
    if scope is not None:
        where.append("list_contains(?, code)")
        params.append(scope)
    after = decode_cursor(cursor)
    if after:
        where.append("code > ?")
        params.append(after[0])
    sql = f"SELECT {COLS} FROM units" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY code LIMIT ?"
    return page(rows(ctx.store, sql, params + [limit + 1]), limit, lambda r: [r["code"]])


@router.get("/tree", summary="The unit tree (codes, names, levels), from a root down a few levels")
def tree(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    root: Annotated[str | None, Query(max_length=64, description="Default: the city (or your area).")] = None,
    depth: Annotated[int, Query(ge=0, le=4, description="Levels below the root.")] = 2,
) -> dict:
    ctx = ctx_of(request)
    idx = ctx.units.refresh()
    if root is None:
        root = p.area_code or (idx.roots() or [None])[0]
        if root is None:
            raise ApiError(404, "the store has no units yet", field="root")
    check_unit(ctx, p, root, "root")
    count = 0

    def node(code: str, d: int) -> dict:
        nonlocal count
        count += 1
        if count > MAX_TREE_NODES:
            raise ApiError(422, f"the tree has more than {MAX_TREE_NODES} nodes at this depth; lower depth", field="depth")
        u = idx.info[code]
        kids = idx.children.get(code, [])
        out = {"code": code, "name": u["name"], "level": u["level"], "n_children": len(kids)}
        if d < depth and kids:
            out["children"] = [node(k, d + 1) for k in kids]
        return out

    return node(root, 0)


@router.get("/{code}", summary="One unit: attributes, path from the city, geometry as GeoJSON")
def get_unit(
    request: Request,
    code: str,
    p: Annotated[Principal, Depends(reader)],
    geometry: bool = True,
    simplify: Annotated[float, Query(ge=0, le=0.1, description="Simplification tolerance in degrees.")] = 0.0,
) -> dict:
    ctx = ctx_of(request)
    check_unit(ctx, p, code, "code")
    unit = rows(ctx.store, f"SELECT {COLS}, props, geometry_wkb FROM units WHERE code = ?", [code])[0]
    wkb = unit.pop("geometry_wkb")
    idx = ctx.units
    unit["path"] = [{"code": c, "name": idx.info[c]["name"], "level": idx.info[c]["level"]} for c in idx.ancestors(code)]
    unit["n_children"] = len(idx.children.get(code, []))
    if geometry:
        unit["geometry"] = geometry_json(wkb, simplify_tolerance=simplify)
    return unit


@router.get("/{code}/children", summary="The children of a unit")
def children(request: Request, code: str, p: Annotated[Principal, Depends(reader)],
             limit: Limit = 1000, cursor: Cursor = None) -> dict:
    ctx = ctx_of(request)
    check_unit(ctx, p, code, "code")
    after = decode_cursor(cursor)
    params: list = [code]
    sql = f"SELECT {COLS} FROM units WHERE parent_code = ?"
    if after:
        sql += " AND code > ?"
        params.append(after[0])
    return page(rows(ctx.store, sql + " ORDER BY code LIMIT ?", params + [limit + 1]), limit, lambda r: [r["code"]])
