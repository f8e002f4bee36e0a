"""The HTTP API and dashboard of one store: ``create_app(store)`` builds it.

The server process owns the store connection (DuckDB lets one process open the file);
every query goes through the store's lock. Routers are added only for stages this
install has (signs, alerts), so the OpenAPI document never lists an endpoint with no data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import datetime
from typing import Any, Callable

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware
from starlette.concurrency import run_in_threadpool

from cityvitals import __version__
from cityvitals.api import errors
from cityvitals.api.context import Context, Limits, utcnow
from cityvitals.api.events import EventHub
from cityvitals.api.middleware import AuditWrites, BodyLimit
from cityvitals.api.responses import FastJSON
from cityvitals.api.routers import account, map as map_router, public, quarantine, readings, sensors, stream, units
from cityvitals.api.statecache import StateCache

PREFIX = "/api/v1"


def routers_for(ctx: Context) -> list:
    out = [public.router, account.router, units.router, map_router.router, sensors.router, readings.router,
           quarantine.router, stream.router]
    if ctx.has_signs:
        from cityvitals.api.routers import signs

        out.append(signs.router)
    if ctx.has_alerts:
        from cityvitals.api.routers import alerts

        out.append(alerts.router)
        if hasattr(ctx.store, "incidents"):
            from cityvitals.api.routers import incidents

            out.append(incidents.router)
    if hasattr(ctx.store, "cases"):
        from cityvitals.api.routers import cases

        out.append(cases.router)
    return out


def create_app(
    store,
    *,
    clock: Callable[[], datetime] | None = None,
    limits: Limits | None = None,
    catalog: Any = None,
    hub: EventHub | None = None,
    poll_interval: float | None = 2.0,
    dashboard: bool = True,
    tiles: str | None = None,
    state_ttl_s: float = 2.0,
) -> FastAPI:
    """The API (under /api/v1) and the dashboard (at /) over ``store``.

    ``poll_interval``: seconds between looks for changes made outside the API (the
    simulator, the signs and watch stages) to publish on the event stream; None turns the
    look-out off (tests call ``app.state.ctx.watcher.check()`` themselves).
    ``tiles``: a raster tile URL template (``https://.../{z}/{x}/{y}.png``) drawn under the
    dashboard's map; default ``$CITYVITALS_TILES``, and none (a blank background) when unset,
    because operations centres often have no internet.
    ``state_ttl_s``: how long a computed map state may be served while the data version is
    unchanged (see :mod:`cityvitals.api.statecache`); 0 computes every request.
    """
    ctx = Context(store, clock=clock or utcnow, limits=limits or Limits(), catalog=catalog, hub=hub or EventHub(),
                  tiles=check_tiles(tiles if tiles is not None else os.environ.get("CITYVITALS_TILES") or None),
                  states=StateCache(ttl_s=state_ttl_s))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        task = None
        if poll_interval:
            async def poll() -> None:
                while True:
                    await asyncio.sleep(poll_interval)
                    with contextlib.suppress(Exception):
                        await run_in_threadpool(ctx.watcher.check)

            task = asyncio.create_task(poll())
        yield
        if task:
            task.cancel()

    app = FastAPI(
        title="cityvitals", version=__version__, lifespan=lifespan, default_response_class=FastJSON,
        openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs", redoc_url=None,
        description="The city's vital signs: units, sensors, readings, indicators, health, alerts, live events. "
                    "Authenticate with `Authorization: Bearer KEY` or `X-API-Key: KEY` (see `cityvitals users add`).",
    )
    app.state.ctx = ctx
    errors.install(app)
    for r in routers_for(ctx):
        app.include_router(r, prefix=PREFIX)
    from cityvitals.api.routers import ingest_status  # ingest status, probes, Prometheus metrics

    app.include_router(ingest_status.router, prefix=PREFIX)
    app.include_router(ingest_status.probes)
    if hasattr(store, "cases"):
        from cityvitals.api import open311

        app.include_router(open311.router)
    from cityvitals.api.opendata import router as opendata_router  # open data: own prefix, no key

    app.include_router(opendata_router)
    if dashboard:
        from cityvitals.web import router as web_router, static_files

        app.include_router(web_router)
        app.mount("/static", static_files(), name="static")
    app.add_middleware(AuditWrites, ctx=ctx)
    app.add_middleware(BodyLimit, max_bytes=ctx.limits.max_body_bytes)
    # The city map is megabytes of digits; gzip makes it a fraction (the event stream is left alone).
    app.add_middleware(GZipMiddleware, minimum_size=4096, compresslevel=5)
    return app


def check_tiles(url: str | None) -> str | None:
    """A tile URL template must be http(s) and hold {z}, {x} and {y}; anything else is refused at start."""
    if url is None:
        return None
    from cityvitals.errors import InputError

    if not url.startswith(("http://", "https://", "/")) or not all(k in url for k in ("{z}", "{x}", "{y}")):
        raise InputError(f"tile source {url!r}: give an http(s) URL template with {{z}}, {{x}} and {{y}}, "
                         "e.g. https://tile.example.org/{z}/{x}/{y}.png")
    return url
