"""Live ingestion's health: status with the lag for the duty officer, probes and Prometheus metrics.

``serve --mqtt`` puts its ``MqttSource`` on ``app.state.mqtt``; without it the endpoints
still answer (``mqtt: null``, only the process and store gauges), so a server that takes
readings over HTTP only is probed the same way.

- ``GET /api/v1/ingest/status`` (admin, duty officer): counters, lag (messages waiting in
  memory and the age of the oldest), batch latency, connection state.
- ``GET /livez``: the process answers. ``GET /readyz``: the store answers a query and, with
  MQTT, the broker connection is up and the ingest worker alive, and with ``--follow`` on
  PostgreSQL, the live stages' process runs (else 503, with why).
- ``GET /metrics``: Prometheus text format, no key (counters only, no city data), so a
  scraper needs no credentials.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from cityvitals.api.auth import Principal, require
from cityvitals.api.routers._common import ctx_of

router = APIRouter(prefix="/ingest", tags=["ingest"])
probes = APIRouter(tags=["probes"])
_STARTED = time.time()


def _source(request: Request):
    return getattr(request.app.state, "mqtt", None)


def _store_ok(request: Request) -> str | None:
    """None when the store answers, else the reason."""
    store = ctx_of(request).store
    try:
        with store.lock:
            store.con.execute("SELECT 1").fetchall()
    except Exception as exc:  # a broken connection is exactly what readiness reports
        return f"store: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


@router.get("/status", summary="Live ingestion: counters, lag, batch latency (admin, duty officer)")
def ingest_status(request: Request, p: Annotated[Principal, Depends(require("admin", "duty_officer"))]) -> dict:
    src = _source(request)
    store = ctx_of(request).store
    return {"backend": store.backend, "uptime_s": round(time.time() - _STARTED, 1),
            "mqtt": None if src is None else {"url": src.config.url, "topics": src.config.subscription, **src.stats()}}


@probes.get("/livez", summary="Liveness: the process answers", include_in_schema=False)
def livez() -> dict:
    return {"status": "alive"}


@probes.get("/readyz", summary="Readiness: store reachable and, with MQTT, connected", include_in_schema=False)
def readyz(request: Request):
    problems = [p for p in (_store_ok(request),) if p]
    src = _source(request)
    if src is not None:
        st = src.stats()
        if not st["connected"]:
            problems.append("mqtt: not connected to the broker")
        if not src.alive():
            problems.append("mqtt: the ingest worker stopped" + (f" ({src.error!r})" if src.error else ""))
    stages = getattr(request.app.state, "stages", None)
    if stages is not None and not stages.alive():
        problems.append("live stages: the watch and signs process stopped")
    if problems:
        return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
    return {"status": "ready"}


@probes.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
def metrics(request: Request) -> PlainTextResponse:
    src = _source(request)
    lines = ["# TYPE cityvitals_up gauge", "cityvitals_up 1",
             "# TYPE cityvitals_uptime_seconds gauge", f"cityvitals_uptime_seconds {time.time() - _STARTED:.1f}"]
    text = "\n".join(lines) + "\n" + (src.metrics() if src is not None else "")
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
