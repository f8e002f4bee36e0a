"""Run batches through validation into the store: the ingest stage's edge.

One batch is one transaction: its accepted readings, its quarantined records and its
counts become durable together, or not at all. Callers that acknowledge to a sender
(HTTP, MQTT) do so only after ``ingest_*`` returns.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cityvitals.ingest.lines import LineBatch, Reject
from cityvitals.ingest.validate import (
    DECODE_JSON,
    DEDUPE_SQL,
    RAW_JSON,
    decode_columns,
    validate_sql,
)
from cityvitals.registry.kinds import load_kinds

if TYPE_CHECKING:
    from cityvitals.ingest import fast

Clock = Callable[[], datetime]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FAST_MIN_LINES = 20_000
"""Batches of JSON lines at least this long take the fast path (``fast.py``). Smaller ones
(HTTP posts) stay on the SQL rules alone: there the compiled scanner's one-time load per
process (about a second) would cost more than it saves. A long-running source lowers it for
its own ingestor (the MQTT source: ``mqtt.FAST_MIN_LINES``); on a server store the fast
path's valid records go to the backend's ``write_batch`` (``_run_lines``)."""
STORED_FETCH_ROWS = 1_000_000
"""Up to this many stored rows in a batch's time range are fetched whole for the dedupe."""
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

    def merge(self, other: IngestReport) -> None:
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


def _show_nul(text: str) -> str:
    """PostgreSQL text cannot hold U+0000, so a refused record's raw text and message show it as
    ``\\x00`` (the notation undecodable bytes already get) on every backend: quarantine reads the
    same on both. ``BAD_SQL`` and ``FAST_BAD_SQL`` do the same with ``replace(.., chr(0), ..)``."""
    return text.replace("\0", "\\x00")


BAD_SQL = """
CREATE OR REPLACE TEMP TABLE _bad AS
WITH bad AS (
    SELECT seq, reason, message FROM _val WHERE reason IS NOT NULL
    UNION ALL
    SELECT v.seq, 'conflict',
           format('sensor {{}} already has value {{}} at {{}}; this record says {{}}', v.sensor_id,
                  d.other_v, strftime(v.ts, '%Y-%m-%dT%H:%M:%SZ'), v.value)
    FROM _val v JOIN _ded d USING (seq) WHERE d.outcome = 'conflict'
)
SELECT bad.seq, replace(r.raw, chr(0), '\\x00') AS raw, bad.reason,
       replace(bad.message, chr(0), '\\x00') AS message
FROM bad JOIN ({raw_sql}) r USING (seq)
"""
"""Refused records of a batch (temp table ``_bad``) from ``_val`` and the outcomes in ``_ded``."""

QUARANTINE_ROWS_SQL = """
SELECT coalesce(o.source, $source) AS source,
       coalesce(o.location, format('{location_kind} {{}}', b.seq)) AS location,
       b.reason, b.message, b.raw, false AS raw_truncated
FROM _bad b LEFT JOIN _origins o USING (seq) ORDER BY b.seq
"""
"""The quarantine rows of ``_bad``; ``_origins`` (seq, source, location) overrides per record."""

FAST_BAD_SQL = f"""
CREATE OR REPLACE TEMP TABLE _bad AS
SELECT v.seq, replace(r.raw, chr(0), '\\x00') AS raw, v.reason, replace(v.message, chr(0), '\\x00') AS message
FROM _val v JOIN ({RAW_JSON}) r USING (seq) WHERE v.reason IS NOT NULL
UNION ALL
SELECT seq, replace(raw, chr(0), '\\x00'), 'conflict',
       format('sensor {{}} already has value {{}} at {{}}; this record says {{}}', sensor_id, other_v,
              strftime(ts, '%Y-%m-%dT%H:%M:%SZ'), value)
FROM _conf
"""
"""``_bad`` for the fast path: the SQL-judged refusals plus the conflicts found by ``fast.dedupe``
(``_conf``: seq, sensor_id, ts, value, other_v, raw), with the same sentences as ``BAD_SQL``."""

_NO_CONFLICTS = pa.table({"seq": pa.array([], pa.int64()), "sensor_id": pa.array([], pa.string()),
                          "ts": pa.array([], pa.timestamp("us", tz="UTC")), "value": pa.array([], pa.float64()),
                          "other_v": pa.array([], pa.float64()), "raw": pa.array([], pa.string())})

