"""Ingestion: every validation rule, every quarantine reason, real files with garbage."""

from __future__ import annotations

import io
import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cityvitals.ingest import Ingestor, ingest_file, ingest_frame, ingest_records, replay
from cityvitals.ingest.lines import iter_line_batches

pytestmark = pytest.mark.both_backends  # DuckDB and PostgreSQL in every run (tests/conftest.py)

SENSORS = pl.DataFrame({
    "id": ["P1", "P2", "T1", "A1"],
    "kind": ["water_pressure", "water_pressure", "temperature", "pm25"],
    "unit": ["MPa", "kPa", "degC", "ug/m3"],
    "unit_code": ["g1", "g2", "g1", "g2"],
})
T0 = "2026-05-01T08:00:00+08:00"  # 00:00 UTC


@pytest.fixture
def reg(store):
    store.sensors.upsert(SENSORS)
    return store


def _ndjson(path, records):
    with open(path, "wb") as f:
        for r in records:
            f.write(r if isinstance(r, bytes) else json.dumps(r).encode())
            f.write(b"\n")
    return path


def _quarantine(store):
    return store.quarantine.frame().to_dicts()


def test_good_readings_are_converted_located_and_stored(reg, tmp_path, clock):
    path = _ndjson(tmp_path / "r.ndjson", [
        {"sensor_id": "P1", "ts": T0, "value": 0.31},
        {"sensor_id": "P2", "ts": T0, "value": 310},  # the sensor's own unit: kPa
        {"sensor_id": "P1", "ts": "2026-05-01T00:01:00Z", "value": 32, "unit": "mH2O"},
        {"sensor_id": "T1", "ts": 1777593600, "value": 68, "unit": "degF", "quality": "good"},  # epoch seconds
    ])
    report = ingest_file(reg, path, ingestor=Ingestor(reg, clock=clock))
    assert report.to_dict()["accepted"] == 4 and report.quarantined == {} and report.duplicates == 0
    frame = reg.readings.frame().sort("sensor_id", "ts")
    rows = {(r["sensor_id"], r["ts"].isoformat()): r for r in frame.to_dicts()}
    assert rows[("P1", "2026-05-01T00:00:00+00:00")]["value"] == pytest.approx(0.31)
    assert rows[("P2", "2026-05-01T00:00:00+00:00")]["value"] == pytest.approx(0.31)
    assert rows[("P1", "2026-05-01T00:01:00+00:00")]["value"] == pytest.approx(32 * 0.00980665)
    t1 = rows[("T1", "2026-05-01T00:00:00+00:00")]
    assert t1["value"] == pytest.approx(20.0) and t1["quality"] == "good" and t1["unit_code"] == "g1"
    assert t1["kind"] == "temperature"


