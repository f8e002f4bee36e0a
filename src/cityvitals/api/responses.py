"""A JSON response rendered by orjson: several times faster than the stdlib on big payloads
(the city map), and it writes datetimes as ISO-8601 with their offset."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)


GZIP_MIN_BYTES = 4096  # as the gzip middleware: smaller bodies are not worth a compressed copy


def accepts_gzip(accept_encoding: str) -> bool:
    """Does an Accept-Encoding header take gzip (listed, or ``*``, without ``q=0``)?

    >>> [accepts_gzip(h) for h in ("gzip, deflate", "br", "gzip;q=0", "*;q=0.5", "")]
    [True, False, False, True, False]
    """
    for part in accept_encoding.split(","):
        name, *params = [x.strip() for x in part.split(";")]
        if name.lower() not in ("gzip", "*"):
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def encoded_response(request: Request, entry) -> Response:
    """The pre-encoded body, or its pre-gzipped copy when the client takes gzip (the gzip
    middleware leaves a response that already has a Content-Encoding alone)."""
    headers = {"Vary": "Accept-Encoding"}
    if len(entry.body) >= GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return Response(entry.gzipped, media_type="application/json", headers=headers)
    return Response(entry.body, media_type="application/json", headers=headers)
