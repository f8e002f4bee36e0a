"""The fast path of NDJSON ingest accepts exactly what the SQL rules accept, with the same values.

Every test runs the same lines through the fast path (``Ingestor.ingest_lines`` on the
DuckDB store) and through the general SQL path alone (``Ingestor._run`` with the JSON
decoder, the code every record took before the fast path existed) on two fresh stores,
and compares what each stored and quarantined, field by field.
"""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pytest

from cityvitals.ingest import Ingestor, fast
from cityvitals.ingest.lines import LineBatch, iter_line_batches
from cityvitals.ingest.validate import DECODE_JSON, RAW_JSON
from cityvitals.store import open_store

SENSORS = pl.DataFrame({
    "id": ["P1", "P2", "T1", "A1", "Sé-ü", "X" * 64, "Y" * 65],
    "kind": ["water_pressure", "water_pressure", "temperature", "pm25", "temperature", "pm25", "pm25"],
    "unit": ["MPa", "kPa", "degC", "ug/m3", "degC", "ug/m3", "ug/m3"],
    "unit_code": ["g1", "g2", "g1", "g2", None, "g1", "g2"],
})
T0 = "2026-05-01T08:00:00+08:00"


def _stores(tmp_path):
    a, b = open_store(tmp_path / "fast"), open_store(tmp_path / "sql")
    for s in (a, b):
        s.sensors.upsert(SENSORS)
    return a, b


def _batch(lines: list[bytes], first: int = 1) -> LineBatch:
    data = b"".join(line + b"\n" for line in lines)
    batches = list(iter_line_batches(__import__("io").BytesIO(data), first_line=first))
    assert len(batches) == 1 and not batches[0].rejects
    return batches[0]


def _via_sql(ing: Ingestor, batch: LineBatch, source: str):
    raw = pa.table({"seq": pa.array(batch.line_numbers, pa.int64()), "raw": batch.lines})
    return ing._run(raw, DECODE_JSON, RAW_JSON, batch.rejects, source=source, location_kind="line")


def _state(store) -> tuple[list, list]:
    readings = store.readings.frame().sort("sensor_id", "ts").to_dicts()
    quarantine = [
        {k: r[k] for k in ("source", "location", "reason", "message", "raw", "raw_truncated")}
        for r in store.quarantine.frame().to_dicts()
    ]
    return readings, sorted(quarantine, key=lambda r: int(r["location"].split()[-1]))


def _compare(tmp_path, clock, *batches: list[bytes], fast_url: str | None = None) -> tuple[list, list]:
    """Ingest each batch on both paths; both stores and both reports must agree.
    ``fast_url``: the fast path's store is this PostgreSQL schema (the server's path)."""
    a, b = _stores(tmp_path)
    if fast_url is not None:
        a.close()
        a = open_store(tmp_path / "pg", url=fast_url, migrate=True)
        a.sensors.upsert(SENSORS)
    try:
        fast_ing, sql_ing = Ingestor(a, clock=clock), Ingestor(b, clock=clock)
        fast_ing.fast_min_lines = 0  # every batch here is small
        line = 1
        for lines in batches:
            batch = _batch(lines, first=line)
            line += len(lines)
            r1 = fast_ing.ingest_lines(batch, source="f.ndjson")
            r2 = _via_sql(sql_ing, batch, "f.ndjson")
            assert (r1.accepted, r1.duplicates, r1.quarantined) == (r2.accepted, r2.duplicates, r2.quarantined)
        state = _state(a)
        assert state == _state(b)
        return state
    finally:
        a.close()
        b.close()


def _canon(sid="P1", ts=T0, value="0.31", tail=b"") -> bytes:
    return b'{"sensor_id":"' + sid.encode() + b'","ts":"' + ts.encode() + b'","value":' + value.encode() + tail + b"}"


