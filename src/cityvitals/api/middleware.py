"""ASGI middleware: a cap on request bodies, and the audit log of writes.

Both are plain ASGI (not ``BaseHTTPMiddleware``) so the event stream passes through
unbuffered. The body cap answers 413 from ``Content-Length`` before reading anything,
and counts streamed (chunked) bodies as they arrive.
"""

from __future__ import annotations

import json

from cityvitals.api.errors import error_body

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


class _TooLarge(Exception):
    pass


async def _send_json(send, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = f"the request body is larger than the limit of {self.max_bytes:,} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_bytes:
                        return await _send_json(send, 413, error_body(413, problem, "body"))
                except ValueError:
                    return await _send_json(send, 400, error_body(400, "Content-Length is not a number", "content-length"))
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, error_body(413, problem, "body"))


class AuditWrites:
    """After every write request by a known caller, append (who, what, target, status) to the audit log.

    Handlers may put a ``detail`` dict on ``request.state.audit`` (for example the ingest
    counts); refused writes (403, 422) are logged too, since they are what an auditor asks about.
    """

    def __init__(self, app, ctx):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            return await self.app(scope, receive, send)
        status = 500

        async def tracking_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            state = scope.get("state") or {}
            p = state.get("principal")
            if p is not None:
                self.ctx.store.users.audit(
                    p.name, p.role, f"{scope['method']} {scope['path']}", scope["path"],
                    status, state.get("audit"), now=self.ctx.clock(),
                )
