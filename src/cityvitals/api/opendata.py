"""Open data under /opendata/v1: the dataset catalogue and desensitised views, no login.

Only :func:`cityvitals.share.views.view` with the ``public`` audience is reachable here,
so every row passes through the catalogue's field transforms, k-anonymity for microdata
and the last recognition pass; differentially private aggregates are served from their
latest release (serving spends no budget; only ``cityvitals export`` makes a release).
Nothing here reads the access-logged audiences, so nothing here needs a key.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cityvitals.api.errors import ApiError
from cityvitals.api.routers._common import ctx_of
from cityvitals.errors import InputError

PREFIX = "/opendata/v1"
router = APIRouter(prefix=PREFIX, tags=["open data"])


def _public_view(store, dataset: str):
    from cityvitals.share.catalog import cat_by_id
    from cityvitals.share.views import view

    if dataset not in cat_by_id():
        raise ApiError(404, f"dataset {dataset!r} is not in the catalogue", field="dataset")
    try:
        return view(store, dataset, "public")
    except InputError as exc:
        raise ApiError(404, str(exc), field="dataset") from None


@router.get("/catalog", summary="The dataset catalogue: tiers, fields and their sensitivity, licence, lineage")
def catalog(request: Request) -> dict:
    from cityvitals.share.catalog import catalogue_json

    return catalogue_json(ctx_of(request).store)


@router.get("/datasets", summary="Dataset ids with tier, title and whether this store has data for them")
def datasets(request: Request) -> dict:
    from cityvitals.share.catalog import catalogue_json

    doc = catalogue_json(ctx_of(request).store)
    return {"datasets": [{k: d[k] for k in ("id", "tier", "title", "title_zh", "licence", "available")}
                         for d in doc["datasets"]]}


@router.get("/datasets/{dataset}", summary="Desensitised rows of a dataset (JSON, GeoJSON or CSV)")
async def rows(
    request: Request,
    dataset: str,
    format: str = Query("json", pattern="^(json|geojson|csv)$"),
    limit: int = Query(1000, ge=1, le=100_000),
    offset: int = Query(0, ge=0),
):
    import polars as pl

    store = ctx_of(request).store
    v = await run_in_threadpool(_public_view, store, dataset)
    total = v.frame.height
    v.frame = v.frame.slice(offset, limit)
    if format == "geojson":
        from cityvitals.share.export import to_geojson

        doc = to_geojson(v)
        doc["total"] = total
        return doc
    binary = [c for c, t in v.frame.schema.items() if t == pl.Binary]
    frame = v.frame.drop(binary)
    if format == "csv":
        return Response(frame.write_csv(), media_type="text/csv; charset=utf-8")
    return {"dataset": dataset, "total": total, "offset": offset, "limit": limit, "columns": frame.columns,
            "rows": frame.to_dicts(), "info": {k: val for k, val in v.info.items() if k != "tried"}}
