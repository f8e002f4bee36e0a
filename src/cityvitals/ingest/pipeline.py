"""Run batches through validation into the store: the ingest stage's edge.

One batch is one transaction: its accepted readings, its quarantined records and its
counts become durable together, or not at all. Callers that acknowledge to a sender
(HTTP, MQTT) do so only after ``ingest_*`` returns.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

import orjson
import pyarrow as pa

from cityvitals.ingest.lines import LineBatch, Reject
from cityvitals.ingest.validate import DECODE_JSON, DEDUPE_SQL, RAW_JSON, decode_columns, validate_sql
from cityvitals.registry.kinds import load_kinds

Clock = Callable[[], datetime]

NOT_REPLAYABLE = ("too_large", "bad_encoding")
"""Reasons whose raw record was cut or escaped when kept; replaying them cannot succeed."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class IngestReport:
    """What one run did. ``quarantined`` maps reason code to count."""

    accepted: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def add_quarantined(self, counts: dict[str, int]) -> None:
        for reason, n in counts.items():
            if n:
                self.quarantined[reason] = self.quarantined.get(reason, 0) + int(n)

    def merge(self, other: "IngestReport") -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.records += other.records
        self.bytes += other.bytes
        self.add_quarantined(other.quarantined)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def to_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": dict(sorted(self.quarantined.items())),
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