CASES = [
    (b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","val', "malformed", "not a JSON object"),
    (b'[1, 2, 3]', "malformed", "not a JSON object"),
    (b'{"ts":"2026-05-01T08:00:00+08:00","value":1}', "missing_field", "sensor_id"),
    (b'{"sensor_id":"P1","value":1}', "missing_field", "ts"),
    (b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00"}', "missing_field", "value"),
    (b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00","value":0.3}', "bad_timestamp", "time zone"),
    (b'{"sensor_id":"P1","ts":"yesterday","value":0.3}', "bad_timestamp", "yesterday"),
    (b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":"high"}', "bad_value", "high"),
    (b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":1e400}', "not_finite", "1e400"),
    (b'{"sensor_id":"NOPE","ts":"2026-05-01T08:00:00+08:00","value":1}', "unknown_sensor", "NOPE"),
    (b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":1,"unit":"degC"}', "wrong_unit", "degC"),
    (b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":-0.2}', "out_of_range", "water_pressure"),
    (b'{"sensor_id":"A1","ts":"2026-05-01T08:00:00+08:00","value":50000}', "out_of_range", "pm25"),
    (b'{"sensor_id":"P1","ts":"2026-05-02T08:00:00+08:00","value":0.3}', "future_timestamp", "ahead of the clock"),
    (b'\xff\xfe\x00garbage', "bad_encoding", "UTF-8"),
]


@pytest.mark.parametrize("line,reason,needle", CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_each_rule_quarantines_with_reason_and_message(reg, tmp_path, clock, line, reason, needle):
    good = b'{"sensor_id":"T1","ts":"2026-05-01T08:00:00+08:00","value":21.5}'
    path = _ndjson(tmp_path / "r.ndjson", [good, line, good.replace(b"08:00:00", b"08:05:00")])
    report = ingest_file(reg, path, ingestor=Ingestor(reg, clock=clock))
    assert report.accepted == 2, "the good records around a bad one are kept"
    assert report.quarantined == {reason: 1}
    [q] = _quarantine(reg)
    assert q["reason"] == reason and needle in q["message"]
    assert q["location"] == "line 2" and q["source"] == str(path)
    if reason != "bad_encoding":
        assert q["raw"] == line.decode()
    else:  # undecodable bytes and NUL (which PostgreSQL text cannot hold) shown escaped, on both backends
        assert q["raw"] == "\\xff\\xfe\\x00garbage"


def test_nul_characters_are_quarantined_shown_escaped(reg, tmp_path, clock):
    """U+0000 is valid UTF-8 but PostgreSQL text cannot store it: a record holding one, raw or
    JSON-escaped, is quarantined like any other, its raw text and message showing it as \\x00."""
    good = b'{"sensor_id":"T1","ts":"2026-05-01T08:00:00+08:00","value":21.5}'
    raw_nul = b'{"sensor_id":"T1","ts":"2026-05-01T08:01:00+08:00","value":2\x001}'
    escaped_nul = b'{"sensor_id":"T\\u00001","ts":"2026-05-01T08:02:00+08:00","value":21}'
    path = _ndjson(tmp_path / "r.ndjson", [good, raw_nul, escaped_nul])
    report = ingest_file(reg, path, ingestor=Ingestor(reg, clock=clock))
    assert report.accepted == 1 and report.quarantined == {"malformed": 1, "unknown_sensor": 1}
    by_line = {q["location"]: q for q in _quarantine(reg)}
    assert by_line["line 2"]["raw"] == raw_nul.decode().replace("\0", "\\x00")
    assert by_line["line 3"]["raw"] == escaped_nul.decode()
    assert "T\\x001" in by_line["line 3"]["message"] and "\0" not in by_line["line 3"]["message"]


def test_duplicates_and_conflicts_within_batch_and_against_store(reg, tmp_path, clock):
    ing = Ingestor(reg, clock=clock)
    rec = {"sensor_id": "P1", "ts": T0, "value": 0.31}
    path = _ndjson(tmp_path / "a.ndjson", [rec, rec, {**rec, "value": 0.5}])
    r1 = ingest_file(reg, path, ingestor=ing)
    assert (r1.accepted, r1.duplicates, r1.quarantined) == (1, 1, {"conflict": 1})
    # The same file again: the stored reading makes both equal copies duplicates.
    r2 = ingest_file(reg, path, ingestor=ing)
    assert (r2.accepted, r2.duplicates, r2.quarantined) == (0, 2, {"conflict": 1})
    assert reg.readings.count() == 1
    assert reg.readings.frame()["value"].to_list() == [pytest.approx(0.31)]
    conflict = [q for q in _quarantine(reg) if q["reason"] == "conflict"][0]
    assert "already has value 0.31" in conflict["message"]
    # A duplicate expressed in another unit is still a duplicate (values compare canonically).
    r3 = ingest_records(reg, [{"sensor_id": "P1", "ts": "2026-05-01T00:00:00Z", "value": 310, "unit": "kPa"}], ingestor=ing)
    assert (r3.accepted, r3.duplicates) == (0, 1)


def test_replay_after_registering_the_missing_sensor_is_exactly_once(reg, tmp_path, clock):
    ing = Ingestor(reg, clock=clock)
    recs = [{"sensor_id": "NEW", "ts": f"2026-05-01T00:0{i}:00Z", "value": 0.2 + i / 100} for i in range(5)]
    path = _ndjson(tmp_path / "r.ndjson", recs + [b"not json"])
    assert ingest_file(reg, path, ingestor=ing).quarantined == {"unknown_sensor": 5, "malformed": 1}
    nothing = replay(reg, ingestor=ing)
    assert nothing.accepted == 0 and nothing.quarantined == {"unknown_sensor": 5, "malformed": 1}
    reg.sensors.upsert(pl.DataFrame({"id": ["NEW"], "kind": ["water_pressure"], "unit": ["MPa"], "unit_code": ["g9"]}))
    first = replay(reg, ingestor=ing)
    assert first.accepted == 5 and first.quarantined == {"malformed": 1}
    second = replay(reg, ingestor=ing)
    assert second.accepted == 0 and second.records == 1  # only the malformed record is left to try
    assert reg.readings.frame(sensor_id="NEW").height == 5
    q = reg.quarantine.frame(include_resolved=True)
    assert q.filter(pl.col("resolution") == "replayed").height == 5
    assert q.filter(pl.col("reason") == "malformed")["attempts"].to_list() == [4]  # ingest + 3 replays
    # Ingesting the same file again now stores nothing twice.
    again = ingest_file(reg, path, ingestor=ing)
    assert again.accepted == 0 and again.duplicates == 5


def test_garbage_files_never_crash_and_keep_good_neighbours(reg, tmp_path, clock):
    good = [json.dumps({"sensor_id": "T1", "ts": f"2026-05-01T00:{m:02d}:00Z", "value": 20}).encode() for m in range(4)]
    blob = bytes(x for x in range(256) if x != 10) * 4  # binary garbage, no newline inside
    huge = b'{"x":"' + b"a" * (3 * 1024 * 1024) + b'"}'
    latin1 = '{"sensor_id":"T1","ts":"2026-05-01T00:30:00Z","value":20,"note":"café"}'.encode("latin-1")
    data = b"\n".join([good[0], blob, good[1], huge, good[2], latin1, b"", b"   ", good[3], b'{"sensor_id":"T1","ts'])
    path = tmp_path / "garbage.ndjson"
    path.write_bytes(data)
    report = ingest_file(reg, path, ingestor=Ingestor(reg, clock=clock))
    assert report.accepted == 4
    assert report.quarantined == {"bad_encoding": 2, "too_large": 1, "malformed": 1}
    by_line = {q["location"]: q for q in _quarantine(reg)}
    assert set(by_line) == {"line 2", "line 4", "line 6", "line 10"}
    assert by_line["line 4"]["raw_truncated"] and len(by_line["line 4"]["raw"]) == 4096
    assert by_line["line 6"]["raw"].startswith('{"sensor_id":"T1"') and "\\xe9" in by_line["line 6"]["raw"]


def test_a_line_larger_than_the_read_chunk_is_skipped_in_bounded_memory(reg, tmp_path, clock):
    path = tmp_path / "long.ndjson"
    with open(path, "wb") as f:
        f.write(b'{"sensor_id":"T1","ts":"2026-05-01T00:00:00Z","value":20}\n')
        f.write(b'{"v":"')
        for _ in range(40):  # 40 MiB in one line, read in 1 MiB chunks
            f.write(b"x" * (1024 * 1024))
        f.write(b'"}\n{"sensor_id":"T1","ts":"2026-05-01T00:01:00Z","value":21}')
    report = ingest_file(reg, path, ingestor=Ingestor(reg, clock=clock), chunk_bytes=1024 * 1024)
    assert report.accepted == 2 and report.quarantined == {"too_large": 1}
    [q] = _quarantine(reg)
    assert q["location"] == "line 2" and "41,943,048 bytes" in q["message"]


def test_line_numbers_are_exact_across_chunks():
    lines = [b'{"n":%d}' % i for i in range(10_000)]
    lines[4321] = b"\xff"
    stream = io.BytesIO(b"\n".join(lines))
    seen, rejects = [], []
    for batch in iter_line_batches(stream, chunk_bytes=4096):
        seen.extend(zip(batch.line_numbers.tolist(), batch.lines.to_pylist()))
        rejects.extend(batch.rejects)
    assert [(r.line, r.reason) for r in rejects] == [(4322, "bad_encoding")]
    assert all(json.loads(text)["n"] == number - 1 for number, text in seen)
    assert len(seen) == 9_999


def test_csv_and_parquet_use_the_same_rules(reg, tmp_path, clock):
    ing = Ingestor(reg, clock=clock)
    csv_path = tmp_path / "r.csv"
    csv_path.write_text(
        "sensor_id,ts,value,unit\n"
        "P1,2026-05-01T08:00:00+08:00,0.31,\n"
        "P2,2026-05-01T08:00:00+08:00,305,kPa\n"
        "P1,2026-05-01T08:01:00+08:00,abc,\n"
        "P1,2026-05-01T08:02:00+08:00\n"
        "GHOST,2026-05-01T08:02:00+08:00,1,\n"
    )
    r = ingest_file(reg, csv_path, ingestor=ing)
    assert r.accepted == 2 and r.quarantined == {"bad_value": 1, "malformed": 1, "unknown_sensor": 1}
    locs = {q["reason"]: q["location"] for q in _quarantine(reg)}
    assert locs == {"bad_value": "line 4", "malformed": "line 5", "unknown_sensor": "line 6"}
    # A CSV row is kept as a JSON object, so it can be replayed like any other record.
    ghost = [q for q in _quarantine(reg) if q["reason"] == "unknown_sensor"][0]
    assert json.loads(ghost["raw"])["sensor_id"] == "GHOST"

    pq_path = tmp_path / "r.parquet"
    table = pa.table({
        "sensor_id": ["T1", "T1", "T1", "NOPE"],
        "ts": pa.array([1777593600, 1777593660, 1777593720, 1777593600], pa.int64()),
        "value": [20.0, float("nan"), 500.0, 1.0],
    })
    pq.write_table(table, pq_path, row_group_size=2)
    r = ingest_file(reg, pq_path, ingestor=ing)
    assert r.accepted == 1 and r.quarantined == {"not_finite": 1, "out_of_range": 1, "unknown_sensor": 1}
    assert {q["location"] for q in _quarantine(reg) if q["source"] == str(pq_path)} == {"row 2", "row 3", "row 4"}


def test_truncated_parquet_is_quarantined_not_a_crash(reg, tmp_path, clock):
    path = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"sensor_id": ["T1"] * 100, "ts": [1777593600 + 60 * i for i in range(100)], "value": [20.0] * 100}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    r = ingest_file(reg, path, ingestor=Ingestor(reg, clock=clock))
    assert r.accepted == 0 and r.quarantined == {"malformed": 1}
    assert "cannot be opened" in _quarantine(reg)[0]["message"]


def test_frame_api(reg, clock):
    frame = pl.DataFrame({"sensor_id": ["P1", "P1"], "ts": ["2026-05-01T00:00:00Z", "2026-05-01T00:01:00Z"], "value": [0.3, 9.0]})
    r = ingest_frame(reg, frame, ingestor=Ingestor(reg, clock=clock))
    assert r.accepted == 1 and r.quarantined == {"out_of_range": 1}


def test_unknown_format_is_a_clear_error(reg, tmp_path):
    from cityvitals.errors import InputError

    path = tmp_path / "r.xml"
    path.write_text("<r/>")
    with pytest.raises(InputError, match="--format"):
        ingest_file(reg, path)
