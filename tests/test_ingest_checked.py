"""The store-free checker Spark's executors run (``ingest.checked.Checker``) on a batch as
large as a bulk file gives: the size at which a store's ingestor takes the compiled fast path,
which writes through a store, so the checker must keep to the SQL rules."""

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from cityvitals.ingest.checked import Checker
from cityvitals.ingest.lines import LineBatch
from cityvitals.ingest.pipeline import FAST_MIN_LINES

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def test_a_bulk_sized_batch_is_checked_by_the_rules_and_kept():
    registry = pa.table({"id": ["S1", "S2"], "kind": ["water_pressure", "pm25"], "unit": ["MPa", "ug/m3"],
                         "unit_code": ["G1", "G2"]})
    n = FAST_MIN_LINES + 5
    t0 = int(NOW.timestamp()) - n  # every reading in the past
    lines = [f'{{"sensor_id": "S{1 + i % 2}", "ts": {t0 + i}, "value": {0.2 if i % 2 == 0 else 35.0}}}'
             for i in range(n - 3)]
    lines += ['{"sensor_id": "S9", "ts": ' + str(t0) + ', "value": 1}',        # unknown sensor
              '{"sensor_id": "S1", "ts": ' + str(t0 + 1) + ', "value": -4}',       # water pressure below zero
              '{not json']
    batch = LineBatch(pa.array(lines, pa.string()), np.arange(1, n + 1), nbytes=sum(map(len, lines)), line_count=n)
    checker = Checker(registry, now=NOW)
    try:
        checker.ingest_lines(batch, source="bulk.ndjson")
        [part] = checker.take()
    finally:
        checker.close()
    reasons = part.rows["reason"].to_pylist()
    assert len(reasons) == n
    assert reasons[-3:] == ["unknown_sensor", "out_of_range", "malformed"]
    assert all(r is None for r in reasons[:-3])
    assert part.rows["unit_code"].to_pylist()[:2] == ["G1", "G2"]
