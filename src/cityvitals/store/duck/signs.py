"""Vital signs: indicator values and levels per (indicator, unit, window), the health index
with its explanation, and the stage's state (how far it has read, its watermark).

Layout: a whole-city recompute writes about thirty values per unit (1.2 million rows for
Shanghai's 40,625 grid units), and writing the two key strings of each row was most of
its cost. Values are therefore stored in ``sign_rows`` with integer-coded keys
(``indicator_id`` SMALLINT, ``unit_id`` INTEGER) whose dictionaries are ``sign_indicators``
and ``sign_units`` (ids assigned once, never changed or reused); health snapshots likewise
in ``sign_health_rows`` and ``sign_explain_rows`` (one row per unit and indicator with its
category and overall points; scopes numbered in ``sign_scopes``). ``sign_values``,
``sign_health`` and ``sign_health_explain`` are views with the original columns, so every
reader -- the repository's queries, watch, open data exports -- reads strings as before. A
store written before this layout is upgraded when it is opened for writing (``upgrade``).

Values are replaced by key (indicator, unit_code, window_start) with a delete + insert of
the whole batch in one transaction, so recomputing a window is idempotent. There is no
primary-key index for the same reason as ``readings``: bulk writes stay fast. The stage
also reads ``readings`` through this repository (by ingest time, by time range) so all
SQL against the backend stays inside ``store/``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import ClassVar

import numpy as np
import polars as pl

VALUE_COLUMNS = ("indicator", "unit_code", "window_start", "window_end", "value", "level", "schmitt", "n", "direct")
US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MIN_US = int((datetime(1, 1, 2, tzinfo=EPOCH.tzinfo) - EPOCH) / timedelta(microseconds=1))
_MAX_US = int((datetime(9999, 1, 1, tzinfo=EPOCH.tzinfo) - EPOCH) / timedelta(microseconds=1))


KEY_COLUMNS = ("unit_code", "indicator", "ancestor", "kind")
"""Columns the stage keeps as Categorical: joins and groups on integers, not strings."""


def _pl(table) -> pl.DataFrame:
    """An Arrow result as Polars with the key columns Categorical (one global dictionary,
    so frames from different queries join on their integer codes)."""
    df = pl.from_arrow(table)
    keys = [c for c in KEY_COLUMNS if c in df.columns and df.schema[c] == pl.String]
    return df.with_columns(pl.col(keys).cast(pl.Categorical)) if keys else df


def _last_per_series(unit: np.ndarray, ind: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Row indices of the latest ``end`` of each (unit, ind) pair (one row per pair)."""
    if len(unit) == 0:
        return np.zeros(0, np.int64)
    key = unit.astype(np.int64) * (int(ind.max()) + 1) + ind.astype(np.int64)
    span = int(key.max()) + 1
    if span <= 4 * len(key) + 4096:  # dense keys: a lookup table, no sort
        present = np.zeros(span, bool)
        present[key] = True
        inv = (np.cumsum(present) - 1)[key]
        m = int(present.sum())
    else:
        _, inv = np.unique(key, return_inverse=True)
        inv = inv.reshape(-1)
        m = int(inv.max()) + 1
    top = np.full(m, np.iinfo(np.int64).min)
    np.maximum.at(top, inv, end)
    idx = np.flatnonzero(end == top[inv])
    if len(idx) > m:  # equal ends within a series: keep the first
        _, first = np.unique(inv[idx], return_index=True)
        idx = idx[first]
    return idx


def from_us(us: int) -> datetime:
    """Microseconds since the epoch as an exact UTC datetime."""
    return EPOCH + timedelta(microseconds=int(us))


