"""The ingest stage's core: validate a batch of decoded records in one vectorised pass.

Every rule is a column expression over the whole batch, run by DuckDB on whichever
connection holds the batch (the store's, or an in-memory one). A record gets the
first reason that applies, in the order of ``RULE_ORDER``, and a sentence that names
the field and the value, so a person reading the quarantine knows what to fix.

A batch arrives as the view ``_batch_raw`` (``seq`` plus either one JSON text column
``raw`` or the reading columns). A *decode* query turns it into text columns: seq,
pre_reason, pre_message, sensor_id, ts, value, unit, quality. ``validate_sql`` wraps
that query and yields temp table ``_val`` (with the sensor's kind, unit and, on the DuckDB
store, its stored keys; no raw text: it is fetched back by seq for
the few rejected rows only, which keeps the hot path from copying every string).
Temp tables ``_sensor_ready`` and ``_kind_conv`` must exist (see ``Ingestor``).
"""

from __future__ import annotations

RULE_ORDER = (
    "too_large", "bad_encoding", "malformed", "missing_field", "bad_timestamp", "bad_value",
    "not_finite", "unknown_sensor", "wrong_unit", "out_of_range", "future_timestamp", "conflict",
)

# json_valid first: the extractors raise on bad text, and an error raised inside try()
# sends DuckDB down a row-at-a-time path that is ten times slower. One multi-path
# extraction parses each record once (cheaper than from_json into a struct).
DECODE_JSON = """
SELECT seq,
       CASE WHEN j IS NULL THEN 'malformed' END AS pre_reason,
       CASE WHEN j IS NULL THEN 'the record is not a JSON object' END AS pre_message,
       j[1] AS sensor_id, j[2] AS ts, j[3] AS value, j[4] AS unit, j[5] AS quality
FROM (
    SELECT seq,
           CASE WHEN json_valid(raw) AND starts_with(ltrim(raw), '{')
                THEN json_extract_string(raw, ['$.sensor_id', '$.ts', '$.value', '$.unit', '$.quality']) END AS j
    FROM _batch_raw
)
"""
RAW_JSON = "SELECT seq, rtrim(raw, chr(13) || chr(10)) AS raw FROM _batch_raw"  # lines carry their newline


def decode_columns(columns: set[str]) -> tuple[str, str]:
    """Decode and raw queries for a columnar batch (Parquet, CSV, a frame): text, trimmed."""

    def col(name: str) -> str:
        return f'nullif(trim(CAST("{name}" AS VARCHAR)), \'\')' if name in columns else "CAST(NULL AS VARCHAR)"

    fields = {n: col(n) for n in ("sensor_id", "ts", "value", "unit", "quality")}
    decode = (
        "SELECT seq, NULL::VARCHAR AS pre_reason, NULL::VARCHAR AS pre_message, "
        + ", ".join(f"{expr} AS {name}" for name, expr in fields.items())
        + " FROM _batch_raw"
    )
    raw = (
        "SELECT seq, to_json(struct_pack("
        + ", ".join(f"{name} := {expr}" for name, expr in fields.items())
        + "))::VARCHAR AS raw FROM _batch_raw"
    )
    return decode, raw


EPOCH_RE = r"^-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
ZONED_RE = r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"


