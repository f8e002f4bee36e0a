"""Who is calling, and what they may do: API keys, roles and area scope.

A key comes as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (Open311 passes the
same key as ``api_key``). Roles: admin (everything), duty_officer (reads, ingest, acts on
alerts), department_staff (reads; acts on its department's cases), analyst (read only).
A user with an area sees only units at or under that unit; every query that touches units
asks :func:`scope_codes` for the codes it may return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fastapi import Depends, Request

from cityvitals.api.errors import ApiError

READ_ROLES = ("admin", "duty_officer", "department_staff", "analyst")
INGEST_ROLES = ("admin", "duty_officer")
ALERT_ROLES = ("admin", "duty_officer")
ADMIN_ROLES = ("admin",)


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    area_code: str | None = None
    department: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "area_code": self.area_code, "department": self.department}


def key_from(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key") or None


def principal_for_key(ctx, key: str | None) -> Principal | None:
    user = ctx.store.users.authenticate(key) if key else None
    return Principal(user["name"], user["role"], user["area_code"], user["department"]) if user else None


def current_principal(request: Request) -> Principal:
    """The caller, or 401. Stored on the request so the audit middleware can name them."""
    key = key_from(request)
    if not key:
        raise ApiError(401, "an API key is required: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                       field="authorization")
    p = principal_for_key(request.app.state.ctx, key)
    if p is None:
        raise ApiError(401, "the API key is unknown, rotated or revoked", field="authorization")
    request.state.principal = p
    return p


def require(*roles: str) -> Callable[..., Principal]:
    """A dependency that lets only ``roles`` through (403 names the role needed)."""

    def dep(p: Principal = Depends(current_principal)) -> Principal:
        if p.role not in roles:
            raise ApiError(403, f"role {p.role!r} may not do this; needs one of: {', '.join(roles)}", field="role")
        return p

    return dep


reader = require(*READ_ROLES)


def scope_codes(ctx, p: Principal) -> list[str] | None:
    """The unit codes ``p`` may see, or None for everything."""
    if p.area_code is None:
        return None
    return ctx.units.descendants(p.area_code)


def check_unit(ctx, p: Principal, code: str, field: str = "unit") -> dict:
    """The unit ``code`` if it exists and ``p`` may see it; 404 otherwise (403 if out of area)."""
    info = ctx.units.get(code)
    if info is None:
        raise ApiError(404, f"no unit with code {code!r}", field=field)
    if not ctx.units.within(code, p.area_code):
        raise ApiError(403, f"unit {code!r} is outside your area {p.area_code!r}", field=field)
    return info


def require_unscoped(p: Principal, what: str) -> None:
    if p.area_code is not None:
        raise ApiError(403, f"{what} needs a key without an area scope (yours: {p.area_code!r})", field="area")
