"""The stages after ingest, run once per batch: one implementation for every engine.

The local runner and the Spark job (``cityvitals.spark``) both call ``Downstream.run``
after a batch is ingested, so signs, watch, diagnose and dispose are the same code
whichever engine moved the batch. Stages the install or the store does not have are
left out (diagnose and dispose need the incident and case repositories, which the
PostgreSQL store does not serve yet), so the runner grows with the product without
knowing each stage's internals.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], datetime]


def event_clock(store) -> datetime | None:
    """The latest reading time the signs stage has seen (its watermark), or None.

    Why this is a clock: a replayed or recomputed stream lies in the past, so judging
    staleness and escalation against the wall clock would call every sensor silent.
    Both engines read the same watermark after the same batch, so they judge alike.
    """
    from cityvitals.store.duck.signs import from_us

    wm = store.signs.state().get("watermark_us")
    return from_us(int(wm)) if wm is not None else None


class Downstream:
    """signs → watch → diagnose → dispose for one store; keeps the diagnosis graph between batches."""

    def __init__(self, store):
        self.store = store
        # Diagnosis keeps the asset graph and its per-group rankings between ticks, so a tick
        # re-ranks only the groups that new alerts touched.
        self._diagnose_graph = None
        self._diagnose_cache: dict = {}

    def run(self, clock: Clock | None = None) -> dict:
        """Run every stage present; ``clock`` None: the event clock (read after signs)."""
        out = self.signs()
        if clock is None:
            clock = self.batch_clock()
        out.update(self.watch(clock))
        out.update(self.after_watch(clock))
        return out

    def signs(self) -> dict:
        """The signs stage over what ingest stored since its watermark."""
        try:
            from cityvitals.signs import compute_signs
        except ImportError:
            return {}
        return {"signs": str(compute_signs(self.store))}

    def batch_clock(self) -> Clock:
        """The event clock read once, after signs: one fixed reading for every later stage of the batch.

        The Spark engine reads it in its ingest query and hands the value to its watch query
        with the batch (``cityvitals.spark.handoff``), so both stages judge at the same instant.
        """
        now = event_clock(self.store) or datetime.now(timezone.utc)

        def clock() -> datetime:
            return now
        return clock

    def watch(self, clock: Clock) -> dict:
        """The watch over readings not yet watched (``watch_readings``: detectors, then alerts)."""
        try:
            from cityvitals.watch import watch_readings
        except ImportError:
            return {}
        return {"watch": watch_readings(self.store, clock=clock)}

    def after_watch(self, clock: Clock) -> dict:
        """diagnose → dispose, where the store serves them: what follows the alerts of a batch.

        Shared by ``run`` and the Spark engine's watch query, which applies its detectors'
        verdicts to the alerts and then calls this.
        """
        store = self.store
        out: dict = {}
        if _serves(store, "incidents"):
            try:
                from cityvitals.diagnose import AssetGraph, diagnose

                if self._diagnose_graph is None:
                    self._diagnose_graph = AssetGraph.from_store(store)
                out["diagnose"] = diagnose(store, clock=clock, graph=self._diagnose_graph, cache=self._diagnose_cache)
            except ImportError:
                pass
        if _serves(store, "cases"):
            try:
                from cityvitals.dispose import run_step as dispose_step

                out["dispose"] = dispose_step(store, clock)
            except ImportError:
                pass
        return out


def _serves(store, repo: str) -> bool:
    """Whether the store has ``repo`` (a backend that has not ported it raises AttributeError)."""
    try:
        getattr(store, repo)
    except AttributeError:
        return False
    return True
