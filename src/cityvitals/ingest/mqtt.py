"""The MQTT source: live readings from a broker into the ingest stage, acknowledged only
when durable.

Same shape as the file source (``ingest.files``): it turns what arrives into batches for
the ``Ingestor`` and never crashes on bad input. It subscribes with QoS 1 on a persistent
session (fixed client id, ``clean_session=False``), so while the process is down the
broker keeps what it could not deliver, and with manual acknowledgement: a message's
PUBACK goes out only after the batch holding it committed. A kill at any moment
therefore loses nothing (unacknowledged messages come again) and duplicates nothing
(readings are idempotent on (sensor_id, ts); a bad record is quarantined once per
(topic, message digest, record index), see ``Batch.once``).

Payload: one JSON reading or a JSON array of readings. A reading without ``sensor_id``
takes it from the topic (default layout ``cityvitals/readings/<kind>/<sensor id>``).
A payload that is not JSON, or not an object / array of objects, is quarantined whole
with the topic as its source.

Protocol: MQTT 5, because it lets the subscriber set its *receive maximum*: the broker
keeps at most ``max_pending`` unacknowledged messages in flight to us. With MQTT 3.1.1 the
broker's own limit applies (Mosquitto: 20), and since we acknowledge only after a commit,
a batch could never hold more than 20 messages. The session is persistent (clean start
off, session expiry ``session_expiry`` seconds, by default never).

Back-pressure: at most ``max_pending`` messages are unacknowledged at once, whether they
wait in memory or sit in a batch being decoded or stored, so memory is bounded by
``max_pending`` payloads (plus three batches, should a broker ignore the receive maximum). When the store falls behind, the broker's in-flight window stays full and it
stops sending (it queues for us; note Mosquitto's ``max_queued_messages``, 1000 by
default, beyond which it drops QoS 1 messages for a slow client: a deployment sets it to
0 or to the backlog it must ride out). Should a broker ignore the receive maximum, the
network thread blocks on the full queue and stops reading the socket: nothing buffers
without limit. ``stats()`` reports the lag (messages waiting, age of the oldest) and the
batch latency (last, p50 and p99 of recent batches).

Two threads share the work: one gathers a batch (``batch_messages`` or ``batch_seconds``,
whichever comes first) and decodes it, the other validates, stores and acknowledges. At
most one decoded batch waits between them, so the next batch is decoded while the store
commits the last (decoding is pure Python; the store's work is mostly in DuckDB and
PostgreSQL, which release the interpreter). Acknowledgements still follow commits, in
order, so the guarantees above do not change.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import queue
from collections import deque
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping
from urllib.parse import urlparse

import numpy as np
import orjson
import pyarrow as pa

from cityvitals.errors import InputError
from cityvitals.ingest.lines import MAX_RECORD_BYTES, LineBatch, Reject
from cityvitals.ingest.pipeline import Ingestor, IngestReport

DEFAULT_LAYOUT = "cityvitals/readings/{kind}/{sensor_id}"
FAST_MIN_LINES = 1000
"""Batches of at least this many records take the ingest's compiled fast path (``fast.py``):
a long-running source pays its one-time load once, and at 10,000 records a batch it
validated in a tenth of the SQL rules' CPU."""


@dataclass(frozen=True)
class MqttConfig:
    """Where to subscribe and how to batch. ``layout`` names topic levels ``{kind}`` and
    ``{sensor_id}``; the subscription is the layout with each named level as ``+``."""

    url: str = "mqtt://127.0.0.1:1883"
    layout: str = DEFAULT_LAYOUT
    client_id: str = "cityvitals-ingest"
    batch_messages: int = 500
    batch_seconds: float = 0.2
    max_pending: int = 2000
    keepalive: int = 30
    session_expiry: int = 0xFFFFFFFF  # seconds the broker keeps our session while we are away (never expires)

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlparse(self.url)
        if u.scheme not in ("mqtt", "tcp"):
            raise InputError(f"--mqtt {self.url!r}: use mqtt://host:port")
        return u.hostname or "127.0.0.1", u.port or 1883

    @property
    def subscription(self) -> str:
        return "/".join("+" if p.startswith("{") and p.endswith("}") else p for p in self.layout.split("/"))

    def topic_fields(self, topic: str) -> dict[str, str]:
        """Values of the named levels of ``topic``.

        >>> MqttConfig().topic_fields("cityvitals/readings/pm25/A-17")
        {'kind': 'pm25', 'sensor_id': 'A-17'}
        """
        parts, names = topic.split("/"), self.layout.split("/")
        if len(parts) != len(names):
            return {}
        return {n[1:-1]: p for n, p in zip(names, parts) if n.startswith("{") and n.endswith("}")}


