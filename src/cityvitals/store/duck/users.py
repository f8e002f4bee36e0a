"""Users, their API keys and the audit log of writes.

A key is ``cv_<key id>_<secret>``: the key id (8 hex characters) is stored in clear so a
request finds its user with one indexed lookup; the secret is 32 random bytes
(``secrets.token_urlsafe(32)``) stored only as HMAC-SHA256(salt, secret) with a random
per-key salt. A slow password hash (scrypt, pbkdf2) protects guessable passwords; a
256-bit random secret cannot be guessed, so a fast keyed hash is as safe here and keeps
every API request cheap. The clear key is returned once, when it is made, and never
again. Rotation replaces the salt and hash (the old key stops working at once);
revocation marks the user revoked and keeps the row, so the audit log still names who
did what.

>>> import tempfile
>>> from cityvitals.store import open_store
>>> store = open_store(tempfile.mkdtemp())
>>> key = store.users.add("li", "duty_officer")
>>> store.users.authenticate(key)["name"], store.users.authenticate(key + "x")
('li', None)
>>> new = store.users.rotate("li")
>>> store.users.authenticate(key), store.users.authenticate(new)["role"]
(None, 'duty_officer')
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from datetime import datetime, timezone
from typing import Any

from cityvitals.errors import InputError

ROLES = ("admin", "duty_officer", "department_staff", "analyst")
"""admin: everything; duty_officer: read all, ingest, act on alerts; department_staff: read
(its area), act on its department's cases; analyst: read only."""
USER_COLUMNS = ("name", "role", "area_code", "department", "key_id", "created_at", "rotated_at", "revoked_at", "last_used_at")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_KEY = re.compile(r"^cv_([0-9a-f]{8})_([A-Za-z0-9_-]{20,100})$")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


