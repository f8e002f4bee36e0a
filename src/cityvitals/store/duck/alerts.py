"""Alerts and their event log: one open alert per (source, type), every change logged.

An alert is *open* while its state is ``active`` or ``acknowledged``; DuckDB has no
partial unique index, so "one open alert per (source, type)" is kept by the writer
(``cityvitals.watch.alerts``), which looks the open alert up and writes in one
transaction under the store's single-writer lock. The event log is append-only: who did
what and when, so the history of an alert can be replayed.

Also here: ``watch_state``, the watermark and detector checkpoints of ``watch run``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

ALERT_COLUMNS = (
    "id", "source", "type", "level", "state", "message", "first_at", "last_at", "occurrences",
    "acknowledged_by", "acknowledged_at", "resolved_by", "resolved_at", "clear_since",
    "escalation", "escalated_at", "flapping", "reopened",
)
EVENT_COLUMNS = ("alert_id", "ts", "event", "actor", "level", "note")
OPEN_STATES = ("active", "acknowledged")


class AlertRepo:
    DDL = (
        "CREATE SEQUENCE IF NOT EXISTS alerts_id_seq START 1",
        """CREATE TABLE IF NOT EXISTS alerts (
            id BIGINT PRIMARY KEY DEFAULT nextval('alerts_id_seq'),
            source VARCHAR NOT NULL,
            type VARCHAR NOT NULL,
            level VARCHAR NOT NULL,
            state VARCHAR NOT NULL CHECK (state IN ('active', 'acknowledged', 'resolved')),
            message VARCHAR,
            first_at TIMESTAMPTZ NOT NULL,
            last_at TIMESTAMPTZ NOT NULL,
            occurrences INTEGER NOT NULL DEFAULT 1,
            acknowledged_by VARCHAR,
            acknowledged_at TIMESTAMPTZ,
            resolved_by VARCHAR,
            resolved_at TIMESTAMPTZ,
            clear_since TIMESTAMPTZ,
            escalation INTEGER NOT NULL DEFAULT 0,
            escalated_at TIMESTAMPTZ,
            flapping BOOLEAN NOT NULL DEFAULT FALSE,
            reopened INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE IF NOT EXISTS alert_events (
            alert_id BIGINT NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            event VARCHAR NOT NULL,
            actor VARCHAR,
            level VARCHAR,
            note VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS watch_state (
            name VARCHAR PRIMARY KEY,
            watermark TIMESTAMPTZ,
            blob BLOB,
            updated_at TIMESTAMPTZ
        )""",
    )

    def __init__(self, store):
        self.store = store

    # ---- reads ----------------------------------------------------------
    def _rows(self, sql: str, params: list[Any]) -> list[dict]:
        with self.store.lock:
            cur = self.store.con.execute(sql, params)
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def get(self, alert_id: int) -> dict | None:
        rows = self._rows(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id = ?", [int(alert_id)])
        return rows[0] if rows else None

    def open_for(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """Open alerts for the given (source, type) pairs, keyed by the pair."""
        if not pairs:
            return {}
        srcs = [p[0] for p in pairs]
        types = [p[1] for p in pairs]
        rows = self._rows(
            f"""SELECT {', '.join('a.' + c for c in ALERT_COLUMNS)} FROM alerts a
                JOIN (SELECT unnest(?) AS source, unnest(?) AS type) k USING (source, type)
                WHERE a.state IN ('active', 'acknowledged')""",
            [srcs, types],
        )
        return {(r["source"], r["type"]): r for r in rows}

    def open_alerts(self) -> list[dict]:
        return self._rows(
            f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE state IN ('active', 'acknowledged') ORDER BY id", []
        )

    def last_resolved(self, source: str, type_: str) -> dict | None:
        rows = self._rows(
            f"""SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE source = ? AND type = ? AND state = 'resolved'
                ORDER BY resolved_at DESC LIMIT 1""",
            [source, type_],
        )
        return rows[0] if rows else None

    def list(
        self, *, state: str | None = None, level: str | None = None, source: str | None = None,
        type_: str | None = None, limit: int = 100,
    ) -> list[dict]:
        where, params = [], []
        if state == "open":
            where.append("state IN ('active', 'acknowledged')")
        elif state is not None and state != "all":
            where.append("state = ?")
            params.append(state)
        for col, val in (("level", level), ("source", source), ("type", type_)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        sql = f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY last_at DESC, id DESC LIMIT ?"
        params.append(int(limit))
        return self._rows(sql, params)

    def events(self, alert_id: int) -> list[dict]:
        return self._rows(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM alert_events WHERE alert_id = ? ORDER BY ts, rowid", [int(alert_id)]
        )

    def level_marks(self) -> dict[int, tuple[str, datetime | None]]:
        """Alert id -> (the highest level it reached, when it last fell back to attention).

        Its ``level`` is the latest, which falls back before it resolves: diagnose weighs an
        alert by what it reached, and reads how fast a ponding recedes from its fall.
        """
        rows = self._rows(
            """SELECT alert_id, max(CASE level WHEN 'alarm' THEN 3 WHEN 'warning' THEN 2 WHEN 'attention' THEN 1
                ELSE 0 END) AS peak, max(CASE WHEN event = 'level' AND level = 'attention' THEN ts END) AS fell_at
                FROM alert_events GROUP BY alert_id""", [])
        names = {1: "attention", 2: "warning", 3: "alarm"}
        return {int(r["alert_id"]): (names[int(r["peak"])], r["fell_at"]) for r in rows if int(r["peak"]) in names}

    def count(self) -> int:
        return int(self._rows("SELECT count(*) AS n FROM alerts", [])[0]["n"])

    def status(self) -> dict:
        rows = self._rows("SELECT state, count(*) AS n FROM alerts GROUP BY state", [])
        by = {r["state"]: r["n"] for r in rows}
        return {"alerts_open": by.get("active", 0) + by.get("acknowledged", 0), "alerts_total": sum(by.values())}

    # ---- writes (callers hold a transaction) ----------------------------
    def insert(self, con, row: dict) -> int:
        cols = [c for c in ALERT_COLUMNS if c != "id" and c in row]
        cur = con.execute(
            f"INSERT INTO alerts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) RETURNING id",
            [row[c] for c in cols],
        )
        return int(cur.fetchall()[0][0])  # fetch all: DuckDB keeps a half-read result open

    def update(self, con, alert_id: int, changes: dict) -> None:
        if not changes:
            return
        bad = set(changes) - set(ALERT_COLUMNS)
        if bad:
            raise ValueError(f"unknown alert columns: {sorted(bad)}")
        cols = list(changes)
        con.execute(
            f"UPDATE alerts SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
            [changes[c] for c in cols] + [int(alert_id)],
        )

    def log(self, con, alert_id: int, at: datetime, event: str, actor: str | None = None,
            level: str | None = None, note: str | None = None) -> None:
        con.execute(
            "INSERT INTO alert_events (alert_id, ts, event, actor, level, note) VALUES (?, ?, ?, ?, ?, ?)",
            [int(alert_id), at, event, actor, level, note],
        )

    # ---- watch run state ------------------------------------------------
    def get_watch_state(self, name: str) -> tuple[datetime | None, bytes | None]:
        rows = self._rows("SELECT watermark, blob FROM watch_state WHERE name = ?", [name])
        return (rows[0]["watermark"], rows[0]["blob"]) if rows else (None, None)

    def put_watch_state(self, con, name: str, watermark: datetime | None, blob: bytes | None, now: datetime) -> None:
        con.execute(
            "INSERT OR REPLACE INTO watch_state (name, watermark, blob, updated_at) VALUES (?, ?, ?, ?)",
            [name, watermark, blob, now],
        )
