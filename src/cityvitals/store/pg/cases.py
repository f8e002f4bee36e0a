"""Cases on PostgreSQL: the DuckDB repository's reads are portable; the bulk writes differ.

The desk hands over Arrow batches whose columns can be all-null (a state nobody has
reached yet), which a temp table made from the Arrow types would hold as text that
PostgreSQL will not assign to a timestamp column. So inserts COPY straight into the
target (PostgreSQL parses each value as the column's type), and snapshot updates go
through a staging table shaped like ``cases`` itself. ``INSERT OR REPLACE`` becomes
``ON CONFLICT ... DO UPDATE``.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from cityvitals.store.duck.cases import EVENT_COLUMNS, CaseRepo
from cityvitals.store.pg._sql import copy_arrow

_SIDE_TABLES = ("case_reports", "case_reporters", "case_notices", "case_attachments")


def stage_like(con, table: pa.Table, target: str, name: str) -> None:
    """A temp table ``name`` with ``target``'s types for ``table``'s columns, loaded by COPY."""
    cols = ", ".join(table.column_names)
    con.raw(f"DROP TABLE IF EXISTS pg_temp.{name}")
    con.raw(f"CREATE TEMP TABLE {name} AS SELECT {cols} FROM {target} WITH NO DATA")
    copy_arrow(con, table, name, table.column_names)


class PgCaseRepo(CaseRepo):
    DDL = ()

    def next_ids(self, con, n: int, seq: str = "cases_id_seq") -> list[int]:
        if n <= 0:
            return []
        if seq not in ("cases_id_seq", "case_reporters_id_seq", "case_attachments_id_seq"):
            raise ValueError(seq)
        return [int(r[0]) for r in con.execute(f"SELECT nextval('{seq}') FROM generate_series(1, ?)", [n]).fetchall()]

    def insert_cases(self, con, table: pa.Table) -> None:
        copy_arrow(con, table, "cases", table.column_names)

    def update_states(self, con, table: pa.Table) -> None:
        """Write the fold's state for the cases in ``table`` (an ``id`` column plus STATE_COLUMNS)."""
        if table.num_rows == 0:
            return
        stage_like(con, table, "cases", "_upd_cases")
        try:
            sets = ", ".join(f"{c} = u.{c}" for c in table.column_names if c != "id")
            con.raw(f"UPDATE cases SET {sets} FROM _upd_cases u WHERE cases.id = u.id")
        finally:
            con.raw("DROP TABLE IF EXISTS pg_temp._upd_cases")

    def append_events(self, con, table: pa.Table) -> None:
        copy_arrow(con, table, "case_events", [c for c in EVENT_COLUMNS if c in table.column_names])

    def insert_rows(self, con, name: str, table: pa.Table) -> None:
        """Bulk insert into one of the side tables (case_reports, case_reporters, case_notices)."""
        if name not in _SIDE_TABLES:
            raise ValueError(name)
        copy_arrow(con, table, name, table.column_names)

    def notify_many(self, con, notices: pa.Table) -> None:
        if notices.num_rows == 0:
            return
        stage_like(con, notices, "case_notices", "_notices")
        try:
            con.raw("""INSERT INTO case_notices (case_id, ref, reporter_id, ts, kind, message)
                       SELECT r.case_id, r.ref, r.reporter_id, n.ts, n.kind, n.message
                       FROM _notices n JOIN case_reports r ON r.case_id = n.case_id""")
        finally:
            con.raw("DROP TABLE IF EXISTS pg_temp._notices")

    def upsert_departments(self, con, rows: list[dict]) -> None:
        if rows:
            con.executemany(
                "INSERT INTO departments (code, zh, en) VALUES (?, ?, ?) "
                "ON CONFLICT (code) DO UPDATE SET zh = EXCLUDED.zh, en = EXCLUDED.en",
                [[r["code"], r.get("zh"), r.get("en")] for r in rows])

    def upsert_crew(self, con, crew_id: str, department: str, name: str | None, lon: float | None,
                    lat: float | None, active: bool = True) -> None:
        con.execute("INSERT INTO crews (id, department, name, lon, lat, active) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET department = EXCLUDED.department, name = EXCLUDED.name, "
                    "lon = EXCLUDED.lon, lat = EXCLUDED.lat, active = EXCLUDED.active",
                    [crew_id, department, name, lon, lat, active])

    def put_watermark(self, con, name: str, watermark: str, now: datetime) -> None:
        con.execute("INSERT INTO dispose_state (name, watermark, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = EXCLUDED.updated_at",
                    [name, watermark, now])