class UserRepo:
    DDL = (
        """CREATE TABLE IF NOT EXISTS users (
            name VARCHAR PRIMARY KEY,
            role VARCHAR NOT NULL,
            area_code VARCHAR,
            department VARCHAR,
            key_id VARCHAR UNIQUE,
            key_salt BLOB,
            key_hash BLOB,
            created_at TIMESTAMPTZ NOT NULL,
            rotated_at TIMESTAMPTZ,
            revoked_at TIMESTAMPTZ,
            last_used_at TIMESTAMPTZ
        )""",
        "CREATE SEQUENCE IF NOT EXISTS audit_id_seq START 1",
        """CREATE TABLE IF NOT EXISTS audit (
            id BIGINT PRIMARY KEY DEFAULT nextval('audit_id_seq'),
            ts TIMESTAMPTZ NOT NULL,
            actor VARCHAR,
            role VARCHAR,
            action VARCHAR NOT NULL,
            target VARCHAR,
            status INTEGER,
            detail VARCHAR
        )""",
    )

    def __init__(self, store):
        self.store = store

    # ---- keys -------------------------------------------------------------
    def _new_key(self) -> tuple[str, str, bytes, bytes]:
        """(clear key, key id, salt, hash)."""
        key_id = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        return f"cv_{key_id}_{secret}", key_id, salt, _digest(salt, secret)

    def add(self, name: str, role: str, *, area: str | None = None, department: str | None = None,
            actor: str = "cli", now: datetime | None = None) -> str:
        """Create a user and return its API key (the only time it is shown)."""
        if not _NAME.match(name or ""):
            raise InputError(f"user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise InputError(f"role {role!r}: must be one of {', '.join(ROLES)}")
        if area is not None and self.store.units.get(area) is None:
            raise InputError(f"area {area!r}: no such unit in the store")
        now = now or _now()
        key, key_id, salt, digest = self._new_key()
        with self.store.transaction() as con:
            if con.execute("SELECT count(*) FROM users WHERE name = ?", [name]).fetchall()[0][0]:
                raise InputError(f"user {name!r} already exists (rotate its key with `users rotate`)")
            con.execute(
                "INSERT INTO users (name, role, area_code, department, key_id, key_salt, key_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [name, role, area, department, key_id, salt, digest, now],
            )
            self._audit(con, now, actor, None, "user.add", name, None, {"role": role, "area": area, "department": department})
        return key

    def rotate(self, name: str, *, actor: str = "cli", now: datetime | None = None) -> str:
        """Give ``name`` a new key; the old one stops working at once. Un-revokes the user."""
        now = now or _now()
        key, key_id, salt, digest = self._new_key()
        with self.store.transaction() as con:
            self._require(con, name)
            con.execute(
                "UPDATE users SET key_id = ?, key_salt = ?, key_hash = ?, rotated_at = ?, revoked_at = NULL WHERE name = ?",
                [key_id, salt, digest, now, name],
            )
            self._audit(con, now, actor, None, "user.rotate", name, None, None)
        return key

    def revoke(self, name: str, *, actor: str = "cli", now: datetime | None = None) -> None:
        now = now or _now()
        with self.store.transaction() as con:
            self._require(con, name)
            con.execute("UPDATE users SET revoked_at = ?, key_id = NULL, key_salt = NULL, key_hash = NULL WHERE name = ?",
                        [now, name])
            self._audit(con, now, actor, None, "user.revoke", name, None, None)

    @staticmethod
    def _require(con, name: str) -> None:
        if not con.execute("SELECT count(*) FROM users WHERE name = ?", [name]).fetchall()[0][0]:
            raise InputError(f"user {name!r}: no such user")

    def authenticate(self, key: str | None) -> dict | None:
        """The active user holding ``key``, or None. Constant-time comparison of the hash."""
        m = _KEY.match(key or "")
        if not m:
            return None
        with self.store.lock:
            rows = self.store.con.execute(
                "SELECT name, role, area_code, department, key_salt, key_hash FROM users "
                "WHERE key_id = ? AND revoked_at IS NULL",
                [m.group(1)],
            ).fetchall()
        if not rows:
            return None
        name, role, area, dept, salt, digest = rows[0]
        if not hmac.compare_digest(_digest(bytes(salt), m.group(2)), bytes(digest)):
            return None
        return {"name": name, "role": role, "area_code": area, "department": dept}

    # ---- reads ------------------------------------------------------------
    def list(self) -> list[dict]:
        with self.store.lock:
            cur = self.store.con.execute(f"SELECT {', '.join(USER_COLUMNS)} FROM users ORDER BY name")
            return [dict(zip(USER_COLUMNS, r)) for r in cur.fetchall()]

    def get(self, name: str) -> dict | None:
        with self.store.lock:
            rows = self.store.con.execute(f"SELECT {', '.join(USER_COLUMNS)} FROM users WHERE name = ?", [name]).fetchall()
        return dict(zip(USER_COLUMNS, rows[0])) if rows else None

    # ---- audit ------------------------------------------------------------
    @staticmethod
    def _audit(con, ts: datetime, actor: str | None, role: str | None, action: str, target: str | None,
               status: int | None, detail: Any) -> None:
        con.execute(
            "INSERT INTO audit (ts, actor, role, action, target, status, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [ts, actor, role, action, target, status,
             None if detail is None else json.dumps(detail, ensure_ascii=False, default=str)],
        )

    def audit(self, actor: str | None, role: str | None, action: str, target: str | None = None,
              status: int | None = None, detail: Any = None, *, now: datetime | None = None) -> None:
        """Append one line to the audit log (a write, who made it, and how it ended)."""
        with self.store.transaction() as con:
            self._audit(con, now or _now(), actor, role, action, target, status, detail)

    def audit_log(self, *, after_id: int | None = None, actor: str | None = None, limit: int = 100) -> list[dict]:
        where, params = [], []
        if after_id is not None:
            where.append("id < ?")
            params.append(int(after_id))
        if actor is not None:
            where.append("actor = ?")
            params.append(actor)
        sql = "SELECT id, ts, actor, role, action, target, status, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(int(limit))
        with self.store.lock:
            cur = self.store.con.execute(sql, params)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def status(self) -> dict:
        with self.store.lock:
            n = self.store.con.execute("SELECT count(*) FROM users WHERE revoked_at IS NULL").fetchall()[0][0]
        return {"users_active": n}
