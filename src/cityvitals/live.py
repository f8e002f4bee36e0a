"""The stages that follow the store in a long-running server: watch (alerts) and signs
(indicators) on new readings as the ingest commits them.

Why here and not as separate ``cityvitals watch`` / ``signs`` runs on a timer: in server
mode a reading is only useful once its alert is raised, and a run started from scratch
pays for loading the watch's detector state (about 14 MB for 20,000 sensors) and writing
it back every time. ``LiveStages`` keeps that state in memory (``WatchSession``,
checkpointed every ``checkpoint_seconds`` and on ``close()``), and the ingest ``notify()``\\s
it after each commit, so the watch starts on a batch the moment it is durable instead of
at the next poll. Each stage runs in its own thread on its own store connection
(PostgreSQL; the DuckDB store is shared behind its lock), so a slow signs run never
delays an alert; the watch's checkpoints are written from a third thread and connection,
so writing one never delays a run either. What the watch's first run would pay (its
checkpoint, every sensor's neighbours) is paid by ``start()`` before the server subscribes.
Both stages read what is *stored* (the watermark on ``ingested_at``; every batch is stamped
after the last, and on PostgreSQL a reader stops before a batch still in flight, see
``readings.settled``), so readings that arrive by HTTP or ``cityvitals ingest`` are watched too.

A stage that fails is reported (``errors``) and retried after ``retry_seconds``; it never
takes the ingest down with it.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from datetime import datetime
from typing import Any, Callable, Mapping

from cityvitals.signs.session import SignsSession
from cityvitals.watch.alerts import utcnow
from cityvitals.watch.runner import Threshold, WatchSession


class LiveStages:
    """Watch and signs following the store; ``start()``, ``notify()`` after each commit, ``close()``."""

    def __init__(self, open_store: Callable[[], Any], *, thresholds: Mapping[str, Threshold] | None = None,
                 use_catalog: bool = True, signs: bool = True, signs_every: float = 5.0,
                 checkpoint_seconds: float = 10.0, retry_seconds: float = 2.0,
                 on_watch: Callable[[dict, Any, float], None] | None = None,
                 clock: Callable[[], datetime] = utcnow):
        """``open_store`` gives each stage its store (called once per stage); ``on_watch``
        (result, store, monotonic time the run ended) is called after every run that saw
        readings (the bench times alerts with it). ``signs_every``: seconds between signs
        runs (the indicators lag by up to this much; alerts do not wait for it). A run reads
        only the readings stored since the last one: the windows' partial aggregates stay in
        memory between runs (``signs_session``, see ``cityvitals.signs.session``), so its
        cost follows the new readings, not the length of the windows they fall in."""
        self.watch_store = open_store()
        self.signs_store = open_store() if signs else None
        self.checkpoint_store = open_store()
        self.thresholds = thresholds
        self.use_catalog = use_catalog
        self.signs_every = signs_every
        self.retry_seconds = retry_seconds
        self.on_watch = on_watch
        self.clock = clock
        self.session = WatchSession(checkpoint_seconds, background_store=self.checkpoint_store)
        self.signs_session = SignsSession() if signs else None
        self.stop_ = threading.Event()
        self.kick = threading.Event()
        self.idle = threading.Event()  # the watch's last run found nothing new
        self.watch_runs: list[float] = []  # seconds per run that saw readings
        self.signs_runs: list[float] = []
        self.watch_cpu = 0.0  # CPU seconds of the stage threads (time.thread_time)
        self.signs_cpu = 0.0
        self.signs_values = 0
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._watch, daemon=True, name="live-watch")]
        if signs:
            self._threads.append(threading.Thread(target=self._signs, daemon=True, name="live-signs"))

    def start(self) -> "LiveStages":
        """Load the watch's checkpoint and configuration (``warm``), then start the stages."""
        self.warm()
        for t in self._threads:
            t.start()
        return self

    def warm(self) -> None:
        """What the watch's first run would otherwise pay inside the first batch's latency: the
        checkpoint (about 14 MB for 20,000 sensors) and the configuration with every sensor's
        neighbours (most of a second for 20,000). Kept until the registry changes; series still
        enter the watch's state when they first report (a registered sensor that never has is
        not called stale). A failure here is left to the first run, which retries it."""
        try:
            self.session.warm(self.watch_store, thresholds=self.thresholds, use_catalog=self.use_catalog)
        except Exception as exc:  # noqa: BLE001  (the watch thread reports it if it persists)
            self.errors.append(f"watch warm-up: {exc!r}")

    def notify(self, *_: Any) -> None:
        """New readings are durable: wake the watch now (an ingest ``on_batch`` callback)."""
        self.kick.set()

    def _watch(self) -> None:
        from cityvitals.watch.runner import watch_readings

        s = self.watch_store
        while not self.stop_.is_set():
            self.kick.clear()
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                res = watch_readings(s, thresholds=self.thresholds, use_catalog=self.use_catalog, session=self.session,
                                     clock=self.clock)
            except Exception as exc:  # noqa: BLE001  (reported; the ingest goes on)
                self.errors.append(f"watch: {exc!r}")
                self.session.reset()  # reload from the last checkpoint
                self.stop_.wait(self.retry_seconds)
                continue
            done = time.monotonic()
            self.watch_cpu += time.thread_time() - c0
            while self.session.checkpoint_errors:
                self.errors.append(f"watch checkpoint: {self.session.checkpoint_errors.pop(0)}")
            if res["points"]:
                self.idle.clear()
                self.watch_runs.append(done - t0)
                if self.on_watch:
                    self.on_watch(res, s, done)
            else:
                self.idle.set()
                self.kick.wait(0.5)

    def _signs(self) -> None:
        from cityvitals.signs import compute_signs

        s = self.signs_store
        while not self.stop_.is_set():
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                rep = compute_signs(s, session=self.signs_session)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"signs: {exc!r}")
                self.signs_session.reset()  # the next run fills the partials from the store again
                self.stop_.wait(self.retry_seconds)
                continue
            self.signs_cpu += time.thread_time() - c0
            if rep.readings:
                self.signs_runs.append(time.monotonic() - t0)
                self.signs_values += rep.values
            self.stop_.wait(self.signs_every)

    def wait_caught_up(self, limit_s: float) -> bool:
        """Wait (bounded) until the watch has read everything stored so far."""
        self.idle.clear()
        self.kick.set()
        return self.idle.wait(limit_s)

    def alive(self) -> bool:
        """Both stage threads run (a failing run is retried, so only a bug ends one)."""
        return all(t.is_alive() for t in self._threads)

    def stores(self) -> list:
        """The stores the stages opened (each once; with an embedded store, the one shared)."""
        return list({id(s): s for s in (self.watch_store, self.signs_store, self.checkpoint_store)
                     if s is not None}.values())

    def close(self) -> None:
        """Stop both stages and checkpoint the watch's state (after any checkpoint in flight)."""
        self.stop_.set()
        self.kick.set()
        for t in self._threads:
            t.join(60)
        self.session.checkpoint(self.watch_store)