class SignRepo:
    DDL = (
        "CREATE SEQUENCE IF NOT EXISTS sign_unit_seq",
        "CREATE SEQUENCE IF NOT EXISTS sign_indicator_seq",
        """CREATE TABLE IF NOT EXISTS sign_units (
            id INTEGER PRIMARY KEY DEFAULT nextval('sign_unit_seq'),
            unit_code VARCHAR NOT NULL UNIQUE
        )""",
        """CREATE TABLE IF NOT EXISTS sign_indicators (
            id SMALLINT PRIMARY KEY DEFAULT nextval('sign_indicator_seq'),
            indicator VARCHAR NOT NULL UNIQUE
        )""",
        """CREATE TABLE IF NOT EXISTS sign_rows (
            indicator_id SMALLINT NOT NULL,  -- sign_indicators.id
            unit_id INTEGER NOT NULL,        -- sign_units.id
            window_start TIMESTAMPTZ NOT NULL,
            window_end TIMESTAMPTZ NOT NULL,
            value DOUBLE,
            level TINYINT NOT NULL,       -- 0 normal, 1 attention, 2 warning, 3 alarm (after hysteresis + min duration)
            schmitt TINYINT NOT NULL,     -- level after hysteresis only: resumes the series in the next batch
            n INTEGER,                    -- readings (direct units) or member units (rolled up)
            direct BOOLEAN NOT NULL,      -- computed from the unit's own readings (else rolled up)
            computed_at TIMESTAMPTZ DEFAULT current_timestamp
        )""",
        "CREATE SEQUENCE IF NOT EXISTS sign_scope_seq",
        """CREATE TABLE IF NOT EXISTS sign_scopes (
            id SMALLINT PRIMARY KEY DEFAULT nextval('sign_scope_seq'),
            scope VARCHAR NOT NULL UNIQUE  -- a category, or 'overall'
        )""",
        """CREATE TABLE IF NOT EXISTS sign_health_rows (
            unit_id INTEGER NOT NULL,
            as_of TIMESTAMPTZ NOT NULL,
            scope_id SMALLINT NOT NULL,
            value DOUBLE NOT NULL,
            computed_at TIMESTAMPTZ DEFAULT current_timestamp
        )""",
        """CREATE TABLE IF NOT EXISTS sign_explain_rows (
            unit_id INTEGER NOT NULL,
            as_of TIMESTAMPTZ NOT NULL,
            indicator_id SMALLINT NOT NULL,
            category_id SMALLINT,         -- sign_scopes.id: the row's category scope
            level TINYINT,
            value DOUBLE,
            weight DOUBLE,
            points DOUBLE,                -- points of the category's 100
            points_overall DOUBLE         -- the same indicator's points of the overall 100
        )""",
        """CREATE TABLE IF NOT EXISTS sign_state (
            key VARCHAR PRIMARY KEY,
            value VARCHAR
        )""",
    )

    VIEWS: ClassVar[dict[str, str]] = {
        "sign_values": (
            "SELECT i.indicator, u.unit_code, v.window_start, v.window_end, v.value, v.level, v.schmitt, "
            "CAST(v.n AS BIGINT) AS n, v.direct, v.computed_at FROM sign_rows v "
            "JOIN sign_indicators i ON i.id = v.indicator_id JOIN sign_units u ON u.id = v.unit_id"),
        "sign_health": (
            "SELECT u.unit_code, h.as_of, s.scope, h.value, h.computed_at FROM sign_health_rows h "
            "JOIN sign_units u ON u.id = h.unit_id JOIN sign_scopes s ON s.id = h.scope_id"),
        "sign_health_explain": (
            "SELECT u.unit_code, e.as_of, c.scope AS scope, i.indicator, c.scope AS category, e.level, e.value, e.weight, "
            "e.points FROM sign_explain_rows e JOIN sign_units u ON u.id = e.unit_id "
            "JOIN sign_indicators i ON i.id = e.indicator_id JOIN sign_scopes c ON c.id = e.category_id "
            "UNION ALL "
            "SELECT u.unit_code, e.as_of, 'overall' AS scope, i.indicator, c.scope AS category, e.level, e.value, e.weight, "
            "e.points_overall AS points FROM sign_explain_rows e JOIN sign_units u ON u.id = e.unit_id "
            "JOIN sign_indicators i ON i.id = e.indicator_id JOIN sign_scopes c ON c.id = e.category_id "
            "WHERE e.points_overall IS NOT NULL"),
    }
    """The original tables' columns over the integer-keyed ones: what every reader sees."""

    _UPGRADE: ClassVar[dict[str, tuple[tuple[str, str, str], ...]]] = {
        # old table -> (dictionary table, its column, SELECT of the codes to add) ..., then the row copy
        "sign_values": (
            ("sign_indicators", "indicator", "SELECT DISTINCT indicator FROM sign_values"),
            ("sign_units", "unit_code", "SELECT DISTINCT unit_code FROM sign_values"),
        ),
        "sign_health": (
            ("sign_units", "unit_code", "SELECT DISTINCT unit_code FROM sign_health"),
            ("sign_scopes", "scope", "SELECT DISTINCT scope FROM sign_health"),
        ),
        "sign_health_explain": (
            ("sign_units", "unit_code", "SELECT DISTINCT unit_code FROM sign_health_explain"),
            ("sign_indicators", "indicator", "SELECT DISTINCT indicator FROM sign_health_explain"),
            ("sign_scopes", "scope", "SELECT DISTINCT category FROM sign_health_explain WHERE category IS NOT NULL"),
        ),
    }
    _COPY: ClassVar[dict[str, str]] = {
        "sign_values": (
            "INSERT INTO sign_rows (indicator_id, unit_id, window_start, window_end, value, level, schmitt, n, direct, computed_at) "
            "SELECT i.id, u.id, v.window_start, v.window_end, v.value, v.level, v.schmitt, v.n, v.direct, v.computed_at "
            "FROM sign_values v JOIN sign_indicators i ON i.indicator = v.indicator "
            "JOIN sign_units u ON u.unit_code = v.unit_code ORDER BY v.window_start"),
        "sign_health": (
            "INSERT INTO sign_health_rows (unit_id, as_of, scope_id, value, computed_at) "
            "SELECT u.id, h.as_of, s.id, h.value, h.computed_at FROM sign_health h "
            "JOIN sign_units u ON u.unit_code = h.unit_code JOIN sign_scopes s ON s.scope = h.scope ORDER BY h.as_of"),
        "sign_health_explain": (  # a category row and the overall row of the same indicator become one row
            "INSERT INTO sign_explain_rows (unit_id, as_of, indicator_id, category_id, level, value, weight, points, points_overall) "
            "SELECT u.id, c.as_of, i.id, s.id, c.level, c.value, c.weight, c.points, o.points FROM sign_health_explain c "
            "LEFT JOIN sign_health_explain o ON o.scope = 'overall' AND o.unit_code = c.unit_code AND o.as_of = c.as_of "
            "AND o.indicator = c.indicator JOIN sign_units u ON u.unit_code = c.unit_code "
            "JOIN sign_indicators i ON i.indicator = c.indicator JOIN sign_scopes s ON s.scope = c.category "
            "WHERE c.scope <> 'overall' ORDER BY c.as_of"),
    }

    _DICTS: ClassVar[dict[str, tuple[str, str]]] = {
        "indicator": ("sign_indicators", "indicator"), "unit_code": ("sign_units", "unit_code"), "scope": ("sign_scopes", "scope"),
    }

    def __init__(self, store):
        self.store = store
        self._luts: dict[str, np.ndarray] = {}  # Categorical physical id -> stored id (-1: not known yet)
        self._alive: dict[str, pl.Series] = {}  # the codes each table was built from (see _load_lut)
        self._rows: bool | None = None  # whether the integer-keyed tables exist (not in an old store opened read-only)

    def upgrade(self) -> None:
        """Bring a store written with string-keyed tables (``sign_values``, ``sign_health``,
        ``sign_health_explain`` as tables) to the integer-keyed ones, one transaction per
        table; then make sure the views exist. Runs after the DDL, each time the store is
        opened for writing; on a current store it only looks up three table types."""
        with self.store.lock:
            con = self.store.con
            for name, sql in self.VIEWS.items():
                kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = ? "
                                   "AND table_schema = current_schema()", [name]).fetchall()
                if kind and kind[0][0] == "BASE TABLE":
                    with self.store.transaction() as tx:
                        for table, col, codes in self._UPGRADE[name]:
                            tx.execute(f"INSERT INTO {table} ({col}) SELECT * FROM ({codes}) c({col}) "
                                       f"WHERE {col} NOT IN (SELECT {col} FROM {table}) ORDER BY 1")
                        tx.execute(self._COPY[name])
                        tx.execute(f"DROP TABLE {name}")
                if not kind or kind[0][0] == "BASE TABLE":
                    con.execute(f"CREATE VIEW IF NOT EXISTS {name} AS {sql}")

    # -- integer keys ----------------------------------------------------------------
    def _load_lut(self, what: str, top: int) -> np.ndarray:
        table, col = self._DICTS[what]
        with self.store.lock:
            d = pl.from_arrow(self.store.con.sql(f"SELECT id, {col} AS code FROM {table}").to_arrow_table())
        codes = d["code"].cast(pl.String).cast(pl.Categorical)
        # Polars renumbers its global categories once no Categorical data is alive; holding
        # the dictionary's codes keeps their physical ids (and so this table) valid
        self._alive[what] = codes
        phys = codes.to_physical().to_numpy().astype(np.int64)
        lut = np.full(max(top, int(phys.max()) if len(phys) else -1) + 1, -1, np.int64)
        lut[phys] = d["id"].to_numpy()
        return lut

    def key_ids(self, what: str, codes: pl.Series) -> np.ndarray:
        """The stored integer id of each value of ``codes`` (``what``: "indicator" or
        "unit_code"), adding unseen values to the dictionary.

        The lookup is a NumPy gather on Polars' Categorical physical ids (one global
        dictionary per process), so mapping a million keys costs milliseconds; only
        unseen codes go to the database. Ids are never reassigned, so the cache can only
        be incomplete, never wrong.
        """
        if codes.dtype != pl.Categorical:
            codes = codes.cast(pl.String).cast(pl.Categorical)
        phys = codes.to_physical().to_numpy().astype(np.int64)
        if len(phys) == 0:
            return phys
        lut = self._luts.get(what)
        if lut is None or int(phys.max()) >= len(lut):
            lut = self._luts[what] = self._load_lut(what, int(phys.max()))
        ids = lut[phys]
        if (ids < 0).any():
            table, col = self._DICTS[what]
            unseen = np.flatnonzero(ids < 0)  # one row per unseen code, found on the integers (no sort)
            first = np.full(int(phys.max()) + 1, -1, np.int64)
            first[phys[unseen[::-1]]] = unseen[::-1]
            new = codes.gather(first[first >= 0]).cast(pl.String).sort()
            # a unit code missing means the store's units are not numbered yet: number them all
            # with it, so the ancestors a roll-up writes next need no second round
            src = f"(SELECT {col} FROM _sign_new UNION SELECT code FROM units)" if what == "unit_code" else "_sign_new"
            with self.store.transaction() as con:
                con.register("_sign_new", pl.DataFrame({col: new}).to_arrow())
                try:
                    con.execute(f"INSERT INTO {table} ({col}) SELECT {col} FROM {src} n "
                                f"WHERE {col} NOT IN (SELECT {col} FROM {table}) ORDER BY {col} ON CONFLICT DO NOTHING")
                finally:
                    con.unregister("_sign_new")
            lut = self._luts[what] = self._load_lut(what, int(phys.max()))
            ids = lut[phys]
        return ids

    # -- state -------------------------------------------------------------------
    def state(self) -> dict:
        with self.store.lock:
            rows = self.store.con.execute("SELECT key, value FROM sign_state").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def set_state(self, values: dict) -> None:
        with self.store.transaction() as con:
            for k, v in values.items():
                con.execute("INSERT OR REPLACE INTO sign_state VALUES (?, ?)", [k, json.dumps(v)])

    # -- readings the stage reads ------------------------------------------------
    def reading_minutes(self, *, ingested_after: datetime | None = None, start: datetime | None = None,
                        end: datetime | None = None) -> tuple[pl.DataFrame, dict]:
        """Readings grouped by (kind, unit_code, minute as µs): enough to find touched windows.

        Returns the frame and {max_ingested_at, max_ts_us, n}.
        """
        where, params = ["unit_code IS NOT NULL"], []
        if ingested_after is not None:
            where.append("ingested_at > ?")
            params.append(ingested_after)
        if start is not None:
            where.append("ts >= ?")
            params.append(start)
        if end is not None:
            where.append("ts < ?")
            params.append(end)
        w = " AND ".join(where)
        # one scan, no temp table: the per-minute groups carry their own max(ts), max(ingested_at)
        with self.store.lock:
            frame = _pl(self.store.con.sql(
                "SELECT kind, unit_code, (epoch_us(ts) // 60000000) * 60000000 AS minute, count(*)::BIGINT AS n, "
                f"max(epoch_us(ts)) AS _t, max(ingested_at) AS _ing FROM {self.store.readings.by_key} WHERE {w} GROUP BY ALL",
                params=params,
            ).to_arrow_table())
        if frame.is_empty():
            info = {"max_ingested_at": None, "max_ts_us": None, "n": 0}
        else:
            info = {"max_ingested_at": frame["_ing"].max(), "max_ts_us": int(frame["_t"].max()), "n": int(frame["n"].sum())}
        return frame.drop("_t", "_ing"), info

    def _readings_source(self) -> str:
        """The table (or view) with the columns of ``readings`` that the stage reads: the one
        name to change if the readings' physical layout changes."""
        return "readings"

    def readings(self, spans: pl.DataFrame, units: pl.Series | None = None, *, ingested_after: datetime | None = None,
                 ingested_until: datetime | None = None) -> pl.DataFrame:
        """Readings (kind, sensor_id, ts µs, value, unit_code) of each kind in its [lo, hi)
        µs range (``spans``: kind, lo, hi, sensors), in ``units`` if given: the one scan of
        readings of every run, a recompute's and an incremental batch's. ``ingested_after``
        / ``ingested_until``: only readings stored in that interval of ``ingested_at`` (the
        live session reads what is new since its last run, and never past the instant the
        run's touched windows were taken at).

        Kinds come back as an index into ``spans`` (an integer, not a string per reading);
        unit codes and sensor ids as Categorical, so every later join and group is on
        integers. ``sensor_id`` is read only for kinds whose ``sensors`` flag is set
        (indicators that combine per-sensor values), else null.
        """
        lo, hi = max(int(spans["lo"].min()), _MIN_US), min(int(spans["hi"].max()), _MAX_US)
        utc = pl.Datetime("us", "UTC")
        k = spans.select(pl.col("kind").cast(pl.String), pl.col("lo").clip(_MIN_US, _MAX_US).cast(utc).alias("lo"),
                         pl.col("hi").clip(_MIN_US, _MAX_US).cast(utc).alias("hi"),
                         pl.col("sensors").cast(pl.Boolean)).with_row_index("kid")
        frames = {"_sign_spans": k}
        if units is not None:
            frames["_sign_units"] = pl.DataFrame({"unit_code": units.unique().cast(pl.String)})
        cond, params = "", [from_us(lo), from_us(hi)]
        for sql, at in ((" AND r.ingested_at > ?", ingested_after), (" AND r.ingested_at <= ?", ingested_until)):
            if at is not None:
                cond += sql
                params.append(at)
        if self._keyed_readings():
            r = self._keyed_scan(frames, params, cond)
        else:
            sql = ("SELECT k.kid, CASE WHEN k.sensors THEN r.sensor_id END AS sensor_id, epoch_us(r.ts) AS ts, r.value, "
                   f"r.unit_code FROM {self._readings_source()} r "
                   "JOIN _sign_spans k ON r.kind = k.kind AND r.ts >= k.lo AND r.ts < k.hi "
                   "WHERE r.unit_code IS NOT NULL AND r.ts >= ? AND r.ts < ?" + cond)
            if units is not None:
                sql += " AND r.unit_code IN (SELECT unit_code FROM _sign_units)"
            r = self._fetch_readings(sql, params, frames)
        kind = k["kind"].cast(pl.Categorical).gather(r["kid"].cast(pl.Int64))
        return r.select(kind.alias("kind"), pl.col("sensor_id").cast(pl.Categorical), pl.col("ts").cast(pl.Int64),
                        pl.col("value").cast(pl.Float64), pl.col("unit_code").cast(pl.Categorical))

    def _fetch_readings(self, sql: str, params: list, frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
        return self._select(sql, params, frames)

    def new_readings(self, ingested_after: datetime | None, sensor_kinds: list[str]) -> pl.DataFrame:
        """Every reading with a unit stored after ``ingested_after``: kind, sensor_id (only for
        ``sensor_kinds``, else null), ts µs, value, unit_code, ingested_at -- the one read of
        a live signs run (``signs.session``), which merges these readings and finds from the
        same rows the windows they touch and the stage's new watermark and cursor (what
        ``reading_minutes`` tells a run without a session), so the new rows are scanned once."""
        after = ingested_after or datetime(1, 1, 2, tzinfo=timezone.utc)
        if self._keyed_readings():
            r = self._select(
                "SELECT r.kind, CASE WHEN list_contains(?::VARCHAR[], r.kind) THEN r.sensor_key END AS sensor_key, "
                "epoch_us(r.ts) AS ts, r.value, r.unit_key, r.ingested_at FROM reading_rows r "
                "WHERE r.unit_key IS NOT NULL AND r.ingested_at > ?", [list(sensor_kinds), after], {})
            r = r.with_columns(pl.col("sensor_key").cast(pl.String).alias("sensor_id"),
                               self._unit_lut().gather(r["unit_key"].cast(pl.Int64)).alias("unit_code"))
        else:
            r = self._select(
                "SELECT kind, CASE WHEN list_contains(?::VARCHAR[], kind) THEN sensor_id END AS sensor_id, epoch_us(ts) AS ts, "
                f"value, unit_code, ingested_at FROM {self._readings_source()} WHERE unit_code IS NOT NULL AND ingested_at > ?",
                [list(sensor_kinds), after], {})
        return r.select(pl.col("kind").cast(pl.String).cast(pl.Categorical), pl.col("sensor_id").cast(pl.String).cast(pl.Categorical),
                        pl.col("ts").cast(pl.Int64), pl.col("value").cast(pl.Float64),
                        pl.col("unit_code").cast(pl.String).cast(pl.Categorical),
                        pl.col("ingested_at").cast(pl.Datetime("us", "UTC")))

    def _unit_lut(self) -> pl.Series:
        """Unit codes (Categorical) indexed by their ``unit_keys`` key (null where none)."""
        with self.store.lock:
            keys = _pl(self.store.con.sql("SELECT key, unit_code FROM unit_keys").to_arrow_table())
        lut = pl.Series("unit_code", [None] * (int(keys["key"].max() or 0) + 1), pl.String)
        return lut.scatter(keys["key"].cast(pl.Int64), keys["unit_code"].cast(pl.String)).cast(pl.Categorical)

    def _keyed_readings(self) -> bool:
        """Whether readings sit in the integer-keyed ``reading_rows`` (a current DuckDB store),
        not in a string-keyed table (an old store opened read-only; PostgreSQL)."""
        return self.store.readings.by_key != "readings"

    def _keyed_scan(self, frames: dict[str, pl.DataFrame], params: list, cond: str = "") -> pl.DataFrame:
        """The scan on ``reading_rows`` with integer sensor and unit keys, which become strings
        only through small dictionaries: materialising each row's unit code (and sensor id)
        through the ``readings`` view cost four times the scan itself (0.2 s against 0.05 s
        for 0.85M readings)."""
        sql = ("SELECT k.kid, CASE WHEN k.sensors THEN r.sensor_key END AS sensor_key, epoch_us(r.ts) AS ts, r.value, "
               "r.unit_key FROM reading_rows r JOIN _sign_spans k ON r.kind = k.kind AND r.ts >= k.lo AND r.ts < k.hi "
               "WHERE r.unit_key IS NOT NULL AND r.ts >= ? AND r.ts < ?" + cond)
        if "_sign_units" in frames:
            sql += " AND r.unit_key IN (SELECT u.key FROM unit_keys u SEMI JOIN _sign_units s ON s.unit_code = u.unit_code)"
        r = self._select(sql, params, frames)
        lut = self._unit_lut()
        return r.select(
            "kid", pl.col("sensor_key").cast(pl.String).alias("sensor_id"), "ts", "value",
            lut.gather(r["unit_key"].cast(pl.Int64)).alias("unit_code"),
        )

    # -- units ---------------------------------------------------------------------
    def closure(self) -> pl.DataFrame:
        """(unit_code, ancestor) for every unit and each of its ancestors (up to 32 levels).

        Built from (code, parent) pairs by repeated joins on Categorical codes: a few
        milliseconds for a city's 40,000 units, where a recursive SQL query took 0.2 s.
        """
        with self.store.lock:
            parent = _pl(self.store.con.sql(
                "SELECT code AS unit_code, parent_code AS ancestor FROM units WHERE parent_code IS NOT NULL"
            ).to_arrow_table())
        up = parent.rename({"unit_code": "ancestor", "ancestor": "_up"})
        out, step = [parent], parent
        for _ in range(31):
            step = step.join(up, on="ancestor").select("unit_code", pl.col("_up").alias("ancestor"))
            if step.is_empty():
                break
            out.append(step)
        return pl.concat(out)

    def unit_attributes(self) -> pl.DataFrame:
        with self.store.lock:
            return _pl(self.store.con.sql(
                "SELECT code AS unit_code, level, depth, population, area_m2, props FROM units"
            ).to_arrow_table())

    # -- values --------------------------------------------------------------------
    def write_values(self, frame: pl.DataFrame, *, replace: bool = True) -> int:
        """Replace the rows with the same (indicator, unit_code, window_start).

        ``replace=False`` when the caller knows none of the keys is stored (a recompute
        deleted its period first): a plain Arrow insert, no join against the table.
        """
        if frame.is_empty():
            return 0
        t = frame.select(
            pl.Series("indicator_id", self.key_ids("indicator", frame["indicator"]), pl.Int16),
            pl.Series("unit_id", self.key_ids("unit_code", frame["unit_code"]), pl.Int32),
            pl.col("window_start").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            pl.col("window_end").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            pl.col("value").cast(pl.Float64), pl.col("level").cast(pl.Int8), pl.col("schmitt").cast(pl.Int8),
            pl.col("n").cast(pl.Int32), pl.col("direct").cast(pl.Boolean),
        ).to_arrow()
        cols = "indicator_id, unit_id, window_start, window_end, value, level, schmitt, n, direct"
        lo, hi = int(frame["window_start"].min()), int(frame["window_start"].max())
        with self.store.transaction() as con:
            con.register("_sign_in", t)
            try:
                if replace:  # the range bounds let DuckDB skip row groups outside the batch
                    con.execute(
                        "DELETE FROM sign_rows v USING _sign_in i WHERE v.window_start >= ? AND v.window_start <= ? "
                        "AND v.indicator_id = i.indicator_id AND v.unit_id = i.unit_id AND v.window_start = i.window_start",
                        [from_us(lo), from_us(hi)],
                    )
                con.execute(f"INSERT INTO sign_rows ({cols}) SELECT {cols} FROM _sign_in")
            finally:
                con.unregister("_sign_in")
        return t.num_rows

    def delete_windows(self, start: datetime, end: datetime, indicators: list[str] | None = None) -> int:
        sql, params = "FROM sign_rows WHERE window_start >= ? AND window_start < ?", [start, end]
        if indicators is not None:
            sql += " AND indicator_id IN (SELECT id FROM sign_indicators WHERE list_contains(?, indicator))"
            params.append(indicators)
        with self.store.lock:  # the lock is re-entrant: count and delete see the same rows
            n = self.store.con.execute("SELECT count(*) " + sql, params).fetchall()[0][0]
            if n:  # a fresh period has nothing to delete: no empty write transaction
                with self.store.transaction() as con:
                    con.execute("DELETE " + sql, params)
        return n

    def _select(self, sql: str, params: list, frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
        with self.store.lock:
            con = self.store.con
            for name, f in frames.items():
                con.register(name, f.to_arrow())
            try:
                return _pl(con.sql(sql, params=params).to_arrow_table())
            finally:
                for name in frames:
                    con.unregister(name)

    _US_COLS = "indicator, unit_code, epoch_us(window_start) AS window_start, epoch_us(window_end) AS window_end, value, level, schmitt, n, direct"

    def fetch_keys(self, keys: pl.DataFrame) -> pl.DataFrame:
        """Stored rows for keys (indicator, unit_code, window_start µs)."""
        return self._select(
            f"SELECT {self._US_COLS.replace('indicator,', 'v.indicator,').replace(' unit_code,', ' v.unit_code,')} FROM sign_values v "
            "SEMI JOIN _k k ON v.indicator = k.indicator AND v.unit_code = k.unit_code "
            "AND epoch_us(v.window_start) = k.window_start",
            [], {"_k": keys.select("indicator", "unit_code", "window_start").unique()},
        )

    def fetch_direct(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """Every direct row for (indicator, window_start µs) pairs: the inputs of a roll-up."""
        return self._select(
            f"SELECT {self._US_COLS.replace('indicator,', 'v.indicator,', 1)} FROM sign_values v "
            "SEMI JOIN _p p ON v.indicator = p.indicator AND epoch_us(v.window_start) = p.window_start WHERE v.direct",
            [], {"_p": pairs.select("indicator", "window_start").unique()},
        )

    def direct_counts(self, pairs: pl.DataFrame) -> pl.DataFrame:
        """Stored direct rows per (indicator, window_start µs): tells whether a roll-up
        needs units beyond the ones a batch computed."""
        return self._select(
            "SELECT v.indicator, epoch_us(v.window_start) AS window_start, count(*)::BIGINT AS stored FROM sign_values v "
            "SEMI JOIN _p p ON v.indicator = p.indicator AND epoch_us(v.window_start) = p.window_start "
            "WHERE v.direct AND v.window_start >= ? AND v.window_start <= ? GROUP BY ALL",
            [from_us(int(pairs["window_start"].min())), from_us(int(pairs["window_start"].max()))],
            {"_p": pairs.select("indicator", "window_start").unique()},
        )

    def any_values_since(self, since_us: int, indicators: list[str], direct: bool | None = None) -> bool:
        """Whether any value of ``indicators`` (direct or rolled up only, if given) starts at or after ``since_us``."""
        sql = "SELECT 1 FROM sign_values WHERE window_start >= ? AND list_contains(?, indicator)"
        params: list = [from_us(since_us), indicators]
        if direct is not None:
            sql += " AND direct = ?"
            params.append(direct)
        with self.store.lock:
            return bool(self.store.con.execute(f"SELECT count(*) FROM ({sql} LIMIT 1)", params).fetchall()[0][0])

    def series_context(self, series: pl.DataFrame, lookback_us: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """For series (indicator, unit_code, since µs, m): the last m stored rows before
        ``since`` but not older than ``lookback_us`` (to resume triggers: a state does
        not outlive a long gap in the data, and history beyond it is never scanned) and
        every stored row at or after it (whose levels may change)."""
        frames = {"_s": series.select("indicator", "unit_code", "since", "m")}
        cols = self._US_COLS.replace("indicator,", "v.indicator,", 1).replace(" unit_code,", " v.unit_code,", 1)
        lo = int(series["since"].min())
        before = self._select(
            f"SELECT {cols} FROM sign_values v JOIN _s s ON v.indicator = s.indicator AND v.unit_code = s.unit_code "
            "WHERE v.window_start >= ? AND epoch_us(v.window_start) < s.since AND epoch_us(v.window_start) >= s.since - ? "
            "QUALIFY row_number() OVER (PARTITION BY v.indicator, v.unit_code ORDER BY v.window_start DESC) <= s.m",
            [from_us(lo - lookback_us), lookback_us], frames,
        )
        after = self._select(
            f"SELECT {cols} FROM sign_values v JOIN _s s ON v.indicator = s.indicator AND v.unit_code = s.unit_code "
            "WHERE v.window_start >= ? AND epoch_us(v.window_start) >= s.since", [from_us(lo)], frames,
        )
        return before, after

    def _integer_layout(self) -> bool:
        """Whether the integer-keyed tables exist (not in an older store opened read-only)."""
        if self._rows is None:
            with self.store.lock:
                self._rows = bool(self.store.con.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_name = 'sign_rows' "
                    "AND table_schema = current_schema()").fetchall()[0][0])
        return self._rows

    def latest(self, at: datetime, stale_us: pl.DataFrame, units: list[str] | None = None) -> pl.DataFrame:
        """Per (unit, indicator): the last value whose window ended at or before ``at``
        and not longer ago than the indicator's staleness (stale_us: indicator, stale).

        The database only filters (a scan); the last row per series is picked with NumPy
        on the integer keys and the keys become codes by a gather: a partitioned window
        function over a million rows cost ten times the scan.
        """
        if not self._integer_layout():
            return self._latest_by_view(at, stale_us, units)
        sql = (
            "SELECT v.unit_id, v.indicator_id, v.value, v.level, epoch_us(v.window_start) AS window_start, "
            "epoch_us(v.window_end) AS window_end FROM sign_rows v "
            "JOIN (SELECT i.id, s.stale FROM _st s JOIN sign_indicators i ON i.indicator = s.indicator) s ON v.indicator_id = s.id "
            "WHERE v.window_end <= ? AND epoch_us(v.window_end) > epoch_us(?::TIMESTAMPTZ) - s.stale"
        )
        params: list = [at, at]
        if units is not None:
            sql += " AND v.unit_id IN (SELECT id FROM sign_units WHERE list_contains(?, unit_code))"
            params.append([str(u) for u in units])
        r = self._select(sql, params, {"_st": stale_us.select(pl.col("indicator").cast(pl.String), "stale")})
        r = r[_last_per_series(r["unit_id"].to_numpy(), r["indicator_id"].to_numpy(), r["window_end"].to_numpy())]
        unit = self.unit_codes_by_id().gather(r["unit_id"].cast(pl.Int64))
        ind = self._codes_by_id("sign_indicators", "indicator").gather(r["indicator_id"].cast(pl.Int64))
        return r.select(unit.alias("unit_code"), ind.alias("indicator"), "value", "level", "window_start", "window_end")

    def _codes_by_id(self, table: str, col: str) -> pl.Series:
        """A dictionary's codes (Categorical) indexed by their integer id (null where no id)."""
        with self.store.lock:
            d = pl.from_arrow(self.store.con.sql(f"SELECT id, {col} FROM {table}").to_arrow_table())
        out = pl.Series(col, [None] * (int(d["id"].max()) + 1 if d.height else 1), pl.String).cast(pl.Categorical)
        if d.height:
            out = out.scatter(d["id"].cast(pl.Int64), d[col].cast(pl.Categorical))
        return out

    def unit_codes_by_id(self) -> pl.Series:
        """Unit codes (Categorical) indexed by their integer id (null where no id)."""
        return self._codes_by_id("sign_units", "unit_code")

    def _latest_by_view(self, at: datetime, stale_us: pl.DataFrame, units: list[str] | None = None) -> pl.DataFrame:
        sql = (
            "SELECT v.unit_code, v.indicator, v.value, v.level, epoch_us(v.window_start) AS window_start, "
            "epoch_us(v.window_end) AS window_end FROM sign_values v JOIN _st s ON v.indicator = s.indicator "
            "WHERE v.window_end <= ? AND epoch_us(v.window_end) > epoch_us(?::TIMESTAMPTZ) - s.stale"
        )
        params: list = [at, at]
        if units is not None:
            sql += " AND list_contains(?, v.unit_code)"
            params.append(list(units))
        sql += " QUALIFY row_number() OVER (PARTITION BY v.unit_code, v.indicator ORDER BY v.window_end DESC) = 1"
        return self._select(sql, params, {"_st": stale_us})

    def last_window_end(self) -> datetime | None:
        with self.store.lock:
            return self.store.con.execute("SELECT max(window_end) FROM sign_values").fetchall()[0][0]

    def values(self, indicator: str, unit_code: str, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        sql = "SELECT window_start, window_end, value, level, n, direct FROM sign_values WHERE indicator = ? AND unit_code = ?"
        params: list = [indicator, unit_code]
        if start is not None:
            sql += " AND window_start >= ?"
            params.append(start)
        if end is not None:
            sql += " AND window_start < ?"
            params.append(end)
        with self.store.lock:
            return pl.from_arrow(self.store.con.sql(sql + " ORDER BY window_start", params=params).to_arrow_table())

    def all_values(self) -> pl.DataFrame:
        """Every stored value (tests, exports), in key order."""
        with self.store.lock:
            return pl.from_arrow(self.store.con.sql(
                "SELECT indicator, unit_code, window_start, window_end, value, level, schmitt, n, direct FROM sign_values "
                "ORDER BY indicator, unit_code, window_start"
            ).to_arrow_table())

    # -- health ----------------------------------------------------------------------
    def write_health(self, at: datetime, indices: pl.DataFrame, explain: pl.DataFrame) -> None:
        """Store the health snapshot at ``at`` of the units in ``indices``, replacing theirs.

        ``explain`` holds each indicator's points twice, of its category and of the overall
        index (scope 'overall'); they are stored as one row with both figures, integer keys.
        """
        h = pl.DataFrame({
            "unit_id": pl.Series(self.key_ids("unit_code", indices["unit_code"]), dtype=pl.Int32),
            "scope_id": pl.Series(self.key_ids("scope", indices["scope"]), dtype=pl.Int16),
            "value": indices["value"].cast(pl.Float64),
        })
        overall = pl.col("scope") == "overall"
        cat_rows, all_rows = explain.filter(~overall), explain.filter(overall)
        key = ["unit_code", "indicator"]
        if cat_rows.select(key).equals(all_rows.select(key)):  # health_index's order: the halves line up row by row
            points_overall = all_rows["points"]
        else:
            points_overall = cat_rows.select(key).join(all_rows.select(*key, pl.col("points").alias("po")), on=key,
                                                       how="left", maintain_order="left")["po"]
        e = pl.DataFrame({
            "unit_id": pl.Series(self.key_ids("unit_code", cat_rows["unit_code"]), dtype=pl.Int32),
            "indicator_id": pl.Series(self.key_ids("indicator", cat_rows["indicator"]), dtype=pl.Int16),
            "category_id": pl.Series(self.key_ids("scope", cat_rows["category"]), dtype=pl.Int16),
            "level": cat_rows["level"].cast(pl.Int8), "value": cat_rows["value"].cast(pl.Float64),
            "weight": cat_rows["weight"].cast(pl.Float64), "points": cat_rows["points"].cast(pl.Float64),
            "points_overall": points_overall.cast(pl.Float64),
        })
        with self.store.transaction() as con:
            con.register("_hu", h.select("unit_id").unique().to_arrow())
            con.register("_h", h.to_arrow())
            con.register("_e", e.to_arrow())
            try:
                con.execute("DELETE FROM sign_health_rows t USING _hu u WHERE t.as_of = ? AND t.unit_id = u.unit_id", [at])
                con.execute("DELETE FROM sign_explain_rows t USING _hu u WHERE t.as_of = ? AND t.unit_id = u.unit_id", [at])
                con.execute("INSERT INTO sign_health_rows (unit_id, as_of, scope_id, value) SELECT unit_id, ?, scope_id, value FROM _h", [at])
                con.execute(
                    "INSERT INTO sign_explain_rows (unit_id, as_of, indicator_id, category_id, level, value, weight, points, "
                    "points_overall) SELECT unit_id, ?, indicator_id, category_id, level, value, weight, points, points_overall FROM _e",
                    [at])
            finally:
                for name in ("_hu", "_h", "_e"):
                    con.unregister(name)

    def status(self) -> dict:
        with self.store.lock:
            table, col = ("sign_rows", "indicator_id") if self._integer_layout() else ("sign_values", "indicator")
            n, ind = self.store.con.execute(f"SELECT count(*), count(DISTINCT {col}) FROM {table}").fetchall()[0]
            h = self.store.con.execute("SELECT count(DISTINCT as_of) FROM sign_health").fetchall()[0][0]
        return {"sign_values": n, "sign_indicators": ind, "health_snapshots": h}
