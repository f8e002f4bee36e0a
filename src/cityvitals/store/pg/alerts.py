"""Alerts, their event log and watch checkpoints on PostgreSQL.

The DuckDB repository's SQL is portable except where it leans on DuckDB's ``rowid`` (the
event log here has a ``seq`` column in insertion order) and ``INSERT OR REPLACE``.

New alerts, row updates and event-log lines are deferred inside a transaction
(``store.defer``) and sent together before the next read and before the commit: the alert
manager touches every open alert a batch observes, and one network round trip each would
make a storm of thousands of alerts cost seconds per watch run instead of milliseconds.
A run of them is sent as one set-based statement over ``unnest`` of column arrays, not a
statement per row: in server mode every watch run (one per ingest batch, several a
second) updates every alert still firing, and 200 firing alerts were 200 ``UPDATE`` statements a
run, much of PostgreSQL's share of the live path.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from functools import lru_cache

from cityvitals.store.duck.alerts import ALERT_COLUMNS, EVENT_COLUMNS, AlertRepo

# the column types of migration 0002, for the arrays a set-based statement unnests
_ALERT_TYPES = {
    "id": "bigint", "source": "text", "type": "text", "level": "text", "state": "text", "message": "text",
    "first_at": "timestamptz", "last_at": "timestamptz", "occurrences": "integer", "acknowledged_by": "text",
    "acknowledged_at": "timestamptz", "resolved_by": "text", "resolved_at": "timestamptz",
    "clear_since": "timestamptz", "escalation": "integer", "escalated_at": "timestamptz", "flapping": "boolean",
    "reopened": "integer",
}
_EVENT_TYPES = {"alert_id": "bigint", "ts": "timestamptz", "event": "text", "actor": "text", "level": "text",
                "note": "text"}


def _unnest(cols: tuple[str, ...], types: dict[str, str]) -> str:
    arrays = ", ".join(f"%s::{types[c]}[]" for c in cols)
    return f"unnest({arrays}) WITH ORDINALITY AS v({', '.join(cols)}, ord)"


@lru_cache(maxsize=None)
def _insert_many(table: str, cols: tuple[str, ...]):
    """A run of single-row INSERTs as one ``INSERT … SELECT`` in the run's order (the event
    log's ``seq`` keeps the order the rows were logged in)."""
    types = _ALERT_TYPES if table == "alerts" else _EVENT_TYPES
    sql = f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM {_unnest(cols, types)} ORDER BY ord"

    def run(cur, rows: list[list]) -> None:
        cur.execute(sql, [list(col) for col in zip(*rows)])

    return run


@lru_cache(maxsize=None)
def _update_many(cols: tuple[str, ...]):
    """A run of ``UPDATE alerts SET <cols> WHERE id = ?`` as one ``UPDATE … FROM unnest``.

    One statement changes a row at most once, so an alert updated twice in the run gets its
    last values: what the updates one after another leave, since they set the same columns."""
    sql = (f"UPDATE alerts AS a SET {', '.join(f'{c} = v.{c}' for c in cols)} "
           f"FROM {_unnest((*cols, 'id'), _ALERT_TYPES)} WHERE a.id = v.id")

    def run(cur, rows: list[list]) -> None:
        last = {row[-1]: row for row in rows}
        cur.execute(sql, [list(col) for col in zip(*last.values())])

    return run


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
        self._lz4: bool | None = None  # the server can compress values with lz4 (asked on first use)

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
        cols = ("id", *(c for c in ALERT_COLUMNS if c != "id" and c in row))
        self.store.defer(f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [alert_id, *(row[c] for c in cols[1:])], _insert_many("alerts", cols))
        return alert_id

    def update(self, con, alert_id: int, changes: dict) -> None:
        if not changes:
            return
        if changes.get("state") == "resolved":  # it becomes the key's last resolved alert: ask again
            self._resolved.pop(self._key_of.get(int(alert_id)), None)
        bad = set(changes) - set(ALERT_COLUMNS)
        if bad:
            raise ValueError(f"unknown alert columns: {sorted(bad)}")
        cols = tuple(changes)
        self.store.defer(f"UPDATE alerts SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                         [changes[c] for c in cols] + [int(alert_id)], _update_many(cols))

    def log(self, con, alert_id: int, at: datetime, event: str, actor: str | None = None,
            level: str | None = None, note: str | None = None) -> None:
        self.store.defer("INSERT INTO alert_events (alert_id, ts, event, actor, level, note) VALUES (?, ?, ?, ?, ?, ?)",
                         [int(alert_id), at, event, actor, level, note], _insert_many("alert_events", EVENT_COLUMNS),
                         log=True)

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
        """Write a checkpoint, compressed with lz4 where the server has it: the default pglz
        cost PostgreSQL about 120-180 ms of CPU for the watch's 14 MB every 10 s, lz4 under
        half of that (and it stores no more)."""
        if self._lz4 is None:
            self._lz4 = bool(con.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                                         "WHERE name = 'default_toast_compression'").fetchall()[0][0])
        if self._lz4:
            con.execute("SET LOCAL default_toast_compression = lz4")
        con.execute(
            "INSERT INTO watch_state (name, watermark, blob, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark, blob = EXCLUDED.blob, "
            "updated_at = EXCLUDED.updated_at",
            [name, watermark, blob, now],
        )

    def get_watch_state(self, name: str) -> tuple[datetime | None, bytes | None]:
        watermark, blob = super().get_watch_state(name)
        return watermark, (bytes(blob) if blob is not None else None)