_NO_SLOW = pa.table({"seq": pa.array([], pa.int64()), "sensor_id": pa.array([], pa.string()),
                     "ts": pa.array([], pa.int64()), "value": pa.array([], pa.float64()),
                     "quality": pa.array([], pa.string())})
"""No record left to the SQL rules (the fast path proved them all)."""

_NO_ORIGINS = pa.table({"seq": pa.array([], pa.int64()), "source": pa.array([], pa.string()),
                        "location": pa.array([], pa.string())})


@dataclass
class Batch:
    """One validated batch, as handed to a backend's ``readings.write_batch``.

    ``con`` is the DuckDB connection the batch was validated on: it holds temp tables
    ``_val`` (every record, with its reason or none) and ``_origins``, and ``raw_sql``
    fetches the raw text by seq. ``once``: the source may deliver a record again (MQTT),
    so a quarantine row whose (source, location) is already unresolved in quarantine is
    not written twice.
    """

    con: Any
    raw_sql: str
    now: datetime
    source: str
    location_kind: str
    rejects: list[Reject]
    origins: Mapping[int, tuple[str, str]]
    replay: bool = False
    once: bool = False
    valid: _Valid | None = None  # the fast path's valid records (their refusals are found from these)
    registry: Any = None  # with ``valid``: the registry they were coded against
    lines: pa.StringArray | None = None  # with ``valid``: the batch's lines (raw text of a conflict)
    judge: Callable[[], None] | None = None  # makes ``_val`` and registers ``_batch_raw`` when they are needed
    refused: int | None = None  # records the SQL rules refused, when known without asking ``_val``

    def refused_count(self) -> int:
        """Records the validation refused (not counting duplicates and conflicts)."""
        if self.refused is None:
            self._judged()
            self.refused = self.con.execute("SELECT count(*) FROM _val WHERE reason IS NOT NULL").fetchall()[0][0]
        return self.refused

    def _judged(self) -> None:
        if self.judge is not None:
            self.judge()

    def bad_rows(self, outcomes: pa.Table | None = None) -> pa.Table:
        """The batch's quarantine rows; ``outcomes`` (seq, outcome, other_v) of the records the
        store refused (duplicates, conflicts) replaces ``_ded`` when deduplication ran elsewhere
        (PostgreSQL). ``_origins`` is registered here, for the refused records only: a live
        batch has 10,000 records and usually no refused one."""
        self._judged()
        con = self.con
        if self.valid is not None:  # _val holds only the records the fast path left to SQL
            con.register("_conf", self.valid.conflicts(outcomes, self.registry, self.lines))
            try:
                con.execute(FAST_BAD_SQL)
            finally:
                con.unregister("_conf")
        else:
            if outcomes is not None:
                con.register("_ded_src", outcomes)
                con.execute("CREATE OR REPLACE TEMP TABLE _ded AS SELECT * FROM _ded_src")
                con.unregister("_ded_src")
            con.execute(BAD_SQL.format(raw_sql=self.raw_sql))
        return self.quarantine_rows()

    def quarantine_rows(self) -> pa.Table:
        """The quarantine rows of ``_bad``, with the origins of those records only."""
        self._judged()
        con = self.con
        if self.origins:
            seqs = con.sql("SELECT seq FROM _bad").to_arrow_table().column("seq").to_pylist()
            con.register("_origins", _origins_table(self.origins, seqs))
        try:
            return con.sql(QUARANTINE_ROWS_SQL.format(location_kind=self.location_kind),
                           params={"source": self.source}).to_arrow_table()
        finally:
            if self.origins:
                con.register("_origins", _NO_ORIGINS)

    def reject_rows(self) -> pa.Table:
        """Records refused before decoding (too large, bad encoding, malformed payloads)."""
        loc = [self.origins.get(r.line, (self.source, f"{self.location_kind} {r.line}")) for r in self.rejects]
        return pa.table({
            "source": pa.array([s for s, _ in loc], pa.string()),
            "location": pa.array([lc for _, lc in loc], pa.string()),
            "reason": pa.array([r.reason for r in self.rejects], pa.string()),
            "message": pa.array([_show_nul(r.message) for r in self.rejects], pa.string()),
            "raw": pa.array([_show_nul(r.raw) for r in self.rejects], pa.string()),
            "raw_truncated": pa.array([bool(r.truncated) for r in self.rejects], pa.bool_()),
        })


