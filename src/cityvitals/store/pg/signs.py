"""Vital signs on PostgreSQL: the DuckDB repository's interface, PostgreSQL's SQL.

Most of ``SignRepo`` runs as it stands on ``PgCon`` (``register`` makes a temp table,
``epoch_us`` and ``list_contains`` come with migration 0004). What differs is spelled out
here: DuckDB's ``SEMI JOIN``, ``QUALIFY`` and ``GROUP BY ALL`` become joins against
de-duplicated key tables, ``DISTINCT ON`` and window functions; keys in microseconds
are turned into timestamps before they are sent, so the join hits the
(indicator, unit_code, window_start) index instead of converting every stored row; and
the levels come back as Int8, as from DuckDB's TINYINT, so frames from both backends
concatenate.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa

from cityvitals.store.duck.signs import SignRepo, _pl, from_us
from cityvitals.store.pg._sql import read_columns

_UTC_US = pl.Datetime("us", "UTC")


def _ts(col: str) -> pl.Expr:
    """A µs-since-epoch column as a UTC timestamp (exact: no float on the way)."""
    return pl.col(col).cast(pl.Int64).cast(_UTC_US)


def _typed(df: pl.DataFrame) -> pl.DataFrame:
    small = [c for c in ("level", "schmitt") if c in df.columns and df.schema[c] != pl.Int8]
    return df.with_columns(pl.col(small).cast(pl.Int8)) if small else df


def _keys(df: pl.DataFrame) -> pl.DataFrame:
    """Key columns as plain strings for the temp tables (Categorical is a Polars-side code)."""
    cats = [c for c, t in df.schema.items() if t == pl.Categorical or t == pl.Enum]
    return df.with_columns(pl.col(cats).cast(pl.String)) if cats else df


class PgSignRepo(SignRepo):
    DDL = ()

    _V = ("v.indicator, v.unit_code, epoch_us(v.window_start) AS window_start, epoch_us(v.window_end) AS window_end, "
          "v.value, v.level, v.schmitt, v.n, v.direct")

    # -- state -----------------------------------------------------------------------
    def set_state(self, values: dict) -> None:
        with self.store.transaction() as con:
            for k, v in values.items():
                con.execute("INSERT INTO sign_state (key, value) VALUES (?, ?) "
                            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [k, json.dumps(v)])

    # -- readings --------------------------------------------------------------------
    def reading_minutes(self, *, ingested_after: datetime | None = None, start: datetime | None = None,
                        end: datetime | None = None) -> tuple[pl.DataFrame, dict]:
        """One scan: per (kind, unit, minute) the count and the maxima the stage's state needs."""
        where, params = ["unit_code IS NOT NULL"], []
        # the stage's cursor becomes the latest row read: never past a batch still in flight
        where.append("ingested_at <= ?")
        params.append(self.store.readings.settled())
        for cond, val in (("ingested_at > ?", ingested_after), ("ts >= ?", start), ("ts < ?", end)):
            if val is not None:
                where.append(cond)
                params.append(val)
        df = self._select(
            "SELECT kind, unit_code, (epoch_us(ts) / 60000000) * 60000000 AS minute, count(*)::BIGINT AS n, "
            f"max(ingested_at) AS mx_ing, max(epoch_us(ts)) AS mx_t FROM {self._readings_source()} WHERE {' AND '.join(where)} "
            "GROUP BY 1, 2, 3", params, {},
        )
        if df.is_empty():
            info = {"max_ingested_at": None, "max_ts_us": None, "n": 0}
        else:
            info = {"max_ingested_at": df["mx_ing"].max(), "max_ts_us": int(df["mx_t"].max()), "n": int(df["n"].sum())}
        return df.drop("mx_ing", "mx_t"), info

    def _fetch_readings(self, sql: str, params: list, frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
        """Raw readings as one row of column aggregates (``read_columns``): a run reads every
        reading of the windows it computes, and COPY out hands them over one Python call per
        row, which in the server process held the interpreter long enough to delay the ingest
        and the watch threads (publish → alert p99). Sensor ids are read only for some kinds
        (NULL otherwise), so they travel as '' and come back as nulls (ids are never empty)."""
        schema = pa.schema([("kid", pa.int64()), ("sensor_id", pa.string()), ("ts", pa.int64()), ("value", pa.float64()),
                            ("unit_code", pa.string())])
        wrapped = f"SELECT kid, coalesce(sensor_id, '') AS sensor_id, ts, value, unit_code FROM ({sql}) r_"
        with self.store.lock:
            con = self.store.con
            for name, f in frames.items():
                con.register(name, _keys(f))
            try:
                out = pl.from_arrow(read_columns(con, wrapped, params, schema))
            finally:
                for name in frames:
                    con.unregister(name)
        return out.with_columns(pl.when(pl.col("sensor_id") == "").then(None).otherwise(pl.col("sensor_id"))
                                .alias("sensor_id"))

    _NEW_READ = pa.schema([("kind", pa.string()), ("sensor_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
                           ("value", pa.float64()), ("unit_code", pa.string()), ("ingested_at", pa.timestamp("us", tz="UTC"))])

    def new_readings(self, ingested_after: datetime | None, sensor_kinds: list[str]) -> pl.DataFrame:
        """As on DuckDB: one read of the rows stored since the cursor (the ``ingested_at``
        index), as column aggregates; times travel in binary (``timestamptz_send``), not
        through ``epoch_us``, whose numeric arithmetic per row cost more than the scan."""
        sql = ("SELECT kind, CASE WHEN kind = ANY(?) THEN sensor_id ELSE '' END AS sensor_id, ts, value, unit_code, "
               f"ingested_at FROM {self._readings_source()} WHERE unit_code IS NOT NULL AND ingested_at > ? "
               "AND ingested_at <= ?")  # not past a batch still in flight (readings.settled)
        with self.store.lock:
            t = read_columns(self.store.con, sql, [list(sensor_kinds) or [""], ingested_after or datetime(1, 1, 2, tzinfo=timezone.utc),
                                                   self.store.readings.settled()], self._NEW_READ)
        r = pl.from_arrow(t)
        return r.select(pl.col("kind").cast(pl.Categorical),
                        pl.when(pl.col("sensor_id") == "").then(None).otherwise(pl.col("sensor_id")).cast(pl.Categorical)
                        .alias("sensor_id"), pl.col("ts").cast(pl.Int64), pl.col("value").cast(pl.Float64),
                        pl.col("unit_code").cast(pl.Categorical), pl.col("ingested_at").cast(pl.Datetime("us", "UTC")))

    # -- values ----------------------------------------------------------------------
    def _select(self, sql: str, params: list, frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
        with self.store.lock:
            con = self.store.con
            for name, f in frames.items():
                con.register(name, _keys(f))
            try:
                return _typed(_pl(con.sql(sql, params).to_arrow_table()))
            finally:
                for name in frames:
                    con.unregister(name)

    def fetch_keys(self, keys: pl.DataFrame) -> pl.DataFrame:
        k = keys.select("indicator", "unit_code", _ts("window_start").alias("window_start")).unique()
        return self._select(
            f"SELECT {self._V} FROM sign_values v JOIN (SELECT DISTINCT indicator, unit_code, window_start FROM _k) k "
            "ON v.indicator = k.indicator AND v.unit_code = k.unit_code AND v.window_start = k.window_start",
            [], {"_k": k},
        )

    def fetch_direct(self, pairs: pl.DataFrame) -> pl.DataFrame:
        p = pairs.select("indicator", _ts("window_start").alias("window_start")).unique()
        return self._select(
            f"SELECT {self._V} FROM sign_values v JOIN (SELECT DISTINCT indicator, window_start FROM _p) p "
            "ON v.indicator = p.indicator AND v.window_start = p.window_start WHERE v.direct",
            [], {"_p": p},
        )

    def direct_counts(self, pairs: pl.DataFrame) -> pl.DataFrame:
        p = pairs.select("indicator", _ts("window_start").alias("window_start")).unique()
        return self._select(
            "SELECT v.indicator, epoch_us(v.window_start) AS window_start, count(*)::BIGINT AS stored FROM sign_values v "
            "JOIN (SELECT DISTINCT indicator, window_start FROM _p) p "
            "ON v.indicator = p.indicator AND v.window_start = p.window_start "
            "WHERE v.direct AND v.window_start >= ? AND v.window_start <= ? GROUP BY v.indicator, v.window_start",
            [from_us(int(pairs["window_start"].min())), from_us(int(pairs["window_start"].max()))], {"_p": p},
        )

    def any_values_since(self, since_us: int, indicators: list[str], direct: bool | None = None) -> bool:
        sql = "SELECT 1 FROM sign_values WHERE window_start >= ? AND indicator = ANY(?)"
        params: list = [from_us(since_us), [str(i) for i in indicators]]
        if direct is not None:
            sql += " AND direct = ?"
            params.append(direct)
        with self.store.lock:
            return bool(self.store.con.execute(sql + " LIMIT 1", params).fetchall())

    def series_context(self, series: pl.DataFrame, lookback_us: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        s = series.select("indicator", "unit_code", _ts("since").alias("since"),
                          (pl.col("since").cast(pl.Int64) - lookback_us).cast(_UTC_US).alias("oldest"), "m")
        lo = int(series["since"].min())
        join = "FROM sign_values v JOIN _s s ON v.indicator = s.indicator AND v.unit_code = s.unit_code"
        before = self._select(
            f"SELECT indicator, unit_code, window_start, window_end, value, level, schmitt, n, direct FROM ("
            f"SELECT {self._V}, s.m, row_number() OVER (PARTITION BY v.indicator, v.unit_code "
            f"ORDER BY v.window_start DESC) AS rn {join} "
            "WHERE v.window_start >= ? AND v.window_start < s.since AND v.window_start >= s.oldest) x WHERE rn <= m",
            [from_us(lo - lookback_us)], {"_s": s},
        )
        after = self._select(f"SELECT {self._V} {join} WHERE v.window_start >= ? AND v.window_start >= s.since",
                             [from_us(lo)], {"_s": s})
        return before, after

    def latest(self, at: datetime, stale_us: pl.DataFrame, units: list[str] | None = None) -> pl.DataFrame:
        st = stale_us.select("indicator", (pl.lit(at).cast(_UTC_US).cast(pl.Int64) - pl.col("stale").cast(pl.Int64))
                             .cast(_UTC_US).alias("cut"))
        sql = ("SELECT DISTINCT ON (v.unit_code, v.indicator) v.unit_code, v.indicator, v.value, v.level, "
               "epoch_us(v.window_start) AS window_start, epoch_us(v.window_end) AS window_end "
               "FROM sign_values v JOIN _st s ON v.indicator = s.indicator WHERE v.window_end <= ? AND v.window_end > s.cut")
        params: list = [at]
        if units is not None:
            sql += " AND v.unit_code = ANY(?)"
            params.append([str(u) for u in units])
        sql += " ORDER BY v.unit_code, v.indicator, v.window_end DESC"
        return self._select(sql, params, {"_st": st})

    def values(self, indicator: str, unit_code: str, start: datetime | None = None, end: datetime | None = None) -> pl.DataFrame:
        return _typed(super().values(indicator, unit_code, start, end))

    def all_values(self) -> pl.DataFrame:
        return _typed(super().all_values())
