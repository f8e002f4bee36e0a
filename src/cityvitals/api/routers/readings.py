"""Readings: a time range, optionally resampled with DuckDB's time_bucket; and ingestion.

Reads are capped twice: the time range (raw readings over at most a week, resampled over
at most ``max_resampled_range_days``) and the page size. A POST stores a JSON array
through the same ingest path as files and MQTT; it answers 200 only after the batch's
transaction committed, with how many records were accepted, duplicates and quarantined.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from cityvitals.api.auth import INGEST_ROLES, Principal, reader, require, require_unscoped
from cityvitals.api.errors import ApiError
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of, rows, utc
from cityvitals.api.routers.sensors import unit_filter

router = APIRouter(prefix="/readings", tags=["readings"])


def parse_interval(text: str) -> timedelta:
    from cityvitals.signs.catalog import parse_duration

    try:
        step = parse_duration(text)
    except ValueError as exc:
        raise ApiError(422, str(exc), field="interval")
    if step < timedelta(minutes=1):
        raise ApiError(422, "the resample interval must be at least PT1M", field="interval")
    return step


@router.get("", summary="Readings in a time range, raw or resampled")
def list_readings(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    start: Annotated[datetime, Query(description="Inclusive, ISO-8601 with offset.")],
    end: Annotated[datetime, Query(description="Exclusive, ISO-8601 with offset.")],
    unit: Annotated[str | None, Query(max_length=64)] = None,
    sensor: Annotated[str | None, Query(max_length=128)] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    interval: Annotated[str | None, Query(max_length=32, description="Resample: ISO-8601 duration, e.g. PT15M.")] = None,
    limit: Limit = 1000,
    cursor: Cursor = None,
) -> dict:
    ctx = ctx_of(request)
    lim = ctx.limits
    start, end = utc(start, "start"), utc(end, "end")
    if end <= start:
        raise ApiError(422, "end must be after start", field="end")
    step = parse_interval(interval) if interval else None
    max_days = lim.max_resampled_range_days if step else lim.max_raw_range_days
    if end - start > timedelta(days=max_days):
        raise ApiError(422, f"the time range is longer than {max_days:g} days"
                       + ("" if step else "; resample with interval= for longer ranges"), field="end")
    if step and (end - start) / step > lim.max_buckets:
        raise ApiError(422, f"more than {lim.max_buckets} buckets; use a longer interval", field="interval")
    where, params = ["ts >= ?", "ts < ?"], [start, end]
    for col, val in (("sensor_id", sensor), ("kind", kind)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    codes = unit_filter(ctx, p, unit)
    if codes is not None:
        where.append("list_contains(?, unit_code)")
        params.append(codes)
    w = " AND ".join(where)
    after = decode_cursor(cursor, 2)
    if step is None:
        sql = f"SELECT sensor_id, ts, value, quality, kind, unit_code FROM readings WHERE {w}"
        tcol = "ts"
    else:
        sql = (f"SELECT * FROM (SELECT sensor_id, time_bucket(?::INTERVAL, ts) AS bucket, avg(value) AS mean, "
               f"min(value) AS min, max(value) AS max, count(*) AS n, min(kind) AS kind, min(unit_code) AS unit_code "
               f"FROM readings WHERE {w} GROUP BY 1, 2) b WHERE true")  # portable: DuckDB and PostgreSQL
        params = [step] + params
        tcol = "bucket"
    if after:
        sql += f" AND ({tcol} > ?::TIMESTAMPTZ OR ({tcol} = ?::TIMESTAMPTZ AND sensor_id > ?))"
        params += [after[0], after[0], after[1]]
    sql += f" ORDER BY {tcol}, sensor_id LIMIT ?"
    out = page(rows(ctx.store, sql, params + [limit + 1]), limit, lambda r: [r[tcol].isoformat(), r["sensor_id"]])
    out["interval"] = interval
    return out


@router.post("", summary="Ingest a JSON array of readings (stored before the answer)")
async def post_readings(request: Request, p: Annotated[Principal, Depends(require(*INGEST_ROLES))]) -> dict:
    ctx = ctx_of(request)
    require_unscoped(p, "ingesting readings")
    body = await request.body()
    try:
        records = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"the body is not JSON: {exc}", field="body")
    if not isinstance(records, list):
        raise ApiError(422, "the body must be a JSON array of readings", field="body")
    if len(records) > ctx.limits.max_records:
        raise ApiError(422, f"the batch has {len(records):,} records; at most {ctx.limits.max_records:,} per request",
                       field="body")
    report = await run_in_threadpool(_ingest, ctx, records, p)
    request.state.audit = {k: v for k, v in report.items() if k in ("accepted", "duplicates", "quarantined", "records")}
    return report


def _ingest(ctx, records: list, p: Principal) -> dict:
    from cityvitals.ingest import Ingestor, ingest_records

    with ctx.store.lock:
        if getattr(ctx, "ingestor", None) is None:
            ctx.ingestor = Ingestor(ctx.store, clock=ctx.clock)
        report = ingest_records(ctx.store, records, source=f"api:{p.name}", ingestor=ctx.ingestor)
    ctx.watcher.check()
    return report.to_dict()
