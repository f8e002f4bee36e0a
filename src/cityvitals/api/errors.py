"""Errors as JSON that name the field and the problem, whatever raised them.

Every error body has the same shape, ``{"error": code, "field": name or null,
"problem": sentence}``, so a client (or a duty officer reading a log) never has to parse
FastAPI's nested validation lists or an HTML error page.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cityvitals.errors import InputError

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 422: "invalid", 429: "too_many_requests", 500: "internal"}


class ApiError(Exception):
    """An error meant for the API client: status, code, the field at fault and the problem."""

    def __init__(self, status: int, problem: str, *, field: str | None = None, error: str | None = None):
        super().__init__(problem)
        self.status = status
        self.problem = problem
        self.field = field
        self.error = error or _CODES.get(status, "error")


def error_body(status: int, problem: str, field: str | None = None, error: str | None = None, **extra) -> dict:
    return {"error": error or _CODES.get(status, "error"), "field": field, "problem": problem, **extra}


def error_response(status: int, problem: str, field: str | None = None, error: str | None = None,
                   headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse(error_body(status, problem, field, error, **extra), status_code=status, headers=headers)


def _field(loc: tuple | list) -> str:
    """('query', 'limit') -> 'limit'; ('body', 3, 'value') -> 'body[3].value'."""
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "request"


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.problem, exc.field, exc.error, headers=headers)

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(e.get("loc", ())), "problem": e.get("msg", "invalid")} for e in exc.errors()
        ][:20]
        first = errors[0] if errors else {"field": None, "problem": "invalid request"}
        return error_response(422, first["problem"], first["field"], "invalid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
