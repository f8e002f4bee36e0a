"""``cityvitals bench mqtt``: live ingestion end to end against its two ceilings.

One bounded run on loopback (the Mosquitto and PostgreSQL of this machine), five parts:

1. **broker ceiling**: the same messages published as fast as one publisher can, to a plain
   subscriber (QoS 1, acknowledged on receipt, the same MQTT client as the server: gmqtt):
   the broker's raw publish→subscribe rate.
2. **store ceiling**: the same readings COPYed straight into an empty ``readings`` table
   (same partitions and indexes) of a scratch schema: PostgreSQL's bulk-load rate.
3. **saturation**: the messages published unpaced to the server pipeline that ``serve
   --mqtt`` runs (``MqttSource``: validate, store in PostgreSQL, acknowledge after commit)
   while the watch stage (alerts) and the signs stage (indicators) follow the store in a
   process of their own, as ``serve --follow`` runs them on PostgreSQL: sustained readings/s,
   end to end (timed until the watch has read the last batch).
4. **backlog**: as many readings again, queued at the broker for the server's session
   before it connects, then taken: a server catching up after an outage, timed from its
   start until the watch has read the last batch. The publisher's CPU is spent before the
   clock starts here; in the saturation part it shares the machine with the pipeline.
5. **fixed load**: the offered load (default 20,000 readings/s) paced for ``seconds``;
   latency publish→stored per message and publish→alert for planted spikes (one per
   sensor of a sample; each must raise a threshold alert), p50 and p99.

The publisher runs in a process of its own (paho-mqtt with ``PUBLISH_WINDOW`` messages in
flight: about one core while it publishes as fast as it can, which bounds the broker ceiling
and, on a small machine, is taken from the pipeline in the saturation part). Every part
reports the CPU each party spent per reading, so the figures carry over to a machine where
they do not share cores. Times are ``time.monotonic()``, one clock for every process on the
machine. Every message
carries ``per_message`` readings of one sensor (a JSON array, as a gateway sends); the
ceilings use exactly the same payloads. Everything it creates (schemas, broker sessions)
is removed at the end; it stops by itself (every wait is bounded).
"""

from __future__ import annotations

import json as _json
import multiprocessing as mp
import os
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Optional, Sequence

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import typer

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
KIND, UNIT = "pm25", "ug/m3"
SPIKE = 900.0


