-- Core tables: the spatial tree, the sensor registry, readings (partitioned by month on ts,
-- idempotent on (sensor_id, ts)), the quarantine and a small key/value table of counters.
CREATE TABLE units (
    code TEXT PRIMARY KEY,
    name TEXT,
    level TEXT NOT NULL,
    depth INTEGER NOT NULL,
    parent_code TEXT,
    geometry_wkb BYTEA,
    centroid_lon DOUBLE PRECISION,
    centroid_lat DOUBLE PRECISION,
    area_m2 DOUBLE PRECISION,
    population DOUBLE PRECISION,
    h3_cell TEXT,
    props TEXT
);
CREATE INDEX units_level ON units (level);

CREATE TABLE sensors (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    unit TEXT NOT NULL,
    lon DOUBLE PRECISION,
    lat DOUBLE PRECISION,
    department TEXT,
    installed TIMESTAMPTZ,
    unit_code TEXT,
    meta TEXT,
    registered_at TIMESTAMPTZ DEFAULT now()
);

CREATE TABLE readings (
    sensor_id TEXT NOT NULL,
    ts TIMESTAMPTZ NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    quality TEXT,
    kind TEXT,
    unit_code TEXT,
    ingested_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sensor_id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX readings_ts ON readings (ts);
CREATE INDEX readings_ingested_at ON readings (ingested_at);

CREATE TABLE quarantine (
    id BIGSERIAL PRIMARY KEY,
    received_at TIMESTAMPTZ NOT NULL,
    source TEXT,
    location TEXT,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    raw TEXT,
    raw_truncated BOOLEAN DEFAULT false,
    attempts INTEGER DEFAULT 1,
    resolved_at TIMESTAMPTZ,
    resolution TEXT
);
-- Sources that redeliver (MQTT) quarantine each message once: looked up by (source, location).
CREATE INDEX quarantine_source_location ON quarantine (source, location);

CREATE TABLE store_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO store_meta VALUES ('sensors_version', 0);
