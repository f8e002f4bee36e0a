"""Why a record was refused: one short code per rule, each with a sentence for humans.

The codes are stable (scripts count them); the sentences are built per record in the
validator so they name the field and the offending value.
"""

REASONS: dict[str, str] = {
    "too_large": "the record exceeds the size limit",
    "bad_encoding": "the record is not valid UTF-8",
    "malformed": "the record cannot be parsed (not a JSON object / wrong number of CSV fields / unreadable)",
    "missing_field": "a required field (sensor_id, ts, value) is missing or empty",
    "bad_timestamp": "ts is neither ISO 8601 with a time zone nor epoch seconds",
    "bad_value": "value is not a number",
    "not_finite": "value is infinite or NaN",
    "unknown_sensor": "the sensor is not in the registry",
    "wrong_unit": "the unit cannot be converted to the kind's canonical unit",
    "out_of_range": "the value is outside the kind's physically possible range",
    "future_timestamp": "ts is further in the future than the tolerance allows",
    "conflict": "a different value is already stored or seen for the same sensor and ts",
}
