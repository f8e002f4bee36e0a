"""The MQTT source without a broker: topic layouts, back-pressure against a slow store, the
lag it reports, malformed payloads quarantined with their topic, and the ingest status,
probes and Prometheus metrics the server exposes.

Messages go in through the source's own network callback (``_on_message``) from a thread
standing in for paho's network thread; a fake client records acknowledgements. The slow
store is an ingestor that blocks on an event until the test releases it, and the clock is
injected, so nothing here depends on timing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import SimpleNamespace

import orjson
import polars as pl
import pytest

from cityvitals.ingest.mqtt import MqttConfig, MqttSource, decode_messages, _Msg, _quantile
from cityvitals.ingest.pipeline import IngestReport
from cityvitals.store import open_store

WAIT = 20.0  # bound on every wait for another thread (never reached when things work)


class FakeClient:
    def __init__(self):
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acked.append(mid)

    def disconnect(self) -> None:
        pass

    def loop_stop(self) -> None:
        pass


@dataclass
class Paho:
    topic: str
    payload: bytes
    mid: int
    qos: int = 1


def _msg(topic: str, payload, mid: int = 1) -> _Msg:
    return _Msg(topic, payload if isinstance(payload, bytes) else orjson.dumps(payload), mid, 1, 0, 0.0)


def _wait(pred, what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if pred():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _running(source: MqttSource) -> MqttSource:
    """Run the worker as ``start()`` does, with a fake client instead of a broker."""
    source._client = FakeClient()
    source.stats_.connected = True
    source._worker = threading.Thread(target=source._work, daemon=True)
    source._committer = threading.Thread(target=source._commit, daemon=True)
    source._worker.start()
    source._committer.start()
    return source


# -- topics --------------------------------------------------------------------------------
def test_layout_gives_subscription_and_fields():
    cfg = MqttConfig(layout="site/{sensor_id}/data/{kind}")
    assert cfg.subscription == "site/+/data/+"
    assert cfg.topic_fields("site/A-1/data/pm25") == {"sensor_id": "A-1", "kind": "pm25"}
    assert cfg.topic_fields("site/A-1/pm25") == {}  # another depth: no fields
    assert MqttConfig().subscription == "cityvitals/readings/+/+"
    with pytest.raises(Exception, match="mqtt://"):
        MqttConfig(url="http://x").host_port


def test_decode_takes_sensor_from_topic_unless_the_record_names_it():
    cfg = MqttConfig(layout="site/{sensor_id}/data/{kind}")
    msgs = [_msg("site/A1/data/pm25", {"ts": 1, "value": 2}),
            _msg("site/A1/data/pm25", [{"ts": 2, "value": 3}, {"sensor_id": "B7", "ts": 3, "value": 4}, 5]),
            _msg("other/A1", {"ts": 4, "value": 5})]
    batch, origins = decode_messages(msgs, cfg)
    recs = [orjson.loads(x) for x in batch.lines.to_pylist()]
    assert [r.get("sensor_id") for r in recs] == ["A1", "A1", "B7", None]
    assert [r.reason for r in batch.rejects] == ["malformed"]  # the bare 5 in the array
    assert origins[batch.rejects[0].line][0] == "site/A1/data/pm25"
    assert origins[batch.rejects[0].line][1].endswith("record 2")
    # every record has its origin, computed on lookup: (topic, message digest, record index)
    assert sorted(origins) == list(range(1, 6)) and len(origins) == 5
    assert [origins[q][1].split()[-2:] for q in (2, 3, 4)] == [["record", "0"], ["record", "1"], ["record", "2"]]
    assert origins[1][1].startswith("message ") and origins[1][1] != origins[2][1]
    assert origins[5][0] == "other/A1" and 6 not in origins and 0 not in origins
    # a payload refused whole is one record named by its message
    batch, origins = decode_messages([_msg("site/A1/data/pm25", {"ts": 1, "value": 2}),
                                      _Msg("site/B2/data/pm25", b"{not json", 2, 1, 0, 0.0)], cfg, first_seq=10)
    assert [r.line for r in batch.rejects] == [11] and origins[11][1].count(" ") == 1 and sorted(origins) == [10, 11]


# -- back-pressure and lag ---------------------------------------------------------------------
class SlowIngestor:
    """Stands in for a store that has fallen behind: each batch waits for ``release``."""

    def __init__(self):
        self.release = threading.Event()
        self.batches: list[int] = []
        self.entered = threading.Event()

    def ingest_lines(self, batch, **_):
        self.entered.set()
        assert self.release.wait(WAIT), "the test never released the store"
        self.batches.append(len(batch.lines))
        rep = IngestReport()
        rep.accepted = len(batch.lines)
        return rep


def test_back_pressure_bounds_memory_and_lag_is_reported():
    now = [100.0]
    slow = SlowIngestor()
    cfg = MqttConfig(max_pending=50, batch_messages=10, batch_seconds=0.01)
    src = _running(MqttSource(None, cfg, ingestor=slow, clock=lambda: now[0]))
    total, delivered = 500, [0]

    def network() -> None:  # paho's network thread: blocks in the callback while the queue is full
        for i in range(total):
            src._on_message(None, None, Paho("cityvitals/readings/pm25/S1", orjson.dumps({"ts": i, "value": 1}), i + 1))
            delivered[0] += 1

    net = threading.Thread(target=network, daemon=True)
    net.start()
    assert slow.entered.wait(WAIT)
    _wait(lambda: src._queue.full(), "the queue to fill")
    now[0] = 107.5
    # the store is stuck: the network thread is blocked; memory holds the queue plus at most three
    # batches (one being stored, one decoded and waiting, one the decoder holds)
    assert net.is_alive()
    assert delivered[0] <= cfg.max_pending + 3 * cfg.batch_messages + 1
    st = src.stats()
    assert st["lag_messages"] == cfg.max_pending and st["lag_seconds"] == 7.5
    assert st["acked"] == 0 and st["received"] <= cfg.max_pending + 3 * cfg.batch_messages + 1
    metrics = src.metrics()
    assert "cityvitals_mqtt_lag_messages 50.0" in metrics and "cityvitals_mqtt_lag_seconds 7.5" in metrics
    slow.release.set()
    net.join(WAIT)
    _wait(lambda: src.stats_.acked == total, "every message to be acknowledged")
    src.stop()
    assert src._client.acked == list(range(1, total + 1))  # in arrival order, each once
    assert sum(slow.batches) == total and max(slow.batches) <= cfg.batch_messages
    st = src.stats()
    assert st["lag_messages"] == 0 and st["lag_seconds"] == 0.0 and st["accepted"] == total


def test_messages_of_a_lost_connection_are_not_acknowledged():
    slow = SlowIngestor()
    slow.release.set()
    src = MqttSource(None, MqttConfig(batch_messages=1000, batch_seconds=0.01), ingestor=slow)
    src._client = FakeClient()
    src._on_message(None, None, Paho("t/a/b", b"{}", 1))
    src._generation += 1  # reconnected: packet ids of the old connection mean nothing now
    src._on_message(None, None, Paho("t/a/b", b"{}", 2))
    msgs = [src._queue.get_nowait(), src._queue.get_nowait()]
    src._store(msgs)
    assert src._client.acked == [2]


# -- quarantine with the topic -----------------------------------------------------------------------
def test_malformed_payload_is_quarantined_with_its_topic(tmp_path):
    store = open_store(tmp_path / "home")
    try:
        store.sensors.upsert(pl.DataFrame({"id": ["S1"], "kind": ["temperature"], "unit": ["degC"]}))
        src = MqttSource(store, MqttConfig(layout="city/{kind}/{sensor_id}"))
        src._client = FakeClient()
        msgs = [_msg("city/temperature/S1", b"{not json", 1),
                _msg("city/temperature/S1", [{"ts": 1777593600, "value": 21.5}, {"ts": 1777593601, "value": "hot"}], 2),
                _msg("city/temperature/S1", b'"a string"', 3)]
        src._store(msgs)
        src._store(msgs)  # redelivered after a crash: nothing twice
        assert src._client.acked == [1, 2, 3, 1, 2, 3]
        assert store.readings.frame()["value"].to_list() == [21.5]
        q = store.quarantine.frame().sort("location")
        assert q["source"].to_list() == ["city/temperature/S1"] * 3
        assert sorted(q["reason"].to_list()) == ["bad_value", "malformed", "malformed"]
        assert any(loc.startswith("message ") and loc.endswith("record 1") for loc in q["location"].to_list())
        assert "{not json" in q.filter(pl.col("raw").str.contains("not json"))["raw"][0]
        st = src.stats()
        # the counters count what each batch refused (redeliveries too); the table holds each once
        assert st["accepted"] == 1 and st["duplicates"] == 1 and st["quarantined"] == 6 and st["batches"] == 2
        assert st["batch_seconds_p99"] >= st["batch_seconds_p50"] > 0
    finally:
        store.close()


def test_quantile_nearest_rank():
    assert _quantile([5, 1, 4, 2, 3], 0.5) == 3 and _quantile(list(range(1, 101)), 0.99) == 99


# -- status, probes, metrics over HTTP -------------------------------------------------------------------
def test_ingest_status_probes_and_metrics_over_http(tmp_path):
    from fastapi.testclient import TestClient

    from cityvitals.api import create_app
    from cityvitals.api.routers import ingest_status

    store = open_store(tmp_path / "home")
    try:
        admin = store.users.add("ops", "admin")
        analyst = store.users.add("ana", "analyst")
        app = create_app(store, poll_interval=None, dashboard=False)
        if not any(getattr(r, "path", "") == "/metrics" for r in app.routes):  # until app.py includes it
            app.include_router(ingest_status.router, prefix="/api/v1")
            app.include_router(ingest_status.probes)
        with TestClient(app) as c:
            assert c.get("/livez").json() == {"status": "alive"}
            assert c.get("/readyz").status_code == 200
            assert c.get("/api/v1/ingest/status", headers={"X-API-Key": admin}).json()["mqtt"] is None
            assert "cityvitals_up 1" in c.get("/metrics").text
            now = [10.0]
            src = MqttSource(store, MqttConfig(), clock=lambda: now[0])
            src._client = FakeClient()
            app.state.mqtt = src
            assert c.get("/readyz").status_code == 503  # not connected, no worker
            src.stats_.connected = True
            src._worker = SimpleNamespace(is_alive=lambda: True)
            assert c.get("/readyz").status_code == 503  # the storing thread is not running
            src._committer = SimpleNamespace(is_alive=lambda: True)
            assert c.get("/readyz").status_code == 200
            src._on_message(None, None, Paho("cityvitals/readings/temperature/S9", b"{oops", 1))
            now[0] = 12.0
            st = c.get("/api/v1/ingest/status", headers={"Authorization": f"Bearer {admin}"}).json()
            assert st["mqtt"]["lag_messages"] == 1 and st["mqtt"]["lag_seconds"] == 2.0
            assert st["mqtt"]["topics"] == "cityvitals/readings/+/+" and st["backend"] == "duckdb"
            assert c.get("/api/v1/ingest/status", headers={"X-API-Key": analyst}).status_code == 403
            assert c.get("/api/v1/ingest/status").status_code == 401
            src._store([src._queue.get_nowait()])
            text = c.get("/metrics").text
            assert c.get("/metrics").headers["content-type"].startswith("text/plain")
            for line in ("cityvitals_quarantined_total 1.0", "cityvitals_mqtt_messages_acked_total 1.0",
                         "cityvitals_mqtt_lag_messages 0.0", "cityvitals_batch_seconds_count 1",
                         "# TYPE cityvitals_batch_seconds summary"):
                assert line in text
    finally:
        store.close()
