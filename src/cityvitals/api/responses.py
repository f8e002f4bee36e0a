"""A JSON response rendered by orjson: several times faster than the stdlib on big payloads
(the city map), and it writes datetimes as ISO-8601 with their offset."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)