class StagesProcess:
    """``LiveStages`` in a process of its own, over a PostgreSQL store: what ``serve --follow``
    runs beside a PostgreSQL store.

    Why a process and not threads beside the ingest: the watch's detectors and verdicts are
    Python and NumPy over every touched series, and in the ingesting process they held the
    interpreter for about as long as the ingest's own Python did, so each delayed the other
    (`cityvitals bench mqtt`, interleaved runs: publish-to-alert p99 0.17-0.26 s against
    0.34-0.51 s with threads; the sustained rate did not move, the 2-core machine being short
    of CPU rather than of interpreter; docs/benchmarks.md). A stage that crashes or leaks no
    longer takes the ingest with it either. The stages already read only what is stored,
    through connections of their own, so nothing but the wake-up after each commit crosses
    between the processes: an inter-process event that coalesces, as the threads' did.

    The child dies with the server (``PR_SET_PDEATHSIG`` on Linux, and an end-of-pipe check
    elsewhere): a server killed and restarted must not leave an old watch running beside the
    new one. Both resume from the watch's last checkpoint, as the threads did after a crash.
    The embedded DuckDB store cannot be shared between processes; there ``LiveStages`` runs
    as threads.

    One per store: the child holds an advisory lock (per database schema) for its life, and
    a second one on the same store waits up to ``exclusive_wait`` seconds for it, then
    refuses to start. Several servers may ingest into one store (``--mqtt-share-group``), but
    two watches would each raise the same alerts and overwrite each other's checkpoint. The
    lock goes with the child's connection, so a killed server's is free again at once.

    ``on_watch(summary, done)`` is called in this process, from a reader thread, after every
    watch run that saw readings (``summary``: points and alert changes; ``done``:
    ``time.monotonic()`` in the child, the same clock on Linux). Start it from a thread that
    lives as long as it should (the main thread): Linux kills the child when the thread that
    started it ends."""

    def __init__(self, url: str, *, thresholds: Mapping[str, Threshold] | None = None, use_catalog: bool = True,
                 signs: bool = True, signs_every: float = 5.0, checkpoint_seconds: float = 10.0,
                 on_watch: Callable[[dict, float], None] | None = None, start_timeout: float = 120.0,
                 exclusive_wait: float = 10.0):
        import multiprocessing as mp

        # spawned, not forked: the server runs threads (the MQTT loop, the committer), and a
        # forked child of a threaded process can inherit a lock held by one of them
        self._ctx = mp.get_context("spawn")
        self._kick = self._ctx.Event()
        self._conn, child_conn = self._ctx.Pipe()
        options = {"thresholds": dict(thresholds) if thresholds is not None else None, "use_catalog": use_catalog,
                   "signs": signs, "signs_every": signs_every, "checkpoint_seconds": checkpoint_seconds,
                   "report_watch": on_watch is not None, "exclusive_wait": exclusive_wait}
        self._proc = self._ctx.Process(target=_stages_main, args=(url, options, self._kick, child_conn, os.getpid()),
                                       name="cityvitals-stages", daemon=True)
        self._child_conn = child_conn
        self.on_watch = on_watch
        self.start_timeout = start_timeout
        self._replies: "queue.Queue[tuple]" = queue.Queue()
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.watch_runs: list[float] = []
        self.signs_runs: list[float] = []
        self.watch_cpu = 0.0
        self.signs_cpu = 0.0
        self.signs_values = 0
        self.errors: list[str] = []
        self.pids: list[int] = []  # the child's and its PostgreSQL backends' (CPU accounting)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self) -> "StagesProcess":
        """Start the child and wait (bounded) until its watch is warm, as ``LiveStages.start``."""
        self._proc.start()
        self._child_conn.close()  # the child's end: closed here, so a dead child reads as end of pipe
        self._reader = threading.Thread(target=self._read, name="stages-reader", daemon=True)
        self._reader.start()
        reply = self._reply("ready", self.start_timeout)
        if reply is None or reply[0] != "ready":
            self._kill()
            why = reply[1] if reply is not None and reply[0] == "failed" else "no answer"
            raise RuntimeError(f"the live stages process did not start: {why}")
        self._take_stats(reply[1])
        return self

    def notify(self, *_: Any) -> None:
        """New readings are durable: wake the watch (an ingest ``on_batch`` callback)."""
        self._kick.set()

    def wait_caught_up(self, limit_s: float) -> bool:
        """Wait (bounded) until the watch has read everything stored so far."""
        reply = self._call(("caught_up", limit_s), limit_s + 30)
        return bool(reply is not None and reply[1])

    def stats(self) -> dict:
        """The stages' figures so far (runs, CPU, errors), also kept on this object."""
        reply = self._call(("stats",), 30)
        if reply is not None:
            self._take_stats(reply[1])
        return self._stats_dict()

    def stores(self) -> list:
        """The stores are the child's: nothing to close here."""
        return []

    def alive(self) -> bool:
        return self._proc.is_alive()

    def close(self, timeout: float = 60.0) -> None:
        """Stop both stages and checkpoint the watch (in the child), then end the child."""
        if self._proc.pid is None:
            return
        if self._proc.is_alive():
            reply = self._call(("close",), timeout)
            if reply is not None:
                self._take_stats(reply[1])
            self._proc.join(timeout)
        self._kill()
        try:
            self._conn.close()
        except OSError:
            pass

    # -- the parent's side of the pipe --------------------------------------------------------
    def _read(self) -> None:
        """Demultiplex the child's messages: watch reports to ``on_watch``, the rest are replies."""
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                self._replies.put(("gone", None))
                return
            if msg[0] == "watch":
                if self.on_watch is not None:
                    try:
                        self.on_watch(msg[1], msg[2])
                    except Exception as exc:  # noqa: BLE001  (a bench hook; the stages go on)
                        self.errors.append(f"on_watch: {exc!r}")
                continue
            self._replies.put(msg)

    def _call(self, msg: tuple, timeout: float) -> tuple | None:
        with self._send_lock:
            try:
                self._conn.send(msg)
            except (OSError, ValueError):
                return None
            return self._reply(msg[0] if msg[0] != "close" else "closed", timeout)

    def _reply(self, kind: str, timeout: float) -> tuple | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                msg = self._replies.get(timeout=min(left, 0.5))
            except queue.Empty:
                if not self._proc.is_alive() and self._replies.empty():
                    return None
                continue
            if msg[0] in (kind, "failed", "gone"):
                return msg

    def _take_stats(self, s: dict) -> None:
        for k in ("watch_runs", "signs_runs", "watch_cpu", "signs_cpu", "signs_values", "pids"):
            setattr(self, k, s[k])
        self.errors = [*s["errors"], *(e for e in self.errors if e.startswith("on_watch"))]

    def _stats_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("watch_runs", "signs_runs", "watch_cpu", "signs_cpu", "signs_values",
                                              "errors", "pids")}

    def _kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(10)