EDGE_LINES = [
    _canon(),
    _canon(value="310", sid="P2"),
    _canon(ts="2026-05-01T00:00:00Z"),
    _canon(ts="2026-05-01T00:00:00z"),
    _canon(ts="2026-05-01T00:00:00.5Z"),
    _canon(ts="2026-05-01T00:00:00.123+08:00"),
    _canon(ts="2026-05-01T00:00:01.123456Z"),
    _canon(ts="2026-05-01T00:00:02.1234567Z"),
    _canon(ts="2026-05-01T00:00:03.Z"),
    _canon(ts="2026-05-01T00:00:04.12a4Z"),
    _canon(ts="2026-05-01T00:00:05.000Z"),
    _canon(ts="2026-05-01 00:00:00Z"),
    _canon(ts="2026-05-01T00:00:00+14:00"),
    _canon(ts="2026-05-01T00:00:00-15:30"),
    _canon(ts="2026-05-01T00:00:00+0800"),
    _canon(ts="2026-05-01T00:00:00+08"),
    _canon(ts="2026-05-01T00:00:00"),
    _canon(ts="2024-02-29T00:00:00Z"),
    _canon(ts="2026-02-29T00:00:00Z"),
    _canon(ts="2100-02-29T00:00:00Z"),
    _canon(ts="2026-04-31T00:00:00Z"),
    _canon(ts="2026-05-01T24:00:00Z"),
    _canon(ts="2026-05-01T23:59:60Z"),
    _canon(ts="1899-12-31T23:59:59Z"),
    _canon(ts="1969-12-31T23:59:59-01:00", sid="T1", value="3"),
    _canon(ts="2026-05-01T08:04:59+08:00"),  # at the clock's edge (fixed clock + 300 s)
    _canon(ts="2026-05-01T08:05:01+08:00"),
    _canon(ts="2026-05-02T00:00:00Z"),
    _canon(ts="yesterday"),
    _canon(ts=""),
    _canon(value="-0", sid="T1"),
    _canon(value="-0.0", sid="T1"),
    _canon(value="0.000"),
    _canon(value="00.5"),
    _canon(value=".5"),
    _canon(value="5."),
    _canon(value="+5"),
    _canon(value="1e-1"),
    _canon(value="1E2", sid="T1"),
    _canon(value="1e400"),
    _canon(value="123456789012345", sid="T1"),
    _canon(value="1234567890123456", sid="T1"),
    _canon(value="0.1234567890123456789012"),
    _canon(value="0.12345678901234567890123"),
    _canon(value="1.0000000000000002"),
    _canon(value="-1", sid="T1"),
    _canon(value="NaN"),
    _canon(value="true"),
    _canon(value="null"),
    _canon(value='"0.2"'),
    _canon(value="[1]"),
    _canon(value="1 "),
    _canon(value="0"),
    _canon(value="1.0"),  # the top of water_pressure's range, exactly
    _canon(value="1.0000001"),
    _canon(value="-0.2"),
    _canon(sid="A1", value="49999.999"),
    _canon(sid="A1", value="50000"),
    _canon(sid="NOPE"),
    _canon(sid=""),
    _canon(sid="Sé-ü", value="20"),
    _canon(sid="X" * 64, value="20"),
    _canon(sid="Y" * 65, value="20"),
    _canon(sid="P\\u0031"),
    _canon(sid='P1\\"'),
    _canon(sid="P\t1"),
    _canon(tail=b',"unit":"MPa"'),
    _canon(tail=b',"unit":"kPa"', value="310"),
    _canon(tail=b',"unit":"mH2O"', value="32"),
    _canon(tail=b',"unit":"furlong"'),
    _canon(tail=b',"unit":""'),
    _canon(tail=b',"unit":null'),
    _canon(tail=b',"quality":"good"', sid="T1", value="20"),
    _canon(tail=b',"quality":""', sid="T1", value="21"),
    _canon(tail=b',"quality":3', sid="T1", value="22"),
    _canon(tail=b',"unit":"MPa","quality":"ok"', ts="2026-05-01T00:02:00Z"),
    _canon(tail=b',"quality":"ok","unit":"MPa"', ts="2026-05-01T00:03:00Z"),
    _canon(tail=b',"unit":"MPa","unit":"kPa"', ts="2026-05-01T00:04:00Z"),
    _canon(tail=b',"note":"x"', ts="2026-05-01T00:05:00Z"),
    _canon(tail=b',"sensor_id":"P2"', ts="2026-05-01T00:06:00Z"),
    _canon(tail=b",", ts="2026-05-01T00:07:00Z"),
    _canon(ts="2026-05-01T00:08:00Z") + b" ",
    _canon(ts="2026-05-01T00:09:00Z") + b"\r",
    _canon(ts="2026-05-01T00:10:00Z") + b"x",
    _canon(ts="2026-05-01T00:11:00Z") + b"{}",
    _canon(ts="2026-05-01T00:12:00Z")[:-1],
    b" " + _canon(ts="2026-05-01T00:13:00Z"),
    json.dumps({"sensor_id": "P1", "ts": "2026-05-01T00:14:00Z", "value": 0.4}).encode(),
    json.dumps({"sensor_id": "P1", "ts": "2026-05-01T00:15:00Z", "value": 0.4, "unit": "MPa", "quality": "q"}).encode(),
    b'{"ts":"2026-05-01T00:16:00Z","sensor_id":"P1","value":0.4}',
    b'{"sensor_id":"P1","ts":1777593600,"value":0.4}',
    b'{"sensor_id":"P1" ,"ts":"2026-05-01T00:17:00Z","value":0.4}',
    b'{"sensor_id":"P1",\t"ts":"2026-05-01T00:18:00Z","value":0.4}',
    b"[1, 2]",
    b"{}",
    b"not json",
]


