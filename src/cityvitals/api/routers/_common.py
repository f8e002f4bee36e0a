"""Helpers the routers share: the context, row fetching, time parsing."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import Request

from cityvitals.api.context import Context
from cityvitals.api.errors import ApiError


def ctx_of(request: Request) -> Context:
    return request.app.state.ctx


def rows(store, sql: str, params: list) -> list[dict]:
    """Run a parameterised query under the store lock; rows as dicts."""
    with store.lock:
        cur = store.con.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def utc(t: datetime | None, field: str) -> datetime | None:
    """Times without an offset are refused: a city spans no time zones, but clients do."""
    if t is None:
        return None
    if t.tzinfo is None:
        raise ApiError(422, "give the time with its offset, e.g. 2026-05-01T08:00:00+08:00 or ...Z", field=field)
    return t.astimezone(timezone.utc)