CHECKED_COLUMNS = ("seq", "raw", "sensor_id", "ts", "value", "quality", "kind", "unit_code", "reason", "message")
"""A batch validated away from the store: ``_val``'s columns plus the raw text by seq."""


def registry_table(store) -> pa.Table:
    """The part of the sensor registry validation needs (id, kind, unit, unit_code): what a
    private validation connection copies, and what the Spark job broadcasts to executors."""
    return store.sensors.frame().select("id", "kind", "unit", "unit_code").to_arrow()


def load_kind_tables(con, kinds) -> None:
    """The kind catalogue's unit conversions and physical ranges, as validation's temp tables."""
    con.register("_kind_conv_src", kinds.conversions_table())
    con.register("_kind_range_src", kinds.ranges_table())
    con.execute("CREATE OR REPLACE TEMP TABLE _kind_conv AS SELECT * FROM _kind_conv_src")
    con.execute("CREATE OR REPLACE TEMP TABLE _kind_range AS SELECT * FROM _kind_range_src")
    con.unregister("_kind_conv_src")
    con.unregister("_kind_range_src")


def load_sensor_table(con, registry: pa.Table | None) -> None:
    """``_sensor_ready``: each sensor's own-unit conversion and its kind's range, from a copy
    of the registry (``registry_table``) or, ``None``, from the store's own ``sensors`` table.

    On the DuckDB store's own connection each sensor also carries its stored integer keys (its
    own and its unit's; the store's ``ensure_keys`` made them): accepted readings are written
    with them. A copy of the registry (a server store, Spark's executors) has no keys."""
    if registry is not None:
        con.register("_sensors_src", registry)
        con.execute("CREATE OR REPLACE TEMP TABLE _sensors_copy AS SELECT * FROM _sensors_src")
        con.unregister("_sensors_src")
    keys, joins = ("NULL::INTEGER AS sensor_key, NULL::INTEGER AS unit_key", "") if registry is not None else (
        "k.key AS sensor_key, u.key AS unit_key",
        "LEFT JOIN sensor_keys k ON k.sensor_id = s.id LEFT JOIN unit_keys u ON u.unit_code = s.unit_code")
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _sensor_ready AS
           SELECT s.id, s.kind, s.unit, s.unit_code, c.factor, c."offset",
                  r.canonical_unit, r.min_value, r.max_value, {keys}
           FROM {'_sensors_copy' if registry is not None else 'sensors'} s
           LEFT JOIN _kind_conv c ON c.kind = s.kind AND c.unit = s.unit
           LEFT JOIN _kind_range r ON r.kind = s.kind {joins}"""
    )


class Ingestor:
    """Validates batches (DuckDB SQL) and has the store persist them, one transaction each.

    Validation is pure: it runs on the store's own connection for the DuckDB backend, or
    on a private in-memory DuckDB connection (``store.validation_connection()``) for a
    server backend, with a copy of the sensor registry refreshed when it changes. The
    backend's ``readings.write_batch(batch, report)`` persists; the DuckDB backend's
    persistence is ``_write_duckdb`` below (it runs where the data already is).
    """

    def __init__(self, store, *, clock: Clock = utc_now, future_tolerance_s: int = 300, kinds=None):
        self.store = store
        self.clock = clock
        self.future_tolerance_s = int(future_tolerance_s)
        kinds = kinds or load_kinds()
        self.private = hasattr(store, "validation_connection")
        self.con = store.validation_connection() if self.private else store.con
        self.lock = threading.RLock() if self.private else store.lock
        with self.lock:
            load_kind_tables(self.con, kinds)
        self._sensors_version = None
        self._registry: fast.Registry | None = None
        self._registry_version: Any = object()
        self.fast_min_lines = FAST_MIN_LINES

    def _refresh_sensors(self) -> None:
        """Rebuild the per-sensor lookup when the registry changed since the last batch."""
        version = self.store.sensors.version
        if version == self._sensors_version:
            return
        with self.lock:
            if not self.private:
                self.store.sensors.ensure_keys()
            load_sensor_table(self.con, registry_table(self.store) if self.private else None)
        self._sensors_version = version

    def fast_registry(self) -> fast.Registry:
        """The registry as arrays for the fast path, rebuilt when the registry changed."""
        self._refresh_sensors()
        with self.lock:
            if self._registry is None or self._registry_version != self._sensors_version:
                self._registry = _fast().Registry.from_table(self.con.sql(
                    'SELECT id, kind, unit, unit_code, factor, "offset", min_value, max_value, sensor_key, unit_key '
                    'FROM _sensor_ready'
                ).to_arrow_table())
                self._registry_version = self._sensors_version
            return self._registry

    # -- entry points -------------------------------------------------------------
    def ingest_lines(self, batch: LineBatch, *, source: str, location_kind: str = "line",
                     origins: dict[int, tuple[str, str]] | None = None) -> IngestReport:
        """A batch of JSON text records (one per line) plus the rejects found while splitting.

        ``origins`` maps a record's number to (source, location) when records of one batch
        come from different places (MQTT topics); such a batch's quarantine rows are
        written once per (source, location) even when the source delivers them again.
        """
        if len(batch.lines) < self.fast_min_lines:
            raw = pa.table({"seq": pa.array(batch.line_numbers, pa.int64()), "raw": batch.lines})
            report = self._run(raw, DECODE_JSON, RAW_JSON, batch.rejects, source=source, location_kind=location_kind,
                               origins=origins)
        else:
            report = self._run_lines(batch, source=source, location_kind=location_kind, origins=origins)
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
             location_kind: str, replay: bool = False, origins: dict[int, tuple[str, str]] | None = None) -> IngestReport:
        now = self.clock()
        params = {"now": now, "tolerance": self.future_tolerance_s}
        self._refresh_sensors()
        return self._persist(raw, lambda con: con.execute(validate_sql(decode_sql), params), raw_sql, rejects, now,
                             source=source, location_kind=location_kind, replay=replay, origins=origins)

    def write_checked(self, checked: pa.Table, rejects: list[Reject], *, source: str, location_kind: str,
                      origins: dict[int, tuple[str, str]] | None = None, nbytes: int = 0) -> IngestReport:
        """Store a batch that was validated elsewhere (``cityvitals.ingest.checked``: Spark's
        executors), as ``_run`` stores one validated here: dedupe, insert, quarantine.

        ``checked`` has the validation's columns (``CHECKED_COLUMNS``: seq, raw, sensor_id, ts,
        value, quality, kind, unit_code, reason, message), so only persistence runs here.
        """
        cols = ", ".join(f"c.{c}" for c in ("seq",) + CHECKED_COLUMNS[2:])

        def validated(con) -> None:
            # the DuckDB store writes accepted rows by their integer keys, which a copy of the
            # registry elsewhere does not have: take them from this connection's registry
            keys = ("NULL::INTEGER AS sensor_key, NULL::INTEGER AS unit_key" if self.private else
                    "r.sensor_key, r.unit_key")
            join = "" if self.private else " LEFT JOIN _sensor_ready r ON r.id = c.sensor_id"
            con.execute(f"CREATE OR REPLACE TEMP TABLE _val AS SELECT {cols}, {keys} FROM _batch_raw c{join}")

        report = self._persist(checked, validated, RAW_JSON, rejects, self.clock(), source=source,
                               location_kind=location_kind, origins=origins)
        report.bytes = nbytes
        return report

    def _persist(self, raw: pa.Table, validated: Callable[[Any], Any], raw_sql: str, rejects: list[Reject], now: datetime,
                 *, source: str, location_kind: str, replay: bool = False,
                 origins: dict[int, tuple[str, str]] | None = None) -> IngestReport:
        """``validated(con)`` makes ``_val`` from ``_batch_raw``; then the backend writes the batch."""
        started = time.perf_counter()
        report = IngestReport(records=raw.num_rows + len(rejects))
        with self.lock:
            con = self.con
            con.register("_batch_raw", raw)
            con.register("_origins", _NO_ORIGINS)  # Batch.bad_rows registers the refused records' origins
            try:
                validated(con)
                batch = Batch(con, raw_sql, now, source, location_kind, rejects, origins or {}, replay, bool(origins))
                if self.private:
                    self.store.readings.write_batch(batch, report)
                else:
                    self._write_duckdb(batch, report)
            finally:
                con.unregister("_batch_raw")
                con.unregister("_origins")
        report.seconds = time.perf_counter() - started
        return report

    def _run_lines(self, lines: LineBatch, *, source: str, location_kind: str,
                   origins: Mapping[int, tuple[str, str]] | None) -> IngestReport:
        """JSON lines through the fast path: it proves the canonical records valid
        (``fast.accept``) and the SQL rules judge the rest. The DuckDB store keeps sensors as
        integer codes through dedupe until the insert; a server store (PostgreSQL) gets every
        valid record from ``readings.write_batch`` with ``valid`` and tells duplicates from
        conflicts by its key."""
        started = time.perf_counter()
        now = self.clock()
        report = IngestReport(records=len(lines.lines) + len(lines.rejects))
        with self.lock:
            registry = self.fast_registry()
            got = _fast().accept(lines.lines, registry, _micros(now), self.future_tolerance_s * 1_000_000)
            numbers = np.asarray(lines.line_numbers, np.int64)
            rest = got.rest
            con = self.con
            judged = []

            def judge() -> None:
                """The SQL rules over what the fast path left (``_val``), with the temp tables a
                refusal's quarantine row reads: run at once when anything was left, and only on
                demand (a duplicate or conflict to report) when every record was proven valid --
                the live case, where they cost more per batch than the fast path itself."""
                if judged:
                    return
                con.register("_batch_raw", pa.table({"seq": pa.array(numbers[rest], pa.int64()),
                                                     "raw": lines.lines.take(pa.array(rest, pa.int64()))}))
                con.register("_origins", _NO_ORIGINS)  # Batch.quarantine_rows registers the refused records' origins
                judged.append(True)
                con.execute(validate_sql(DECODE_JSON), {"now": now, "tolerance": self.future_tolerance_s})

            try:
                if len(rest):
                    judge()
                    slow = con.sql("SELECT seq, sensor_id, epoch_us(ts) AS ts, value, quality FROM _val "
                                   "WHERE reason IS NULL").to_arrow_table()
                else:
                    slow = _NO_SLOW
                valid = _Valid.combine(got, numbers, rest, slow, registry)
                refused = None if len(rest) else 0
                if self.private:
                    batch = Batch(con, RAW_JSON, now, source, location_kind, lines.rejects, origins or {}, False,
                                  bool(origins), valid=valid, registry=registry, lines=lines.lines, judge=judge,
                                  refused=refused)
                    self.store.readings.write_batch(batch, report, valid=valid.stage_table(registry))
                else:
                    batch = Batch(con, RAW_JSON, now, source, location_kind, lines.rejects, origins or {}, False,
                                  bool(origins), judge=judge, refused=refused)
                    self._write_valid(batch, valid, lines.lines, registry, report)
            finally:
                if judged:
                    con.unregister("_batch_raw")
                    con.unregister("_origins")
        report.seconds = time.perf_counter() - started
        return report

    def _write_valid(self, batch: Batch, valid: _Valid, lines: pa.StringArray, registry: fast.Registry,
                     report: IngestReport) -> None:
        """Dedupe the valid records against each other and the store, insert the accepted,
        quarantine the refused: one transaction."""
        with self.store.transaction() as con:
            if len(valid.seq):
                stored = self._stored_keys(con, valid, registry)
                s_code = registry.code_of_key(_ints(stored.column("sensor_key"))) if stored.num_rows else np.zeros(0, np.int64)
                outcome, other = _fast().dedupe(
                    valid.code, valid.ts, valid.value, np.argsort(valid.seq, kind="stable"), s_code,
                    _ints(stored.column("ts")), _floats(stored.column("value")))
            else:
                outcome, other = np.zeros(0, np.int8), np.zeros(0)
            take = np.flatnonzero(outcome == 0)
            if len(take) and np.any(np.diff(valid.ts[take]) < 0):
                take = take[np.argsort(valid.ts[take], kind="stable")]  # time order keeps zone maps tight
            report.accepted = len(take)
            report.duplicates = int(np.count_nonzero(outcome == 1))
            if len(take):
                codes = valid.code[take]
                quality = valid.quality
                quality = pa.nulls(len(take), pa.string()) if quality.null_count == len(quality) else quality.take(pa.array(take))
                keys = registry.keys[codes]
                if np.any(keys < 0):  # ensure_keys gives every registered sensor one; never write a row without
                    raise RuntimeError("a registered sensor has no key in sensor_keys")
                con.register("_accepted", pa.table({
                    "sensor_key": pa.array(keys, pa.int32()),
                    "ts": pa.array(valid.ts[take], pa.timestamp("us", tz="UTC")),
                    "value": pa.array(valid.value[take], pa.float64()),
                    "quality": quality,
                    "kind": registry.strings(registry.kinds, codes),
                    "unit_key": registry.unit_key_array(codes),
                }))
                try:
                    con.execute("INSERT INTO reading_rows (sensor_key, ts, value, quality, kind, unit_key, ingested_at) "
                                "SELECT sensor_key, ts, value, quality, kind, unit_key, $now FROM _accepted",
                                {"now": self.store.readings.stamp(batch.now)})
                finally:
                    con.unregister("_accepted")
            conflict = np.flatnonzero(outcome == 2)
            if not len(conflict) and batch.refused_count() == 0:  # nothing refused: no quarantine SQL
                if batch.rejects:
                    rows = batch.reject_rows()
                    self._quarantine(con, batch, rows)
                    report.add_quarantined(_count(rows))
                return
            batch._judged()
            con.register("_conf", pa.table({
                "seq": pa.array(valid.seq[conflict], pa.int64()),
                "sensor_id": pc.take(registry.ids, pa.array(valid.code[conflict], pa.int64())),
                "ts": pa.array(valid.ts[conflict], pa.timestamp("us", tz="UTC")),
                "value": pa.array(valid.value[conflict], pa.float64()),
                "other_v": pa.array(other[conflict], pa.float64()),
                "raw": pc.utf8_rtrim(lines.take(pa.array(valid.pos[conflict], pa.int64())), characters="\r\n"),
            }) if len(conflict) else _NO_CONFLICTS)
            try:
                con.execute(FAST_BAD_SQL)
            finally:
                con.unregister("_conf")
            rows = batch.quarantine_rows()
            if batch.rejects:
                rows = pa.concat_tables([rows, batch.reject_rows()])
            self._quarantine(con, batch, rows)
            report.add_quarantined(_count(rows))

    @staticmethod
    def _stored_keys(con, valid: _Valid, registry: fast.Registry) -> pa.Table:
        """Stored (sensor_key, ts, value) that may share a key with the batch. Usually the
        stored rows of the batch's time range are few (live data) and come back whole for
        the compiled dedupe; when the range holds many (a backfill over a long span), DuckDB
        first keeps only the rows whose key is in the batch, so memory stays bounded."""
        params = {"lo": _instant(int(valid.ts.min())), "hi": _instant(int(valid.ts.max()))}
        in_range = con.execute("SELECT count(*) FROM reading_rows WHERE ts BETWEEN $lo AND $hi", params).fetchall()[0][0]
        if in_range <= max(STORED_FETCH_ROWS, 2 * len(valid.seq)):
            return con.sql("SELECT sensor_key, epoch_us(ts) AS ts, value FROM reading_rows WHERE ts BETWEEN $lo AND $hi",
                           params=params).to_arrow_table()
        con.register("_keys", pa.table({"sensor_key": pa.array(registry.keys[valid.code], pa.int32()),
                                        "ts": pa.array(valid.ts, pa.timestamp("us", tz="UTC"))}))
        try:
            return con.sql(
                """SELECT r.sensor_key, epoch_us(r.ts) AS ts, r.value FROM reading_rows r
                   SEMI JOIN _keys k ON r.sensor_key = k.sensor_key AND r.ts = k.ts
                   WHERE r.ts BETWEEN $lo AND $hi""", params=params).to_arrow_table()
        finally:
            con.unregister("_keys")

    @staticmethod
    def _quarantine(con, batch: Batch, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        con.register("_q_rows", rows)
        try:
            con.execute(
                f"""INSERT INTO quarantine (received_at, source, location, reason, message, raw, raw_truncated)
                    SELECT $now, source, location, reason, message, raw, raw_truncated FROM _q_rows q
                    {ONCE_FILTER if batch.once else ''}""",
                {"now": batch.now},
            )
        finally:
            con.unregister("_q_rows")

    def _write_duckdb(self, batch: Batch, report: IngestReport) -> None:
        """Persist on the DuckDB store: dedupe against stored rows and write, in one transaction."""
        with self.store.transaction() as con:
            con.execute(DEDUPE_SQL)
            # _ded holds only the refused (duplicates, conflicts): every other valid record is
            # accepted, so the insert is an anti-join against a small table.
            outcome = dict(con.execute("SELECT outcome, count(*) FROM _ded GROUP BY outcome").fetchall())
            valid = con.execute("SELECT count(*) FROM _val WHERE reason IS NULL").fetchall()[0][0]
            report.accepted = valid - sum(outcome.values())
            report.duplicates = outcome.get("duplicate", 0)
            # a valid record's sensor is registered, so it has a key (ensure_keys; sensor_key is NOT NULL)
            con.execute(
                """INSERT INTO reading_rows (sensor_key, ts, value, quality, kind, unit_key, ingested_at)
                   SELECT v.sensor_key, v.ts, v.value, v.quality, v.kind, v.unit_key, $stamp
                   FROM _val v ANTI JOIN _ded d USING (seq) WHERE v.reason IS NULL
                   ORDER BY v.ts""",
                {"stamp": self.store.readings.stamp(batch.now)},
            )
            if batch.replay:
                con.execute(BAD_SQL.format(raw_sql=batch.raw_sql))
                bad = con.sql("SELECT seq, reason, message FROM _bad").to_arrow_table()
                self._finish_replay(con, batch.now)
                report.add_quarantined(_count(bad))
                return
            rows = batch.bad_rows()
            if batch.rejects:
                rows = pa.concat_tables([rows, batch.reject_rows()])
            self._quarantine(con, batch, rows)
            report.add_quarantined(_count(rows))

    def _finish_replay(self, con, now: datetime) -> None:
        """Mark replayed quarantine rows: resolved when stored or already stored, else re-reasoned."""
        con.execute(
            """UPDATE quarantine SET resolved_at = $now,
                   resolution = CASE d.outcome WHEN 'accept' THEN 'replayed' ELSE 'duplicate of a stored reading' END
               FROM (SELECT v.seq, coalesce(x.outcome, 'accept') AS outcome
                     FROM _val v LEFT JOIN _ded x USING (seq) WHERE v.reason IS NULL) d
               WHERE quarantine.id = d.seq AND d.outcome IN ('accept', 'duplicate')""",
            {"now": now},
        )
        con.execute(
            """UPDATE quarantine SET reason = b.reason, message = b.message, attempts = attempts + 1
                FROM _bad b WHERE quarantine.id = b.seq""",
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
            where.append("id = ANY(?)" if self.private else "list_contains(?, id)")
            params.append([int(i) for i in ids])
        last = 0
        while True:
            table = self.store.arrow(
                f"SELECT id AS seq, raw FROM quarantine WHERE {' AND '.join(where)} AND id > ? ORDER BY id LIMIT {int(batch_size)}",
                params + [last],
            ).cast(pa.schema([("seq", pa.int64()), ("raw", pa.string())]))
            if table.num_rows == 0:
                break
            last = table.column("seq")[-1].as_py()
            part = self._run(table, DECODE_JSON, RAW_JSON, [], source="replay", location_kind="quarantine", replay=True)
            report.merge(part)
        return report


ONCE_FILTER = """WHERE NOT EXISTS (
    SELECT 1 FROM (SELECT x.source, x.location FROM quarantine x
                   SEMI JOIN _q_rows r ON x.source = r.source AND x.location = r.location
                   WHERE x.resolved_at IS NULL) s
    WHERE s.source = q.source AND s.location = q.location)"""
"""Keeps a redelivered record (same source and location) from entering quarantine twice.

