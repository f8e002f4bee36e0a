"""THE KILL TEST: SIGKILL the MQTT-ingesting server at random (seeded) moments while
readings are published; after the broker drains, every good reading is stored exactly
once and every bad record is in quarantine exactly once. Against PostgreSQL and DuckDB.

The broker is the Mosquitto on 127.0.0.1:1883; each run uses its own topic prefix and
client id. The persistent session is created before the first publish, so the broker
keeps every message for the server across its deaths. The run ends with a sentinel
message published last: once the server reports it stored (``--mqtt-stats``), everything
before it is stored too (QoS 1 delivery and our batches are in order).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from cityvitals.store import open_store
from waits import wait_for

BROKER = ("127.0.0.1", 1883)
N_SENSORS = 40
N_MESSAGES = 360
KILLS = 4


def _client(client_id: str = "", clean: bool = True):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=mqtt.MQTTv311)
    c.connect(*BROKER)
    c.loop_start()
    return c


def _workload(rng: random.Random, prefix: str):
    """(topic, payload) messages, the good readings they hold and the bad records' count."""
    sensors = [f"S{i:03d}" for i in range(N_SENSORS)]
    msgs, good, bad = [], {}, 0
    t0 = 1_777_593_600  # 2026-05-01T00:00:00Z
    for m in range(N_MESSAGES):
        s = rng.choice(sensors)
        topic = f"{prefix}/temperature/{s}"
        roll = rng.random()
        if roll < 0.04:
            msgs.append((topic, f"{{not json {m}".encode()))
            bad += 1
            continue
        records = []
        for j in range(rng.randint(1, 4)):
            ts = t0 + m * 10 + j
            if rng.random() < 0.05:  # out of range: bad
                records.append({"ts": ts, "value": 900 + m})
                bad += 1
            elif rng.random() < 0.04:  # unknown sensor: bad
                records.append({"sensor_id": f"GHOST{m}", "ts": ts, "value": 1})
                bad += 1
            else:
                v = round(rng.uniform(-10, 40), 3)
                records.append({"ts": ts, "value": v})
                good[(s, ts)] = v
        payload = records[0] if len(records) == 1 and rng.random() < 0.5 else records
        msgs.append((topic, json.dumps(payload).encode()))
    return sensors, msgs, good, bad


def _serve(home: Path, store_url: str | None, prefix: str, client_id: str, stats: Path,
           share_group: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cityvitals", "serve", "--no-http", "--mqtt", f"mqtt://{BROKER[0]}:{BROKER[1]}",
           "--mqtt-layout", prefix + "/{kind}/{sensor_id}", "--mqtt-client-id", client_id, "--mqtt-batch", "50",
           "--mqtt-stats", str(stats), "--home", str(home)]
    if store_url:
        cmd += ["--store", store_url]
    if share_group:
        cmd += ["--mqtt-share-group", share_group]
    env = {k: v for k, v in os.environ.items() if k != "CITYVITALS_STORE"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _register(home: Path, store_url: str | None, sensors: list[str]) -> None:
    s = open_store(home, url=store_url, migrate=True)
    s.sensors.upsert(pl.DataFrame({"id": sensors, "kind": ["temperature"] * N_SENSORS, "unit": ["degC"] * N_SENSORS}))
    s.close()


def _paced_publisher(msgs):
    """A client publishing ``msgs`` (QoS 1) from a thread, paced over the kills (correctness
    never depends on it): the client, the thread (not started) and the event set at its end."""
    pub = _client()
    published = threading.Event()

    def publish() -> None:
        for i, (topic, payload) in enumerate(msgs):
            pub.publish(topic, payload, qos=1)
            if i % 20 == 19:
                time.sleep(0.05)
        published.set()

    return pub, threading.Thread(target=publish, daemon=True), published


def _assert_exactly_once(home: Path, store_url: str | None, msgs, good: dict, bad: int) -> None:
    """Every good reading stored once with its value; every bad record quarantined once."""
    s = open_store(home, url=store_url)
    try:
        rows = s.readings.frame()
        keys = list(zip(rows["sensor_id"].to_list(), [int(t.timestamp()) for t in rows["ts"].to_list()]))
        assert len(keys) == len(set(keys)), "a reading was stored twice"
        assert set(keys) == set(good), f"missing {len(set(good) - set(keys))}, extra {len(set(keys) - set(good))}"
        stored = dict(zip(keys, rows["value"].to_list()))
        assert all(stored[k] == pytest.approx(v) for k, v in good.items())
        q = s.quarantine.frame()
        locs = list(zip(q["source"].to_list(), q["location"].to_list()))
        assert len(locs) == len(set(locs)), "a bad record was quarantined twice"
        assert q.height == bad
        assert set(q["source"].to_list()) <= {t for t, _ in msgs}
    finally:
        s.close()


def _kill_run(tmp_path: Path, store_url: str | None, seed: int) -> None:
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:10]
    prefix, client_id = f"cvtest/{run}", f"cv-kill-{run}"
    home, stats = tmp_path / "home", tmp_path / "stats.json"
    sensors, msgs, good, bad = _workload(rng, prefix)
    _register(home, store_url, sensors)

    # the persistent session exists before anything is published: the broker keeps it all
    sess = _client(client_id, clean=False)
    subscribed = threading.Event()
    sess.on_subscribe = lambda *_: subscribed.set()
    sess.subscribe(prefix + "/+/+", qos=1)
    assert subscribed.wait(10), "the broker did not acknowledge the subscription"
    sess.disconnect()
    sess.loop_stop()

    pub, th, published = _paced_publisher(msgs)
    th.start()
    kills = 0
    try:
        for _ in range(KILLS):
            proc = _serve(home, store_url, prefix, client_id, stats)
            time.sleep(rng.uniform(1.2, 2.5))  # a random (seeded) moment: start-up, mid-batch or idle
            assert proc.poll() is None, proc.stderr.read().decode()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        th.join(60)
        assert published.is_set()
        sentinel = f"{prefix}/temperature/{sensors[0]}"
        info = pub.publish(sentinel, json.dumps({"ts": 1_777_593_600 + N_MESSAGES * 10 + 100, "value": 1.5}).encode(), qos=1)
        info.wait_for_publish(10)
        good[(sensors[0], 1_777_593_600 + N_MESSAGES * 10 + 100)] = 1.5
        proc = _serve(home, store_url, prefix, client_id, stats)

        def drained() -> bool:
            try:
                st = json.loads(stats.read_text())
            except (OSError, ValueError):
                return False
            return st.get("last_topic") == sentinel and st.get("lag_messages") == 0

        stats.unlink(missing_ok=True)
        try:
            wait_for(lambda: proc.poll() is not None or drained(), 60, "the broker to drain")
            assert proc.poll() is None, proc.stderr.read().decode()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:  # a failed wait must not leave a server behind
                proc.kill()
                proc.wait(10)
    finally:
        pub.disconnect()
        pub.loop_stop()
        cleanup = _client(client_id, clean=True)  # drop the session from the broker
        cleanup.disconnect()
        cleanup.loop_stop()
    assert kills == KILLS
    _assert_exactly_once(home, store_url, msgs, good, bad)


