"""The MQTT source: live readings from a broker into the ingest stage, acknowledged only
when durable.

Same shape as the file source (``ingest.files``): it turns what arrives into batches for
the ``Ingestor`` and never crashes on bad input. It subscribes with QoS 1 on a persistent
session (fixed client id, clean start off), so while the process is down the broker keeps
what it could not deliver, and with manual acknowledgement: a message's PUBACK goes out
only after the batch holding it committed. A kill at any moment therefore loses nothing
(unacknowledged messages come again) and duplicates nothing (readings are idempotent on
(sensor_id, ts); a bad record is quarantined once per (topic, message digest, record
index), see ``Batch.once``).

Payload: one JSON reading or a JSON array of readings. A reading without ``sensor_id``
takes it from the topic (default layout ``cityvitals/readings/<kind>/<sensor id>``).
A payload that is not JSON, or not an object / array of objects, is quarantined whole
with the topic as its source.

Protocol: MQTT 5, because it lets the subscriber set its *receive maximum*: the broker
keeps at most ``max_pending`` unacknowledged messages in flight to us. With MQTT 3.1.1 the
broker's own limit applies (Mosquitto: 20), and since we acknowledge only after a commit,
a batch could never hold more than 20 messages. The session is persistent (clean start
off, session expiry ``session_expiry`` seconds, by default never).

The client is gmqtt (asyncio), not paho-mqtt: on this machine paho's network loop spent
134-160 µs of CPU per message (one ``recv`` per packet field, MQTT 5 properties as
objects) against gmqtt's 31-37 µs with the same manual acknowledgement, and at 20 readings
per message that was most of the interpreter time of a live batch (docs/benchmarks.md,
"Server mode"). gmqtt acknowledges a QoS 1 message when the coroutine that received it
returns, so ``_on_message`` waits for its batch's commit before returning.

Back-pressure: at most ``max_pending`` messages are unacknowledged at once (the receive
maximum), whether they wait in memory or sit in a batch being decoded or stored, so memory
is bounded by ``max_pending`` payloads. When the store falls behind, the broker's
in-flight window stays full and it stops sending (it queues for us; note Mosquitto's
``max_queued_messages``, 1000 by default, beyond which it drops QoS 1 messages for a slow
client: a deployment sets it to 0 or to the backlog it must ride out). The maximum is the
broker's to keep, and Mosquitto 2.0.11 does not always keep it: resuming a session with
messages queued, it was seen sending 550 to a subscriber whose maximum was 500. So
should more than ``max_pending + batch_messages`` messages be held anyway (that, or a flood
of QoS 0 messages, which the maximum does not cover), the source stops reading the socket
until the store has caught up to ``max_pending``: TCP's own flow control then holds the
broker back, and memory holds at most that many messages plus what the client had read
ahead (under 400 KiB). (Disconnecting instead, with MQTT 5's reason 0x93, made the broker resend every
unacknowledged message on the next connection, more than the maximum again: a cascade.)
``stats()`` reports the lag (messages held, age of the oldest), the pauses and the batch
latency (last, p50 and p99 of recent batches).

Three threads share the work: the network thread runs the asyncio loop of the client, one
thread gathers a batch (``batch_messages`` or ``batch_seconds``, whichever comes first)
and decodes it, the other validates, stores and settles it. At most one decoded batch
waits between them, so the next batch is decoded while the store commits the last.
Acknowledgements still follow commits, so the guarantees above do not change.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import math
import queue
import threading
import time
from collections import deque
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

log = logging.getLogger("cityvitals.mqtt")


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
    connect_timeout: float = 10.0
    share_group: str = ""
    """Several ingesting processes split one stream: each subscribes as a member of this
    MQTT 5 shared subscription (``$share/<group>/<filter>``) and the broker hands each
    message to one member. Each member keeps its own client id and persistent session, so
    what the broker handed to a member that is down waits for that member (restart it with
    the same client id), and the guarantees above hold per member."""

    def __post_init__(self) -> None:
        if self.share_group and any(c in self.share_group for c in "/+#"):
            raise InputError(f"--mqtt-share-group {self.share_group!r}: a group name cannot hold '/', '+' or '#'")

    @property
    def host_port(self) -> tuple[str, int]:
        u = urlparse(self.url)
        if u.scheme not in ("mqtt", "tcp"):
            raise InputError(f"--mqtt {self.url!r}: use mqtt://host:port")
        return u.hostname or "127.0.0.1", u.port or 1883

    @property
    def subscription(self) -> str:
        """The topic filter: the layout with each named level as ``+``, under ``$share/<group>/``
        when the source is one member of a shared subscription.

        >>> MqttConfig(share_group="ingest").subscription
        '$share/ingest/cityvitals/readings/+/+'
        """
        topics = "/".join("+" if p.startswith("{") and p.endswith("}") else p for p in self.layout.split("/"))
        return f"$share/{self.share_group}/{topics}" if self.share_group else topics

    @property
    def receive_maximum(self) -> int:
        return max(1, min(int(self.max_pending), 65535))

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
    qos: int
    generation: int  # the connection it came on: only messages of the current one are acknowledged
    received: float
    done: asyncio.Future | None = None  # resolved (in the network thread's loop) once its batch is settled


class ConnectionLost(Exception):
    """A message's connection ended before its batch committed: it is not acknowledged
    (the broker delivers it again on the next connection)."""


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
    pauses: int = 0  # times the socket was left unread because more than the receive maximum was held


class MessageOrigins(Mapping[int, tuple[str, str]]):
    """Where each record of a batch came from: (topic, "message <digest> record <i>"), or
    (topic, "message <digest>") for a payload refused whole. Computed on lookup from one
    entry per message, because only refused records are ever looked up (a dict of 10,000
    formatted strings per batch cost more than decoding it), and so is the digest."""

    def __init__(self) -> None:
        self._starts: list[int] = []  # first seq of each message
        self._ends: list[int] = []  # one past its last seq
        self._info: list[tuple[str, bytes, bool]] = []  # topic, payload, refused whole

    def add(self, start: int, count: int, topic: str, payload: bytes, whole: bool = False) -> None:
        if count:
            self._starts.append(start)
            self._ends.append(start + count)
            self._info.append((topic, payload, whole))

    def __getitem__(self, seq: int) -> tuple[str, str]:
        k = bisect.bisect_right(self._starts, seq) - 1
        if k < 0 or seq >= self._ends[k]:
            raise KeyError(seq)
        topic, payload, whole = self._info[k]
        digest = message_digest(topic, payload)
        return (topic, f"message {digest}") if whole else (topic, f"message {digest} record {seq - self._starts[k]}")

    def __iter__(self) -> Iterator[int]:
        for a, b in zip(self._starts, self._ends):
            yield from range(a, b)

    def __len__(self) -> int:
        return sum(b - a for a, b in zip(self._starts, self._ends))

    def __bool__(self) -> bool:
        return bool(self._starts)


def message_digest(topic: str, payload: bytes) -> str:
    """A message's name in quarantine locations: the same message delivered again gets the
    same name, so its refused records are kept once."""
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=10).hexdigest()


def decode_messages(msgs: list[_Msg], config: MqttConfig, first_seq: int = 1) -> tuple[LineBatch, MessageOrigins]:
    """Messages -> one line batch (one JSON record per line) with each record's origin.

    Every payload is parsed once (orjson), so a payload that is not JSON is refused whole.
    Payloads of the form gateways send -- an array of objects that each begin with
    ``"sensor_id"`` -- then give their records as the sender wrote them, cut from the
    payload bytes by compiled code (``fast.split_payloads``); any other form (records that
    take their sensor from the topic, a bare value in the array) is taken apart record by
    record here."""
    from cityvitals.ingest.fast import split_payloads

    parsed: list = [None] * len(msgs)
    splittable: list[int] = []
    for k, m in enumerate(msgs):
        if len(m.payload) > MAX_RECORD_BYTES * 64:
            continue
        try:
            parsed[k] = orjson.loads(m.payload)
        except orjson.JSONDecodeError as exc:
            parsed[k] = exc
            continue
        splittable.append(k)
    counts = np.full(len(msgs), -1, np.int64)
    records = pa.array([], pa.string())
    if splittable:
        records, got = split_payloads([msgs[k].payload for k in splittable])
        counts[splittable] = got
    if len(splittable) == len(msgs) and (counts >= 0).all():  # the common case: every record as sent
        origins = MessageOrigins()
        seq = first_seq
        for m, n in zip(msgs, counts.tolist()):
            origins.add(seq, n, m.topic, m.payload)
            seq += n
        numbers = np.arange(first_seq, first_seq + len(records), dtype=np.int64)
        return LineBatch(records, numbers, []), origins
    return _decode_mixed(msgs, config, first_seq, parsed, counts, records)


def _decode_mixed(msgs, config, first_seq, parsed, counts, records) -> tuple[LineBatch, MessageOrigins]:
    """A batch where some payloads were not split: those are taken apart record by record,
    the split ones keep their records as sent, all in message order."""
    pieces: list[pa.Array] = []
    lines: list[str] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    origins = MessageOrigins()
    seq = first_seq
    taken = 0  # records of ``records`` used so far

    def flush() -> None:
        if lines:
            pieces.append(pa.array(lines, pa.string()))
            lines.clear()

    for k, m in enumerate(msgs):
        n = int(counts[k])
        if n >= 0:
            flush()
            pieces.append(records.slice(taken, n))
            origins.add(seq, n, m.topic, m.payload)
            numbers.extend(range(seq, seq + n))
            taken += n
            seq += n
            continue
        doc = parsed[k]
        if doc is None:  # too large to parse
            origins.add(seq, 1, m.topic, m.payload, whole=True)
            rejects.append(Reject(seq, "too_large", f"the payload has {len(m.payload):,} bytes",
                                  m.payload[:4096].decode("utf-8", "replace"), True))
            seq += 1
            continue
        if isinstance(doc, orjson.JSONDecodeError):
            origins.add(seq, 1, m.topic, m.payload, whole=True)
            text = m.payload[:65536].decode("utf-8", "replace")
            rejects.append(Reject(seq, "malformed", f"the payload is not JSON: {doc}", text))
            seq += 1
            continue
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            continue
        default_id = None
        origins.add(seq, len(items), m.topic, m.payload)
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
    flush()
    text = pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())
    return LineBatch(text, np.asarray(numbers, np.int64), rejects), origins


@dataclass
class _Batch:
    msgs: list[_Msg]
    started: float  # perf_counter when it was cut


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
        self._inbox: deque[_Msg] = deque()  # received, not yet in a batch (appended by the loop)
        self._arrived = threading.Event()
        self._wake_at = 1  # inbox length at which the gathering thread wants to be woken
        self._released = 0  # messages whose batch was stored or failed (held = received - released; each
        # counter has one writer, the network thread and the storing thread, so no update is lost)
        self._stop = threading.Event()
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._net: threading.Thread | None = None  # runs the client's event loop
        self._worker: threading.Thread | None = None  # gathers and decodes batches
        self._committer: threading.Thread | None = None  # stores them and settles their messages
        self._decoded: queue.Queue[tuple] = queue.Queue(maxsize=1)
        self._client = None
        self._paused = False  # the socket is not being read (too much held)
        self._inflight: deque[float] = deque()  # arrival of the first message of each batch past the inbox
        self.stats_ = MqttStats()
        self.error: BaseException | None = None

    # -- the network side: coroutines and callbacks of the client, in its event loop -------
    async def _on_message(self, client, topic: str, payload: bytes, qos: int, properties) -> int:
        """Hold the message until its batch is durable; returning acknowledges it (gmqtt
        sends the PUBACK with the returned reason code), raising does not."""
        msg = _Msg(topic, payload, qos, self._generation, self.clock())
        msg.done = asyncio.get_running_loop().create_future()
        self._receive(msg)
        await msg.done
        if msg.generation != self._generation:  # the connection ended meanwhile: the broker sends it again
            raise ConnectionLost()
        return 0

    def _receive(self, msg: _Msg) -> None:
        """One message into the inbox (the network thread; no waiting here)."""
        self.stats_.received += 1
        self._inbox.append(msg)
        if len(self._inbox) >= self._wake_at and not self._arrived.is_set():
            self._arrived.set()
        if self.held() > self.config.max_pending + self.config.batch_messages:
            self._pause(True)

    def _lose_connection(self) -> None:
        """What was received on this connection will not be acknowledged (its packet ids
        mean nothing on the next one, should the broker have dropped the session)."""
        self._generation += 1
        self.stats_.connected = False

    def _pause(self, on: bool) -> None:
        """Stop (or resume) reading the socket: the broker's writes then wait in TCP's window.

        Checked on every message while too much is held, not once: the client's stream
        reader resumes the transport by itself when its own buffer (2 x 64 KiB) drains, so
        a pause lasts at most one buffer's worth of messages unless renewed. What is held
        is thus at most ``max_pending + batch_messages`` messages plus what was already
        read: that buffer and one socket read (asyncio reads up to 256 KiB at a time)."""
        transport = getattr(getattr(self._client, "_connection", None), "_transport", None)
        if transport is None or transport.is_closing():
            return
        if on:
            if transport.is_reading():
                transport.pause_reading()
                if not self._paused:
                    self.stats_.pauses += 1
                    # once in the log; the count is in the metrics (Mosquitto 2.0.11 does this often)
                    (log.warning if self.stats_.pauses == 1 else log.debug)(
                        "mqtt: %d messages held, more than the receive maximum of %d: not reading until the store "
                        "catches up (reported once; cityvitals_mqtt_read_pauses_total counts them)",
                        self.held(), self.config.max_pending)
        elif self._paused:
            transport.resume_reading()
        self._paused = on

    def _on_connect(self, client, session_present, result, properties) -> None:
        self._paused = False  # a new connection is read from the start
        self.stats_.connected = True
        if not session_present:  # a new (or expired) session: ask for the subscription again
            client.subscribe(self.config.subscription, qos=1)

    def _on_disconnect(self, client, packet, exc=None) -> None:
        self._lose_connection()

    def _settle(self, msgs: list[_Msg], ok: bool) -> None:
        """In the loop: release the messages of a batch (acknowledged if ``ok`` and still on
        this connection), and read the socket again once the store has caught up."""
        gen = self._generation
        for m in msgs:
            if m.done is None or m.done.done():
                continue
            if ok and m.generation == gen:
                m.done.set_result(None)
                if m.qos > 0:
                    self.stats_.acked += 1
            else:
                m.done.set_exception(ConnectionLost())
        if self._paused and self.held() <= self.config.max_pending:
            self._pause(False)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "MqttSource":
        if self._warm:
            from cityvitals.ingest import fast

            fast.warm()  # load the compiled scanner now, not inside the first batch's latency
        ready: queue.Queue = queue.Queue()
        self._net = threading.Thread(target=self._network, args=(ready,), name="mqtt-network", daemon=True)
        self._net.start()
        try:
            outcome = ready.get(timeout=self.config.connect_timeout + 5)
        except queue.Empty:
            outcome = TimeoutError(f"no answer from the broker within {self.config.connect_timeout:g} s")
        if isinstance(outcome, BaseException):
            self._stop.set()
            self._stop_loop()
            if isinstance(outcome, (OSError, asyncio.TimeoutError)):
                raise OSError(str(outcome) or type(outcome).__name__) from outcome
            raise outcome
        self._worker = threading.Thread(target=self._work, name="mqtt-ingest", daemon=True)
        self._committer = threading.Thread(target=self._commit, name="mqtt-store", daemon=True)
        self._worker.start()
        self._committer.start()
        if self.stats_path:  # from now on: a script sees the source is up before its first batch
            self._write_stats()
        return self

    def _network(self, ready: queue.Queue) -> None:
        """The network thread: the client's event loop, until ``stop()``."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_quiet_lost)
        try:
            loop.run_until_complete(self._connect())
        except BaseException as exc:  # noqa: BLE001  (reported to start())
            ready.put(exc)
            loop.close()
            return
        ready.put(True)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _connect(self) -> None:
        import gmqtt
        from gmqtt.mqtt.constants import UNLIMITED_RECONNECTS, MQTTv50

        cfg = self.config
        client = gmqtt.Client(cfg.client_id, clean_session=False, optimistic_acknowledgement=False,
                              receive_maximum=cfg.receive_maximum, session_expiry_interval=int(cfg.session_expiry),
                              logger=logging.getLogger("cityvitals.mqtt.client"))
        client.set_config({"reconnect_retries": UNLIMITED_RECONNECTS, "reconnect_delay": 1})
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        host, port = cfg.host_port
        await asyncio.wait_for(client.connect(host, port, keepalive=cfg.keepalive, version=MQTTv50),
                               cfg.connect_timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for t in (self._worker, self._committer):
            if t:
                t.join(timeout)
        self._stop_loop(timeout)

    def _stop_loop(self, timeout: float = 10.0) -> None:
        loop, client = self._loop, self._client
        if loop is None or loop.is_closed():
            return
        if client is not None:
            try:
                asyncio.run_coroutine_threadsafe(client.disconnect(), loop).result(timeout)
            except Exception:  # noqa: BLE001  (already gone: nothing to tell the broker)
                pass

        def finish() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()  # messages never stored: not acknowledged, the broker keeps them
            loop.call_soon(loop.stop)

        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:  # the loop already closed
            return
        if self._net is not None and self._net is not threading.current_thread():
            self._net.join(timeout)

    def alive(self) -> bool:
        """Every thread runs (readiness)."""
        threads = (self._net, self._worker, self._committer)
        return all(t is not None and t.is_alive() for t in threads) and self.error is None

    def wait(self) -> None:
        """Block until stopped (or a worker died: the error is re-raised)."""
        while not self._stop.is_set() and self.alive():
            self._stop.wait(0.5)
        if self.error:
            raise self.error

    # -- the workers: batch and decode | store and acknowledge ------------------------------
    def _take(self) -> _Batch | None:
        """The next batch: what waits in the inbox (up to ``batch_messages``) and, if that is
        fewer, what arrives until ``batch_seconds`` after the first; None when stopping.

        The network thread wakes this one only for the first message and for a full batch
        (``_wake_at``), not for every message: a thread switch per message cost more than
        the rest of the message's handling."""
        cfg, inbox = self.config, self._inbox
        self._wake_at = 1
        while not inbox:
            if self._stop.is_set():
                return None
            self._arrived.wait(0.2)
            self._arrived.clear()
        msgs = [inbox.popleft()]
        deadline = time.monotonic() + cfg.batch_seconds
        while True:
            while inbox and len(msgs) < cfg.batch_messages:
                msgs.append(inbox.popleft())
            left = deadline - time.monotonic()
            if len(msgs) >= cfg.batch_messages or left <= 0 or self._stop.is_set():
                break
            self._wake_at = cfg.batch_messages - len(msgs)
            self._arrived.clear()
            if len(inbox) < self._wake_at:
                self._arrived.wait(left)
        self._wake_at = 1
        return _Batch(msgs, time.perf_counter())

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._take()
                if batch is None:
                    return
                item = (batch, *decode_messages(batch.msgs, self.config))
                self._inflight.append(batch.msgs[0].received)
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
                    batch, lines, origins = self._decoded.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._store(batch.msgs, lines, origins, batch.started)
                if self._inflight:
                    self._inflight.popleft()
        except BaseException as exc:
            self.error = exc
            self._stop.set()

    def _store(self, msgs: list[_Msg], batch: LineBatch | None = None, origins: MessageOrigins | None = None,
               started: float | None = None) -> IngestReport:
        """Validate and store one batch, then release its messages for acknowledgement
        (decoded here unless given)."""
        if started is None:
            started = time.perf_counter()
        if batch is None:
            batch, origins = decode_messages(msgs, self.config)
        try:
            report = self.ingestor.ingest_lines(batch, source="mqtt", location_kind="message", origins=origins)
        except BaseException:
            self._release(msgs, ok=False)
            raise
        self._release(msgs, ok=True)  # durable now: acknowledge, only what came on this connection
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
        return report

    def held(self) -> int:
        """Messages received and not yet stored (or failed)."""
        return self.stats_.received - self._released

    def _release(self, msgs: list[_Msg], ok: bool) -> None:
        """The batch is stored (``ok``) or failed: no longer held; the network thread then
        acknowledges its messages (or not)."""
        self._released += len(msgs)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._settle, msgs, ok)
            except RuntimeError:  # the loop closed meanwhile (stopping): nothing is acknowledged
                pass

    def stats(self) -> dict:
        """Counters and lag: messages held (received, not yet stored) and the age of the oldest."""
        oldest = None
        try:
            oldest = self._inflight[0]
        except IndexError:
            pass
        try:
            head = self._inbox[0].received
        except IndexError:
            head = None
        if oldest is None or (head is not None and head < oldest):
            oldest = head if oldest is None else oldest
        s = self.stats_
        return {
            "connected": s.connected, "received": s.received, "acked": s.acked, "batches": s.batches,
            "accepted": s.report.accepted, "duplicates": s.report.duplicates,
            "quarantined": s.report.quarantined_total, "lag_messages": self.held(),
            "lag_seconds": round(self.clock() - oldest, 3) if oldest is not None else 0.0,
            "last_batch_seconds": round(s.last_batch_seconds, 4),
            "batch_seconds_p50": round(_quantile(s.recent, 0.5), 4), "batch_seconds_p99": round(_quantile(s.recent, 0.99), 4),
            "batch_seconds_sum": round(s.batch_seconds_sum, 4), "pauses": s.pauses,
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
            ("cityvitals_mqtt_read_pauses_total", "pauses", "counter"),
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


def _quiet_lost(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """The loop's exception handler: a message not acknowledged on purpose (its connection
    ended, or the source stopped before storing it) is not an error worth a traceback."""
    exc = context.get("exception")
    if isinstance(exc, (ConnectionLost, asyncio.CancelledError)):
        return
    loop.default_exception_handler(context)


def _quantile(values, q: float) -> float:
    """Nearest-rank quantile of a few recent figures (0.0 when there are none).

    >>> _quantile([0.3, 0.1, 0.2], 0.5), _quantile([], 0.99)
    (0.2, 0.0)
    """
    if not values:
        return 0.0
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


async def _session(config: MqttConfig, *, keep: bool, timeout: float) -> None:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50

    subscribed = asyncio.get_running_loop().create_future()
    client = gmqtt.Client(config.client_id, clean_session=not keep, receive_maximum=config.receive_maximum,
                          session_expiry_interval=int(config.session_expiry) if keep else 0,
                          logger=logging.getLogger("cityvitals.mqtt.client"))
    client.set_config({"reconnect_retries": 0})
    client.on_subscribe = lambda *_: subscribed.done() or subscribed.set_result(True)
    host, port = config.host_port
    await asyncio.wait_for(client.connect(host, port, version=MQTTv50), timeout)
    try:
        if keep:
            client.subscribe(config.subscription, qos=1)
            await asyncio.wait_for(subscribed, timeout)
    finally:
        await client.disconnect()


def ensure_session(config: MqttConfig, timeout: float = 10.0) -> None:
    """Create the persistent session and its subscription on the broker now, so that what
    is published before the ingesting server first connects is kept for it."""
    try:
        asyncio.run(_session(config, keep=True, timeout=timeout))
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise InputError(f"--mqtt {config.url}: the broker did not confirm the subscription within {timeout:g} s") from exc


def drop_session(config: MqttConfig, timeout: float = 10.0) -> None:
    """Remove the persistent session from the broker (bench and test clean-up)."""
    asyncio.run(_session(config, keep=False, timeout=timeout))