@dataclass
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received: float


@dataclass
class MqttStats:
    received: int = 0
    acked: int = 0
    batches: int = 0
    report: IngestReport = field(default_factory=IngestReport)
    last_batch_seconds: float = 0.0
    batch_seconds_sum: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=1000))  # latencies of the last batches
    connected: bool = False


class MessageOrigins(Mapping[int, tuple[str, str]]):
    """Where each record of a batch came from: (topic, "message <digest> record <i>"), or
    (topic, "message <digest>") for a payload refused whole. Computed on lookup from one
    entry per message, because only refused records are ever looked up (a dict of 10,000
    formatted strings per batch cost more than decoding it)."""

    def __init__(self) -> None:
        self._starts: list[int] = []  # first seq of each message
        self._ends: list[int] = []  # one past its last seq
        self._info: list[tuple[str, str, bool]] = []  # topic, digest, refused whole

    def add(self, start: int, count: int, topic: str, digest: str, whole: bool = False) -> None:
        if count:
            self._starts.append(start)
            self._ends.append(start + count)
            self._info.append((topic, digest, whole))

    def __getitem__(self, seq: int) -> tuple[str, str]:
        k = bisect.bisect_right(self._starts, seq) - 1
        if k < 0 or seq >= self._ends[k]:
            raise KeyError(seq)
        topic, digest, whole = self._info[k]
        return (topic, f"message {digest}") if whole else (topic, f"message {digest} record {seq - self._starts[k]}")

    def __iter__(self) -> Iterator[int]:
        for a, b in zip(self._starts, self._ends):
            yield from range(a, b)

    def __len__(self) -> int:
        return sum(b - a for a, b in zip(self._starts, self._ends))

    def __bool__(self) -> bool:
        return bool(self._starts)


def decode_messages(msgs: list[_Msg], config: MqttConfig, first_seq: int = 1) -> tuple[LineBatch, MessageOrigins]:
    """Messages -> one line batch (one JSON record per line) with each record's origin."""
    lines: list[str] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    origins = MessageOrigins()
    seq = first_seq
    for m in msgs:
        digest = hashlib.blake2b(m.topic.encode() + b"\0" + m.payload, digest_size=10).hexdigest()
        if len(m.payload) > MAX_RECORD_BYTES * 64:
            origins.add(seq, 1, m.topic, digest, whole=True)
            rejects.append(Reject(seq, "too_large", f"the payload has {len(m.payload):,} bytes", m.payload[:4096].decode("utf-8", "replace"), True))
            seq += 1
            continue
        try:
            doc = orjson.loads(m.payload)
        except orjson.JSONDecodeError as exc:
            origins.add(seq, 1, m.topic, digest, whole=True)
            text = m.payload[:65536].decode("utf-8", "replace")
            rejects.append(Reject(seq, "malformed", f"the payload is not JSON: {exc}", text))
            seq += 1
            continue
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            continue
        default_id = None
        origins.add(seq, len(items), m.topic, digest)
        for rec in items:
            if isinstance(rec, dict):
                if "sensor_id" not in rec:
                    if default_id is None:
                        default_id = config.topic_fields(m.topic).get("sensor_id", False)
                    if default_id is not False:
                        rec["sensor_id"] = default_id
                lines.append(orjson.dumps(rec).decode())
                numbers.append(seq)
            else:
                rejects.append(Reject(seq, "malformed", "the record is not a JSON object", orjson.dumps(rec).decode()[:4096]))
            seq += 1
    batch = LineBatch(pa.array(lines, pa.string()), np.asarray(numbers, np.int64), rejects)
    return batch, origins


