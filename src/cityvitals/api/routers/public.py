"""The public health summary: the city's index and level, no key needed, nothing personal."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cityvitals.api import state
from cityvitals.api.responses import encoded_response
from cityvitals.api.routers._common import ctx_of

router = APIRouter(prefix="/public", tags=["public"])


@router.get("/health", summary="The city's health at a glance (no key needed)", response_class=Response)
def public_health(request: Request) -> Response:
    """Anyone may ask, as often as they like: the answer is computed once per data version
    (and at most every few seconds) and served pre-encoded, like the map."""
    ctx = ctx_of(request)
    return encoded_response(request, ctx.states.get(("public",), ctx.data_version(), lambda: summary(ctx)))


def summary(ctx) -> dict:
    roots = ctx.units.roots()
    if not roots:
        return {"unit": None, "health": None, "status": "no units yet"}
    city = ctx.units.get(roots[0])
    now = ctx.clock()
    out = {"unit": {"code": city["code"], "name": city["name"], "level": city["level"]}, "at": now,
           "health": None, "health_level": None, "health_at": None, "categories": {},
           "readings_1h": state.readings_count(ctx, [city["code"]], *state.window_hour(now)).get(city["code"], 0)}
    when = state.health_at(ctx, None)
    if when is not None:
        from cityvitals.errors import InputError
        from cityvitals.signs import health as health_of

        try:
            h = health_of(ctx.store, city["code"], when, catalog=ctx.get_catalog())
        except InputError:
            return out
        levels = [r["level"] for r in h["explain"] if r["scope"] == "overall"]
        names = ("normal", "attention", "warning", "alarm")
        out.update(health=h["index"], health_at=when, categories=h["categories"],
                   health_level=names[max((names.index(x) for x in levels), default=0)])
    return out
