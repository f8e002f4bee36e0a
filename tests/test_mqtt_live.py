"""The MQTT source against a real Mosquitto (a private one on a free loopback port, queuing
without limit, as the bench starts it): a store that stalls holds the source to its
receive maximum -- memory stays bounded, the broker keeps the rest -- and once the store
moves again every message is stored once and acknowledged once.

Mosquitto 2.0.11 oversteps a subscriber's receive maximum as it drains a queued session
(up to 796 unacknowledged PUBLISH packets for a maximum of 500, counted at the protocol
level; with tiny messages and ``max_inflight_messages 0`` up to 1,541 held); the source
then stops reading its socket, so what it holds stays within a batch of the maximum plus
what the client had already read: its stream buffer (2 x 64 KiB) and one socket read
(asyncio reads up to 256 KiB at a time).
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone

import orjson
import pytest

from cityvitals.bench.mqtt import _PrivateBroker
from cityvitals.ingest.mqtt import MqttConfig, MqttSource, drop_session, ensure_session
from cityvitals.ingest.pipeline import IngestReport

WAIT = 30.0
MESSAGES = 3000


class StalledStore:
    """An ingestor that blocks until released, then records every record it is given."""

    def __init__(self):
        self.release = threading.Event()
        self.records: list[bytes] = []

    def ingest_lines(self, batch, **_):
        assert self.release.wait(WAIT), "the test never released the store"
        self.records.extend(batch.lines.to_pylist())
        rep = IngestReport()
        rep.accepted = len(batch.lines)
        return rep


def _publish(port: int, prefix: str) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    info = None
    for i in range(MESSAGES):
        recs = [{"sensor_id": f"S{i}", "ts": "2026-12-07T00:00:00.000+00:00", "value": 40.0 + k} for k in range(20)]
        info = c.publish(f"{prefix}/pm25/gw{i % 7}", orjson.dumps(recs), qos=1)  # a gateway's message
    assert info is not None
    info.wait_for_publish(WAIT)
    assert info.is_published()
    c.disconnect()
    c.loop_stop()


def test_a_stalled_store_holds_the_source_to_its_receive_maximum_and_nothing_is_lost():
    with _PrivateBroker() as (url, _pid):
        if url is None:
            pytest.skip("no mosquitto binary on this machine")
        prefix = f"cvtest/{uuid.uuid4().hex[:8]}"
        cfg = MqttConfig(url=url, layout=prefix + "/{kind}/{sensor_id}", client_id=f"cv-live-{uuid.uuid4().hex[:8]}",
                         batch_messages=50, batch_seconds=0.05, max_pending=500, session_expiry=300)
        ensure_session(cfg)  # messages published before the source connects wait for it
        store = StalledStore()
        _publish(cfg.host_port[1], prefix)
        src = MqttSource(None, cfg, ingestor=store).start()
        held: list[int] = []
        size = len(orjson.dumps([{"sensor_id": "S0", "ts": "2026-12-07T00:00:00.000+00:00", "value": 40.0}] * 20))
        bound = cfg.max_pending + cfg.batch_messages + (2 * 65536 + 262144) // size + 1
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:  # the store is stalled: what is held stops growing
                held.append(src.held())
                time.sleep(0.005)
            assert 500 <= max(held) <= bound
            assert src.stats()["acked"] == 0
            store.release.set()
            deadline = time.monotonic() + WAIT
            while src.stats()["acked"] < MESSAGES and time.monotonic() < deadline:
                held.append(src.held())  # and while it drains the broker's queue
                time.sleep(0.001)
            st = src.stats()
        finally:
            src.stop()
            drop_session(cfg)
        assert max(held) <= bound
        assert st["acked"] == MESSAGES and st["received"] == MESSAGES and st["lag_messages"] == 0
        ids = [orjson.loads(r)["sensor_id"] for r in store.records]
        assert len(ids) == 20 * MESSAGES and set(ids) == {f"S{i}" for i in range(MESSAGES)}


def test_two_members_of_a_shared_subscription_split_the_stream_and_store_it_once(pg_schema):
    """``serve --mqtt-share-group``: two ingesting processes (here two sources, each with its
    own client id, session and store connection) subscribe as one group; the broker hands
    each message to one of them, both take a share, and the store holds every reading once."""
    from cityvitals.bench.mqtt import _publish as publish_all
    from cityvitals.bench.mqtt import _register, workload
    from cityvitals.store.pg import PostgresStore

    with _PrivateBroker() as (url, _pid):
        if url is None:
            pytest.skip("no mosquitto binary on this machine")
        prefix, group = f"cvtest/{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}"
        admin = PostgresStore(pg_schema, migrate_schema=True)
        _register(admin, 200)
        cfgs = [MqttConfig(url=url, layout=prefix + "/{kind}/{sensor_id}", client_id=f"cv-share-{k}-{group}",
                           batch_messages=20, batch_seconds=0.05, max_pending=100, session_expiry=300,
                           share_group=group) for k in range(2)]
        assert cfgs[0].subscription == f"$share/{group}/{prefix}/+/+"
        for cfg in cfgs:
            ensure_session(cfg)  # both members subscribed before anything is published
        stores = [PostgresStore(pg_schema) for _ in cfgs]
        sources = [MqttSource(s, cfg).start() for s, cfg in zip(stores, cfgs)]
        msgs, _ = workload(prefix, readings=2000, sensors=200, per_message=10, seed=3, spikes=0,
                           base=datetime.now(timezone.utc).replace(microsecond=0))
        try:
            times, _cpu = publish_all(*cfgs[0].host_port, msgs, 0, WAIT)
            assert (times > 0).all()
            deadline = time.monotonic() + WAIT
            while sum(s.stats()["acked"] for s in sources) < len(msgs) and time.monotonic() < deadline:
                time.sleep(0.01)
            acked = [s.stats()["acked"] for s in sources]
        finally:
            for s in sources:
                s.stop()
            for cfg in cfgs:
                drop_session(cfg)
            for s in stores:
                s.close()
        try:
            n, keys = admin.pg.execute("SELECT count(*), count(DISTINCT (sensor_id, ts)) FROM readings").fetchall()[0]
        finally:
            admin.close()
        assert sum(acked) == len(msgs) == 200 and min(acked) > 0, acked
        assert n == keys == 2000
