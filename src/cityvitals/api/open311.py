"""Open311 GeoReport v2 under /open311/v2: the citizen side of the case loop (domain.md §5).

Discovery, service list, service definitions, POST requests (with ``api_key``: the same
keys as the API), GET requests with the spec's filters (``service_request_id`` overrides
the rest; ``service_code``, ``start_date``/``end_date`` at most 90 days apart, default
the last 90 days; ``status``) plus the common ``page``/``page_size`` extension, GET one
request, tokens; every resource as ``.xml`` and ``.json`` (Spark convention: the root
container becomes a top-level array). ids and service codes are strings. Errors use the
spec's ``errors``/``error`` body with 404, 403 or 400.

Responses are built only from the ``cases`` snapshot columns listed in ``_REQ_COLS``; the
reporters' table and raw report texts are never read here, and descriptions are the
desensitised ones.

Include in the app factory: ``app.include_router(open311.router)`` (no prefix: the router
carries ``/open311``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cityvitals.api.auth import principal_for_key
from cityvitals.dispose.workflow import STAGE_TEXT

router = APIRouter(prefix="/open311", tags=["open311"], include_in_schema=True)
SPEC = "http://wiki.open311.org/GeoReport_v2"
JURISDICTION = "cityvitals.local"
MAX_DAYS = 90
DEFAULT_LIMIT = 1000
CLOSED = ("closed", "void", "rejected")
_REQ_COLS = ("id", "category", "state", "description", "department", "reported_at", "updated_at", "due_at",
             "address", "unit_code", "lon", "lat", "media_url", "closed_at")


class O311Error(Exception):
    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status, self.description = status, description


# ---- rendering ------------------------------------------------------------
def _val(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return _w3c(v)
    return str(v)


def _w3c(t: datetime) -> str:
    return t.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _xml_item(tag: str, obj: dict, lists: dict[str, str]) -> str:
    parts = [f"<{tag}>"]
    for k, v in obj.items():
        if isinstance(v, list):
            child = lists.get(k, "item")
            inner = "".join(_xml_item(child, x, lists) if isinstance(x, dict) else f"<{child}>{escape(_val(x))}</{child}>"
                            for x in v)
            parts.append(f"<{k}>{inner}</{k}>")
        elif isinstance(v, dict):
            parts.append(_xml_item(k, v, lists))
        else:
            parts.append(f"<{k}>{escape(_val(v))}</{k}>")
    parts.append(f"</{tag}>")
    return "".join(parts)


def render(fmt: str, root: str, item: str | None, data: Any, status: int = 200,
           lists: dict[str, str] | None = None) -> Response:
    """XML with declaration, or JSON where the root container is the top-level array."""
    lists = lists or {}
    if fmt == "xml":
        if item is None:
            body = _xml_item(root, data, lists)
        else:
            body = f"<{root}>" + "".join(_xml_item(item, d, lists) for d in data) + f"</{root}>"
        return Response('<?xml version="1.0" encoding="utf-8"?>\n' + body, status_code=status,
                        media_type="text/xml; charset=utf-8")
    import json

    def conv(o):
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(x) for x in o]
        return _w3c(o) if isinstance(o, datetime) else o

    return Response(json.dumps(conv(data), ensure_ascii=False), status_code=status,
                    media_type="application/json; charset=utf-8")


def _error(fmt: str, status: int, description: str) -> Response:
    return render(fmt if fmt in ("xml", "json") else "xml", "errors", "error",
                  [{"code": status, "description": description}], status)


def _fmt(fmt: str) -> str:
    if fmt not in ("xml", "json"):
        raise O311Error(404, f"format {fmt!r} is not served; use .xml or .json")
    return fmt


def _jurisdiction(q: dict) -> None:
    j = (q.get("jurisdiction_id") or "").strip()
    if j and j != JURISDICTION:
        raise O311Error(404, f"jurisdiction_id {j!r} not found (this endpoint serves {JURISDICTION!r})")


def _ctx(request: Request):
    return request.app.state.ctx


def _codes(request: Request):
    ctx = _ctx(request)
    if getattr(ctx, "_o311_codes", None) is None:
        from cityvitals.dispose import CodeTable, Ownership

        ctx._o311_codes = CodeTable.load()
        ctx._o311_owner = Ownership.load(codes=ctx._o311_codes)
    return ctx._o311_codes


async def _handle(fmt: str, fn) -> Response:
    try:
        return await fn(_fmt(fmt))
    except O311Error as exc:
        return _error(fmt, exc.status, exc.description)


# ---- discovery --------------------------------------------------------------
def _discovery(request: Request) -> dict:
    base = str(request.base_url).rstrip("/") + "/open311/v2"
    codes = _codes(request)
    return {"changeset": _w3c(datetime(2026, 1, 1, tzinfo=timezone.utc)) + f"-{codes.version}",
            "contact": "城市运行管理中心 City operations centre",
            "key_service": "Ask the operations centre for an API key (cityvitals users add)",
            "endpoints": [{"specification": SPEC, "url": base, "changeset": codes.version, "type": "production",
                           "formats": ["text/xml", "application/json"]}]}


@router.get("/discovery.{fmt}", summary="Open311 service discovery")
@router.get("/v2/discovery.{fmt}", summary="Open311 service discovery", include_in_schema=False)
async def discovery(request: Request, fmt: str) -> Response:
    async def run(f):
        return render(f, "discovery", None, _discovery(request), lists={"endpoints": "endpoint", "formats": "format"})

    return await _handle(fmt, run)


# ---- services -------------------------------------------------------------
def _service(c) -> dict:
    return {"service_code": c.code, "service_name": c.name, "description": c.description or c.en,
            "metadata": True, "type": c.open311_type, "keywords": c.keywords, "group": c.group}


@router.get("/v2/services.{fmt}", summary="Open311 service list")
async def services(request: Request, fmt: str) -> Response:
    async def run(f):
        _jurisdiction(dict(request.query_params))
        return render(f, "services", "service", [_service(c) for c in _codes(request)])

    return await _handle(fmt, run)


def _definition(c, hours_per_day: float) -> dict:
    return {"service_code": c.code, "attributes": [
        {"variable": True, "code": "priority", "datatype": "singlevaluelist", "required": False,
         "datatype_description": "How urgent it is", "order": 1, "description": "紧急程度 Urgency",
         "values": [{"key": k, "name": n} for k, n in
                    (("urgent", "紧急 Urgent"), ("high", "较急 High"), ("normal", "一般 Normal"), ("low", "不急 Low"))]},
        {"variable": False, "code": "time_limit", "datatype": "string", "required": False,
         "datatype_description": "", "order": 2, "description": f"处置时限 Time limit: {c.limit}"},
    ]}


@router.get("/v2/services/{service_code}.{fmt}", summary="Open311 service definition")
async def service_definition(request: Request, service_code: str, fmt: str) -> Response:
    async def run(f):
        _jurisdiction(dict(request.query_params))
        c = _codes(request).categories.get(service_code)
        if c is None:
            raise O311Error(404, f"service_code {service_code!r} not found")
        return render(f, "service_definition", None, _definition(c, 8),
                      lists={"attributes": "attribute", "values": "value"})

    return await _handle(fmt, run)


# ---- requests ---------------------------------------------------------------
def _request_doc(r: dict, codes, owner) -> dict:
    cat = codes.categories.get(r["category"])
    dept = owner.departments.get(r["department"] or "", {})
    closed = r["state"] in CLOSED
    return {
        "service_request_id": str(r["id"]), "status": "closed" if closed else "open",
        "status_notes": STAGE_TEXT.get(r["state"], r["state"]),
        "service_name": cat.name if cat else r["category"], "service_code": r["category"],
        "description": r["description"] or "", "agency_responsible": (f"{dept.get('zh')} {dept.get('en')}"
                                                                        if dept else (r["department"] or "")),
        "service_notice": "", "requested_datetime": r["reported_at"],
        "updated_datetime": r["closed_at"] if closed and r["closed_at"] else r["updated_at"],
        "expected_datetime": r["due_at"], "address": r["address"] or "", "address_id": r["unit_code"] or "",
        "zipcode": "", "lat": r["lat"], "long": r["lon"], "media_url": r["media_url"] or "",
    }


def _w3c_arg(q: dict, name: str) -> datetime | None:
    v = (q.get(name) or "").strip()
    if not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise O311Error(400, f"{name} {v!r} is not a W3C date-time (e.g. 2026-05-01T00:00:00Z)") from None
    if t.tzinfo is None:
        raise O311Error(400, f"{name} {v!r} needs a time zone (Z or +08:00)")
    return t.astimezone(timezone.utc)


_TIME_COLS = ("reported_at", "updated_at", "due_at", "closed_at")


def _out_cols(alias: str = "") -> str:
    """The response columns, times already as W3C text (formatting a thousand timestamps in
    DuckDB costs far less than building time-zone-aware datetimes in Python)."""
    return ", ".join(f"strftime({alias}{c}, '%Y-%m-%dT%H:%M:%SZ') AS {c}" if c in _TIME_COLS else f"{alias}{c}"
                     for c in _REQ_COLS)


def query_requests(store, q: dict, now: datetime) -> list[dict]:
    """The rows GET requests returns for the query ``q`` (raises O311Error on bad filters).

    Why two steps: the page is chosen on (reported_at, id) alone, which DuckDB answers with a
    top-N whose dynamic filter skips every row group that cannot hold a newer case (cases
    arrive in time order, so ids and report times grow together); only the page's rows are
    then read in full, by id range. Formatting in the same step as the top-N would format
    every candidate row first (30x slower at a million cases)."""
    ids = [x.strip() for x in (q.get("service_request_id") or "").split(",") if x.strip()]
    if ids:
        if not all(x.isdigit() for x in ids):
            raise O311Error(400, "service_request_id must be a comma-separated list of request ids")
        want = [int(x) for x in ids]
        return store.cases._rows(f"SELECT {_out_cols()} FROM cases WHERE id BETWEEN ? AND ? "
                                 "AND id IN (SELECT unnest(?::BIGINT[])) ORDER BY id", [min(want), max(want), want])
    start, end = _w3c_arg(q, "start_date"), _w3c_arg(q, "end_date")
    if start and end and end - start > timedelta(days=MAX_DAYS):
        raise O311Error(400, f"start_date to end_date may span at most {MAX_DAYS} days")
    if start and end and end < start:
        raise O311Error(400, "end_date is before start_date")
    if end is None:
        end = start + timedelta(days=MAX_DAYS) if start else now
    if start is None:
        start = end - timedelta(days=MAX_DAYS)
    where, params = ["reported_at >= ?", "reported_at <= ?"], [start, end]
    codes = [x.strip() for x in (q.get("service_code") or "").split(",") if x.strip()]
    if codes:
        where.append("category IN (SELECT unnest(?::VARCHAR[]))")
        params.append(codes)
    sts = {x.strip() for x in (q.get("status") or "").split(",") if x.strip()}
    if sts - {"open", "closed"}:
        raise O311Error(400, f"status {sorted(sts - {'open', 'closed'})[0]!r} is not open or closed")
    if sts == {"open"}:
        where.append("state NOT IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(CLOSED))
    elif sts == {"closed"}:
        where.append("state IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(CLOSED))
    try:
        page = int(q.get("page") or 1)
        size = int(q.get("page_size") or DEFAULT_LIMIT)
    except ValueError:
        raise O311Error(400, "page and page_size must be whole numbers") from None
    if page < 1 or not 1 <= size <= DEFAULT_LIMIT:
        raise O311Error(400, f"page must be >= 1 and page_size between 1 and {DEFAULT_LIMIT}")
    sql = (f"""WITH k AS (SELECT id, reported_at FROM cases WHERE {' AND '.join(where)}
                          ORDER BY reported_at DESC, id DESC LIMIT ? OFFSET ?)
               SELECT {_out_cols('c.')} FROM k JOIN cases c ON c.id = k.id
               WHERE c.id BETWEEN (SELECT min(id) FROM k) AND (SELECT max(id) FROM k)
               ORDER BY k.reported_at DESC, k.id DESC""")
    return store.cases._rows(sql, params + [size, (page - 1) * size])


@router.get("/v2/requests.{fmt}", summary="Open311 service requests")
async def get_requests(request: Request, fmt: str) -> Response:
    async def run(f):
        q = dict(request.query_params)
        _jurisdiction(q)
        ctx = _ctx(request)
        codes = _codes(request)
        rows = await run_in_threadpool(query_requests, ctx.store, q, ctx.clock())
        return render(f, "service_requests", "request", [_request_doc(r, codes, ctx._o311_owner) for r in rows])

    return await _handle(fmt, run)


@router.get("/v2/requests/{service_request_id}.{fmt}", summary="One Open311 service request")
async def get_request(request: Request, service_request_id: str, fmt: str) -> Response:
    async def run(f):
        _jurisdiction(dict(request.query_params))
        if not service_request_id.isdigit():
            raise O311Error(404, f"service_request_id {service_request_id!r} not found")
        ctx = _ctx(request)
        codes = _codes(request)
        rows = ctx.store.cases._rows(f"SELECT {_out_cols()} FROM cases WHERE id = ?", [int(service_request_id)])
        if not rows:
            raise O311Error(404, f"service_request_id {service_request_id!r} not found")
        return render(f, "service_requests", "request", [_request_doc(rows[0], codes, ctx._o311_owner)])

    return await _handle(fmt, run)


@router.get("/v2/tokens/{token}.{fmt}", summary="Open311 token to service_request_id")
async def get_token(request: Request, token: str, fmt: str) -> Response:
    async def run(f):
        _jurisdiction(dict(request.query_params))
        row = _ctx(request).store.cases.by_token(token)
        if row is None:
            raise O311Error(404, f"token {token!r} not found")
        return render(f, "service_requests", "request", [{"service_request_id": str(row["id"]), "token": token}])

    return await _handle(fmt, run)


@router.post("/v2/requests.{fmt}", summary="Create an Open311 service request (api_key required)")
async def post_request(request: Request, fmt: str) -> Response:
    async def run(f):
        raw = (await request.body()).decode("utf-8", errors="replace")
        form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        form.update({k: v for k, v in request.query_params.items() if k not in form})
        ctx = _ctx(request)
        key = form.get("api_key") or ""
        if not key:
            raise O311Error(403, "api_key is required to create a request")
        if principal_for_key(ctx, key) is None:
            raise O311Error(403, "Invalid api_key")
        _jurisdiction(form)
        code = (form.get("service_code") or "").strip()
        if not code:
            raise O311Error(400, "service_code is required")
        codes = _codes(request)
        cat = codes.categories.get(code)
        if cat is None:
            raise O311Error(404, f"service_code {code!r} not found")
        lat, lon = (form.get("lat") or "").strip(), (form.get("long") or "").strip()
        addr, addr_id = (form.get("address_string") or "").strip(), (form.get("address_id") or "").strip()
        if bool(lat) != bool(lon):
            raise O311Error(400, "lat and long must be given together")
        if not (lat or addr or addr_id):
            raise O311Error(400, "a location is required: lat and long, address_string or address_id")
        try:
            flat, flon = (float(lat), float(lon)) if lat else (None, None)
        except ValueError:
            raise O311Error(400, "lat and long must be decimal degrees (WGS84)") from None
        if flat is not None and not (-90 <= flat <= 90 and -180 <= flon <= 180):
            raise O311Error(400, "lat/long out of range")
        desc = form.get("description") or ""
        if len(desc) > 4000:
            raise O311Error(400, "description is longer than 4000 characters")
        pri = form.get("attribute[priority]") or "normal"
        if pri not in ("urgent", "high", "normal", "low"):
            raise O311Error(400, f"attribute[priority] {pri!r} is not one of urgent, high, normal, low")
        if addr_id and ctx.units.get(addr_id) is None:
            raise O311Error(400, f"address_id {addr_id!r} is not a known unit code")
        name = " ".join(x for x in (form.get("first_name"), form.get("last_name")) if x) or None
        report = {"category": code, "lat": flat, "lon": flon, "unit_code": addr_id or None, "address": addr or None,
                  "text": desc, "media_url": form.get("media_url") or None, "source": "public", "channel": "open311",
                  "priority": pri, "actor": "open311", "role": "operator", "ref": f"open311:{secrets.token_hex(8)}",
                  "reporter": {"name": name, "email": form.get("email"), "phone": form.get("phone"),
                               "account_id": form.get("account_id"), "device_id": form.get("device_id")}}

        def create():
            from cityvitals.dispose import CaseDesk

            return CaseDesk(ctx.store, clock=ctx.clock, codes=codes, ownership=ctx._o311_owner).report(**report)

        from cityvitals.errors import InputError

        try:
            res = await run_in_threadpool(create)
        except InputError as exc:
            raise O311Error(400, str(exc)) from None
        notice = ("已合并到已有诉求 Attached to an open request; " if res["attached"] else "") + \
            f"处置时限 {cat.limit} (time limit)"
        if cat.open311_type == "batch" and not res["attached"]:
            out = {"token": res["token"], "service_notice": notice}
        else:
            out = {"service_request_id": str(res["case_id"]), "service_notice": notice}
        request.state.audit = {"open311": "create", "case": res["case_id"]}
        return render(f, "service_requests", "request", [out])

    return await _handle(fmt, run)
