-- Micro-batches a streaming engine (Spark Structured Streaming) has committed to this store.
-- A batch's results and its row here are written in one transaction, so a job restarted
-- from its checkpoint that replays a batch finds it here and skips it: nothing is lost
-- (an uncommitted batch left no row and is run again) and nothing is applied twice.
CREATE TABLE stream_batches (
    query        TEXT        NOT NULL,  -- the streaming query's name (one per checkpoint)
    batch_id     BIGINT      NOT NULL,  -- the engine's micro-batch id
    files        INTEGER     NOT NULL DEFAULT 0,
    records      BIGINT      NOT NULL DEFAULT 0,
    accepted     BIGINT      NOT NULL DEFAULT 0,
    quarantined  BIGINT      NOT NULL DEFAULT 0,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (query, batch_id)
);