def test_kill_postgres(tmp_path, pg_schema):
    _kill_run(tmp_path, pg_schema, seed=8)


def test_kill_duckdb(tmp_path):
    _kill_run(tmp_path, None, seed=9)


def test_kill_postgres_two_servers_sharing_the_stream(tmp_path, pg_schema):
    """The kill test with two servers splitting the stream (``--mqtt-share-group``): each is
    killed at random (seeded) moments in turn and restarted with its client id; once the
    store holds what was published, every good reading is in it exactly once and every bad
    record in quarantine exactly once, whichever member the broker handed it to."""
    from cityvitals.ingest.mqtt import MqttConfig, drop_session, ensure_session

    rng = random.Random(10)
    run = uuid.uuid4().hex[:10]
    prefix, group = f"cvtest/{run}", f"g{run}"
    home = tmp_path / "home"
    sensors, msgs, good, bad = _workload(rng, prefix)
    _register(home, pg_schema, sensors)
    members = [MqttConfig(url=f"mqtt://{BROKER[0]}:{BROKER[1]}", layout=prefix + "/{kind}/{sensor_id}",
                          client_id=f"cv-kill-{k}-{run}", share_group=group, session_expiry=600) for k in "ab"]
    for cfg in members:  # both members' sessions exist before anything is published
        ensure_session(cfg)

    def stats(k: int) -> Path:  # written once a member is up (subscribed, SIGTERM handled), then per batch
        return tmp_path / f"stats-{k}.json"

    def serve(k: int) -> subprocess.Popen:
        stats(k).unlink(missing_ok=True)
        return _serve(home, pg_schema, prefix, members[k].client_id, stats(k), group)

    pub, th, published = _paced_publisher(msgs)
    procs = [serve(0), serve(1)]
    th.start()
    kills = 0
    try:
        for k in range(KILLS):
            victim = k % 2
            time.sleep(rng.uniform(1.2, 2.5))
            assert procs[victim].poll() is None, procs[victim].stderr.read().decode()
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait(10)
            kills += 1
            procs[victim] = serve(victim)
        th.join(60)
        assert published.is_set()

        def stored_all() -> bool:
            with open_store(home, url=pg_schema) as st:
                return st.readings.frame().height >= len(good) and st.quarantine.frame().height >= bad

        def up_and_drained() -> bool:
            return all(stats(k).exists() for k in (0, 1)) and stored_all()

        wait_for(lambda: any(p.poll() is not None for p in procs) or up_and_drained(), 60, "the members to drain")
        for p in procs:
            assert p.poll() is None, p.stderr.read().decode()
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(15) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        pub.disconnect()
        pub.loop_stop()
        for cfg in members:
            drop_session(cfg)
    assert kills == KILLS
    _assert_exactly_once(home, pg_schema, msgs, good, bad)