# -- the workload -----------------------------------------------------------------------
def workload(prefix: str, *, readings: int, sensors: int, per_message: int, seed: int, spikes: int,
             base: datetime, period: float = 1.0) -> tuple[list[tuple[str, bytes]], dict[int, str]]:
    """Messages (topic, JSON array payload) and the message index of each planted spike.

    As a city sends: every sensor reports once per ``period`` seconds (data time keeps pace
    with the clock, so nothing looks stale), through gateways of ``per_message`` sensors
    that publish one message per round (topic ``<prefix>/<kind>/<gateway>``, each reading
    naming its sensor). ``spikes`` sensors spread over the city jump far above the alarm
    level and stay there (an incident, not a one-reading glitch, which the watch's
    end-of-batch level would not report), one more sensor per round from the middle of
    the run on; the latency is timed from the first high reading's publish.
    """
    rng = np.random.default_rng(seed)
    rounds = max(1, readings // sensors)
    t0 = base.timestamp()
    gateways = -(-sensors // per_message)
    step = max(1, sensors // max(spikes, 1))
    planted_at = {s * step: rounds // 2 + (k % max(1, rounds - rounds // 2)) for k, s in enumerate(range(min(spikes, sensors)))}
    msgs: list[tuple[str, bytes]] = []
    planted: dict[int, str] = {}
    for r in range(rounds):
        ts = t0 + r * period
        # one city-wide signal plus a little noise per reading: neighbours agree, as real ones do
        values = np.round(40 + 10 * np.sin(ts / 600.0) + rng.normal(0, 1.0, sensors), 2)
        stamp = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
        for g in range(gateways):
            lo, hi = g * per_message, min(sensors, (g + 1) * per_message)
            recs = []
            for s in range(lo, hi):
                v = float(values[s])
                if planted_at.get(s, rounds) <= r:  # from its round on the sensor stays high: an incident
                    v = SPIKE
                    if planted_at[s] == r:
                        planted[len(msgs)] = f"B{s:05d}"
                recs.append({"sensor_id": f"B{s:05d}", "ts": stamp, "value": v})
            msgs.append((f"{prefix}/{KIND}/gw{g:04d}", orjson.dumps(recs)))
    return msgs, planted


def _register(store, sensors: int) -> None:
    grids = max(1, sensors // 20)
    units = pl.DataFrame({
        "code": ["c"] + [f"g{g:04d}" for g in range(grids)], "name": ["Bench"] + [f"G{g}" for g in range(grids)],
        "level": ["city"] + ["grid"] * grids, "depth": [0] + [1] * grids, "parent_code": [None] + ["c"] * grids,
        "population": [None] + [1000.0] * grids,
    })
    store.units.upsert(units)
    ids = [f"B{s:05d}" for s in range(sensors)]
    side = int(np.ceil(np.sqrt(sensors)))  # a square lattice over ~30 km: neighbours a few hundred metres apart
    idx = np.arange(sensors)
    store.sensors.upsert(pl.DataFrame({"id": ids, "kind": [KIND] * sensors, "unit": [UNIT] * sensors,
                                       "lon": 121.2 + (idx % side) * 0.3 / side, "lat": 31.0 + (idx // side) * 0.3 / side,
                                       "unit_code": [f"g{(s % grids):04d}" for s in range(sensors)]}))


# -- processes and clients ---------------------------------------------------------------------
PUBLISH_WINDOW = 100
"""QoS 1 messages the bench's publisher keeps in flight. paho-mqtt (2.2) looks for the next
queued message by walking its table of outgoing messages from the start on every PUBACK, past
every one still in flight: per message, work in proportion to the window. With a window of
1,000 (the bench's until 2026-12-08) that walk was more than half of the publisher's CPU (3.45
CPU seconds for 30,000 messages against 1.85 with 100, start-up included) and held the broker
ceiling to about half of what the broker passes. Readings/s through the broker on this machine,
window by window, interleaved, two runs each: 10: 217,000-278,000; 25: 330,000-393,000;
50: 371,000-399,000; 100: 427,000-440,000; 200: 364,000-388,000; 1,000: 202,000-207,000."""


def _client(host: str, port: int, client_id: str = ""):
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(PUBLISH_WINDOW)
    c.max_queued_messages_set(0)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 65535
    c.connect(host, port, properties=props)
    c.loop_start()
    return c


def _publisher(host: str, port: int, msgs: list, times, cpu, rate_msgs: float, ready, go, limit_s: float) -> None:
    """Publish every message with QoS 1 (paced to ``rate_msgs`` per second when > 0) and
    write each one's publish time; waits (bounded) until the broker acknowledged all.
    ``cpu``: set to the CPU seconds the process spent from the go to the last
    acknowledgement (its start-up, imports and connecting, left out)."""
    c = _client(host, port)
    ready.set()
    go.wait(60)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    info = None
    for i, (topic, payload) in enumerate(msgs):
        if rate_msgs > 0:
            wait = t0 + i / rate_msgs - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        times[i] = time.monotonic()
        info = c.publish(topic, payload, qos=1)
        if time.monotonic() - t0 > limit_s:
            break
    if info is not None:
        info.wait_for_publish(limit_s)
    cpu.value = time.process_time() - cpu0
    c.disconnect()
    c.loop_stop()


def _publish(host: str, port: int, msgs: list, rate_msgs: float, limit_s: float) -> tuple[np.ndarray, float]:
    """Run the publisher process to its end: the publish time of each message (0 for one not
    sent) and the process's CPU seconds while it published (its start-up left out: about half a
    second of imports, which the figures per reading would otherwise carry).

    Spawned, not forked: this process already runs threads (the MQTT loop, the committer,
    DuckDB's and Numba's pools), and a child forked from it inherits whatever locks they held
    at that instant -- a forked publisher crashed (SIGSEGV while importing paho-mqtt) in a CI
    run, and a bench run once ended without its figures."""
    ctx = mp.get_context("spawn")
    times = ctx.Array("d", len(msgs), lock=False)
    cpu = ctx.Value("d", 0.0, lock=False)
    ready, go = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_publisher, args=(host, port, msgs, times, cpu, rate_msgs, ready, go, limit_s),
                       daemon=True)
    proc.start()
    if not ready.wait(30):
        proc.kill()
        raise RuntimeError("the publisher did not connect to the broker")
    go.set()
    proc.join(limit_s + 30)
    if proc.is_alive():
        proc.kill()
        proc.join(10)
    return np.frombuffer(times, dtype=np.float64).copy(), cpu.value


def _pct(xs, q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 4) if len(xs) else None


# -- the parts ------------------------------------------------------------------------------
def broker_ceiling(host: str, port: int, prefix: str, msgs: list, per_message: int, limit_s: float,
                   broker_pids: Sequence[int] = ()) -> dict:
    """The same messages from the same publisher to a subscriber that only acknowledges
    them, with the MQTT client the server uses (gmqtt, QoS 1, acknowledged on receipt): the
    broker's raw publish→subscribe rate on this machine, and what the pipeline is held to.

    Also the CPU each party spent (publisher, broker, subscriber): on a machine the parties
    share, the rate is bounded by their CPU per reading, which tells what the same broker
    would pass on more cores and what the pipeline is compared with."""
    import asyncio

    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50

    n = len(msgs)
    got = [0]
    last = [0.0]
    done = threading.Event()
    subscribed = threading.Event()
    stop = threading.Event()

    def on_message(client, topic, payload, qos, properties) -> int:
        got[0] += 1
        last[0] = time.monotonic()
        if got[0] >= n:
            done.set()
        return 0

    sub_cpu = [0.0]

    def subscriber() -> None:
        t0 = time.thread_time()

        async def main() -> None:
            c = gmqtt.Client(f"cv-bench-raw-{uuid.uuid4().hex[:8]}", receive_maximum=65535)
            c.on_message = on_message
            c.on_subscribe = lambda *_: subscribed.set()
            await c.connect(host, port, version=MQTTv50)
            c.subscribe(f"{prefix}/#", qos=1)
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await c.disconnect()

        asyncio.run(main())
        sub_cpu[0] = time.thread_time() - t0

    th = threading.Thread(target=subscriber, daemon=True)
    th.start()
    subscribed.wait(10)
    raw = [(t.replace("/live/", "/raw/", 1), p) for t, p in msgs]
    broker0 = _proc_cpu(broker_pids)
    times, pub_cpu = _publish(host, port, raw, 0, limit_s)
    done.wait(limit_s)
    broker_cpu = _proc_cpu(broker_pids) - broker0
    stop.set()
    th.join(10)
    first = times[times > 0].min() if (times > 0).any() else time.monotonic()
    secs = max(last[0] - first, 1e-9)
    readings = max(1, got[0] * per_message)
    return {"messages": n, "received": got[0], "seconds": round(secs, 3), "subscriber": "gmqtt",
            "publish_window": PUBLISH_WINDOW,
            "messages_per_s": round(got[0] / secs), "readings_per_s": round(got[0] * per_message / secs),
            "publisher_cpu_s": round(pub_cpu, 2),
            "cpu_us_per_reading": {"publisher": round(pub_cpu / readings * 1e6, 2),
                                   "broker": round(broker_cpu / readings * 1e6, 2) if broker_pids else None,
                                   "subscriber": round(sub_cpu[0] / readings * 1e6, 2)}}


def copy_ceiling(pg: str, msgs: list, sensors: int) -> dict:
    """COPY the readings of ``msgs`` into a fresh readings table (same schema) once, in the
    binary format the ingest writes, encoded before the clock starts: what PostgreSQL takes
    (until 2026-12-08 the figure also held pyarrow printing the rows as CSV, which the ingest
    does not do, and PostgreSQL parsing them back)."""
    from cityvitals.store.pg import PostgresStore
    from cityvitals.store.pg._sql import binary_copy_data

    sid, ts, val = [], [], []
    for _, payload in msgs:
        recs = orjson.loads(payload)
        sid += [r["sensor_id"] for r in recs]
        ts += [datetime.fromisoformat(r["ts"]) for r in recs]
        val += [r["value"] for r in recs]
    n = len(sid)
    table = pa.table({
        "sensor_id": pa.array(sid), "ts": pa.array(ts, pa.timestamp("us", "UTC")),
        "value": pa.array(val, pa.float64()), "kind": pa.array([KIND] * n), "unit_code": pa.array(["g0000"] * n),
        "ingested_at": pa.array([datetime.now(timezone.utc)] * n, pa.timestamp("us", "UTC")),
    })
    with _schema(pg) as url:
        s = PostgresStore(url, migrate_schema=True)
        try:
            s.readings.ensure_partitions(min(ts), max(ts))
            cols = ("sensor_id", "ts", "value", "kind", "unit_code", "ingested_at")
            data = binary_copy_data(table.select(list(cols)))
            t0 = time.perf_counter()
            with s.transaction() as con:
                with con.conn.cursor().copy(f"COPY readings ({', '.join(cols)}) FROM STDIN (FORMAT binary)") as cp:
                    cp.write(data)
            secs = time.perf_counter() - t0
        finally:
            s.close()
    return {"readings": n, "seconds": round(secs, 3), "readings_per_s": round(n / secs)}


class _PrivateBroker:
    """A Mosquitto of our own on a free loopback port, configured to queue without limit.

    The system broker keeps Mosquitto's defaults, among them ``max_queued_messages 1000``:
    a subscriber that falls more than its in-flight window plus 1000 messages behind loses
    QoS 1 messages. The saturation part falls behind on purpose, so it needs a broker that
    queues what it is sent (a few MB here); the figures then measure our pipeline, not the
    broker's drop policy. Stopped (and its files removed) on exit."""

    def __init__(self):
        import shutil

        self.binary = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.path.exists(p)), None)
        self.proc = None

    def __enter__(self) -> tuple[str | None, int | None]:
        import socket
        import subprocess
        import tempfile

        if not self.binary:
            return None, None
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.dir = tempfile.TemporaryDirectory(prefix="cv-bench-broker-")
        conf = os.path.join(self.dir.name, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n")
        self.proc = subprocess.Popen([self.binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return f"mqtt://127.0.0.1:{port}", self.proc.pid
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.__exit__()
        return None, None

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
        if getattr(self, "dir", None) is not None:
            self.dir.cleanup()


class _Schema:
    """A scratch schema on the PostgreSQL server, dropped on exit."""

    def __init__(self, pg: str):
        self.pg = pg
        self.name = "cv_bench_" + uuid.uuid4().hex[:10]

    def __enter__(self) -> str:
        import psycopg

        with psycopg.connect(self.pg, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {self.name}")
        sep = "&" if "?" in self.pg else "?"
        return f"{self.pg}{sep}options=-csearch_path%3D{self.name}"

    def __exit__(self, *exc) -> None:
        import psycopg

        with psycopg.connect(self.pg, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def _schema(pg: str) -> _Schema:
    return _Schema(pg)


def _proc_cpu(pids) -> float:
    """CPU seconds (user + system) used so far by processes ``pids`` on this machine (0 for
    any that cannot be read): the PostgreSQL backends serving our connections, the broker."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{int(pid)}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return total


def _self_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _backend_pid(store) -> int:
    return int(store.pg.execute("SELECT pg_backend_pid()").fetchall()[0][0])


class _Stages:
    """The stages that follow the store, as ``serve --mqtt --follow`` runs them on PostgreSQL:
    in a process of their own (``cityvitals.live.StagesProcess``); plus the time each planted
    alert was first seen."""

    def __init__(self, url: str, thresholds: dict):
        from cityvitals.live import StagesProcess
        from cityvitals.store.pg import PostgresStore

        self.alert_seen: dict[str, float] = {}  # sensor -> when its threshold alert was committed
        self._seen_store = PostgresStore(url)  # read from the stages' reader thread only
        self._store = PostgresStore(url)
        self.live = StagesProcess(url, thresholds=thresholds, use_catalog=False, on_watch=self._seen)
        self.process_pids: list[int] = []  # the stages' process
        self.pids: list[int] = []  # its PostgreSQL backends

    def _seen(self, summary: dict, done: float) -> None:
        if not summary["alerts"]:
            return
        rows = self._seen_store.frame("SELECT DISTINCT source FROM alerts WHERE type = 'threshold'")
        for src in rows["source"].to_list() if rows.height else []:
            self.alert_seen.setdefault(src, done)

    def start(self) -> "_Stages":
        self.live.start()
        self.process_pids, self.pids = self.live.pids[:1], self.live.pids[1:]
        return self

    def notify(self, *_) -> None:
        self.live.notify()

    def wait_caught_up(self, limit_s: float) -> bool:
        return self.live.wait_caught_up(limit_s)

    def close(self) -> None:
        self.live.close()

    def alert_types(self) -> dict:
        rows = self._store.frame("SELECT type, count(*) AS n FROM alerts GROUP BY type ORDER BY type")
        return dict(zip(rows["type"].to_list(), rows["n"].to_list())) if rows.height else {}

    def close_stores(self) -> None:
        self._store.close()
        self._seen_store.close()


def _pipeline(url: str, broker: str, prefix: str, msgs: list, planted: dict[int, str], rate_msgs: float,
              per_message: int, stages: _Stages, limit_s: float, tag: str, broker_pids: list[int],
              backlog: bool = False) -> dict:
    """Publish ``msgs`` to a running MqttSource on ``url``; per message, when it was stored.

    ``backlog``: publish everything to the server's session first, with the server not
    connected, and time from its start (connecting and subscribing included) to the last
    commit -- a server catching up after an outage, with the publisher's CPU spent before
    the clock starts (publish-to-stored latencies then mean nothing and are not given)."""
    from cityvitals.ingest.mqtt import MqttConfig, MqttSource, drop_session, ensure_session
    from cityvitals.store.pg import PostgresStore

    index = {p: i for i, (_, p) in enumerate(msgs)}
    stored_at = np.zeros(len(msgs))
    seen = [0]
    all_stored = threading.Event()

    def on_stored(batch, report) -> None:
        now = time.monotonic()
        for m in batch:
            i = index.get(m.payload)
            if i is not None and stored_at[i] == 0:
                stored_at[i] = now
                seen[0] += 1
        if seen[0] >= len(msgs):
            all_stored.set()

    cfg = MqttConfig(url=broker, layout=f"{prefix}/{{kind}}/{{sensor_id}}", client_id=f"cv-bench-{tag}-{uuid.uuid4().hex[:8]}",
                     batch_messages=500, batch_seconds=0.05, max_pending=4000,
                     session_expiry=300)  # a bench killed midway leaves no lasting session behind
    ensure_session(cfg)
    store = PostgresStore(url)
    source = MqttSource(store, cfg, on_stored=on_stored, on_batch=stages.notify)
    host, port = cfg.host_port
    pids = [_backend_pid(store), *stages.pids]
    began = None
    try:
        from cityvitals.ingest import fast

        fast.warm()  # the compiled scanner's one-time load (about a second) is not part of any rate
        if backlog:  # all of it queued at the broker for the session before the server connects
            times, pub_cpu = _publish(host, port, msgs, rate_msgs, limit_s)
            began = time.monotonic()
        cpu0 = (_self_cpu(), _proc_cpu(pids), _proc_cpu(broker_pids), _proc_cpu(stages.process_pids))
        source.start()
        if not backlog:
            times, pub_cpu = _publish(host, port, msgs, rate_msgs, limit_s)
        all_stored.wait(limit_s)
        # end to end means alerts updated too: until the watch has read the last batch
        caught_up = stages.wait_caught_up(limit_s)
        caught_at = time.monotonic()
        stats = source.stats()
        if planted:  # the alerts of the last spikes: bounded wait
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not set(planted.values()) <= set(stages.alert_seen):
                time.sleep(0.02)
        cpu = (_self_cpu() - cpu0[0], _proc_cpu(pids) - cpu0[1], _proc_cpu(broker_pids) - cpu0[2],
               _proc_cpu(stages.process_pids) - cpu0[3])
    finally:
        source.stop()
        store.close()
        drop_session(cfg)
    ok = (times > 0) & (stored_at > 0)
    lat = stored_at[ok] - times[ok] if began is None else np.zeros(0)
    first = times[times > 0].min() if began is None else began
    last = stored_at[ok].max() if ok.any() else time.monotonic()
    secs = max(last - first, 1e-9)
    readings = int(ok.sum()) * per_message
    alert_lat = [stages.alert_seen[s] - times[i] for i, s in planted.items() if s in stages.alert_seen and times[i] > 0]
    pub_secs = times[times > 0].max() - first if (times > 0).any() else 0
    return {
        # published: how many the publisher sent (a stall there, not in the pipeline, shows here);
        # source_error: what stopped the ingest, if it stopped
        "messages": len(msgs), "published_messages": int((times > 0).sum()), "stored_messages": int(ok.sum()),
        "source_error": repr(source.error) if source.error is not None else None,
        "readings_stored": readings,
        "accepted": stats["accepted"], "quarantined": stats["quarantined"], "batches": stats["batches"],
        "seconds": round(secs, 3), "readings_per_s": round(readings / secs),
        # publish -> durable -> the watch has read it all (its alerts are then in the store)
        "stages_caught_up": caught_up, "watch_caught_up_after_s": round(max(0.0, caught_at - last), 3),
        "end_to_end_readings_per_s": round(readings / max(caught_at - first, 1e-9)),
        "offered_readings_per_s": round(len(msgs) * per_message / pub_secs) if pub_secs and began is None else None,
        "stored_p50_s": _pct(lat, 50), "stored_p99_s": _pct(lat, 99), "stored_max_s": _pct(lat, 100),
        "alerts_planted": len(planted), "alerts_seen": len(alert_lat),
        "alert_p50_s": _pct(alert_lat, 50), "alert_p99_s": _pct(alert_lat, 99),
        "batch_p50_s": stats["batch_seconds_p50"], "batch_p99_s": stats["batch_seconds_p99"],
        # CPU seconds spent from start to the last alert: this process (the ingest; not the
        # publisher), the stages' process (watch, signs), the PostgreSQL backends of both
        # processes' connections, the broker; and the publisher's, which shares the machine
        "cpu_s": {"server_process": round(cpu[0], 2), "stages_process": round(cpu[3], 2),
                  "postgresql": round(cpu[1], 2), "broker": round(cpu[2], 2), "publisher": round(pub_cpu, 2)},
        "cpu_ms_per_1000_readings": round(1000 * (cpu[0] + cpu[1] + cpu[3]) / max(1, readings) * 1000, 1),
        # the same per reading, party by party, comparable with the broker ceiling's
        "cpu_us_per_reading": {k: round(c / max(1, readings) * 1e6, 2) for k, c in
                               (("ingest", cpu[0]), ("stages", cpu[3]), ("postgresql", cpu[1]), ("broker", cpu[2]),
                                ("publisher", pub_cpu))},
    }


def run(*, rate: int = 20_000, seconds: float = 10.0, sensors: int = 20_000, per_message: int = 20,
        saturation_readings: int = 600_000, spikes: int = 200, pg: str = DEFAULT_PG,
        broker: str | None = None, seed: int = 7, limit_s: float = 180.0) -> dict:
    """The whole bench. ``broker`` None: a private Mosquitto on a free loopback port (queues
    without limit, see ``_PrivateBroker``), else that URL (loopback only)."""
    if broker is None:
        with _PrivateBroker() as (url, pid):
            if url is None:
                return _run(rate, seconds, sensors, per_message, saturation_readings, spikes, pg,
                            "mqtt://127.0.0.1:1883", seed, limit_s, "system (no mosquitto binary found)", [])
            return _run(rate, seconds, sensors, per_message, saturation_readings, spikes, pg, url, seed, limit_s,
                        "private mosquitto, max_queued_messages 0", [pid])
    return _run(rate, seconds, sensors, per_message, saturation_readings, spikes, pg, broker, seed, limit_s, "given",
                [])


def _run(rate, seconds, sensors, per_message, saturation_readings, spikes, pg, broker, seed, limit_s, broker_kind,
         broker_pids) -> dict:
    from cityvitals.bench._machine import machine
    from cityvitals.ingest.mqtt import MqttConfig
    from cityvitals.store.pg import PostgresStore
    from cityvitals.watch.runner import Threshold

    host, port = MqttConfig(url=broker).host_port
    if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
        raise typer.BadParameter("the bench talks to a broker on this machine only (loopback)")
    run_id = uuid.uuid4().hex[:8]
    # Data time never falls behind the clock (live sensors; the watch calls a sensor whose
    # data stops "stale"): the saturation rounds are spread over the two minutes of data
    # time that start ten seconds after they are made (just before the saturation part: the
    # ceilings before it take a while with many readings, and data made at the bench's
    # start would lie behind the clock by then), and the fixed-load rounds (made once the
    # saturation is stored) follow them, one round per sensors/rate seconds: ahead of the
    # clock by at most two minutes and a few seconds, within the ingest's five minutes of
    # future tolerance. The ceilings take the same messages (sizes, topics, values) stamped
    # at the bench's start: their times do not matter to them.
    period = sensors / rate
    sat_rounds = max(1, saturation_readings // sensors)
    sat_period = max(period, 120.0 / sat_rounds)

    def saturation_messages(base: datetime) -> list:
        return workload(f"cvbench/{run_id}/live/sat", readings=saturation_readings, sensors=sensors,
                        per_message=per_message, seed=seed, spikes=0, period=sat_period, base=base)[0]

    ceiling_msgs = saturation_messages(datetime.now(timezone.utc).replace(microsecond=0))
    out: dict = {"machine": machine(), "load_average": os.getloadavg(), "broker": broker_kind,
                 "sensors": sensors, "per_message": per_message, "kind": KIND}
    out["broker_ceiling"] = broker_ceiling(host, port, f"cvbench/{run_id}/raw", ceiling_msgs, per_message, limit_s,
                                           broker_pids)
    out["copy_ceiling"] = copy_ceiling(pg, ceiling_msgs, sensors)
    del ceiling_msgs
    thresholds = {KIND: Threshold((300.0, 500.0, 700.0), "higher", 0)}
    with _schema(pg) as url:
        s = PostgresStore(url, migrate_schema=True)
        _register(s, sensors)
        s.close()
        stages = _Stages(url, thresholds).start()
        try:
            now = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=10)
            sat_msgs = saturation_messages(now)
            sat_end = now + timedelta(seconds=(sat_rounds - 1) * sat_period)
            out["saturation"] = _pipeline(url, broker, f"cvbench/{run_id}/live/sat", sat_msgs, {}, 0, per_message,
                                          stages, limit_s, "sat", broker_pids)
            # (each part ends once the watch has caught up: its first run configures every series)
            # the same amount again, queued at the broker before the server connects: over one
            # minute of data time (not two), so the fixed load after it stays within the
            # ingest's five minutes of future tolerance
            back_end = sat_end
            if broker_kind.startswith("private"):
                base = max(datetime.now(timezone.utc) + timedelta(seconds=2), sat_end + timedelta(seconds=sat_period))
                back_period = max(period, 60.0 / sat_rounds)
                back_msgs = workload(f"cvbench/{run_id}/live/back", readings=saturation_readings, sensors=sensors,
                                     per_message=per_message, seed=seed + 2, spikes=0, period=back_period,
                                     base=base)[0]
                back_end = base + timedelta(seconds=(sat_rounds - 1) * back_period)
                out["backlog"] = _pipeline(url, broker, f"cvbench/{run_id}/live/back", back_msgs, {}, 0, per_message,
                                           stages, limit_s, "back", broker_pids, backlog=True)
                del back_msgs
            else:  # a broker of someone else's may keep only so much for a client that is away
                out["backlog"] = {"skipped": "runs on the bench's own broker only: another broker may bound what it "
                                             "queues for a disconnected client (Mosquitto's max_queued_messages, "
                                             "1,000 by default) and drop the rest"}
            base = max(datetime.now(timezone.utc) + timedelta(seconds=2), back_end + timedelta(seconds=period))
            load_msgs, planted = workload(f"cvbench/{run_id}/live/load", readings=int(rate * seconds),
                                          sensors=sensors, per_message=per_message, seed=seed + 1, spikes=spikes,
                                          period=period, base=base)
            out["fixed_load"] = _pipeline(url, broker, f"cvbench/{run_id}/live/load", load_msgs, planted,
                                          rate / per_message, per_message, stages, limit_s, "load", broker_pids)
        finally:
            stages.close()
        live = stages.live
        out["stages"] = {
            "watch_runs": len(live.watch_runs), "watch_run_p50_s": _pct(live.watch_runs, 50),
            "watch_run_p99_s": _pct(live.watch_runs, 99), "signs_runs": len(live.signs_runs),
            "signs_run_p50_s": _pct(live.signs_runs, 50), "signs_values": live.signs_values,
            "watch_cpu_s": round(live.watch_cpu, 2), "signs_cpu_s": round(live.signs_cpu, 2),
            "alerts_by_type": stages.alert_types(), "errors": live.errors,
        }
        stages.close_stores()
    ceiling = out["broker_ceiling"]["readings_per_s"]
    fl = out["fixed_load"]
    out["goals"] = {
        "half_broker_rate": bool(out["saturation"]["end_to_end_readings_per_s"] >= ceiling / 2),
        "alert_p99_under_1s_at_rate": bool(fl["alert_p99_s"] is not None and fl["alert_p99_s"] < 1.0
                                           and fl["alerts_seen"] == fl["alerts_planted"]),
        "offered_rate": rate,
        "nothing_lost": all(out[k]["stored_messages"] == out[k]["messages"] for k in ("saturation", "backlog")
                            if "skipped" not in out[k])
                        and fl["stored_messages"] == fl["messages"],
        # the backlog's rate against the same ceiling: the publisher's CPU is spent before it
        "half_broker_rate_from_backlog": (bool(out["backlog"]["end_to_end_readings_per_s"] >= ceiling / 2)
                                          if "skipped" not in out["backlog"] else None),
    }
    return out


def _us(parts: dict) -> str:
    return ", ".join(f"{k} {v} µs" for k, v in parts.items() if v is not None)


def _met(flag: bool | None) -> str:
    return "not measured" if flag is None else "met" if flag else "NOT met"


def bench_mqtt(
    rate: Annotated[int, typer.Option(min=100, help="Offered load of the fixed-load part, readings/s.")] = 20_000,
    seconds: Annotated[float, typer.Option(min=1, max=120, help="Duration of the fixed-load part.")] = 10.0,
    sensors: Annotated[int, typer.Option(min=10, help="Registered sensors; each reports once per round "
                                         "(rounds of sensors/rate seconds).")] = 20_000,
    per_message: Annotated[int, typer.Option("--per-message", min=1, max=500, help="Sensors per gateway: readings "
                                             "per MQTT message.")] = 20,
    saturation: Annotated[int, typer.Option(min=1000, help="Readings published unpaced for the sustained rate "
                                            "(and the ceilings).")] = 600_000,
    spikes: Annotated[int, typer.Option(min=0, help="Planted spikes whose alert latency is measured.")] = 200,
    pg: Annotated[str, typer.Option("--pg", help="PostgreSQL server for scratch schemas (dropped afterwards).")] = DEFAULT_PG,
    broker: Annotated[Optional[str], typer.Option("--broker", help="MQTT broker on this machine (default: a private "
                                                  "mosquitto on a free loopback port that queues without limit).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object for scripts.")] = False,
) -> None:
    """Live MQTT ingestion into PostgreSQL with alerts and indicators following: sustained readings/s,
    publish→stored and publish→alert latency at a fixed load, against the broker's and COPY's ceilings."""
    res = run(rate=rate, seconds=seconds, sensors=sensors, per_message=per_message, saturation_readings=saturation,
              spikes=spikes, pg=os.environ.get("CITYVITALS_BENCH_PG", pg), broker=broker, seed=seed)
    if json:
        typer.echo(_json.dumps(res, default=str))
        return
    b, c, sat, fl, st = res["broker_ceiling"], res["copy_ceiling"], res["saturation"], res["fixed_load"], res["stages"]
    bk = res["backlog"]
    m = res["machine"]
    typer.echo(
        f"bench mqtt on {m['cpu']} ({m['cores']} cores, load average {res['load_average'][0]:.1f} at start), "
        f"{res['sensors']:,} sensors, {res['per_message']} readings per message, broker: {res['broker']}\n"
        f"  broker ceiling (publish→subscribe):  {b['readings_per_s']:,} readings/s ({b['messages_per_s']:,} messages/s; "
        f"CPU per reading: {_us(b['cpu_us_per_reading'])})\n"
        f"  store ceiling (PostgreSQL COPY):     {c['readings_per_s']:,} readings/s\n"
        f"  sustained end to end (unpaced):      {sat['end_to_end_readings_per_s']:,} readings/s "
        f"({sat['end_to_end_readings_per_s'] / max(b['readings_per_s'], 1):.0%} of the broker's; stored "
        f"{sat['readings_per_s']:,}/s, the watch caught up {sat['watch_caught_up_after_s']} s after the last)\n"
        + (f"  catching up a backlog at the broker: {bk['end_to_end_readings_per_s']:,} readings/s "
           f"({bk['end_to_end_readings_per_s'] / max(b['readings_per_s'], 1):.0%} of the broker's; the publisher "
           f"done before; stored {bk['readings_per_s']:,}/s)\n"
           if "skipped" not in bk else f"  backlog part skipped: it {bk['skipped']}\n")
        + f"  fixed load {res['goals']['offered_rate']:,}/s offered ({fl['offered_readings_per_s'] or 0:,} achieved), "
        f"{fl['readings_stored']:,} stored:\n"
        f"    publish→stored p50 {fl['stored_p50_s']} s, p99 {fl['stored_p99_s']} s\n"
        f"    publish→alert  p50 {fl['alert_p50_s']} s, p99 {fl['alert_p99_s']} s ({fl['alerts_seen']}/{fl['alerts_planted']} alerts)\n"
        f"  CPU, saturation: server process {sat['cpu_s']['server_process']} s, stages process "
        f"{sat['cpu_s']['stages_process']} s, PostgreSQL {sat['cpu_s']['postgresql']} s, broker {sat['cpu_s']['broker']} s "
        f"({sat['cpu_ms_per_1000_readings']} ms per 1,000 readings, both processes + PostgreSQL); "
        f"the publisher {sat['cpu_s']['publisher']} s\n"
        f"    CPU per reading: {_us(sat['cpu_us_per_reading'])}\n"
        f"  CPU, fixed load: server process {fl['cpu_s']['server_process']} s, stages process "
        f"{fl['cpu_s']['stages_process']} s, PostgreSQL {fl['cpu_s']['postgresql']} s, "
        f"broker {fl['cpu_s']['broker']} s ({fl['cpu_ms_per_1000_readings']} ms per 1,000 readings)\n"
        f"  watch runs {st['watch_runs']} (p50 {st['watch_run_p50_s']} s, {st['watch_cpu_s']} CPU s), "
        f"signs runs {st['signs_runs']} ({st['signs_cpu_s']} CPU s) "
        f"(p50 {st['signs_run_p50_s']} s, {st['signs_values']:,} values)"
        + f"\n  alerts by type: {st['alerts_by_type']}; every message stored: {res['goals']['nothing_lost']}"
        + (f"\n  stage errors: {st['errors']}" if st["errors"] else "")
        + f"\n  goals: half the broker's rate {'met' if res['goals']['half_broker_rate'] else 'NOT met'} "
          f"(from a backlog: {_met(res['goals']['half_broker_rate_from_backlog'])}); "
          f"p99 publish→alert < 1 s {'met' if res['goals']['alert_p99_under_1s_at_rate'] else 'NOT met'}"
    )