def _die_with_parent(parent: int) -> None:
    """The child is killed when the server dies, however it dies (Linux); elsewhere the
    end-of-pipe check in ``_stages_main`` stops it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the server died before the line above took effect
        os._exit(1)


_STAGES_LOCK = 0x6C697665  # "live": advisory lock class of the live stages, keyed by schema below


class StagesBusy(RuntimeError):
    """Another process already runs the live stages on this store."""


def hold_stages_lock(store, wait_s: float, *, holder: str = "the live stages (watch and signs)") -> None:
    """Take the store's live-stages lock for the session of ``store``'s connection (held until
    it closes), waiting up to ``wait_s``: the previous holder may be a server killed a moment
    ago whose connection PostgreSQL has not closed yet. Nothing to take on the embedded store,
    which one process owns. ``cityvitals watch run`` takes it too, without waiting."""
    if getattr(store, "backend", None) != "postgresql":
        return
    deadline = time.monotonic() + wait_s
    while True:
        got = store.pg.execute("SELECT pg_try_advisory_lock(%s, hashtext(current_schema()))",
                               [_STAGES_LOCK]).fetchall()[0][0]
        if got:
            return
        if time.monotonic() >= deadline:
            raise StagesBusy(f"another process already runs the live stages (watch and signs) on this store, so "
                             f"{holder} cannot run beside it: run --follow on one server only, and no "
                             "`cityvitals watch run` against a followed store")
        time.sleep(0.2)


def _stages_main(url: str, options: dict, kick, conn, parent: int) -> None:
    """The stages process: ``LiveStages`` over the store at ``url``, driven through ``conn``."""
    _die_with_parent(parent)
    from cityvitals.store.pg import PostgresStore

    report = options.pop("report_watch")
    exclusive_wait = options.pop("exclusive_wait")

    def on_watch(res: dict, store, done: float) -> None:
        conn.send(("watch", {"points": res["points"], "alerts": res["alerts"]}, done))

    guard = None
    try:
        guard = PostgresStore(url)
        hold_stages_lock(guard, exclusive_wait)
        live = LiveStages(lambda: PostgresStore(url), on_watch=on_watch if report else None, **options)
        # read before the stage threads use the connections
        pids = [os.getpid(), *(int(s.pg.execute("SELECT pg_backend_pid()").fetchall()[0][0]) for s in live.stores())]
        live.start()
    except BaseException as exc:  # noqa: BLE001  (told to the server, which refuses to start)
        conn.send(("failed", str(exc) if isinstance(exc, StagesBusy) else repr(exc)))
        if guard is not None:
            guard.close()
        return

    def stats() -> dict:
        return {"watch_runs": list(live.watch_runs), "signs_runs": list(live.signs_runs),
                "watch_cpu": live.watch_cpu, "signs_cpu": live.signs_cpu, "signs_values": live.signs_values,
                "errors": list(live.errors), "pids": pids}

    stop = threading.Event()

    def relay() -> None:
        while not stop.is_set():
            if kick.wait(0.5):
                kick.clear()
                live.notify()

    threading.Thread(target=relay, name="stages-kick", daemon=True).start()
    conn.send(("ready", stats()))
    try:
        while True:
            try:
                if not conn.poll(1.0):
                    if os.getppid() != parent:  # the server is gone (no PR_SET_PDEATHSIG here)
                        break
                    continue
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "caught_up":
                conn.send(("caught_up", live.wait_caught_up(msg[1])))
            elif msg[0] == "stats":
                conn.send(("stats", stats()))
            elif msg[0] == "close":
                break
    finally:
        stop.set()
        live.close()
        final = stats()
        for s in live.stores():
            s.close()
        guard.close()  # the lock goes with its session
        try:
            conn.send(("closed", final))
        except (OSError, ValueError):
            pass