def validate_sql(decode: str) -> str:
    """The validation query over a decode query; parameters $now and $tolerance (seconds)."""
    return f"""
CREATE OR REPLACE TEMP TABLE _val AS
WITH typed AS (
    SELECT d.*,
           CASE
             -- a zone suffix (Z, +08, +08:00, +0800) is required: a local time is ambiguous.
             -- Cheap character tests decide; the regular expression only confirms the rest.
             WHEN length(d.ts) > 10 AND (right(d.ts, 1) IN ('Z', 'z') OR substr(d.ts, -6, 1) IN ('+', '-')
                  OR substr(d.ts, -3, 1) IN ('+', '-') OR substr(d.ts, -5, 1) IN ('+', '-'))
                  AND regexp_matches(d.ts, '{ZONED_RE}') THEN try_cast(d.ts AS TIMESTAMPTZ)
             WHEN regexp_matches(d.ts, '{EPOCH_RE}') THEN try(to_timestamp(try_cast(d.ts AS DOUBLE)))
           END AS ts_parsed,
           try_cast(d.value AS DOUBLE) AS v
    FROM ({decode}) d
),
joined AS (
    -- _sensor_ready carries each sensor's own-unit conversion and its kind's range, so
    -- the common case (no unit in the record) costs one join; an explicit unit looks up
    -- its conversion separately.
    SELECT t.*, s.kind, s.unit_code, s.sensor_key, s.unit_key, coalesce(t.unit, s.unit) AS in_unit,
           CASE WHEN t.unit IS NULL OR t.unit = s.unit THEN s.factor ELSE c.factor END AS factor,
           CASE WHEN t.unit IS NULL OR t.unit = s.unit THEN s."offset" ELSE c."offset" END AS "offset",
           s.canonical_unit, s.min_value, s.max_value
    FROM typed t
    LEFT JOIN _sensor_ready s ON s.id = t.sensor_id
    LEFT JOIN _kind_conv c ON c.kind = s.kind AND c.unit = t.unit
),
scored AS (
    SELECT *, v * factor + "offset" AS canonical FROM joined
),
reasoned AS (
    SELECT *,
       CASE
         WHEN pre_reason IS NOT NULL THEN pre_reason
         WHEN sensor_id IS NULL OR sensor_id = '' OR ts IS NULL OR ts = '' OR value IS NULL OR value = '' THEN 'missing_field'
         WHEN ts_parsed IS NULL THEN 'bad_timestamp'
         WHEN v IS NULL THEN 'bad_value'
         WHEN NOT isfinite(v) THEN 'not_finite'
         WHEN kind IS NULL THEN 'unknown_sensor'
         WHEN factor IS NULL THEN 'wrong_unit'
         WHEN NOT (canonical BETWEEN min_value AND max_value) THEN 'out_of_range'
         WHEN ts_parsed > $now + to_seconds($tolerance) THEN 'future_timestamp'
       END AS reason
    FROM scored
)
SELECT seq, sensor_id, ts_parsed AS ts, canonical AS value, quality, kind, unit_code, sensor_key, unit_key, reason,
       CASE reason
         WHEN 'missing_field' THEN format('field {{}} is missing or empty',
              CASE WHEN sensor_id IS NULL OR sensor_id = '' THEN 'sensor_id' WHEN ts IS NULL OR ts = '' THEN 'ts' ELSE 'value' END)
         WHEN 'bad_timestamp' THEN format('field ts {{}} is not ISO 8601 with a time zone, nor epoch seconds', left(ts, 64))
         WHEN 'bad_value' THEN format('field value {{}} is not a number', left(value, 64))
         WHEN 'not_finite' THEN format('field value {{}} is not finite', left(value, 64))
         WHEN 'unknown_sensor' THEN format('sensor {{}} is not in the registry', left(sensor_id, 128))
         WHEN 'wrong_unit' THEN format('unit {{}} cannot be converted to {{}} for kind {{}}', in_unit, canonical_unit, kind)
         WHEN 'out_of_range' THEN format('value {{}} {{}} is outside the physical range of {{}} [{{}}, {{}}]',
              round(canonical, 6), canonical_unit, kind, min_value, max_value)
         WHEN 'future_timestamp' THEN format('ts {{}} is {{}} s ahead of the clock (tolerance {{}} s)',
              strftime(ts_parsed, '%Y-%m-%dT%H:%M:%SZ'), epoch(ts_parsed - $now)::BIGINT, $tolerance)
         ELSE pre_message
       END AS message
FROM reasoned
"""


# Duplicates and conflicts, within the batch and against what is stored. The first
# valid record of a key (by arrival order) is the candidate; a later record with the
# same value is a duplicate, with another value a conflict. Stored readings are
# looked up only in the batch's time range, by the sensor's stored key (the DuckDB store's
# ``reading_rows``; ``_val`` carries each valid record's sensor key from ``_sensor_ready``).
DEDUPE_SQL = """
CREATE OR REPLACE TEMP TABLE _ded AS
WITH ok AS (
    SELECT seq, sensor_id, sensor_key, ts, value FROM _val WHERE reason IS NULL
),
multi AS (  -- keys seen more than once in this batch: rare, so the join below is cheap
    SELECT sensor_id, ts, min(seq) AS first_seq, arg_min(value, seq) AS first_v
    FROM ok GROUP BY sensor_id, ts HAVING count(*) > 1
),
bounds AS (SELECT min(ts) lo, max(ts) hi FROM ok),
stored AS (
    SELECT r.sensor_key, r.ts, any_value(r.value) AS stored_v
    FROM reading_rows r, bounds
    WHERE r.ts BETWEEN bounds.lo AND bounds.hi
    GROUP BY r.sensor_key, r.ts
)
SELECT * FROM (
    SELECT ok.seq,
           CASE
             WHEN st.stored_v IS NOT NULL AND st.stored_v = ok.value THEN 'duplicate'
             WHEN st.stored_v IS NOT NULL THEN 'conflict'
             WHEN m.first_seq IS NOT NULL AND ok.seq <> m.first_seq AND ok.value = m.first_v THEN 'duplicate'
             WHEN m.first_seq IS NOT NULL AND ok.seq <> m.first_seq THEN 'conflict'
             ELSE 'accept'
           END AS outcome,
           coalesce(st.stored_v, m.first_v) AS other_v
    FROM ok
    LEFT JOIN multi m ON m.sensor_id = ok.sensor_id AND m.ts = ok.ts
    LEFT JOIN stored st ON st.sensor_key = ok.sensor_key AND st.ts = ok.ts
) WHERE outcome <> 'accept'  -- only the refused: every other valid record is accepted
"""
