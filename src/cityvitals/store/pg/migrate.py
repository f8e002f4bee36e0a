"""Versioned schema migrations: ordered SQL files in ``migrations/``, applied once each.

``NNNN_name.sql`` files run in number order, each in its own transaction together with
its row in ``schema_migrations``, under an advisory lock so two processes upgrading at
once apply each file exactly once. A store whose schema is behind the code refuses to
open (``cityvitals db upgrade`` brings it forward): the schema never changes silently.

Numbers may have gaps (a number reserved for a change on another branch): "behind" means
a shipped migration is missing from ``schema_migrations``, not that the highest applied
number is lower than the code's, so a file that lands later with a lower number than one
already applied is still found and applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

_LOCK_KEY = 0x63697479  # "city": one advisory lock id for schema changes


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(folder=None) -> list[Migration]:
    """Every migration shipped with the package (or in ``folder``), in order."""
    out = []
    source = folder if folder is not None else resources.files("cityvitals.store.pg").joinpath("migrations")
    for entry in source.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            out.append(Migration(int(number), rest[:-4], entry.read_text(encoding="utf-8")))
    out.sort(key=lambda m: m.version)
    for a, b in zip(out, out[1:]):
        if a.version == b.version:
            raise RuntimeError(f"two schema migrations share number {a.version}: {a.name!r} and {b.name!r}")
    return out


def head() -> int:
    return migrations()[-1].version


def current(conn) -> int:
    """The schema version of the connected schema (0 when never upgraded)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchall()[0][0]
    if not exists:
        return 0
    return conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]


def applied(conn) -> set[int]:
    """The migration numbers recorded in the connected schema."""
    if current(conn) == 0:
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations").fetchall()}


def pending(conn) -> list[int]:
    """Shipped migrations not applied yet, gaps included (what ``upgrade`` would run)."""
    done = applied(conn)
    return [m.version for m in migrations() if m.version not in done]


def upgrade(conn, target: int | None = None) -> list[int]:
    """Apply pending migrations up to ``target`` (default: all); returns the versions applied."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
    for m in migrations():
        if target is not None and m.version > target:
            break
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", [m.version]).fetchall()
            if done:
                continue
            conn.execute(m.sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", [m.version, m.name])
            applied.append(m.version)
    return applied


def history(conn) -> list[dict]:
    if current(conn) == 0:
        return []
    rows = conn.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    return [{"version": v, "name": n, "applied_at": a} for v, n, a in rows]
