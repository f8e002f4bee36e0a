"""Photos attached to cases: checked by their first bytes, not by their name, and size-capped.

A photo is stored once per content (its SHA-256 names the file) under
``<home>/attachments/<case id>/``. Only JPEG, PNG, WebP and GIF pass: a file named
``.jpg`` that is really HTML or an executable is refused.

>>> sniff(b"\\xff\\xd8\\xff\\xe0rest"), sniff(b"<html>")
('image/jpeg', None)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cityvitals.errors import InputError

MAX_BYTES = 10 * 1024 * 1024
_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif"}


def sniff(data: bytes) -> str | None:
    """The image type that ``data`` starts like, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def store_photo(root: Path, case_id: int, data: bytes, *, name: str = "photo", max_bytes: int = MAX_BYTES) -> dict:
    """Check and write a photo; returns sha256, mime, size and path (relative to ``root``)."""
    if not data:
        raise InputError(f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise InputError(f"{name}: {len(data)} bytes is more than the limit of {max_bytes} bytes")
    mime = sniff(data)
    if mime is None:
        raise InputError(f"{name}: not a JPEG, PNG, WebP or GIF image (checked by its content)")
    digest = hashlib.sha256(data).hexdigest()
    rel = Path("attachments") / str(int(case_id)) / f"{digest}.{_EXT[mime]}"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return {"sha256": digest, "mime": mime, "size": len(data), "path": str(rel)}