The stored rows of the batch's keys are found first with a semi join whose hash table is
the batch's few rows, probed by one scan of quarantine; a plain anti join would build its
hash table from the whole quarantine table on every batch (4x slower at 2 million rows).
An ART index on (source, location) does not help: DuckDB does not use it for this join,
and point lookups through it were slower than the scan."""


def _origins_table(origins: Mapping[int, tuple[str, str]], seqs: Iterable[int] | None = None) -> pa.Table:
    """(seq, source, location) of ``seqs`` (default: every record) that have an origin."""
    seqs = list(origins) if seqs is None else [q for q in seqs if q in origins]
    return pa.table({
        "seq": pa.array(seqs, pa.int64()),
        "source": pa.array([origins[s][0] for s in seqs], pa.string()),
        "location": pa.array([origins[s][1] for s in seqs], pa.string()),
    })


def _count(rows: pa.Table) -> dict[str, int]:
    return dict(Counter(rows.column("reason").to_pylist())) if rows.num_rows else {}


@dataclass
class _Valid:
    """The valid records of a batch, whichever path proved them: arrival number, position
    in the batch, sensor code, UTC microseconds, canonical value, quality."""

    seq: np.ndarray
    pos: np.ndarray
    code: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: pa.Array

    @classmethod
    def combine(cls, got: fast.FastResult, numbers: np.ndarray, rest: np.ndarray, slow: pa.Table,
                registry: fast.Registry) -> _Valid:
        if slow.num_rows == 0:
            return cls(numbers[got.rows], got.rows, got.sensor, got.ts_us, got.value, got.quality)
        slow_seq = _ints(slow.column("seq"))
        rest_seq = numbers[rest]
        order = np.argsort(rest_seq, kind="stable")
        slow_pos = rest[order[np.searchsorted(rest_seq[order], slow_seq)]]
        return cls(
            np.concatenate([numbers[got.rows], slow_seq]),
            np.concatenate([got.rows, slow_pos]),
            np.concatenate([got.sensor, registry.code(slow.column("sensor_id").combine_chunks())]),
            np.concatenate([got.ts_us, _ints(slow.column("ts"))]),
            np.concatenate([got.value, _floats(slow.column("value"))]),
            pa.concat_arrays([got.quality, slow.column("quality").combine_chunks().cast(pa.string())]),
        )


    def stage_table(self, registry: fast.Registry) -> pa.Table:
        """The valid records as a server backend stores them, in time order: seq, sensor_id,
        ts, value, quality, kind, unit_code, and ``first`` (the first arrival of its key in
        the batch; a later one is a duplicate or a conflict of it)."""
        n = len(self.seq)
        order = np.lexsort((self.seq, self.ts, self.code))
        first = np.zeros(n, bool)
        if n:
            c, t = self.code[order], self.ts[order]
            first[order] = np.r_[True, (c[1:] != c[:-1]) | (t[1:] != t[:-1])]
        by_ts = np.argsort(self.ts, kind="stable")
        codes = self.code[by_ts]
        return pa.table({
            "seq": pa.array(self.seq[by_ts], pa.int64()),
            "sensor_id": registry.strings(registry.ids, codes),
            "ts": pa.array(self.ts[by_ts], pa.timestamp("us", tz="UTC")),
            "value": pa.array(self.value[by_ts], pa.float64()),
            "quality": self.quality.take(pa.array(by_ts, pa.int64())).cast(pa.string()),
            "kind": registry.strings(registry.kinds, codes),
            "unit_code": registry.strings(registry.unit_codes, codes),
            "first": pa.array(first[by_ts], pa.bool_()),
        })

    def conflicts(self, outcomes: pa.Table | None, registry: fast.Registry, lines: pa.StringArray) -> pa.Table:
        """``_conf`` (seq, sensor_id, ts, value, other_v, raw) for the records ``outcomes``
        (seq, outcome, other_v) calls conflicts."""
        if outcomes is None or outcomes.num_rows == 0:
            return _NO_CONFLICTS
        c = outcomes.filter(pc.equal(outcomes.column("outcome"), "conflict"))
        if c.num_rows == 0:
            return _NO_CONFLICTS
        seqs = _ints(c.column("seq"))
        order = np.argsort(self.seq, kind="stable")
        at = order[np.searchsorted(self.seq[order], seqs)]
        return pa.table({
            "seq": pa.array(seqs, pa.int64()),
            "sensor_id": pc.take(registry.ids, pa.array(self.code[at], pa.int64())),
            "ts": pa.array(self.ts[at], pa.timestamp("us", tz="UTC")),
            "value": pa.array(self.value[at], pa.float64()),
            "other_v": pa.array(_floats(c.column("other_v")), pa.float64()),
            "raw": pc.utf8_rtrim(lines.take(pa.array(self.pos[at], pa.int64())), characters="\r\n"),
        })


def _fast():
    """The fast path's module, imported on first use: it loads compiled code (Numba)."""
    from cityvitals.ingest import fast

    return fast


def _micros(t: datetime) -> int:
    """Exact UTC microseconds of an instant (a naive one is taken as UTC, as the store does)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (t - EPOCH) // timedelta(microseconds=1)


def _instant(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _ints(col) -> np.ndarray:
    """A writable copy: the compiled dedupe is specialised on writable arrays."""
    return np.array(col.combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False), np.int64)


def _floats(col) -> np.ndarray:
    return np.array(col.combine_chunks().cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64)