def test_every_edge_case_gets_the_same_fate_on_both_paths(tmp_path, clock):
    readings, quarantine = _compare(tmp_path, clock, EDGE_LINES)
    assert len(readings) > 20 and len(quarantine) > 30  # both outcomes are exercised


def test_the_server_store_takes_the_fast_path_with_the_same_fates(tmp_path, clock, pg_schema, monkeypatch):
    # PostgreSQL: the fast path's valid records go to the backend's COPY; the refused (SQL
    # rules, duplicates and conflicts found by the primary key) reach quarantine as on DuckDB
    calls = []
    accept = fast.accept
    monkeypatch.setattr(fast, "accept", lambda *a, **k: calls.append(1) or accept(*a, **k))
    first = [_canon(), _canon(ts="2026-05-01T00:01:00Z", value="0.5"), _canon(sid="T1", value="20")]
    second = [
        _canon(),  # duplicate of a stored reading
        b'{"sensor_id" : "P1","ts":"2026-05-01T00:01:00Z","value":0.6}',  # conflict with the store, SQL path
        _canon(ts="2026-05-01T00:02:00Z", value="0.7"),
        _canon(ts="2026-05-01T00:02:00Z", value="0.8"),  # in-batch conflict, fast path
        _canon(ts="2026-05-01T00:01:00Z", value="0.9"),  # conflict with the store, fast path
        _canon(sid="T1", value="68", tail=b',"unit":"degF"'),  # 20 degC already stored
    ]
    # (without the edge lines of other centuries: PostgreSQL makes a partition for every month
    # between a batch's oldest and newest reading)
    edges = [x for x in EDGE_LINES if not any(y in x for y in (b'"1899-', b'"1969-', b'"2100-', b'"2024-'))]
    readings, quarantine = _compare(tmp_path, clock, edges, first, second, second, fast_url=pg_schema)
    assert calls and len(readings) > 20
    assert sum(q["reason"] == "conflict" for q in quarantine) >= 6  # the second batch, twice


def test_canonical_lines_take_the_fast_path(tmp_path):
    store = open_store(tmp_path / "h")
    try:
        store.sensors.upsert(SENSORS)
        ing = Ingestor(store)
        batch = _batch([_canon(), _canon(ts="2026-05-01T00:01:00Z", tail=b',"unit":"MPa","quality":"ok"'),
                        json.dumps({"sensor_id": "T1", "ts": T0, "value": 20.5}).encode(), _canon(value="1e-1"),
                        _canon(sid="NOPE"), _canon(sid="T1", ts="2026-05-01T00:00:00.25Z", value="1")])
        got = fast.accept(batch.lines, ing.fast_registry(), 1_800_000_000_000_000, 300_000_000)
        assert got.rows.tolist() == [0, 1, 2, 5] and got.rest.tolist() == [3, 4]
        assert got.ts_us.tolist() == [1_777_593_600_000_000, 1_777_593_660_000_000, 1_777_593_600_000_000,
                                      1_777_593_600_250_000]
        assert got.value.tolist() == [0.31, 0.31, 20.5, 1.0]
        assert got.quality.to_pylist() == [None, "ok", None, None]
    finally:
        store.close()


def test_small_batches_stay_on_the_sql_rules(tmp_path, monkeypatch):
    store = open_store(tmp_path / "h")
    try:
        store.sensors.upsert(SENSORS)
        ing = Ingestor(store)
        monkeypatch.setattr(fast, "accept", lambda *a, **k: pytest.fail("the fast path ran for a small batch"))
        assert ing.ingest_lines(_batch([_canon()]), source="s").accepted == 1
    finally:
        store.close()