class Ingestor:
    """Validates and stores batches against one store; holds the kind tables it joins."""

    def __init__(self, store, *, clock: Clock = utc_now, future_tolerance_s: int = 300, kinds=None):
        self.store = store
        self.clock = clock
        self.future_tolerance_s = int(future_tolerance_s)
        kinds = kinds or load_kinds()
        with store.lock:
            con = store.con
            con.register("_kind_conv_src", kinds.conversions_table())
            con.register("_kind_range_src", kinds.ranges_table())
            con.execute("CREATE OR REPLACE TEMP TABLE _kind_conv AS SELECT * FROM _kind_conv_src")
            con.execute("CREATE OR REPLACE TEMP TABLE _kind_range AS SELECT * FROM _kind_range_src")
            con.unregister("_kind_conv_src")
            con.unregister("_kind_range_src")
        self._sensors_version = None

    def _refresh_sensors(self) -> None:
        """Rebuild the per-sensor lookup when the registry changed since the last batch."""
        version = self.store.sensors.version
        if version == self._sensors_version:
            return
        with self.store.lock:
            self.store.con.execute(
                """CREATE OR REPLACE TEMP TABLE _sensor_ready AS
                   SELECT s.id, s.kind, s.unit, s.unit_code, c.factor, c."offset",
                          r.canonical_unit, r.min_value, r.max_value
                   FROM sensors s
                   LEFT JOIN _kind_conv c ON c.kind = s.kind AND c.unit = s.unit
                   LEFT JOIN _kind_range r ON r.kind = s.kind"""
            )
        self._sensors_version = version

    # -- entry points -------------------------------------------------------------
    def ingest_lines(self, batch: LineBatch, *, source: str, location_kind: str = "line") -> IngestReport:
        """A batch of JSON text records (one per line) plus the rejects found while splitting."""
        raw = pa.table({"seq": pa.array(batch.line_numbers, pa.int64()), "raw": batch.lines})
        report = self._run(raw, DECODE_JSON, RAW_JSON, batch.rejects, source=source, location_kind=location_kind)
        report.bytes = batch.nbytes
        return report

    def ingest_table(self, table: pa.Table, *, source: str, first_row: int = 1, rejects: list[Reject] | None = None,
                     location_kind: str = "row") -> IngestReport:
        """A columnar batch with the reading columns (sensor_id, ts, value[, unit, quality])."""
        seq = pa.array(range(first_row, first_row + table.num_rows), pa.int64())
        return self.ingest_numbered(table.append_column("seq", seq), source=source, rejects=rejects,
                                    location_kind=location_kind)

    def ingest_numbered(self, table: pa.Table, *, source: str, rejects: list[Reject] | None = None,
                        location_kind: str = "row") -> IngestReport:
        """A columnar batch that carries its own ``seq`` (line or row number in the source)."""
        decode, raw = decode_columns(set(table.column_names))
        return self._run(table, decode, raw, rejects or [], source=source, location_kind=location_kind)

    def ingest_records(self, records: Iterable[dict], *, source: str = "api") -> IngestReport:
        """Python objects, e.g. from an HTTP body: each is validated like a JSON line."""
        lines, numbers, rejects = [], [], []
        for i, rec in enumerate(records, start=1):
            try:
                lines.append(orjson.dumps(rec).decode())
                numbers.append(i)
            except (TypeError, orjson.JSONEncodeError) as exc:
                rejects.append(Reject(i, "malformed", f"the record cannot be encoded as JSON: {exc}", repr(rec)[:4096]))
        batch = LineBatch(pa.array(lines, pa.string()), pa.array(numbers, pa.int64()).to_numpy(), rejects)
        return self.ingest_lines(batch, source=source, location_kind="record")

    # -- the one path every batch takes ------------------------------------------------
    def _run(self, raw: pa.Table, decode_sql: str, raw_sql: str, rejects: list[Reject], *, source: str,
             location_kind: str, replay: bool = False) -> IngestReport:
        started = time.perf_counter()
        now = self.clock()
        report = IngestReport(records=raw.num_rows + len(rejects))
        params = {"now": now, "tolerance": self.future_tolerance_s}
        self._refresh_sensors()
        with self.store.lock:
            self.store.con.register("_batch_raw", raw)
            try:
                self._write(decode_sql, raw_sql, rejects, report, now, params, source, location_kind, replay)
            finally:
                self.store.con.unregister("_batch_raw")
        report.seconds = time.perf_counter() - started
        return report

    def _write(self, decode_sql: str, raw_sql: str, rejects: list[Reject], report: IngestReport, now: datetime,
               params: dict, source: str, location_kind: str, replay: bool) -> None:
        with self.store.transaction() as con:
            con.execute(validate_sql(decode_sql), params)
            con.execute(DEDUPE_SQL)
            outcome = dict(con.execute("SELECT outcome, count(*) FROM _ded GROUP BY outcome").fetchall())
            report.accepted = outcome.get("accept", 0)
            report.duplicates = outcome.get("duplicate", 0)
            con.execute(
                """INSERT INTO readings (sensor_id, ts, value, quality, kind, unit_code, ingested_at)
                   SELECT v.sensor_id, v.ts, v.value, v.quality, v.kind, v.unit_code, $now
                   FROM _val v JOIN _ded d USING (seq) WHERE d.outcome = 'accept'
                   ORDER BY v.ts""",
                {"now": now},
            )
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE _bad AS
                WITH bad AS (
                    SELECT seq, reason, message FROM _val WHERE reason IS NOT NULL
                    UNION ALL
                    SELECT v.seq, 'conflict',
                           format('sensor {{}} already has value {{}} at {{}}; this record says {{}}', v.sensor_id,
                                  d.other_v, strftime(v.ts, '%Y-%m-%dT%H:%M:%SZ'), v.value)
                    FROM _val v JOIN _ded d USING (seq) WHERE d.outcome = 'conflict'
                )
                SELECT bad.seq, r.raw, bad.reason, bad.message FROM bad JOIN ({raw_sql}) r USING (seq)
            """)
            bad_sql = "SELECT * FROM _bad"
            if replay:
                self._finish_replay(con, bad_sql, now)
            else:
                con.execute(
                    f"""INSERT INTO quarantine (received_at, source, location, reason, message, raw)
                        SELECT $now, $source, format('{location_kind} {{}}', seq), reason, message, raw
                        FROM ({bad_sql}) ORDER BY seq""",
                    {"now": now, "source": source},
                )
            counts = dict(con.execute(f"SELECT reason, count(*) FROM ({bad_sql}) GROUP BY reason").fetchall())
            report.add_quarantined(counts)
            if rejects and not replay:
                rej = pa.table({
                    "location": [f"{location_kind} {r.line}" for r in rejects],
                    "reason": [r.reason for r in rejects],
                    "message": [r.message for r in rejects],
                    "raw": [r.raw for r in rejects],
                    "truncated": [r.truncated for r in rejects],
                })
                con.register("_rejects", rej)  # replaced by the next batch's
                con.execute(
                    """INSERT INTO quarantine (received_at, source, location, reason, message, raw, raw_truncated)
                       SELECT $now, $source, location, reason, message, raw, truncated FROM _rejects""",
                    {"now": now, "source": source},
                )
                report.add_quarantined(Counter(r.reason for r in rejects))

    def _finish_replay(self, con, bad_sql: str, now: datetime) -> None:
        """Mark replayed quarantine rows: resolved when stored or already stored, else re-reasoned."""
        con.execute(
            """UPDATE quarantine SET resolved_at = $now,
                   resolution = CASE d.outcome WHEN 'accept' THEN 'replayed' ELSE 'duplicate of a stored reading' END
               FROM _ded d WHERE quarantine.id = d.seq AND d.outcome IN ('accept', 'duplicate')""",
            {"now": now},
        )
        con.execute(
            f"""UPDATE quarantine SET reason = b.reason, message = b.message, attempts = attempts + 1
                FROM ({bad_sql}) b WHERE quarantine.id = b.seq""",
        )

    def replay(self, *, reason: str | None = None, ids: list[int] | None = None, batch_size: int = 100_000) -> IngestReport:
        """Re-validate quarantined records; what passes is stored exactly once."""
        report = IngestReport()
        where = ["resolved_at IS NULL", "NOT raw_truncated", "reason NOT IN ('too_large', 'bad_encoding')"]
        params: list = []
        if reason:
            where.append("reason = ?")
            params.append(reason)
        if ids:
            where.append("list_contains(?, id)")
            params.append([int(i) for i in ids])
        last = 0
        while True:
            table = self.store.arrow(
                f"SELECT id AS seq, raw FROM quarantine WHERE {' AND '.join(where)} AND id > ? ORDER BY id LIMIT {int(batch_size)}",
                params + [last],
            )
            if table.num_rows == 0:
                break
            last = table.column("seq")[-1].as_py()
            part = self._run(table, DECODE_JSON, RAW_JSON, [], source="replay", location_kind="quarantine", replay=True)
            report.merge(part)
        return report
