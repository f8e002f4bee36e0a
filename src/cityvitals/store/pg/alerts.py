"""Alerts, their event log and watch checkpoints on PostgreSQL.

The DuckDB repository's SQL is portable except where it leans on DuckDB's ``rowid`` (the
event log here has a ``seq`` column in insertion order) and ``INSERT OR REPLACE``.
"""

from __future__ import annotations

from datetime import datetime

from cityvitals.store.duck.alerts import EVENT_COLUMNS, AlertRepo


class PgAlertRepo(AlertRepo):
    DDL = ()

    def events(self, alert_id: int) -> list[dict]:
        return self._rows(
            f"SELECT {', '.join(EVENT_COLUMNS)} FROM alert_events WHERE alert_id = ? ORDER BY ts, seq", [int(alert_id)]
        )

    def open_for(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        if not pairs:
            return {}
        from cityvitals.store.duck.alerts import ALERT_COLUMNS

        rows = self._rows(
            f"""SELECT {', '.join('a.' + c for c in ALERT_COLUMNS)} FROM alerts a
                JOIN unnest(?::text[], ?::text[]) AS k(source, type) USING (source, type)
                WHERE a.state IN ('active', 'acknowledged')""",
            [[p[0] for p in pairs], [p[1] for p in pairs]],
        )
        return {(r["source"], r["type"]): r for r in rows}

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
