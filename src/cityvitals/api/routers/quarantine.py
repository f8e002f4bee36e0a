"""Quarantine: the records ingestion refused, newest first, and counts by reason.

Quarantined records carry raw payloads from any sensor, so only keys without an area
scope may read them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from cityvitals.api.auth import Principal, reader, require_unscoped
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of, rows

router = APIRouter(prefix="/quarantine", tags=["quarantine"])


@router.get("", summary="Quarantined records, newest first")
def list_quarantine(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    reason: Annotated[str | None, Query(max_length=64)] = None,
    include_resolved: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict:
    ctx = ctx_of(request)
    require_unscoped(p, "reading the quarantine")
    where, params = [], []
    if reason:
        where.append("reason = ?")
        params.append(reason)
    if not include_resolved:
        where.append("resolved_at IS NULL")
    after = decode_cursor(cursor)
    if after:
        where.append("id < ?")
        params.append(int(after[0]))
    sql = ("SELECT id, received_at, source, location, reason, message, raw, raw_truncated, attempts, resolved_at, "
           "resolution FROM quarantine" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
    return page(rows(ctx.store, sql, params + [limit + 1]), limit, lambda r: [r["id"]])


@router.get("/counts", summary="Quarantined records by reason")
def counts(request: Request, p: Annotated[Principal, Depends(reader)], include_resolved: bool = False) -> dict:
    require_unscoped(p, "reading the quarantine")
    c = ctx_of(request).store.quarantine.counts(include_resolved=include_resolved)
    return {"counts": c, "total": sum(c.values())}
