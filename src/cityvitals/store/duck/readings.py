"""Readings: append-only, in each kind's canonical unit, idempotent on (sensor, ts).

There is no primary-key index: DuckDB's index would slow bulk loads several-fold, so
idempotence is enforced by the ingest step's anti-join against stored keys in the
batch's time range, inside the same transaction as the insert (the store has one
writer).
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl


class ReadingRepo:
    DDL = (
        """CREATE TABLE IF NOT EXISTS readings (
            sensor_id VARCHAR NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            value DOUBLE NOT NULL,
            quality VARCHAR,
            kind VARCHAR,
            unit_code VARCHAR,
            ingested_at TIMESTAMPTZ NOT NULL
        )""",
    )

    def __init__(self, store):
        self.store = store

    def frame(
        self,
        *,
        sensor_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        kind: str | None = None,
        unit_codes: list[str] | None = None,
    ) -> pl.DataFrame:
        """Readings in [start, end), optionally for one sensor, kind or set of units."""
        where, params = [], []
        if sensor_id is not None:
            where.append("sensor_id = ?")
            params.append(sensor_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if start is not None:
            where.append("ts >= ?")
            params.append(start)
        if end is not None:
            where.append("ts < ?")
            params.append(end)
        if unit_codes is not None:
            where.append("list_contains(?, unit_code)")
            params.append(list(unit_codes))
        sql = "SELECT sensor_id, ts, value, quality, kind, unit_code FROM readings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self.store.frame(sql + " ORDER BY sensor_id, ts", params)

    def since(self, ingested_after: datetime | None):
        """Readings ingested after a watermark as Arrow (sensor_id, t = epoch seconds, value,
        ingested_at), in time order: what a stage that follows the ingest reads (watch)."""
        return self.store.arrow(
            "SELECT sensor_id, epoch(ts)::BIGINT AS t, value, ingested_at FROM readings "
            "WHERE ingested_at > ? ORDER BY ts, sensor_id",
            [ingested_after or datetime(1, 1, 1, tzinfo=timezone.utc)],
        )

    def count(self) -> int:
        with self.store.lock:
            return self.store.con.execute("SELECT count(*) FROM readings").fetchall()[0][0]

    def status(self) -> dict:
        with self.store.lock:
            n, lo, hi = self.store.con.execute("SELECT count(*), min(ts), max(ts) FROM readings").fetchall()[0]
        return {
            "readings": n,
            "readings_from": lo.isoformat() if lo else None,
            "readings_to": hi.isoformat() if hi else None,
        }
