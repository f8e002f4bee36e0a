"""Vital signs: the indicator catalogue, indicator series (trends), current levels and the
health index with its explanation. Present only when the signs stage is installed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Depends, Query, Request

from cityvitals.api import state
from cityvitals.api.auth import Principal, check_unit, reader
from cityvitals.api.errors import ApiError
from cityvitals.api.routers._common import ctx_of, utc
from cityvitals.errors import InputError

router = APIRouter(tags=["signs"])
LEVEL_NAMES = ("normal", "attention", "warning", "alarm")
MAX_SERIES_DAYS = 400


def _indicator(i) -> dict:
    return {"id": i.id, "name_en": i.name_en, "name_zh": i.name_zh, "category": i.category, "unit": i.unit,
            "direction": i.direction, "weight": i.weight, "window": i.window.size.total_seconds(), "basis": i.basis}


@router.get("/indicators", summary="The indicator catalogue")
def indicators(request: Request, p: Annotated[Principal, Depends(reader)],
               category: Annotated[str | None, Query(max_length=32)] = None) -> dict:
    cat = ctx_of(request).get_catalog()
    items = [_indicator(i) for i in cat.values() if category is None or i.category == category]
    return {"items": items, "categories": cat.categories()}


@router.get("/indicators/{indicator}/values", summary="An indicator's series for a unit (a trend)")
def values(
    request: Request,
    indicator: str,
    p: Annotated[Principal, Depends(reader)],
    unit: Annotated[str, Query(max_length=64)],
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict:
    ctx = ctx_of(request)
    cat = ctx.get_catalog()
    if indicator not in cat:
        raise ApiError(404, f"no indicator {indicator!r} in the catalogue", field="indicator")
    check_unit(ctx, p, unit)
    end = utc(end, "end") or state.health_at(ctx, None) or ctx.clock()
    start = utc(start, "start") or end - timedelta(days=1)
    if end <= start:
        raise ApiError(422, "end must be after start", field="end")
    if end - start > timedelta(days=MAX_SERIES_DAYS):
        raise ApiError(422, f"the time range is longer than {MAX_SERIES_DAYS} days", field="end")
    df = ctx.store.signs.values(indicator, unit, start, end)
    items = [{"window_start": r["window_start"], "window_end": r["window_end"], "value": r["value"],
              "level": LEVEL_NAMES[r["level"]], "n": r["n"]} for r in df.iter_rows(named=True)]
    return {"indicator": _indicator(cat[indicator]), "unit": unit, "start": start, "end": end, "items": items}


@router.get("/levels", summary="Current level of each indicator of a unit (or of its children)")
def levels(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    unit: Annotated[str | None, Query(max_length=64)] = None,
    children: bool = False,
    at: datetime | None = None,
    level: Annotated[str | None, Query(pattern="^(normal|attention|warning|alarm)$", description="At least this level.")] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
) -> dict:
    ctx = ctx_of(request)
    unit = unit or p.area_code or (ctx.units.roots() or [None])[0]
    if unit is None:
        raise ApiError(404, "the store has no units yet", field="unit")
    check_unit(ctx, p, unit)
    when = state.health_at(ctx, utc(at, "at"))
    if when is None:
        return {"unit": unit, "at": None, "items": []}
    codes = ctx.units.children.get(unit, []) if children else [unit]
    from cityvitals.signs.engine import _stale

    cat = ctx.get_catalog()
    df = ctx.store.signs.latest(when, _stale(cat), codes)
    # The stage keys its frames as Categorical for speed; the API speaks plain strings.
    df = df.with_columns(pl.col(c).cast(pl.String) for c in ("indicator", "unit_code") if c in df.columns)
    if df.is_empty():
        return {"unit": unit, "at": when, "items": []}
    meta = pl.DataFrame({"indicator": list(cat), "category": [i.category for i in cat.values()],
                         "name_en": [i.name_en for i in cat.values()], "name_zh": [i.name_zh for i in cat.values()],
                         "unit": [i.unit for i in cat.values()]})
    df = df.join(meta.rename({"unit": "measure_unit"}), on="indicator", how="left")
    if level is not None:
        df = df.filter(pl.col("level") >= LEVEL_NAMES.index(level))
    if category is not None:
        df = df.filter(pl.col("category") == category)
    df = df.sort(["level", "indicator"], descending=[True, False])
    items = [{"unit_code": r["unit_code"], "indicator": r["indicator"], "name_en": r["name_en"], "name_zh": r["name_zh"],
              "category": r["category"], "unit": r["measure_unit"], "value": r["value"], "level": LEVEL_NAMES[r["level"]]}
             for r in df.iter_rows(named=True)]
    return {"unit": unit, "at": when, "items": items}


@router.get("/health", summary="Health index of a unit, per category and overall, with its explanation")
def health(
    request: Request,
    p: Annotated[Principal, Depends(reader)],
    unit: Annotated[str | None, Query(max_length=64)] = None,
    at: datetime | None = None,
) -> dict:
    ctx = ctx_of(request)
    unit = unit or p.area_code or (ctx.units.roots() or [None])[0]
    if unit is None:
        raise ApiError(404, "the store has no units yet", field="unit")
    check_unit(ctx, p, unit)
    from cityvitals.signs import health as health_of

    try:
        h = health_of(ctx.store, unit, state.health_at(ctx, utc(at, "at")), catalog=ctx.get_catalog())
    except InputError as exc:
        raise ApiError(404, str(exc), field="unit", error="no_health")
    h["explain"] = [r for r in h["explain"] if r["scope"] == "overall" and r["points"] > 0]
    h["level"] = max((LEVEL_NAMES.index(r["level"]) for r in h["explain"]), default=0)
    h["level_name"] = LEVEL_NAMES[h["level"]]
    return h
