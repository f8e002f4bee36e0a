"""Keyset pagination: an opaque cursor holding the last row's sort key, and a capped limit.

Offsets get slower and skip or repeat rows while data arrives; a keyset cursor asks for
"rows after this key", which is what a live city needs.

>>> c = encode_cursor(["2026-05-01T00:00:00+00:00", "P1"])
>>> decode_cursor(c, 2)
['2026-05-01T00:00:00+00:00', 'P1']
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import Query

from cityvitals.api.errors import ApiError

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (at most {MAX_LIMIT}).")]
Cursor = Annotated[str | None, Query(max_length=512, description="The `next_cursor` of the previous page.")]


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, n: int = 1) -> list | None:
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise ApiError(422, "the cursor is not one this server made; pass next_cursor unchanged", field="cursor")
    if not isinstance(key, list) or len(key) != n:
        raise ApiError(422, "the cursor does not fit this listing", field="cursor")
    return key


def page(rows: list[dict], limit: int, key_of) -> dict:
    """Rows fetched with limit + 1: return the page and the cursor of the next one."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_cursor": encode_cursor(key_of(rows[-1])) if more and rows else None}
