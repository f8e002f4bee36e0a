"""Alerts, their event log and watch checkpoints on PostgreSQL.

The DuckDB repository's SQL is portable except where it leans on DuckDB's ``rowid`` (the
event log here has a ``seq`` column in insertion order) and ``INSERT OR REPLACE``.

New alerts, row updates and event-log lines are deferred inside a transaction
(``store.defer``) and sent together before the next read and before the commit: the alert
manager touches every open alert a batch observes, and one network round trip each would
make a storm of thousands of alerts cost seconds per watch run instead of milliseconds.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from cityvitals.store.duck.alerts import ALERT_COLUMNS, EVENT_COLUMNS, AlertRepo


class PgAlertRepo(AlertRepo):
    DDL = ()

    def __init__(self, store):
        super().__init__(store)
        # last resolved alert per (source, type) of the keys the last ``open_for`` asked
        # about (None: none resolved): the alert manager asks for it once per new alert,
        # and an alert storm of thousands paid one round trip each
        self._resolved: dict[tuple[str, str], dict | None] = {}
        self._key_of: dict[int, tuple[str, str]] = {}
        self._ids: deque[int] = deque()  # alert ids drawn from the sequence, not used yet

    def _rows(self, sql: str, params: list) -> list[dict]:
        with self.store.lock:
            self.store.flush()
            return super()._rows(sql, params)

    def insert(self, con, row: dict) -> int:
        """A new alert with an id taken from a block of the sequence (one round trip per 256
        alerts), its INSERT deferred with the other writes of the batch: an alert storm (every
        sensor stale at once) costs a few round trips, not one per alert."""
        if not self._ids:
            self._ids.extend(int(r[0]) for r in con.execute(
                "SELECT nextval(pg_get_serial_sequence('alerts', 'id')) FROM generate_series(1, ?)", [256]).fetchall())
        alert_id = self._ids.popleft()
        cols = [c for c in ALERT_COLUMNS if c != "id" and c in row]
        self.store.defer(f"INSERT INTO alerts (id, {', '.join(cols)}) VALUES ({', '.join('?' * (len(cols) + 1))})",
                         [alert_id, *(row[c] for c in cols)])
        return alert_id

    def update(self, con, alert_id: int, changes: dict) -> None:
        if not changes:
            return
        if changes.get("state") == "resolved":  # it becomes the key's last resolved alert: ask again
            self._resolved.pop(self._key_of.get(int(alert_id)), None)
        bad = set(changes) - set(ALERT_COLUMNS)
        if bad:
            raise ValueError(f"unknown alert columns: {sorted(bad)}")
        cols = list(changes)
        self.store.defer(f"UPDATE alerts SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                         [changes[c] for c in cols] + [int(alert_id)])

    def log(self, con, alert_id: int, at: datetime, event: str, actor: str | None = None,
            level: str | None = None, note: str | None = None) -> None:
        self.store.defer("INSERT INTO alert_events (alert_id, ts, event, actor, level, note) VALUES (?, ?, ?, ?, ?, ?)",
                         [int(alert_id), at, event, actor, level, note])

    def events(self, alert_id: int) -> list[dict]:
        return self._rows(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM alert_events WHERE alert_id = ? ORDER BY ts, seq", [int(alert_id)]
        )

    def open_for(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """Open alerts of these keys; also reads, in the same round trip's worth of work, the
        last resolved alert of each key that has no open one (see ``last_resolved``)."""
        self._resolved, self._key_of = {}, {}
        if not pairs:
            return {}
        srcs, types = [p[0] for p in pairs], [p[1] for p in pairs]
        rows = self._rows(
            f"""SELECT {', '.join('a.' + c for c in ALERT_COLUMNS)} FROM alerts a
                JOIN unnest(?::text[], ?::text[]) AS k(source, type) USING (source, type)
                WHERE a.state IN ('active', 'acknowledged')""",
            [srcs, types],
        )
        out = {(r["source"], r["type"]): r for r in rows}
        last = self._rows(
            f"""SELECT DISTINCT ON (a.source, a.type) {', '.join('a.' + c for c in ALERT_COLUMNS)} FROM alerts a
                JOIN unnest(?::text[], ?::text[]) AS k(source, type) USING (source, type)
                WHERE a.state = 'resolved' ORDER BY a.source, a.type, a.resolved_at DESC""",
            [srcs, types],
        )
        self._resolved = dict.fromkeys(pairs)
        self._resolved.update({(r["source"], r["type"]): r for r in last})
        self._key_of = {int(r["id"]): (r["source"], r["type"]) for r in (*rows, *last)}
        return out

    def last_resolved(self, source: str, type_: str) -> dict | None:
        key = (source, type_)
        if key in self._resolved:
            row = self._resolved.pop(key)  # served once: after this the caller changes the key's alerts
            return dict(row) if row is not None else None
        return super().last_resolved(source, type_)

    def put_watch_state(self, con, name: str, watermark: datetime | None, blob: bytes | None, now: datetime) -> None:
        con.execute(
            "INSERT INTO watch_state (name, watermark, blob, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark, blob = EXCLUDED.blob, "
            "updated_at = EXCLUDED.updated_at",
            [name, watermark, blob, now],
        )

    def get_watch_state(self, name: str) -> tuple[datetime | None, bytes | None]:
        watermark, blob = super().get_watch_state(name)
        return watermark, (bytes(blob) if blob is not None else None)
