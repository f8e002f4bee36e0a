"""The MQTT source without a broker: topic layouts, decoding, back-pressure against a slow
store, the lag it reports, malformed payloads quarantined with their topic, and the ingest
status, probes and Prometheus metrics the server exposes.

Messages go in through the source's own coroutine (``_on_message``, what the MQTT client
calls for each PUBLISH) on an event loop in a thread standing in for the client's network
thread; the coroutine returning is the acknowledgement (the client then sends the PUBACK),
raising is none. The slow store is an ingestor that blocks on an event until the test
releases it, and the clock is injected, so nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from types import SimpleNamespace

import orjson
import polars as pl
import pytest

from cityvitals.errors import InputError
from cityvitals.ingest.mqtt import ConnectionLost, MqttConfig, MqttSource, _Msg, _quantile, decode_messages
from cityvitals.ingest.pipeline import IngestReport
from cityvitals.store import open_store

WAIT = 20.0  # bound on every wait for another thread (never reached when things work)


class FakeTransport:
    """The client's socket transport: records whether the source reads it."""

    def __init__(self):
        self.reading = True
        self.pauses = 0

    def is_closing(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True


class FakeClient:
    """What the source touches of the MQTT client: its connection's transport."""

    def __init__(self):
        self._connection = SimpleNamespace(_transport=FakeTransport())

    async def disconnect(self, **_) -> None:
        pass


def _msg(topic: str, payload, qos: int = 1) -> _Msg:
    return _Msg(topic, payload if isinstance(payload, bytes) else orjson.dumps(payload), qos, 0, 0.0)


def _wait(pred, what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if pred():
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Net:
    """The client's network thread without a broker: an event loop the source settles
    messages on, and ``deliver`` calls the source's message coroutine as the client does.
    Each delivery's future gives 0 when the message was acknowledged, or its exception."""

    def __init__(self, source: MqttSource):
        self.source = source
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        source._loop, source._net, source._client = self.loop, self.thread, FakeClient()
        source.stats_.connected = True

    def deliver(self, topic: str, payload: bytes, qos: int = 1) -> concurrent.futures.Future:
        src = self.source
        return asyncio.run_coroutine_threadsafe(src._on_message(src._client, topic, payload, qos, {}), self.loop)

    def call(self, fn, *args):
        """Run ``fn`` in the loop (as the client's callbacks run) and wait for it."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(WAIT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)


def _running(source: MqttSource) -> tuple[MqttSource, Net]:
    """Run the workers as ``start()`` does, with a loop of our own instead of a broker."""
    net = Net(source)
    source._worker = threading.Thread(target=source._work, daemon=True)
    source._committer = threading.Thread(target=source._commit, daemon=True)
    source._worker.start()
    source._committer.start()
    return source, net


# -- topics --------------------------------------------------------------------------------
def test_layout_gives_subscription_and_fields():
    cfg = MqttConfig(layout="site/{sensor_id}/data/{kind}")
    assert cfg.subscription == "site/+/data/+"
    assert cfg.topic_fields("site/A-1/data/pm25") == {"sensor_id": "A-1", "kind": "pm25"}
    assert cfg.topic_fields("site/A-1/pm25") == {}  # another depth: no fields
    assert MqttConfig().subscription == "cityvitals/readings/+/+"
    with pytest.raises(Exception, match="mqtt://"):
        MqttConfig(url="http://x").host_port
    # a member of a shared subscription: the filter under $share/<group>/, the fields as before
    shared = MqttConfig(layout="site/{sensor_id}/data/{kind}", share_group="ingest")
    assert shared.subscription == "$share/ingest/site/+/data/+"
    assert shared.topic_fields("site/A-1/data/pm25") == {"sensor_id": "A-1", "kind": "pm25"}
    for bad in ("a/b", "a+", "#"):
        with pytest.raises(InputError, match="share-group"):
            MqttConfig(share_group=bad)


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
                                      _Msg("site/B2/data/pm25", b"{not json", 1, 0, 0.0)], cfg, first_seq=10)
    assert [r.line for r in batch.rejects] == [11] and origins[11][1].count(" ") == 1 and sorted(origins) == [10, 11]


def test_gateway_arrays_keep_each_record_as_sent_and_mix_in_order_with_others():
    """Arrays of records that name their sensor first are cut from the payload bytes (the
    record text in quarantine is what the sender wrote); other payloads in the same batch
    are decoded record by record, and numbering and origins follow message order."""
    cfg = MqttConfig(layout="gw/{kind}/{sensor_id}")
    gw = b'[{"sensor_id":"A1","ts":1,"value":2.50}, {"sensor_id":"A2","ts":"x{","value":1e3}]'
    msgs = [_msg("gw/pm25/g1", gw), _msg("gw/pm25/S9", {"ts": 5, "value": 7}), _msg("gw/pm25/g2", b"{broken"),
            _msg("gw/pm25/g3", b' {"sensor_id":"A3","ts":2,"value":3} '), _msg("gw/pm25/g4", b"[]")]
    batch, origins = decode_messages(msgs, cfg, first_seq=1)
    assert batch.lines.to_pylist() == ['{"sensor_id":"A1","ts":1,"value":2.50}', '{"sensor_id":"A2","ts":"x{","value":1e3}',
                                       '{"ts":5,"value":7,"sensor_id":"S9"}', '{"sensor_id":"A3","ts":2,"value":3}']
    assert batch.line_numbers.tolist() == [1, 2, 3, 5]
    assert [(r.line, r.reason) for r in batch.rejects] == [(4, "malformed")]
    assert [origins[q][0] for q in (1, 2, 3, 4, 5)] == ["gw/pm25/g1", "gw/pm25/g1", "gw/pm25/S9", "gw/pm25/g2", "gw/pm25/g3"]
    assert origins[2][1].endswith(" record 1") and origins[4][1].count(" ") == 1 and 6 not in origins
    # every message split: one string array straight from the payloads
    only, _ = decode_messages([msgs[0], msgs[3]], cfg)
    assert only.lines.to_pylist() == batch.lines.to_pylist()[:2] + batch.lines.to_pylist()[3:]
    assert only.line_numbers.tolist() == [1, 2, 3] and not only.rejects


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
    """Nothing is acknowledged before it is stored; what is held is reported as lag; more
    held than the receive maximum allows (a broker that oversteps it) stops the source
    reading its socket until the store has caught up, and every message is then
    acknowledged once, after its batch."""
    now = [100.0]
    slow = SlowIngestor()
    cfg = MqttConfig(max_pending=50, batch_messages=10, batch_seconds=0.01)
    src, net = _running(MqttSource(None, cfg, ingestor=slow, clock=lambda: now[0]))
    transport = src._client._connection._transport
    try:
        first = [net.deliver("cityvitals/readings/pm25/S1", orjson.dumps({"ts": i, "value": 1})) for i in range(50)]
        assert slow.entered.wait(WAIT)
        _wait(lambda: src.stats()["received"] == 50, "the messages to arrive")
        now[0] = 107.5
        st = src.stats()
        assert st["lag_messages"] == 50 and st["lag_seconds"] == 7.5 and st["acked"] == 0
        assert not any(f.done() for f in first)  # the store has not committed: no PUBACK
        metrics = src.metrics()
        assert "cityvitals_mqtt_lag_messages 50.0" in metrics and "cityvitals_mqtt_lag_seconds 7.5" in metrics
        # ten more is a batch's worth over the maximum, still read; one beyond that stops the reading
        more = [net.deliver("cityvitals/readings/pm25/S1", orjson.dumps({"ts": 50 + i, "value": 1})) for i in range(10)]
        _wait(lambda: src.stats()["received"] == 60, "the extra messages")
        assert transport.reading
        more.append(net.deliver("cityvitals/readings/pm25/S1", orjson.dumps({"ts": 60, "value": 1})))
        _wait(lambda: not transport.reading, "the socket to be left unread")
        assert src.stats()["pauses"] == 1 and "cityvitals_mqtt_read_pauses_total 1.0" in src.metrics()
        slow.release.set()
        assert [f.result(WAIT) for f in first + more] == [0] * 61  # stored, then acknowledged
        _wait(lambda: transport.reading, "the socket to be read again")
        assert sum(slow.batches) == 61 and max(slow.batches) <= cfg.batch_messages
        st = src.stats()
        assert st["acked"] == 61 and st["lag_messages"] == 0 and st["lag_seconds"] == 0.0 and st["accepted"] == 61
        assert transport.pauses == 1
    finally:
        slow.release.set()
        src._stop.set()
        net.close()


def test_messages_of_a_lost_connection_are_not_acknowledged():
    slow = SlowIngestor()
    src, net = _running(MqttSource(None, MqttConfig(batch_messages=1000, batch_seconds=5.0), ingestor=slow))
    try:
        old = net.deliver("t/a/b", b"{}")
        _wait(lambda: src.stats()["received"] == 1, "the first message")
        net.call(src._on_disconnect, src._client, None)  # reconnected: packet ids of the old connection mean nothing now
        new = net.deliver("t/a/b", b"{}")
        qos0 = net.deliver("t/a/b", b"{}", qos=0)
        _wait(lambda: src.stats()["received"] == 3, "the later messages")
        slow.release.set()
        with pytest.raises(ConnectionLost):
            old.result(WAIT)
        assert new.result(WAIT) == 0 and qos0.result(WAIT) == 0
        assert src.stats()["acked"] == 1  # a QoS 0 message has no acknowledgement to send
    finally:
        slow.release.set()
        src._stop.set()
        net.close()


# -- quarantine with the topic -----------------------------------------------------------------------
def test_malformed_payload_is_quarantined_with_its_topic(tmp_path):
    store = open_store(tmp_path / "home")
    src = net = None
    try:
        store.sensors.upsert(pl.DataFrame({"id": ["S1"], "kind": ["temperature"], "unit": ["degC"]}))
        src, net = _running(MqttSource(store, MqttConfig(layout="city/{kind}/{sensor_id}", batch_seconds=0.01)))
        msgs = [("city/temperature/S1", b"{not json"),
                ("city/temperature/S1", orjson.dumps([{"ts": 1777593600, "value": 21.5}, {"ts": 1777593601, "value": "hot"}])),
                ("city/temperature/S1", b'"a string"')]
        for _ in range(2):  # delivered again after a crash: nothing twice
            assert [net.deliver(t, p).result(WAIT) for t, p in msgs] == [0, 0, 0]
        assert store.readings.frame()["value"].to_list() == [21.5]
        q = store.quarantine.frame().sort("location")
        assert q["source"].to_list() == ["city/temperature/S1"] * 3
        assert sorted(q["reason"].to_list()) == ["bad_value", "malformed", "malformed"]
        assert any(loc.startswith("message ") and loc.endswith("record 1") for loc in q["location"].to_list())
        assert "{not json" in q.filter(pl.col("raw").str.contains("not json"))["raw"][0]
        st = src.stats()
        # the counters count what each batch refused (redeliveries too); the table holds each once
        assert st["accepted"] == 1 and st["duplicates"] == 1 and st["quarantined"] == 6 and st["acked"] == 6
        assert st["batch_seconds_p99"] >= st["batch_seconds_p50"] > 0
    finally:
        if src is not None:
            src._stop.set()
            net.close()
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
            app.state.mqtt = src
            assert c.get("/readyz").status_code == 503  # not connected, no worker
            net = Net(src)
            src._worker = SimpleNamespace(is_alive=lambda: True)
            assert c.get("/readyz").status_code == 503  # the storing thread is not running
            src._committer = SimpleNamespace(is_alive=lambda: True)
            assert c.get("/readyz").status_code == 200
            acked = net.deliver("cityvitals/readings/temperature/S9", b"{oops")
            _wait(lambda: src.stats()["received"] == 1, "the message")
            now[0] = 12.0
            st = c.get("/api/v1/ingest/status", headers={"Authorization": f"Bearer {admin}"}).json()
            assert st["mqtt"]["lag_messages"] == 1 and st["mqtt"]["lag_seconds"] == 2.0
            assert st["mqtt"]["topics"] == "cityvitals/readings/+/+" and st["backend"] == "duckdb"
            assert c.get("/api/v1/ingest/status", headers={"X-API-Key": analyst}).status_code == 403
            assert c.get("/api/v1/ingest/status").status_code == 401
            src._store([src._inbox.popleft()])
            assert acked.result(WAIT) == 0
            net.close()
            text = c.get("/metrics").text
            assert c.get("/metrics").headers["content-type"].startswith("text/plain")
            for line in ("cityvitals_quarantined_total 1.0", "cityvitals_mqtt_messages_acked_total 1.0",
                         "cityvitals_mqtt_lag_messages 0.0", "cityvitals_batch_seconds_count 1",
                         "# TYPE cityvitals_batch_seconds summary"):
                assert line in text
    finally:
        store.close()


def test_serve_refuses_a_share_group_name_that_is_not_one_topic_level(tmp_path):
    from typer.testing import CliRunner

    from cityvitals.cli import app

    r = CliRunner().invoke(app, ["serve", "--no-http", "--mqtt", "mqtt://127.0.0.1:1883", "--mqtt-share-group",
                                 "ingest/a", "--home", str(tmp_path / "h")])
    assert r.exit_code != 0
    assert "share-group" in str(r.exception or "") + r.output and "'/'" in str(r.exception or "") + r.output
