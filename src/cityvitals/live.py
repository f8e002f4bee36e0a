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
after the last, in commit order, see ``readings.write_batch``), so readings that arrive by
HTTP or ``cityvitals ingest`` are watched too.

A stage that fails is reported (``errors``) and retried after ``retry_seconds``; it never
takes the ingest down with it.
"""

from __future__ import annotations

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