def test_duplicates_and_conflicts_across_both_paths_and_the_store(tmp_path, clock):
    # The second batch repeats keys of the first (stored), mixes canonical lines with
    # lines only the SQL path reads (spaces before a colon, a unit), and repeats keys
    # within itself in both kinds of line.
    first = [_canon(), _canon(ts="2026-05-01T00:01:00Z", value="0.5"), _canon(sid="T1", value="20")]
    second = [
        _canon(),  # duplicate of a stored reading
        b'{"sensor_id" : "P1","ts":"2026-05-01T00:01:00Z","value":0.6}',  # conflict with the store, SQL path
        _canon(ts="2026-05-01T00:02:00Z", value="0.7"),
        b'{"sensor_id" : "P1","ts":"2026-05-01T00:02:00Z","value":0.7}',  # in-batch duplicate, SQL path
        _canon(ts="2026-05-01T00:02:00Z", value="0.8"),  # in-batch conflict, fast path
        b'{"sensor_id" : "P1","ts":"2026-05-01T00:03:00Z","value":0.1}',  # first of its key on the SQL path
        _canon(ts="2026-05-01T00:03:00Z", value="0.1"),  # its duplicate, fast path
        _canon(ts="2026-05-01T00:03:00Z", value="100", tail=b',"unit":"kPa"'),  # same value in kPa
        _canon(sid="T1", value="68", tail=b',"unit":"degF"'),  # 20 degC already stored
    ]
    readings, quarantine = _compare(tmp_path, clock, first, second, second)
    assert len(readings) == 5
    assert sorted(q["reason"] for q in quarantine) == ["conflict"] * 4


def test_a_backfill_over_a_crowded_time_range_finds_its_stored_keys(tmp_path, clock, monkeypatch):
    # Many stored rows in the batch's range take the semi-join branch: same outcome.
    monkeypatch.setattr("cityvitals.ingest.pipeline.STORED_FETCH_ROWS", 0)
    first = [_canon(sid="T1", ts=f"2026-05-01T00:{m:02d}:00Z", value="20") for m in range(40)]
    second = [_canon(sid="T1", ts="2026-05-01T00:05:00Z", value="20"),  # duplicate
              _canon(sid="T1", ts="2026-05-01T00:06:00Z", value="21"),  # conflict
              _canon(sid="T1", ts="2026-05-01T00:45:00Z", value="22")]  # new
    readings, quarantine = _compare(tmp_path, clock, first, second)
    assert len(readings) == 41 and [q["reason"] for q in quarantine] == ["conflict"]


def test_random_mutations_of_canonical_lines_agree(tmp_path, clock):
    rng = random.Random(20261127)
    alphabet = b'{}[]":,.-+0123456789eEZT tsuvaluenitq\\\t'
    lines = []
    for i in range(600):
        rec = {"sensor_id": rng.choice(["P1", "P2", "T1", "A1", "Q9"]),
               "ts": f"2026-05-01T0{rng.randrange(8)}:{rng.randrange(60):02d}:00{rng.choice(['Z', '+08:00', '-01:30'])}",
               "value": round(rng.uniform(-1, 2), rng.randrange(6))}
        if rng.random() < 0.2:
            rec["unit"] = rng.choice(["MPa", "kPa", "degC"])
        line = bytearray(orjson.dumps(rec))
        for _ in range(rng.choice([0, 0, 1, 2])):
            pos = rng.randrange(len(line) + 1)
            op = rng.randrange(3)
            if op == 0 and len(line) > 1:
                del line[min(pos, len(line) - 1)]
            elif op == 1:
                line.insert(pos, rng.choice(alphabet))
            elif len(line) > 1:
                line[min(pos, len(line) - 1)] = rng.choice(alphabet)
        lines.append(bytes(line).replace(b"\n", b" "))
    readings, quarantine = _compare(tmp_path, clock, lines[:300], lines[300:])
    assert readings and quarantine


def test_dedupe_matches_the_sql_rules_on_colliding_keys():
    n = 5000
    rng = np.random.default_rng(3)
    code = rng.integers(0, 50, n)
    ts = rng.integers(0, 40, n) * 60_000_000  # many repeated keys
    value = rng.integers(0, 3, n).astype(float)
    seq = rng.permutation(n)
    s_code, s_ts = code[:100].copy(), ts[:100].copy()
    s_value = rng.integers(0, 3, 100).astype(float)
    outcome, other = fast.dedupe(code, ts, value, np.argsort(seq, kind="stable"), s_code, s_ts, s_value)
    stored = {}
    for c, t, v in zip(s_code, s_ts, s_value):
        stored.setdefault((c, t), v)
    first = {}
    for r in np.argsort(seq, kind="stable"):
        first.setdefault((code[r], ts[r]), r)
    for r in range(n):
        key = (code[r], ts[r])
        ref = stored.get(key, value[first[key]] if first[key] != r else None)
        want = 0 if ref is None else (1 if value[r] == ref else 2)
        assert outcome[r] == want
        if want:
            assert other[r] == ref


@pytest.mark.parametrize("text", ["0.1", "12.5", "-3.75", "123456.789", "0.000001", "999999999999999", "7"])
def test_numbers_are_parsed_to_the_correctly_rounded_double(text):
    line = _canon(value=text)
    buf = np.frombuffer(line, np.uint8)
    start = len(b'{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":')
    ok, _, value = fast._number(buf, start, len(line) - 1, fast._POW10)
    assert ok and value == float(text)
