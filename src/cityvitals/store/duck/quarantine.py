"""Quarantine: every record the pipeline refused, with the reason, kept for replay.

Nothing is deleted. A replayed record that now passes is marked ``resolved`` in the
same transaction that stores its reading, so a replay can run any number of times
and each record lands at most once.
"""

from __future__ import annotations

import polars as pl


class QuarantineRepo:
    DDL = (
        "CREATE SEQUENCE IF NOT EXISTS quarantine_id_seq",
        """CREATE TABLE IF NOT EXISTS quarantine (
            id BIGINT PRIMARY KEY DEFAULT nextval('quarantine_id_seq'),
            received_at TIMESTAMPTZ NOT NULL,
            source VARCHAR,
            location VARCHAR,
            reason VARCHAR NOT NULL,
            message VARCHAR NOT NULL,
            raw VARCHAR,
            raw_truncated BOOLEAN DEFAULT false,
            attempts INTEGER DEFAULT 1,
            resolved_at TIMESTAMPTZ,
            resolution VARCHAR
        )""",
    )

    def __init__(self, store):
        self.store = store

    def frame(self, *, reason: str | None = None, include_resolved: bool = False, limit: int | None = None) -> pl.DataFrame:
        where, params = [], []
        if reason:
            where.append("reason = ?")
            params.append(reason)
        if not include_resolved:
            where.append("resolved_at IS NULL")
        sql = (
            "SELECT id, received_at, source, location, reason, message, raw, raw_truncated, attempts, resolved_at, resolution "
            "FROM quarantine"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.store.frame(sql, params)

    def counts(self, *, include_resolved: bool = False) -> dict[str, int]:
        sql = "SELECT reason, count(*) FROM quarantine"
        if not include_resolved:
            sql += " WHERE resolved_at IS NULL"
        with self.store.lock:
            rows = self.store.con.execute(sql + " GROUP BY reason ORDER BY reason").fetchall()
        return dict(rows)

    def status(self) -> dict:
        return {"quarantined": self.counts()}
