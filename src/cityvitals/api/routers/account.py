"""Who am I (for the dashboard), and the audit log (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cityvitals.api.auth import ADMIN_ROLES, Principal, reader, require
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of

router = APIRouter(tags=["account"])


@router.get("/me", summary="The caller: name, role, area and department")
def me(request: Request, p: Annotated[Principal, Depends(reader)]) -> dict:
    ctx = ctx_of(request)
    out = p.to_dict()
    out["home_unit"] = p.area_code or (ctx.units.roots() or [None])[0]
    out["features"] = {"signs": ctx.has_signs, "alerts": ctx.has_alerts,
                       "incidents": ctx.has_alerts and hasattr(ctx.store, "incidents"),
                       "cases": hasattr(ctx.store, "cases")}
    out["tiles"] = ctx.tiles
    return out


@router.get("/audit", summary="The audit log of writes, newest first (admins)")
def audit(request: Request, p: Annotated[Principal, Depends(require(*ADMIN_ROLES))],
          actor: Annotated[str | None, Query(max_length=64)] = None, limit: Limit = 100, cursor: Cursor = None) -> dict:
    after = decode_cursor(cursor)
    got = ctx_of(request).store.users.audit_log(after_id=int(after[0]) if after else None, actor=actor, limit=limit + 1)
    return page(got, limit, lambda r: [r["id"]])
