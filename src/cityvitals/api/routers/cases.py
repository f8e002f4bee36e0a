"""Cases under /api/v1/cases: list, one case with its log, actions, photos, reporters, stats.

Roles map onto the workflow's roles: admin may act as any role; duty_officer as operator,
supervisor, dispatcher or inspector (the operations centre); department_staff only as
``department`` and only on cases dispatched to its own department (it sees only those);
analyst reads. Reporters' personal data is served only to case workers of the case.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from cityvitals.api.auth import Principal, reader
from cityvitals.api.errors import ApiError
from cityvitals.api.paging import Cursor, Limit, decode_cursor, page
from cityvitals.api.routers._common import ctx_of
from cityvitals.errors import InputError

router = APIRouter(prefix="/cases", tags=["cases"])
CENTRE_ROLES = ("operator", "supervisor", "dispatcher", "inspector")


def _desk(ctx):
    from cityvitals.dispose import CaseDesk

    return CaseDesk(ctx.store, clock=ctx.clock)


def _plain(r: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items() if k != "token"}


def _visible(ctx, p: Principal, row: dict) -> bool:
    if p.role == "department_staff" and row["department"] != p.department:
        return False
    if p.area_code is not None and not (row["unit_code"] and ctx.units.within(row["unit_code"], p.area_code)):
        return False
    return True


def _get(ctx, p: Principal, case_id: int) -> dict:
    row = ctx.store.cases.get(case_id)
    if row is None:
        raise ApiError(404, f"no case {case_id}", field="case_id")
    if not _visible(ctx, p, row):
        raise ApiError(403, f"case {case_id} is outside your department or area", field="case_id")
    return row


# Actions the dashboard offers as buttons; the rest (comments, crews, reports, escalation) stay API-only.
SHOWN_ACTIONS = ("request_verify", "verify", "file", "reject", "void", "dispatch", "accept", "return", "handle",
                 "request_extension", "grant_extension", "refuse_extension", "forward", "close", "rework",
                 "suspend", "resume")


def allowed_actions(p: Principal, row: dict) -> list[dict]:
    """The workflow actions ``p`` may take on the case now, each with the role to act as.

    Mirrors :func:`_acting_role` and the workflow's table, so a button the dashboard shows is
    one the server accepts (the server still checks everything when it is pressed).
    """
    from cityvitals.dispose import ACTIONS

    if p.role == "admin":
        mine: tuple[str, ...] = ("admin",)
    elif p.role == "duty_officer":
        mine = CENTRE_ROLES
    elif p.role == "department_staff" and p.department and row.get("department") == p.department:
        mine = ("department",)
    else:
        return []
    out = []
    for action in SHOWN_ACTIONS:
        states, _, roles = ACTIONS[action]
        if row.get("state") not in states:
            continue
        role = "admin" if mine == ("admin",) else next((r for r in roles if r in mine), None)
        if role is not None:
            out.append({"action": action, "as": role})
    return out


@router.get("", summary="Cases, newest first")
def list_cases(
    request: Request, p: Annotated[Principal, Depends(reader)],
    state: Annotated[str, Query(max_length=32)] = "open",
    department: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> dict:
    from cityvitals.dispose import STATES

    ctx = ctx_of(request)
    if state not in ("open", "overdue", "all") and state not in STATES:
        raise ApiError(422, f"unknown state {state!r}; one of: open, overdue, all, {', '.join(STATES)}", field="state")
    if p.role == "department_staff":
        department = p.department or "\x00none"
    codes = ctx.units.descendants(p.area_code) if p.area_code else None
    after = decode_cursor(cursor)
    rows = ctx.store.cases.list(state=state, department=department, category=category, unit_codes=codes,
                                before_id=int(after[0]) if after else None, limit=limit + 1)
    return page([_plain(r) | {"actions": allowed_actions(p, r)} for r in rows], limit, lambda r: [r["id"]])


@router.get("/departments", summary="Departments a case can be dispatched to")
def departments(request: Request, p: Annotated[Principal, Depends(reader)]) -> dict:
    return {"items": ctx_of(request).store.cases.departments()}


@router.get("/stats", summary="Evaluation: filed, close, on-time close, rework rates per group")
def stats(request: Request, p: Annotated[Principal, Depends(reader)],
          by: Annotated[str, Query(pattern="^(region|department|inspector|category|all)$")] = "region",
          start: str | None = None, end: str | None = None) -> dict:
    from cityvitals.dispose import case_stats
    from cityvitals.dispose.desk import _as_utc

    try:
        ctx = ctx_of(request)
        rows = case_stats(ctx.store, by=by, start=_as_utc(start, "start"), end=_as_utc(end, "end"), as_of=ctx.clock())
    except InputError as exc:
        raise ApiError(422, str(exc))
    return {"by": by, "groups": rows}


@router.get("/{case_id}", summary="One case with its event log and photos")
def get_case(request: Request, case_id: int, p: Annotated[Principal, Depends(reader)]) -> dict:
    ctx = ctx_of(request)
    raw = _get(ctx, p, case_id)
    row = _plain(raw)
    row["actions"] = allowed_actions(p, raw)
    row["events"] = [_plain(e) for e in ctx.store.cases.events(case_id)]
    row["attachments"] = [_plain(a) for a in ctx.store.cases.attachments(case_id)]
    return row


@router.get("/{case_id}/reporters", summary="Who reported the case (personal data; case workers only)")
def reporters(request: Request, case_id: int, p: Annotated[Principal, Depends(reader)],
              purpose: Annotated[str, Query(min_length=3, max_length=500,
                                            description="Why you read it (kept in the access log)")]) -> dict:
    """Personal data is read only with a stated purpose, and every read is appended to the
    share stage's hash-chained access log (who, role, which case, how many people, why)."""
    from cityvitals.share.audit import record
    from cityvitals.store.duck.cases import REPORTER_COLUMNS

    ctx = ctx_of(request)
    _get(ctx, p, case_id)
    if p.role not in ("admin", "duty_officer", "department_staff"):
        raise ApiError(403, f"role {p.role!r} may not see reporters' personal data", field="role")
    purpose = purpose.strip()
    if len(purpose) < 3:
        raise ApiError(422, "purpose: say why you need the reporters' personal data", field="purpose")
    people = ctx.store.cases.reporters(case_id)
    reports = ctx.store.cases.reports(case_id)
    record(ctx.store, actor=p.name, role=p.role, action="read", dataset="case_reporters",
           fields=[c for c in REPORTER_COLUMNS if c != "id"] + ["report_text"], purpose=purpose,
           records=len(people), detail={"case_id": case_id, "route": "/api/v1/cases/{id}/reporters"},
           now=ctx.clock())
    request.state.audit = {"case": case_id, "read": "reporters", "purpose": purpose}
    return {"reporters": [_plain(r) for r in people], "reports": [_plain(r) for r in reports]}


