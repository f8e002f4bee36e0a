"""The pseudonym key ring: HMAC keys kept in the data directory, rotatable.

A keyed pseudonym (HMAC-SHA256 of the normalised identifier) lets the same person link
across records and releases without being identifiable: without the key, nobody can
test a guessed ID number against it, which a plain hash would allow (an 18-digit ID
with a known area and birth date has only ~10^4 candidates). The key material lives in
``<home>/share/pseudonym_keys.json`` (mode 0600), never in the store or an export; the
store keeps only each key's id and fingerprint. Rotating starts a new key: releases made
after it no longer link to earlier ones. Retired keys are kept so erasure can still find
a person's old pseudonyms in earlier exports.

>>> import tempfile
>>> ring = KeyRing(tempfile.mkdtemp())
>>> a = ring.pseudonym("110105194912310021")
>>> a == ring.pseudonym(" 110105194912310021 "), a.startswith("p_"), len(a)
(True, True, 18)
>>> old = ring.active_id
>>> _ = ring.rotate()
>>> ring.pseudonym("110105194912310021") != a, a in ring.all_pseudonyms("110105194912310021")
(True, True)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

KEY_FILE = "pseudonym_keys.json"


def share_dir(home: str | os.PathLike[str]) -> Path:
    d = Path(home) / "share"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _normalise(value: str) -> str:
    return str(value).strip().upper().replace(" ", "").replace("-", "")


class KeyRing:
    """Pseudonym keys of one data directory; the first use creates a key."""

    def __init__(self, home: str | os.PathLike[str], store=None):
        self.path = share_dir(home) / KEY_FILE
        self.store = store
        self._doc = self._load()
        if not self._doc["keys"]:
            self.rotate()

    def _load(self) -> dict:
        if self.path.exists():
            return json.loads(self.path.read_text("utf-8"))
        return {"active": None, "keys": {}}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._doc, f)
        os.replace(tmp, self.path)

    @property
    def active_id(self) -> str:
        return self._doc["active"]

    def _key(self, key_id: str | None = None) -> bytes:
        return bytes.fromhex(self._doc["keys"][key_id or self.active_id]["secret"])

    def fingerprint(self, key_id: str | None = None) -> str:
        return hashlib.sha256(b"fingerprint:" + self._key(key_id)).hexdigest()[:16]

    def rotate(self, now: datetime | None = None) -> str:
        """Make a new active key (the old one is retired, kept for erasure look-ups)."""
        now = now or datetime.now(timezone.utc)
        key_id = f"k{len(self._doc['keys']) + 1}-{secrets.token_hex(3)}"
        for k in self._doc["keys"].values():
            k.setdefault("retired_at", now.isoformat())
        self._doc["keys"][key_id] = {"secret": secrets.token_bytes(32).hex(), "created_at": now.isoformat()}
        self._doc["active"] = key_id
        self._save()
        if self.store is not None:
            self.store.share.add_key(key_id, self.fingerprint(key_id), now)
        return key_id

    def pseudonym(self, value: str | None, key_id: str | None = None) -> str | None:
        if value is None or str(value).strip() == "":
            return None
        digest = hmac.new(self._key(key_id), _normalise(value).encode(), hashlib.sha256).hexdigest()
        return "p_" + digest[:16]

    def pseudonyms(self, values: Iterable[str | None], key_id: str | None = None) -> list[str | None]:
        key = self._key(key_id)
        out: list[str | None] = []
        for v in values:
            if v is None or str(v).strip() == "":
                out.append(None)
            else:
                out.append("p_" + hmac.new(key, _normalise(v).encode(), hashlib.sha256).hexdigest()[:16])
        return out

    def all_pseudonyms(self, value: str) -> set[str]:
        """The value's pseudonym under every key ever used (to find it in old exports)."""
        return {p for k in self._doc["keys"] for p in [self.pseudonym(value, k)] if p}
