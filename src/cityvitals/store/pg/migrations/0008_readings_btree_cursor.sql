-- Readings: the indexes the live path reads by are b-trees again, and the rowid column goes.
--
-- Migration 0004 made ts and ingested_at BRIN indexes, cheap per inserted row. But a BRIN
-- range is summarised only by a vacuum (or an autosummarize request an autovacuum worker
-- takes up later), and every unsummarised range counts as a match: the live watch's
-- "ingested after the last run" and the signs stage's recent windows read everything
-- appended since the last vacuum. On a 1.2-million-row partition that was 120-150 ms of
-- PostgreSQL CPU per watch run for 1,000-4,000 new rows (a sequential scan; 1.5-3.7 ms with
-- a b-tree), and a 5-minute window 79 ms (23 ms), growing with the partition. Both columns
-- grow in the order rows are appended, so their b-trees are appended at the right edge.
--
-- rowid (a sequence value per reading and its b-tree) served only the API's change feed,
-- which now reads "ingested after" the last instant it saw, as the watch does. Without it,
-- and with the two b-trees, a COPY costs PostgreSQL 8.0 us per row against 8.5 before
-- (same machine, interleaved, 4,000-row batches into 1.2 million rows).
ALTER TABLE readings DROP COLUMN rowid;
DROP SEQUENCE IF EXISTS readings_rowid_seq;
DROP INDEX readings_ts;
DROP INDEX readings_ingested_at;
CREATE INDEX readings_ts ON readings (ts);
CREATE INDEX readings_ingested_at ON readings (ingested_at);

-- Readers find new readings by ingested_at > the last instant they saw, so a batch must not
-- commit with an earlier stamp than one committed before it. Every writer takes its stamp
-- from this row (readings.write_batch): the UPDATE holds the row until the writer commits,
-- so stamps follow commit order across processes, and each is later than the last.
INSERT INTO store_meta VALUES ('ingest_stamp_us', 0) ON CONFLICT (key) DO NOTHING;
