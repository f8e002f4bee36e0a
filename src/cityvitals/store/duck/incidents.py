"""Incidents: groups of alerts and reports with their ranked causes, members and history.

``incidents`` holds the current picture of each incident (type, state, severity, the first
cause and its share, affected units and area); ``incident_members`` the alerts and reports
in it; ``incident_causes`` the ranked candidates with their evidence (JSON list of plain
sentences); ``incident_history`` an append-only log (opened, grew, merged, closed), so a
duty officer can see how the picture changed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

INCIDENT_COLUMNS = (
    "id", "type", "state", "title", "severity", "level", "confidence", "top_cause", "start_at", "end_at",
    "opened_at", "updated_at", "closed_at", "merged_into", "units", "population", "area_wkb", "n_alerts", "n_reports",
)
OPEN = "open"


class IncidentRepo:
    DDL = (
        "CREATE SEQUENCE IF NOT EXISTS incidents_id_seq START 1",
        """CREATE TABLE IF NOT EXISTS incidents (
            id BIGINT PRIMARY KEY DEFAULT nextval('incidents_id_seq'),
            type VARCHAR NOT NULL,
            state VARCHAR NOT NULL CHECK (state IN ('open', 'closed', 'merged')),
            title VARCHAR,
            severity VARCHAR,
            level INTEGER,
            confidence DOUBLE,
            top_cause VARCHAR,
            start_at TIMESTAMPTZ,
            end_at TIMESTAMPTZ,
            opened_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ,
            closed_at TIMESTAMPTZ,
            merged_into BIGINT,
            units VARCHAR,
            population DOUBLE,
            area_wkb BLOB,
            n_alerts INTEGER,
            n_reports INTEGER
        )""",
        """CREATE TABLE IF NOT EXISTS incident_members (
            incident_id BIGINT NOT NULL,
            ref VARCHAR NOT NULL,
            origin VARCHAR NOT NULL,
            source VARCHAR,
            type VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS incident_causes (
            incident_id BIGINT NOT NULL,
            rank INTEGER NOT NULL,
            cause VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            name VARCHAR,
            asset_type VARCHAR,
            score DOUBLE,
            evidence VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS incident_history (
            incident_id BIGINT NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            event VARCHAR NOT NULL,
            note VARCHAR
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

    def list(self, *, state: str | None = "open", type_: str | None = None, limit: int = 100,
             before_id: int | None = None) -> list[dict]:
        where, params = [], []
        if state not in (None, "all"):
            where.append("state = ?")
            params.append(state)
        if type_:
            where.append("type = ?")
            params.append(type_)
        if before_id is not None:
            where.append("id < ?")
            params.append(int(before_id))
        cols = [c for c in INCIDENT_COLUMNS if c != "area_wkb"]
        sql = f"SELECT {', '.join(cols)} FROM incidents" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._rows(sql + " ORDER BY id DESC LIMIT ?", params + [int(limit)])
        for r in rows:
            r["units"] = json.loads(r["units"] or "[]")
        return rows

    def get(self, incident_id: int) -> dict | None:
        rows = self._rows(f"SELECT {', '.join(INCIDENT_COLUMNS)} FROM incidents WHERE id = ?", [int(incident_id)])
        if not rows:
            return None
        inc = rows[0]
        inc["units"] = json.loads(inc["units"] or "[]")
        inc["causes"] = self.causes(incident_id)
        inc["members"] = self._rows(
            "SELECT ref, origin, source, type FROM incident_members WHERE incident_id = ? ORDER BY origin, ref",
            [int(incident_id)])
        inc["history"] = self._rows(
            "SELECT ts, event, note FROM incident_history WHERE incident_id = ? ORDER BY ts, rowid", [int(incident_id)])
        return inc

    def causes(self, incident_id: int) -> list[dict]:
        rows = self._rows(
            "SELECT rank, cause, kind, name, asset_type, score, evidence FROM incident_causes WHERE incident_id = ? ORDER BY rank",
            [int(incident_id)])
        for r in rows:
            r["evidence"] = json.loads(r["evidence"] or "[]")
        return rows

    def current_members(self, since: datetime | None = None) -> tuple[dict[int, set[str]], set[int]]:
        """Member refs of incidents not merged away (ended after ``since``), and which are open.

        Used to match a new picture to the stored one, so a re-run keeps ids stable.
        """
        sql = """SELECT m.incident_id, m.ref, i.state FROM incident_members m JOIN incidents i ON i.id = m.incident_id
                 WHERE i.state <> 'merged'"""
        params: list = []
        if since is not None:
            sql += " AND (i.state = 'open' OR i.end_at >= ?)"
            params.append(since)
        out: dict[int, set[str]] = {}
        opened: set[int] = set()
        for r in self._rows(sql, params):
            out.setdefault(int(r["incident_id"]), set()).add(r["ref"])
            if r["state"] == "open":
                opened.add(int(r["incident_id"]))
        return out, opened

    def for_eval(self) -> list[dict]:
        """Incidents not merged away: alert ids of their members and their ranked cause ids."""
        inc = self._rows("SELECT id FROM incidents WHERE state <> 'merged' ORDER BY id", [])
        mem = self._rows("SELECT incident_id, ref FROM incident_members WHERE origin = 'alert'", [])
        cau = self._rows("SELECT incident_id, cause FROM incident_causes ORDER BY incident_id, rank", [])
        members: dict[int, list[int]] = {}
        for r in mem:
            members.setdefault(int(r["incident_id"]), []).append(int(r["ref"][1:]))
        causes: dict[int, list[str]] = {}
        for r in cau:
            causes.setdefault(int(r["incident_id"]), []).append(r["cause"])
        return [{"id": r["id"], "members": members.get(r["id"], []), "causes": causes.get(r["id"], [])} for r in inc]

    def count(self) -> int:
        return int(self._rows("SELECT count(*) AS n FROM incidents", [])[0]["n"])

    def status(self) -> dict:
        rows = self._rows("SELECT state, count(*) AS n FROM incidents GROUP BY state", [])
        by = {r["state"]: r["n"] for r in rows}
        return {"incidents_open": by.get("open", 0), "incidents_total": sum(by.values())}

    # ---- writes (callers hold a transaction) ----------------------------
    def insert(self, con, row: dict) -> int:
        cols = [c for c in INCIDENT_COLUMNS if c != "id" and c in row]
        cur = con.execute(
            f"INSERT INTO incidents ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) RETURNING id",
            [_cell(c, row[c]) for c in cols])
        return int(cur.fetchall()[0][0])

    def update(self, con, incident_id: int, changes: dict) -> None:
        if not changes:
            return
        bad = set(changes) - set(INCIDENT_COLUMNS)
        if bad:
            raise ValueError(f"unknown incident columns: {sorted(bad)}")
        cols = list(changes)
        con.execute(f"UPDATE incidents SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                    [_cell(c, changes[c]) for c in cols] + [int(incident_id)])

    def replace_members(self, con, incident_id: int, members: list[tuple[str, str, str, str]]) -> None:
        import pyarrow as pa

        con.execute("DELETE FROM incident_members WHERE incident_id = ?", [int(incident_id)])
        if members:
            t = pa.table({"incident_id": [int(incident_id)] * len(members), "ref": [m[0] for m in members],
                          "origin": [m[1] for m in members], "source": [m[2] for m in members],
                          "type": [m[3] for m in members]})
            con.register("_im", t)
            try:
                con.execute("INSERT INTO incident_members SELECT incident_id, ref, origin, source, type FROM _im")
            finally:
                con.unregister("_im")

    def replace_causes(self, con, incident_id: int, causes: list[dict]) -> None:
        con.execute("DELETE FROM incident_causes WHERE incident_id = ?", [int(incident_id)])
        if causes:
            con.executemany(
                "INSERT INTO incident_causes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [[int(incident_id), k + 1, c["cause"], c["kind"], c.get("name"), c.get("asset_type"), float(c["score"]),
                  json.dumps(c.get("evidence", []), ensure_ascii=False)] for k, c in enumerate(causes)])

    def log(self, con, incident_id: int, at: datetime, event: str, note: str | None = None) -> None:
        con.execute("INSERT INTO incident_history VALUES (?, ?, ?, ?)", [int(incident_id), at, event, note])


def _cell(col: str, v: Any) -> Any:
    if col == "units" and not isinstance(v, (str, type(None))):
        return json.dumps(list(v), ensure_ascii=False)
    return v
