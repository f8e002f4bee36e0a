-- Vital signs on PostgreSQL, and the handful of DuckDB names the portable SQL of the API
-- and the repositories uses, so one query text runs on both backends.

-- list_contains(list, x): membership in a parameter list (psycopg sends text[] or bigint[]).
CREATE FUNCTION list_contains(text[], text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT $2 = ANY($1)';
CREATE FUNCTION list_contains(bigint[], bigint) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT $2 = ANY($1)';
CREATE FUNCTION list_contains(double precision[], double precision) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT $2 = ANY($1)';
-- epoch_us(ts): microseconds since 1970 (extract returns numeric: exact).
CREATE FUNCTION epoch_us(timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT (extract(epoch FROM $1) * 1000000)::bigint';
-- epoch(ts): seconds since 1970 as DuckDB's epoch() gives them.
CREATE FUNCTION epoch(timestamptz) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT extract(epoch FROM $1)::double precision';
-- time_bucket(width, ts): DuckDB's buckets for widths under a month start at 2000-01-03 (a Monday).
CREATE FUNCTION time_bucket(interval, timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT date_bin($1, $2, TIMESTAMPTZ ''2000-01-03 00:00:00+00'')';
-- hash(a, b, ...): a fingerprint of text values (the API checks whether units changed).
CREATE FUNCTION hash(VARIADIC text[]) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT hashtextextended(array_to_string($1, chr(31), chr(1)), 0)';

-- rowid: DuckDB's insertion-order row number, which the API's change feed reads. Readings
-- take it from a cached sequence (one round trip per 1000 values per session), with a
-- b-tree so "rowid > cursor" and max(rowid) never scan the table (appends go to its right
-- edge). The alert event log has seq already.
CREATE SEQUENCE readings_rowid_seq CACHE 1000;
ALTER TABLE readings ADD COLUMN rowid BIGINT NOT NULL DEFAULT nextval('readings_rowid_seq');
CREATE INDEX readings_rowid ON readings (rowid);
ALTER TABLE alert_events ADD COLUMN rowid BIGINT GENERATED ALWAYS AS (seq) STORED;

-- ts and ingested_at follow the order rows are appended in (live data), so BRIN indexes
-- (a few pages per partition) serve "ts in a range" and "ingested after a watermark" at a
-- fraction of a b-tree's cost per inserted row; (sensor_id, ts) keeps its primary key.
DROP INDEX readings_ts;
DROP INDEX readings_ingested_at;
CREATE INDEX readings_ts ON readings USING brin (ts);
CREATE INDEX readings_ingested_at ON readings USING brin (ingested_at);

-- The alert manager looks up the last resolved alert of each (source, type) it raises.
CREATE INDEX alerts_source_type ON alerts (source, type, resolved_at);

CREATE TABLE sign_values (
    indicator TEXT NOT NULL,
    unit_code TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    window_end TIMESTAMPTZ NOT NULL,
    value DOUBLE PRECISION,
    level SMALLINT NOT NULL,
    schmitt SMALLINT NOT NULL,
    n BIGINT,
    direct BOOLEAN NOT NULL,
    computed_at TIMESTAMPTZ DEFAULT now()
);
CREATE INDEX sign_values_key ON sign_values (indicator, unit_code, window_start);
CREATE INDEX sign_values_start ON sign_values (window_start);
CREATE INDEX sign_values_end ON sign_values (window_end);

CREATE TABLE sign_health (
    unit_code TEXT NOT NULL,
    as_of TIMESTAMPTZ NOT NULL,
    scope TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    computed_at TIMESTAMPTZ DEFAULT now()
);
CREATE INDEX sign_health_at ON sign_health (as_of, unit_code);

CREATE TABLE sign_health_explain (
    unit_code TEXT NOT NULL,
    as_of TIMESTAMPTZ NOT NULL,
    scope TEXT NOT NULL,
    indicator TEXT NOT NULL,
    category TEXT,
    level SMALLINT,
    value DOUBLE PRECISION,
    weight DOUBLE PRECISION,
    points DOUBLE PRECISION
);
CREATE INDEX sign_health_explain_at ON sign_health_explain (as_of, unit_code);

CREATE TABLE sign_state (
    key TEXT PRIMARY KEY,
    value TEXT
);
