-- Operational tables: alerts and their event log, watch checkpoints, users and audit, assets.
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    type TEXT NOT NULL,
    level TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'acknowledged', 'resolved')),
    message TEXT,
    first_at TIMESTAMPTZ NOT NULL,
    last_at TIMESTAMPTZ NOT NULL,
    occurrences INTEGER NOT NULL DEFAULT 1,
    acknowledged_by TEXT,
    acknowledged_at TIMESTAMPTZ,
    resolved_by TEXT,
    resolved_at TIMESTAMPTZ,
    clear_since TIMESTAMPTZ,
    escalation INTEGER NOT NULL DEFAULT 0,
    escalated_at TIMESTAMPTZ,
    flapping BOOLEAN NOT NULL DEFAULT FALSE,
    reopened INTEGER NOT NULL DEFAULT 0
);
-- PostgreSQL can hold the rule the DuckDB writer keeps by hand: one open alert per (source, type).
CREATE UNIQUE INDEX alerts_one_open ON alerts (source, type) WHERE state IN ('active', 'acknowledged');

CREATE TABLE alert_events (
    seq BIGSERIAL PRIMARY KEY,
    alert_id BIGINT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    event TEXT NOT NULL,
    actor TEXT,
    level TEXT,
    note TEXT
);
CREATE INDEX alert_events_alert ON alert_events (alert_id);

CREATE TABLE watch_state (
    name TEXT PRIMARY KEY,
    watermark TIMESTAMPTZ,
    blob BYTEA,
    updated_at TIMESTAMPTZ
);

CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    area_code TEXT,
    department TEXT,
    key_id TEXT UNIQUE,
    key_salt BYTEA,
    key_hash BYTEA,
    created_at TIMESTAMPTZ NOT NULL,
    rotated_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);

CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    ts TIMESTAMPTZ NOT NULL,
    actor TEXT,
    role TEXT,
    action TEXT NOT NULL,
    target TEXT,
    status INTEGER,
    detail TEXT
);

CREATE TABLE assets (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    name TEXT,
    geometry_wkb BYTEA,
    lon DOUBLE PRECISION,
    lat DOUBLE PRECISION,
    unit_code TEXT,
    props TEXT
);

CREATE TABLE asset_edges (
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    relation TEXT NOT NULL
);
