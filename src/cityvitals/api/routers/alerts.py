"""Alerts: list with filters, one alert with its event log, acknowledge and resolve.

An alert's source is a sensor, so its place is the sensor's unit; area scope and the
``unit`` filter go through that.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from cityvitals.api.auth import ALERT_ROLES, Principal, reader, require
from cityvitals.api.errors import ApiError
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of, rows
from cityvitals.api.routers.sensors import unit_filter
from cityvitals.errors import InputError

router = APIRouter(prefix="/alerts", tags=["alerts"])
COLS = ("a.id, a.source, a.type, a.level, a.state, a.message, a.first_at, a.last_at, a.occurrences, a.acknowledged_by, "
        "a.acknowledged_at, a.resolved_by, a.resolved_at, a.escalation, a.flapping, s.unit_code, s.kind")


@router.get("", summary="Alerts, newest first")
def list_alerts(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    state: Annotated[str, Query(pattern="^(open|active|acknowledged|resolved|all)$")] = "open",
    level: Annotated[str | None, Query(pattern="^(attention|warning|alarm)$")] = None,
    unit: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict:
    ctx = ctx_of(request)
    where, params = [], []
    if state == "open":
        where.append("a.state IN ('active', 'acknowledged')")
    elif state != "all":
        where.append("a.state = ?")
        params.append(state)
    for col, val in (("a.level", level), ("a.type", type)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    codes = unit_filter(ctx, p, unit)
    if codes is not None:
        where.append("list_contains(?, s.unit_code)")
        params.append(codes)
    after = decode_cursor(cursor)
    if after:
        where.append("a.id < ?")
        params.append(int(after[0]))
    sql = (f"SELECT {COLS} FROM alerts a LEFT JOIN sensors s ON s.id = a.source"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.id DESC LIMIT ?")
    return page(rows(ctx.store, sql, params + [limit + 1]), limit, lambda r: [r["id"]])


def _get(ctx, p: Principal, alert_id: int) -> dict:
    found = rows(ctx.store, f"SELECT {COLS} FROM alerts a LEFT JOIN sensors s ON s.id = a.source WHERE a.id = ?", [alert_id])
    if not found:
        raise ApiError(404, f"no alert {alert_id}", field="alert_id")
    a = found[0]
    if p.area_code is not None and not (a["unit_code"] and ctx.units.within(a["unit_code"], p.area_code)):
        raise ApiError(403, f"alert {alert_id} is outside your area {p.area_code!r}", field="alert_id")
    return a


@router.get("/{alert_id}", summary="One alert with its event log")
def get_alert(request: Request, alert_id: int, p: Annotated[Principal, Depends(reader)]) -> dict:
    ctx = ctx_of(request)
    a = _get(ctx, p, alert_id)
    a["events"] = ctx.store.alerts.events(alert_id)
    return a


async def _act(request: Request, alert_id: int, p: Principal, note: str | None, action: str) -> dict:
    ctx = ctx_of(request)
    _get(ctx, p, alert_id)
    from cityvitals.watch.alerts import AlertManager, AlertPolicy

    def run() -> dict:
        mgr = AlertManager(ctx.store, AlertPolicy(), clock=ctx.clock)
        try:
            out = getattr(mgr, action)(alert_id, p.name, note)
        except InputError as exc:
            raise ApiError(409, str(exc), field="alert_id")
        ctx.watcher.check()
        return out

    out = await run_in_threadpool(run)
    request.state.audit = {"alert": alert_id, "note": note}
    return out


Note = Annotated[str | None, Body(embed=True, max_length=2000)]


@router.post("/{alert_id}/ack", summary="Acknowledge an alert")
async def ack(request: Request, alert_id: int, p: Annotated[Principal, Depends(require(*ALERT_ROLES))], note: Note = None) -> dict:
    return await _act(request, alert_id, p, note, "ack")


@router.post("/{alert_id}/resolve", summary="Resolve an alert")
async def resolve(request: Request, alert_id: int, p: Annotated[Principal, Depends(require(*ALERT_ROLES))],
                  note: Note = None) -> dict:
    return await _act(request, alert_id, p, note, "resolve")
