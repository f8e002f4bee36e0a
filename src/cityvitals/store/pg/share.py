"""Data sharing on PostgreSQL: budgets, the hash-chained access log, keys, exports, releases.

Unlike the embedded file, several processes write here at once (the API, ``cityvitals``
commands), so the two read-then-write steps take a lock first: a privacy-budget charge
locks its dataset's budget row (two releases cannot both squeeze under the cap), and an
access-log append takes a transaction-scoped advisory lock (two appends cannot pick the
same next ``seq`` and fork the chain). ``INSERT OR REPLACE`` becomes ``ON CONFLICT``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cityvitals.store.duck.share import ShareRepo, _now

_ACCESS_LOG_LOCK = 0x63697479_0001  # advisory lock id: appends to share_access_log


class PgShareRepo(ShareRepo):
    DDL = ()

    def set_budget(self, dataset: str, epsilon_total: float) -> None:
        if not epsilon_total > 0:
            from cityvitals.errors import InputError

            raise InputError(f"dataset {dataset!r}: privacy budget must be positive, got {epsilon_total}")
        with self.store.transaction() as con:
            con.execute("INSERT INTO share_budget VALUES (?, ?) "
                        "ON CONFLICT (dataset) DO UPDATE SET epsilon_total = EXCLUDED.epsilon_total",
                        [dataset, float(epsilon_total)])

    def spend(self, dataset: str, epsilon: float, *, actor: str, query: str, now: datetime | None = None) -> dict:
        with self.store.transaction() as con:
            con.execute("SELECT 1 FROM share_budget WHERE dataset = ? FOR UPDATE", [dataset]).fetchall()
            return super().spend(dataset, epsilon, actor=actor, query=query, now=now)

    def log_access(self, **kwargs: Any) -> dict:
        with self.store.transaction() as con:
            con.execute("SELECT pg_advisory_xact_lock(?)", [_ACCESS_LOG_LOCK]).fetchall()
            return super().log_access(**kwargs)

    def save_release(self, dataset: str, body: Any, epsilon: float | None, now: datetime | None = None) -> None:
        with self.store.transaction() as con:
            con.execute("INSERT INTO share_releases VALUES (?, ?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET "
                        "ts = EXCLUDED.ts, epsilon = EXCLUDED.epsilon, body = EXCLUDED.body",
                        [dataset, now or _now(), epsilon, json.dumps(body, ensure_ascii=False, default=str)])

    def add_key(self, key_id: str, fingerprint: str, now: datetime | None = None) -> None:
        now = now or _now()
        with self.store.transaction() as con:
            con.execute("UPDATE share_keys SET retired_at = ? WHERE retired_at IS NULL", [now])
            con.execute("INSERT INTO share_keys VALUES (?, ?, ?, NULL) ON CONFLICT (key_id) DO UPDATE SET "
                        "fingerprint = EXCLUDED.fingerprint, created_at = EXCLUDED.created_at, retired_at = NULL",
                        [key_id, fingerprint, now])

    def register_export(self, *, path: str, dataset: str, fmt: str, audience: str, rows: int, sha256: str,
                        key_id: str | None, actor: str, now: datetime | None = None) -> None:
        with self.store.transaction() as con:
            con.execute("INSERT INTO share_exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                        "ts = EXCLUDED.ts, dataset = EXCLUDED.dataset, format = EXCLUDED.format, "
                        "audience = EXCLUDED.audience, rows = EXCLUDED.rows, sha256 = EXCLUDED.sha256, "
                        "key_id = EXCLUDED.key_id, actor = EXCLUDED.actor",
                        [path, now or _now(), dataset, fmt, audience, rows, sha256, key_id, actor])
