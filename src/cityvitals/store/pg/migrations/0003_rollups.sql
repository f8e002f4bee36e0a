-- Hourly roll-ups of readings, written only by `cityvitals db rollup` (never by the pipeline),
-- so raw readings can be dropped by `cityvitals db retention` while their summaries stay.
CREATE TABLE readings_hourly (
    sensor_id TEXT NOT NULL,
    hour TIMESTAMPTZ NOT NULL,
    kind TEXT,
    unit_code TEXT,
    n BIGINT NOT NULL,
    mean DOUBLE PRECISION,
    min DOUBLE PRECISION,
    max DOUBLE PRECISION,
    PRIMARY KEY (sensor_id, hour)
);
