"""Server-sent events: a live stream of changes that a client can resume.

Each event has an ``id``; a client that reconnects sends ``Last-Event-ID`` (header, or
``last_event_id`` in the query for clients that cannot set headers) and receives every
event after it that the ring still holds, or a ``reset`` event when it has fallen behind.
Without an id the stream starts at "now" with a ``hello`` event carrying the current id.
A comment line every ``keepalive`` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from cityvitals.api.auth import Principal, reader, scope_codes
from cityvitals.api.errors import ApiError
from cityvitals.api.events import Event, visible
from cityvitals.api.routers._common import ctx_of

router = APIRouter(tags=["stream"])


@router.get("/stream", summary="Live changes as server-sent events (text/event-stream)",
            response_class=StreamingResponse)
async def stream(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    last_event_id_q: Annotated[int | None, Query(alias="last_event_id", ge=0)] = None,
    linger: Annotated[float | None, Query(ge=0, le=3600, description="Close after this many idle seconds (default: never).")] = None,
    keepalive: Annotated[float, Query(ge=1, le=300)] = 15.0,
) -> StreamingResponse:
    ctx = ctx_of(request)
    hub = ctx.hub
    start: int | None = last_event_id_q
    if last_event_id is not None:
        try:
            start = int(last_event_id)
        except ValueError:
            raise ApiError(422, "Last-Event-ID must be an event id this server sent", field="Last-Event-ID")
    codes = scope_codes(ctx, p)
    scope = set(codes) if codes is not None else None
    dept = (p.department or "\x00none") if p.role == "department_staff" else None

    async def events():
        last = start
        if last is None:
            last = hub.last_id
            yield Event(last, "hello", {"last_id": last, "user": p.name}).sse()
        while True:
            batch = hub.after(last)
            for ev in batch:
                last = ev.id if ev.type == "reset" else max(last, ev.id)
                shown = visible(ev, scope, dept)
                if shown is not None:
                    yield shown.sse()
            if batch:
                continue
            if await request.is_disconnected():
                return
            waited = linger if linger is not None else keepalive
            before = hub.last_id
            await hub.wait(last, min(waited, keepalive))
            if hub.last_id == before:
                if linger is not None:
                    return
                yield ": keepalive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