class MqttSource:
    """Subscribe, batch, store, then acknowledge. ``start()`` runs it in threads; ``stop()`` ends it."""

    def __init__(self, store, config: MqttConfig | None = None, *, ingestor: Ingestor | None = None,
                 on_batch: Callable[[IngestReport], None] | None = None, stats_path: str | None = None,
                 on_stored: Callable[[list, IngestReport], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.config = config or MqttConfig()
        self._warm = ingestor is None
        if ingestor is None:
            ingestor = Ingestor(store)
            # a live batch (hundreds of messages of 20 readings) pays for the compiled fast
            # path, whose one-time load ``start()`` takes before subscribing
            ingestor.fast_min_lines = FAST_MIN_LINES
        self.ingestor = ingestor
        self.on_batch = on_batch
        self.on_stored = on_stored  # (messages, report) after each commit: lets a bench time each message
        self.clock = clock  # monotonic seconds: message arrival and lag
        self.stats_path = stats_path
        self._last_topic: str | None = None
        self._queue: queue.Queue[_Msg] = queue.Queue(maxsize=self.config.max_pending)
        self._stop = threading.Event()
        self._generation = 0
        self._worker: threading.Thread | None = None  # gathers and decodes batches
        self._committer: threading.Thread | None = None  # stores them and acknowledges
        self._decoded: queue.Queue[tuple] = queue.Queue(maxsize=1)
        self._client = None
        self._inflight: deque[float] = deque()  # arrival of the first message of each batch past the queue
        self.stats_ = MqttStats()
        self.error: BaseException | None = None

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if reason_code.is_failure:
            return
        self._generation += 1
        self.stats_.connected = True
        client.subscribe(self.config.subscription, qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        # The broker resends every unacknowledged message on the new connection; what
        # waits here from the old one is dropped (and never acknowledged: its packet ids
        # may be reused by the new connection).
        self.stats_.connected = False
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def _on_message(self, client, userdata, msg) -> None:
        item = _Msg(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation, self.clock())
        self.stats_.received += 1
        while not self._stop.is_set():  # back-pressure: block the network thread while full
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "MqttSource":
        import paho.mqtt.client as mqtt

        if self._warm:
            from cityvitals.ingest import fast

            fast.warm()  # load the compiled scanner now, not inside the first batch's latency
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.config.client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        client.reconnect_delay_set(0.1, 2)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        host, port = self.config.host_port
        client.connect(host, port, keepalive=self.config.keepalive, clean_start=False,
                       properties=connect_properties(self.config))
        self._client = client
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)
        self._committer = threading.Thread(target=self._commit, name="mqtt-store", daemon=True)
        self._worker.start()
        self._committer.start()
        client.loop_start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in (self._worker, self._committer):
            if t:
                t.join(timeout)
        if self._client:
            self._client.disconnect()
            self._client.loop_stop()

    def alive(self) -> bool:
        """Both ingest threads run (readiness)."""
        threads = (self._worker, self._committer)
        return all(t is not None and t.is_alive() for t in threads) and self.error is None

    def wait(self) -> None:
        """Block until stopped (or a worker died: the error is re-raised)."""
        while not self._stop.is_set() and self.alive():
            self._stop.wait(0.5)
        if self.error:
            raise self.error

    # -- the workers: batch and decode | store and acknowledge ------------------------------
    def _work(self) -> None:
        cfg = self.config
        try:
            while not self._stop.is_set():
                try:
                    first = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                msgs = [first]
                deadline = time.monotonic() + cfg.batch_seconds
                while len(msgs) < cfg.batch_messages:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        msgs.append(self._queue.get(timeout=left))
                    except queue.Empty:
                        break
                started = time.perf_counter()
                item = (msgs, *decode_messages(msgs, self.config), started)
                self._inflight.append(first.received)
                while not self._stop.is_set():  # one decoded batch waits at most
                    try:
                        self._decoded.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # the server notices and exits non-zero; nothing was acked
            self.error = exc
            self._stop.set()

    def _commit(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    msgs, batch, origins, started = self._decoded.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._store(msgs, batch, origins, started)
                if self._inflight:
                    self._inflight.popleft()
        except BaseException as exc:
            self.error = exc
            self._stop.set()

    def _store(self, msgs: list[_Msg], batch: LineBatch | None = None, origins: dict | None = None,
               started: float | None = None) -> None:
        """Validate and store one batch, then acknowledge its messages (decoded here unless given)."""
        if started is None:
            started = time.perf_counter()
        if batch is None:
            batch, origins = decode_messages(msgs, self.config)
        report = self.ingestor.ingest_lines(batch, source="mqtt", location_kind="message", origins=origins)
        # durable now: acknowledge, in arrival order, only what came on this connection
        gen = self._generation
        for m in msgs:
            if m.generation == gen and m.qos > 0:
                self._client.ack(m.mid, m.qos)
                self.stats_.acked += 1
        took = time.perf_counter() - started
        st = self.stats_
        st.batches += 1
        st.report.merge(report)
        st.last_batch_seconds = took
        st.batch_seconds_sum += took
        st.recent.append(took)
        self._last_topic = msgs[-1].topic
        if self.stats_path:
            self._write_stats()
        if self.on_stored:
            self.on_stored(msgs, report)
        if self.on_batch:
            self.on_batch(report)

    def stats(self) -> dict:
        """Counters and lag: messages waiting in memory and the age of the oldest one."""
        try:
            oldest = self._inflight[0]
        except IndexError:
            oldest = None
        try:
            head = self._queue.queue[0].received if self._queue.qsize() else None
        except IndexError:
            head = None
        if oldest is None or (head is not None and head < oldest):
            oldest = head if oldest is None else oldest
        s = self.stats_
        return {
            "connected": s.connected, "received": s.received, "acked": s.acked, "batches": s.batches,
            "accepted": s.report.accepted, "duplicates": s.report.duplicates,
            "quarantined": s.report.quarantined_total, "lag_messages": self._queue.qsize(),
            "lag_seconds": round(self.clock() - oldest, 3) if oldest is not None else 0.0,
            "last_batch_seconds": round(s.last_batch_seconds, 4),
            "batch_seconds_p50": round(_quantile(s.recent, 0.5), 4), "batch_seconds_p99": round(_quantile(s.recent, 0.99), 4),
            "batch_seconds_sum": round(s.batch_seconds_sum, 4),
        }

    def _write_stats(self) -> None:
        """The stats as JSON in ``stats_path`` (replaced atomically): lag monitoring for
        scripts and the kill test, which waits for its last topic to be stored."""
        import os

        tmp = f"{self.stats_path}.tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({**self.stats(), "last_topic": self._last_topic}))
        os.replace(tmp, self.stats_path)

    def metrics(self) -> str:
        """The stats in Prometheus text format."""
        st = self.stats()
        lines = []
        for name, key, kind in (
            ("cityvitals_mqtt_messages_received_total", "received", "counter"),
            ("cityvitals_mqtt_messages_acked_total", "acked", "counter"),
            ("cityvitals_readings_in_total", "accepted", "counter"),
            ("cityvitals_readings_duplicate_total", "duplicates", "counter"),
            ("cityvitals_quarantined_total", "quarantined", "counter"),
            ("cityvitals_mqtt_lag_messages", "lag_messages", "gauge"),
            ("cityvitals_mqtt_lag_seconds", "lag_seconds", "gauge"),
            ("cityvitals_mqtt_connected", "connected", "gauge"),
            ("cityvitals_batch_last_seconds", "last_batch_seconds", "gauge"),
        ):
            lines += [f"# TYPE {name} {kind}", f"{name} {float(st[key])}"]
        # batch latency as a summary: quantiles of recent batches, sum and count of all
        lines += ["# TYPE cityvitals_batch_seconds summary",
                  f'cityvitals_batch_seconds{{quantile="0.5"}} {st["batch_seconds_p50"]}',
                  f'cityvitals_batch_seconds{{quantile="0.99"}} {st["batch_seconds_p99"]}',
                  f"cityvitals_batch_seconds_sum {st['batch_seconds_sum']}",
                  f"cityvitals_batch_seconds_count {st['batches']}"]
        return "\n".join(lines) + "\n"


def _quantile(values, q: float) -> float:
    """Nearest-rank quantile of a few recent figures (0.0 when there are none).

    >>> _quantile([0.3, 0.1, 0.2], 0.5), _quantile([], 0.99)
    (0.2, 0.0)
    """
    if not values:
        return 0.0
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def connect_properties(config: MqttConfig):
    """MQTT 5 CONNECT properties: our receive maximum (the back-pressure window) and how
    long the broker keeps the session while we are away."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = max(1, min(int(config.max_pending), 65535))
    props.SessionExpiryInterval = int(config.session_expiry)
    return props


def ensure_session(config: MqttConfig, timeout: float = 10.0) -> None:
    """Create the persistent session and its subscription on the broker now, so that what
    is published before the ingesting server first connects is kept for it."""
    import paho.mqtt.client as mqtt

    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe(config.subscription, qos=1)
    client.on_subscribe = lambda *_: done.set()
    host, port = config.host_port
    client.connect(host, port, clean_start=False, properties=connect_properties(config))
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise InputError(f"--mqtt {config.url}: the broker did not confirm the subscription within {timeout:g} s")
    finally:
        client.disconnect()
        client.loop_stop()


def drop_session(config: MqttConfig) -> None:
    """Remove the persistent session from the broker (bench and test clean-up)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=mqtt.MQTTv5)
    host, port = config.host_port
    client.connect(host, port, clean_start=True, properties=props)
    client.loop_start()
    client.disconnect()
    client.loop_stop()
