-- Cases, incidents and data sharing on PostgreSQL: the tables the DuckDB repositories of
-- the diagnose, dispose and share stages create, with the same columns and meanings.
-- (0005 and 0007 are numbers reserved for other changes; the runner applies whatever is
-- missing in number order, so a gap is fine.)

-- contains(text, needle): DuckDB's substring test, which erasure's portable SQL uses.
CREATE FUNCTION contains(text, text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT strpos($1, $2) > 0';
-- json_extract_string(json, path): a JSON value as text, as DuckDB's (case statistics read
-- the department out of an event's data).
CREATE FUNCTION json_extract_string(text, text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$SELECT jsonb_path_query_first($1::jsonb, $2::jsonpath) #>> '{}'$$;
-- strftime(ts, format): DuckDB's C-style formatting (Open311 writes its times with it), by
-- turning the format into to_char's: %Y %m %d %H %M %S %f %j %%, every other character literal.
CREATE FUNCTION strftime(timestamptz, text) RETURNS text
    LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    pattern text := '';
    i integer := 1;
    c text;
BEGIN
    WHILE i <= length($2) LOOP
        c := substr($2, i, 1);
        IF c = '%' AND i < length($2) THEN
            i := i + 1;
            c := substr($2, i, 1);
            pattern := pattern || CASE c WHEN 'Y' THEN 'YYYY' WHEN 'm' THEN 'MM' WHEN 'd' THEN 'DD' WHEN 'H' THEN 'HH24'
                WHEN 'M' THEN 'MI' WHEN 'S' THEN 'SS' WHEN 'f' THEN 'US' WHEN 'j' THEN 'DDD' WHEN '%' THEN '"%"' END;
            IF pattern IS NULL THEN
                RAISE EXCEPTION 'strftime: format code %% % is not supported here', c;
            END IF;
        ELSIF c = '"' THEN
            pattern := pattern || '\"';
        ELSE
            pattern := pattern || '"' || c || '"';
        END IF;
        i := i + 1;
    END LOOP;
    RETURN to_char($1, pattern);
END $$;
-- epoch(interval): seconds in a duration, as DuckDB's epoch() gives them (case statistics).
CREATE FUNCTION epoch(interval) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT extract(epoch FROM $1)::double precision';

-- ---- cases (dispose) ------------------------------------------------------------------
CREATE SEQUENCE cases_id_seq START 1;
CREATE SEQUENCE case_reporters_id_seq START 1;
CREATE SEQUENCE case_attachments_id_seq START 1;

CREATE TABLE cases (
    id BIGINT PRIMARY KEY, ref TEXT, channel TEXT, description TEXT,
    lon DOUBLE PRECISION, lat DOUBLE PRECISION, unit_code TEXT, region_code TEXT, address TEXT, media_url TEXT,
    token TEXT, codes_version TEXT, reports INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL, category TEXT NOT NULL, priority TEXT NOT NULL, source TEXT NOT NULL,
    reported_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL, verified BOOLEAN, inspector TEXT,
    filed_at TIMESTAMPTZ, department TEXT, crew TEXT, dispatched_at TIMESTAMPTZ, handled_at TIMESTAMPTZ,
    closed_at TIMESTAMPTZ, limit_h DOUBLE PRECISION, natural_clock BOOLEAN, extra_h DOUBLE PRECISION,
    paused_h DOUBLE PRECISION, pause_started TIMESTAMPTZ, due_at TIMESTAMPTZ, suspended_from TEXT,
    escalation INTEGER, returns INTEGER, reworks INTEGER, extensions INTEGER, on_time BOOLEAN, seq INTEGER
);
CREATE INDEX cases_state ON cases (state);
CREATE INDEX cases_token ON cases (token);
CREATE INDEX cases_crew ON cases (crew) WHERE crew IS NOT NULL;
CREATE INDEX cases_category_reported ON cases (category, reported_at);

-- The event log is append-only; rowid (insertion order, last so positional inserts still
-- fit) is what the API's change feed reads.
CREATE TABLE case_events (
    case_id BIGINT NOT NULL, seq INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL, action TEXT NOT NULL,
    actor TEXT, role TEXT, from_state TEXT, to_state TEXT, data TEXT,
    rowid BIGSERIAL PRIMARY KEY
);
CREATE INDEX case_events_case ON case_events (case_id, seq);

CREATE TABLE case_reports (
    ref TEXT, case_id BIGINT NOT NULL, reporter_id BIGINT, reported_at TIMESTAMPTZ NOT NULL,
    channel TEXT, text TEXT, attached BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX case_reports_ref ON case_reports (ref);
CREATE INDEX case_reports_case ON case_reports (case_id);

CREATE TABLE case_reporters (
    id BIGINT PRIMARY KEY, name TEXT, phone TEXT, email TEXT, id_number TEXT,
    enterprise TEXT, account_id TEXT, device_id TEXT
);

CREATE TABLE case_attachments (
    id BIGINT PRIMARY KEY, case_id BIGINT NOT NULL, stage TEXT, sha256 TEXT, mime TEXT,
    size BIGINT, path TEXT, added_at TIMESTAMPTZ, added_by TEXT
);
CREATE INDEX case_attachments_case ON case_attachments (case_id);

CREATE TABLE case_notices (
    case_id BIGINT NOT NULL, ref TEXT, reporter_id BIGINT, ts TIMESTAMPTZ NOT NULL, kind TEXT, message TEXT
);
CREATE INDEX case_notices_case ON case_notices (case_id);

CREATE TABLE departments (code TEXT PRIMARY KEY, zh TEXT, en TEXT);

CREATE TABLE crews (
    id TEXT PRIMARY KEY, department TEXT NOT NULL, name TEXT, lon DOUBLE PRECISION, lat DOUBLE PRECISION,
    active BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE dispose_state (name TEXT PRIMARY KEY, watermark TEXT, updated_at TIMESTAMPTZ);

-- ---- incidents (diagnose) ---------------------------------------------------------------
CREATE TABLE incidents (
    id BIGSERIAL PRIMARY KEY,
    type TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closed', 'merged')),
    title TEXT,
    severity TEXT,
    level INTEGER,
    confidence DOUBLE PRECISION,
    top_cause TEXT,
    start_at TIMESTAMPTZ,
    end_at TIMESTAMPTZ,
    opened_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ,
    closed_at TIMESTAMPTZ,
    merged_into BIGINT,
    units TEXT,
    population DOUBLE PRECISION,
    area_wkb BYTEA,
    n_alerts INTEGER,
    n_reports INTEGER
);

CREATE TABLE incident_members (
    incident_id BIGINT NOT NULL,
    ref TEXT NOT NULL,
    origin TEXT NOT NULL,
    source TEXT,
    type TEXT
);
CREATE INDEX incident_members_incident ON incident_members (incident_id);

CREATE TABLE incident_causes (
    incident_id BIGINT NOT NULL,
    rank INTEGER NOT NULL,
    cause TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    asset_type TEXT,
    score DOUBLE PRECISION,
    evidence TEXT
);
CREATE INDEX incident_causes_incident ON incident_causes (incident_id, rank);

-- history is read "ORDER BY ts, rowid": rowid keeps the order rows were appended in (last
-- column, so the positional INSERT of the portable repository fills the others).
CREATE TABLE incident_history (
    incident_id BIGINT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    event TEXT NOT NULL,
    note TEXT,
    rowid BIGSERIAL PRIMARY KEY
);
CREATE INDEX incident_history_incident ON incident_history (incident_id, ts);

-- ---- data sharing ---------------------------------------------------------------------
CREATE TABLE share_budget (
    dataset TEXT PRIMARY KEY,
    epsilon_total DOUBLE PRECISION NOT NULL
);

CREATE TABLE share_budget_ledger (
    ts TIMESTAMPTZ NOT NULL,
    dataset TEXT NOT NULL,
    epsilon DOUBLE PRECISION NOT NULL,
    actor TEXT,
    query TEXT
);
CREATE INDEX share_budget_ledger_dataset ON share_budget_ledger (dataset);

CREATE TABLE share_access_log (
    seq BIGINT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    role TEXT,
    action TEXT NOT NULL,
    dataset TEXT,
    fields TEXT,
    purpose TEXT,
    records BIGINT,
    detail TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE share_keys (
    key_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ
);

CREATE TABLE share_exports (
    path TEXT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    dataset TEXT NOT NULL,
    format TEXT NOT NULL,
    audience TEXT NOT NULL,
    rows BIGINT,
    sha256 TEXT,
    key_id TEXT,
    actor TEXT
);

CREATE TABLE share_releases (
    dataset TEXT PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    epsilon DOUBLE PRECISION,
    body TEXT NOT NULL
);
