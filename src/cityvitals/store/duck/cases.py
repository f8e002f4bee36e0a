"""Cases: the snapshot table, the append-only event log, reports, reporters, attachments.

The event log (``case_events``) is the truth; ``cases`` holds each case's current state
as the workflow's fold left it (``cityvitals.dispose.workflow.fold``), so lists, filters
and the Open311 request list need no replay. Only the desk (``cityvitals.dispose.desk``)
writes, in batches (Arrow) inside one transaction: log rows and snapshot rows never
disagree.

Reporters' personal data (name, phone, email, ID number) lives in ``case_reporters``,
and the raw report text (which callers fill with names and numbers) in
``case_reports.text``; ``cases.description`` holds only the desensitised text. Public
outputs (Open311, open data) read ``cases`` and never join the other two.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

# Snapshot columns the fold owns (CaseState fields), then the case's fixed facts.
STATE_COLUMNS = (
    "state", "category", "priority", "source", "reported_at", "updated_at", "verified", "inspector", "filed_at",
    "department", "crew", "dispatched_at", "handled_at", "closed_at", "limit_h", "natural_clock", "extra_h", "paused_h",
    "pause_started", "due_at", "suspended_from", "escalation", "returns", "reworks", "extensions", "on_time", "seq",
)
FACT_COLUMNS = ("id", "ref", "channel", "description", "lon", "lat", "unit_code", "region_code", "address",
                "media_url", "token", "codes_version", "reports")
CASE_COLUMNS = FACT_COLUMNS + STATE_COLUMNS
EVENT_COLUMNS = ("case_id", "seq", "ts", "action", "actor", "role", "from_state", "to_state", "data")
REPORTER_COLUMNS = ("id", "name", "phone", "email", "id_number", "enterprise", "account_id", "device_id")

_TS = "TIMESTAMPTZ"


class CaseRepo:
    DDL = (
        "CREATE SEQUENCE IF NOT EXISTS cases_id_seq START 1",
        "CREATE SEQUENCE IF NOT EXISTS case_reporters_id_seq START 1",
        "CREATE SEQUENCE IF NOT EXISTS case_attachments_id_seq START 1",
        f"""CREATE TABLE IF NOT EXISTS cases (
            id BIGINT PRIMARY KEY, ref VARCHAR, channel VARCHAR, description VARCHAR,
            lon DOUBLE, lat DOUBLE, unit_code VARCHAR, region_code VARCHAR, address VARCHAR, media_url VARCHAR,
            token VARCHAR, codes_version VARCHAR, reports INTEGER NOT NULL DEFAULT 1,
            state VARCHAR NOT NULL, category VARCHAR NOT NULL, priority VARCHAR NOT NULL, source VARCHAR NOT NULL,
            reported_at {_TS} NOT NULL, updated_at {_TS} NOT NULL, verified BOOLEAN, inspector VARCHAR,
            filed_at {_TS}, department VARCHAR, crew VARCHAR, dispatched_at {_TS}, handled_at {_TS},
            closed_at {_TS}, limit_h DOUBLE, natural_clock BOOLEAN, extra_h DOUBLE, paused_h DOUBLE,
            pause_started {_TS}, due_at {_TS}, suspended_from VARCHAR, escalation INTEGER, returns INTEGER,
            reworks INTEGER, extensions INTEGER, on_time BOOLEAN, seq INTEGER
        )""",
        f"""CREATE TABLE IF NOT EXISTS case_events (
            case_id BIGINT NOT NULL, seq INTEGER NOT NULL, ts {_TS} NOT NULL, action VARCHAR NOT NULL,
            actor VARCHAR, role VARCHAR, from_state VARCHAR, to_state VARCHAR, data VARCHAR
        )""",
        f"""CREATE TABLE IF NOT EXISTS case_reports (
            ref VARCHAR, case_id BIGINT NOT NULL, reporter_id BIGINT, reported_at {_TS} NOT NULL,
            channel VARCHAR, text VARCHAR, attached BOOLEAN NOT NULL DEFAULT FALSE
        )""",
        """CREATE TABLE IF NOT EXISTS case_reporters (
            id BIGINT PRIMARY KEY, name VARCHAR, phone VARCHAR, email VARCHAR, id_number VARCHAR,
            enterprise VARCHAR, account_id VARCHAR, device_id VARCHAR
        )""",
        f"""CREATE TABLE IF NOT EXISTS case_attachments (
            id BIGINT PRIMARY KEY, case_id BIGINT NOT NULL, stage VARCHAR, sha256 VARCHAR, mime VARCHAR,
            size BIGINT, path VARCHAR, added_at {_TS}, added_by VARCHAR
        )""",
        f"""CREATE TABLE IF NOT EXISTS case_notices (
            case_id BIGINT NOT NULL, ref VARCHAR, reporter_id BIGINT, ts {_TS} NOT NULL, kind VARCHAR, message VARCHAR
        )""",
        """CREATE TABLE IF NOT EXISTS departments (code VARCHAR PRIMARY KEY, zh VARCHAR, en VARCHAR)""",
        """CREATE TABLE IF NOT EXISTS crews (
            id VARCHAR PRIMARY KEY, department VARCHAR NOT NULL, name VARCHAR, lon DOUBLE, lat DOUBLE,
            active BOOLEAN NOT NULL DEFAULT TRUE
        )""",
        f"""CREATE TABLE IF NOT EXISTS dispose_state (name VARCHAR PRIMARY KEY, watermark VARCHAR, updated_at {_TS})""",
    )

    def __init__(self, store):
        self.store = store

    # ---- reads ----------------------------------------------------------
    def _rows(self, sql: str, params: list[Any] | None = None) -> list[dict]:
        with self.store.lock:
            cur = self.store.con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    def get(self, case_id: int) -> dict | None:
        rows = self._rows(f"SELECT {', '.join(CASE_COLUMNS)} FROM cases WHERE id = ?", [int(case_id)])
        return rows[0] if rows else None

    def get_many(self, ids: list[int]) -> dict[int, dict]:
        """Snapshots by id. The id range lets DuckDB skip row groups by their min/max (ids grow
        with time, so a batch of recent cases touches a few row groups of a million-row table)."""
        if not ids:
            return {}
        ids = [int(i) for i in ids]
        rows = self._rows(f"SELECT {', '.join(CASE_COLUMNS)} FROM cases WHERE id BETWEEN ? AND ? "
                          "AND id IN (SELECT unnest(?::BIGINT[]))", [min(ids), max(ids), ids])
        return {r["id"]: r for r in rows}

    def get_states(self, ids: list[int]) -> dict[int, dict]:
        """What the desk needs to act on cases: the fold's columns plus id, unit and position."""
        if not ids:
            return {}
        ids = [int(i) for i in ids]
        cols = ("id", "unit_code", "lon", "lat") + STATE_COLUMNS
        rows = self._rows(f"SELECT {', '.join(cols)} FROM cases WHERE id BETWEEN ? AND ? "
                          "AND id IN (SELECT unnest(?::BIGINT[]))", [min(ids), max(ids), ids])
        return {r["id"]: r for r in rows}

    def case_ids_for_refs(self, refs: list[str]) -> dict[str, int]:
        if not refs:
            return {}
        rows = self._rows("SELECT ref, min(case_id) AS case_id FROM case_reports "
                          "WHERE ref IN (SELECT unnest(?::VARCHAR[])) GROUP BY ref", [refs])
        return {r["ref"]: int(r["case_id"]) for r in rows}

    def by_ref(self, ref: str) -> dict | None:
        rows = self._rows("SELECT case_id FROM case_reports WHERE ref = ? LIMIT 1", [ref])
        return self.get(rows[0]["case_id"]) if rows else None

    def refs_known(self, refs: list[str]) -> set[str]:
        if not refs:
            return set()
        return {r["ref"] for r in self._rows("SELECT ref FROM case_reports WHERE list_contains(?, ref)", [refs])}

    def by_token(self, token: str) -> dict | None:
        rows = self._rows("SELECT id, token FROM cases WHERE token = ?", [token])
        return rows[0] if rows else None

    def list(self, *, state: str | None = None, department: str | None = None, category: str | None = None,
             region: str | None = None, unit_codes: list[str] | None = None, before_id: int | None = None,
             limit: int = 100) -> list[dict]:
        from cityvitals.dispose.workflow import OPEN

        where, params = [], []
        if state == "open":
            where.append("list_contains(?, state)")
            params.append(list(OPEN))
        elif state == "overdue":
            where.append("state IN ('dispatched', 'in_progress', 'returned', 'rework') AND escalation > 0")
        elif state not in (None, "all"):
            where.append("state = ?")
            params.append(state)
        for col, val in (("department", department), ("category", category), ("region_code", region)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if unit_codes is not None:
            where.append("list_contains(?, unit_code)")
            params.append(unit_codes)
        if before_id is not None:
            where.append("id < ?")
            params.append(int(before_id))
        sql = f"SELECT {', '.join(CASE_COLUMNS)} FROM cases"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._rows(sql + " ORDER BY id DESC LIMIT ?", params + [int(limit)])

    def events(self, case_id: int) -> list[dict]:
        return self._rows(f"SELECT {', '.join(EVENT_COLUMNS)} FROM case_events WHERE case_id = ? ORDER BY seq",
                          [int(case_id)])

    def open_candidates(self, category: str, since: datetime, lon0: float, lat0: float, lon1: float,
                        lat1: float) -> list[dict]:
        """Open cases of ``category`` reported since ``since`` inside a lon/lat box (duplicate search)."""
        from cityvitals.dispose.workflow import OPEN

        return self._rows(
            """SELECT id, lon, lat, reported_at, state FROM cases
               WHERE category = ? AND reported_at >= ? AND list_contains(?, state)
                 AND lon BETWEEN ? AND ? AND lat BETWEEN ? AND ? ORDER BY reported_at""",
            [category, since, list(OPEN), lon0, lon1, lat0, lat1],
        )

    def duplicate_candidates(self, con, probes: pa.Table) -> list[dict]:
        """Open cases near each probe, in one join (the batch's duplicate search).

        ``probes`` has ``i, category, since, lon0, lon1, lat0, lat1`` (one box per report);
        returns ``i, id, lon, lat`` for every open case of the same category reported since
        ``since`` inside the box. The outer bounds (categories, earliest ``since``, the box
        around all probes) let the scan skip most of a large table before the join."""
        from cityvitals.dispose.workflow import OPEN

        if probes.num_rows == 0:
            return []
        cats = sorted(set(probes.column("category").to_pylist()))
        since = min(probes.column("since").to_pylist())
        lon0, lon1 = min(probes.column("lon0").to_pylist()), max(probes.column("lon1").to_pylist())
        lat0, lat1 = min(probes.column("lat0").to_pylist()), max(probes.column("lat1").to_pylist())
        con.register("_dup_probes", probes)
        try:
            cur = con.execute(
                """WITH c AS (SELECT id, category, reported_at, lon, lat FROM cases
                              WHERE reported_at >= ? AND lon BETWEEN ? AND ? AND lat BETWEEN ? AND ?
                                AND category IN (SELECT unnest(?::VARCHAR[]))
                                AND state IN (SELECT unnest(?::VARCHAR[])))
                   SELECT p.i, c.id, c.lon, c.lat FROM _dup_probes p JOIN c
                     ON c.category = p.category AND c.reported_at >= p.since
                    AND c.lon BETWEEN p.lon0 AND p.lon1 AND c.lat BETWEEN p.lat0 AND p.lat1""",
                [since, lon0, lon1, lat0, lat1, cats, list(OPEN)])
            return [{"i": r[0], "id": r[1], "lon": r[2], "lat": r[3]} for r in cur.fetchall()]
        finally:
            con.unregister("_dup_probes")

    def crew_loads(self, departments: list[str]) -> list[dict]:
        """Active crews of ``departments`` with their open workload, in one grouped join."""
        from cityvitals.dispose.workflow import OPEN

        if not departments:
            return []
        return self._rows(
            """SELECT c.id, c.department, c.lon, c.lat, count(k.id) AS workload
               FROM crews c LEFT JOIN (SELECT id, crew FROM cases WHERE crew IS NOT NULL
                                        AND state IN (SELECT unnest(?::VARCHAR[]))) k ON k.crew = c.id
               WHERE c.active AND c.department IN (SELECT unnest(?::VARCHAR[]))
               GROUP BY c.id, c.department, c.lon, c.lat ORDER BY c.id""",
            [list(OPEN), list(departments)])

    def has_crews(self) -> bool:
        return bool(self._rows("SELECT 1 AS x FROM crews WHERE active LIMIT 1"))

    def reports(self, case_id: int) -> list[dict]:
        """The reports attached to a case with their raw text (case workers only)."""
        return self._rows("SELECT ref, reporter_id, reported_at, channel, text, attached FROM case_reports "
                          "WHERE case_id = ? ORDER BY reported_at", [int(case_id)])

    def reporters(self, case_id: int) -> list[dict]:
        """Personal data of everyone who reported the case (case workers only)."""
        return self._rows(
            f"""SELECT r.ref, {', '.join('p.' + c for c in REPORTER_COLUMNS)} FROM case_reports r
                JOIN case_reporters p ON p.id = r.reporter_id WHERE r.case_id = ? ORDER BY r.reported_at""",
            [int(case_id)])

    def notices(self, case_id: int | None = None) -> list[dict]:
        if case_id is None:
            return self._rows("SELECT * FROM case_notices ORDER BY ts, case_id")
        return self._rows("SELECT * FROM case_notices WHERE case_id = ? ORDER BY ts", [int(case_id)])

    def attachments(self, case_id: int) -> list[dict]:
        return self._rows("SELECT id, case_id, stage, sha256, mime, size, path, added_at, added_by "
                          "FROM case_attachments WHERE case_id = ? ORDER BY id", [int(case_id)])

    def departments(self) -> list[dict]:
        return self._rows("SELECT code, zh, en FROM departments ORDER BY code")

    def crews(self, department: str | None = None) -> list[dict]:
        """Crews with their current workload (open cases assigned to them)."""
        from cityvitals.dispose.workflow import OPEN

        sql = """SELECT c.id, c.department, c.name, c.lon, c.lat, c.active,
                        (SELECT count(*) FROM cases k WHERE k.crew = c.id AND list_contains(?, k.state)) AS workload
                 FROM crews c"""
        params: list[Any] = [list(OPEN)]
        if department is not None:
            sql += " WHERE c.department = ?"
            params.append(department)
        return self._rows(sql + " ORDER BY c.id", params)

    def overdue_candidates(self, now: datetime) -> list[dict]:
        return self._rows(
            f"""SELECT {', '.join(CASE_COLUMNS)} FROM cases
                WHERE state IN ('dispatched', 'in_progress', 'returned', 'rework') AND due_at < ? ORDER BY id""",
            [now])

    def count(self) -> int:
        return int(self._rows("SELECT count(*) AS n FROM cases")[0]["n"])

    def status(self) -> dict:
        from cityvitals.dispose.workflow import OPEN

        r = self._rows("SELECT count(*) AS n, count(*) FILTER (WHERE list_contains(?, state)) AS o FROM cases",
                       [list(OPEN)])[0]
        return {"cases_total": int(r["n"]), "cases_open": int(r["o"])}

    def get_watermark(self, name: str) -> str | None:
        rows = self._rows("SELECT watermark FROM dispose_state WHERE name = ?", [name])
        return rows[0]["watermark"] if rows else None

    # ---- writes (callers hold store.transaction()) ----------------------
    def next_ids(self, con, n: int, seq: str = "cases_id_seq") -> list[int]:
        if n <= 0:
            return []
        return [int(r[0]) for r in con.execute(f"SELECT nextval('{seq}') FROM range(?)", [n]).fetchall()]

    def insert_cases(self, con, table: pa.Table) -> None:
        con.register("_new_cases", table)
        try:
            cols = ", ".join(table.column_names)
            con.execute(f"INSERT INTO cases ({cols}) SELECT {cols} FROM _new_cases")
        finally:
            con.unregister("_new_cases")

    def update_states(self, con, table: pa.Table) -> None:
        """Write the fold's state for the cases in ``table`` (an ``id`` column plus STATE_COLUMNS)."""
        con.register("_upd_cases", table)
        try:
            sets = ", ".join(f"{c} = u.{c}" for c in table.column_names if c != "id")
            ids = table.column("id")
            lo, hi = pa.compute.min(ids).as_py(), pa.compute.max(ids).as_py()
            # the id range prunes row groups of the target before the join
            con.execute(f"UPDATE cases SET {sets} FROM _upd_cases u WHERE cases.id = u.id "
                        "AND cases.id BETWEEN ? AND ?", [lo, hi])
        finally:
            con.unregister("_upd_cases")

    def append_events(self, con, table: pa.Table) -> None:
        con.register("_new_events", table)
        try:
            con.execute(f"INSERT INTO case_events ({', '.join(EVENT_COLUMNS)}) "
                        f"SELECT {', '.join(EVENT_COLUMNS)} FROM _new_events")
        finally:
            con.unregister("_new_events")

    def insert_rows(self, con, name: str, table: pa.Table) -> None:
        """Bulk insert into one of the side tables (case_reports, case_reporters, case_notices)."""
        if name not in ("case_reports", "case_reporters", "case_notices", "case_attachments"):
            raise ValueError(name)
        con.register("_side", table)
        try:
            cols = ", ".join(table.column_names)
            con.execute(f"INSERT INTO {name} ({cols}) SELECT {cols} FROM _side")
        finally:
            con.unregister("_side")

    def add_reports_count(self, con, counts: dict[int, int]) -> None:
        if counts:
            con.execute("UPDATE cases SET reports = reports + k.n FROM (SELECT unnest(?) AS id, unnest(?) AS n) k "
                        "WHERE cases.id = k.id", [list(counts), list(counts.values())])

    def notify_reporters(self, con, case_ids: list[int], ts: datetime, kind: str, message: str) -> None:
        """Queue a notice for every report attached to each case (all reporters are told)."""
        if case_ids:
            con.execute("""INSERT INTO case_notices (case_id, ref, reporter_id, ts, kind, message)
                           SELECT case_id, ref, reporter_id, ?, ?, ? FROM case_reports
                           WHERE list_contains(?, case_id)""", [ts, kind, message, [int(i) for i in case_ids]])

    def notify_many(self, con, notices: pa.Table) -> None:
        """Notices for many cases at once: ``notices`` has case_id, ts, kind, message; every
        report attached to each case gets one (one join, not one statement per case)."""
        if notices.num_rows == 0:
            return
        con.register("_notices", notices)
        try:
            con.execute("""INSERT INTO case_notices (case_id, ref, reporter_id, ts, kind, message)
                           SELECT r.case_id, r.ref, r.reporter_id, n.ts, n.kind, n.message
                           FROM _notices n JOIN case_reports r ON r.case_id = n.case_id""")
        finally:
            con.unregister("_notices")

    def upsert_departments(self, con, rows: list[dict]) -> None:
        for r in rows:
            con.execute("INSERT OR REPLACE INTO departments (code, zh, en) VALUES (?, ?, ?)",
                        [r["code"], r.get("zh"), r.get("en")])

    def upsert_crew(self, con, crew_id: str, department: str, name: str | None, lon: float | None,
                    lat: float | None, active: bool = True) -> None:
        con.execute("INSERT OR REPLACE INTO crews (id, department, name, lon, lat, active) VALUES (?, ?, ?, ?, ?, ?)",
                    [crew_id, department, name, lon, lat, active])

    def set_token(self, con, case_id: int, token: str) -> None:
        con.execute("UPDATE cases SET token = ? WHERE id = ?", [token, int(case_id)])

    def put_watermark(self, con, name: str, watermark: str, now: datetime) -> None:
        con.execute("INSERT OR REPLACE INTO dispose_state (name, watermark, updated_at) VALUES (?, ?, ?)",
                    [name, watermark, now])