def _acting_role(p: Principal, wanted: str | None) -> tuple[str, str | None]:
    if p.role == "admin":
        return wanted or "admin", None
    if p.role == "duty_officer":
        if wanted not in CENTRE_ROLES:
            raise ApiError(403, f"a duty officer acts as one of {', '.join(CENTRE_ROLES)}; say which in 'as'",
                           field="as")
        return wanted, None
    if p.role == "department_staff":
        return "department", p.department or "\x00none"
    raise ApiError(403, f"role {p.role!r} may not act on cases", field="role")


@router.post("/{case_id}/{action}", summary="Take a workflow action on a case")
async def act(request: Request, case_id: int, action: str, p: Annotated[Principal, Depends(reader)],
              body: Annotated[dict[str, Any] | None, Body()] = None) -> dict:
    from cityvitals.dispose import ACTIONS, Actor
    from cityvitals.dispose.desk import state_dict

    ctx = ctx_of(request)
    action = action.replace("-", "_")
    if action not in ACTIONS:
        raise ApiError(404, f"no action {action!r}; one of: {', '.join(ACTIONS)}", field="action")
    body = dict(body or {})
    role, dept = _acting_role(p, body.pop("as", None))
    _get(ctx, p, case_id)  # 404 / 403 before anything else, for every role and action
    allowed = {"note", "department", "crew", "hours", "priority", "reason"}
    bad = set(body) - allowed
    if bad:
        raise ApiError(422, f"unknown field {sorted(bad)[0]!r}; allowed: {', '.join(sorted(allowed))}",
                       field=sorted(bad)[0])

    def run():
        try:
            return _desk(ctx).act(case_id, action, Actor(p.name, role, dept), **body)
        except InputError as exc:
            raise ApiError(409, str(exc), field="action")

    s = await run_in_threadpool(run)
    await run_in_threadpool(ctx.watcher.check)
    request.state.audit = {"case": case_id, "action": action}
    return state_dict(s)


@router.put("/{case_id}/photos", summary="Attach a photo (raw body: JPEG, PNG, WebP or GIF, at most 10 MB)")
async def photo(request: Request, case_id: int, p: Annotated[Principal, Depends(reader)],
                stage: Annotated[str, Query(pattern="^(report|feedback|check)$")] = "feedback") -> dict:
    ctx = ctx_of(request)
    _get(ctx, p, case_id)
    if p.role == "analyst":
        raise ApiError(403, "role 'analyst' may not attach photos", field="role")
    data = await request.body()
    try:
        row = await run_in_threadpool(_desk(ctx).attach_photo, case_id, data, stage=stage, by=p.name)
    except InputError as exc:
        raise ApiError(422, str(exc), field="body")
    return _plain(row)
