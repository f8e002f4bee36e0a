"""The live stream's memory: a ring of events with increasing ids, and what fills it.

``EventHub`` keeps the last ``capacity`` events. Ids start at the wall-clock millisecond
when the hub is made and increase by one per event, so they also keep increasing across
a server restart; a client that reconnects with ``Last-Event-ID`` gets every event after
that id, and if the id is older than the ring (or from before a restart) it gets a
``reset`` event telling it to reload the full state: nothing is missed silently.

``ChangeWatcher`` turns store changes into events: new readings (by row id: readings are append-only),
quarantine counts, alert events, new health snapshots, incidents that changed and case events
(when this install has the diagnose and dispose stages). It runs after every write the
API makes and on a timer for writes made by other parts of the process (the simulator,
the signs and watch stages), and it is idempotent: each change is published once.

>>> hub = EventHub(capacity=3, first_id=10)
>>> [hub.publish("readings", {"n": i}) for i in range(4)]
[10, 11, 12, 13]
>>> [e.id for e in hub.after(11)], [(e.type, e.id) for e in hub.after(5)]
([12, 13], [('reset', 13)])
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: dict
    units: tuple[str, ...] = field(default=())

    def sse(self) -> str:
        return f"id: {self.id}\nevent: {self.type}\ndata: {json.dumps(self.data, ensure_ascii=False, default=str)}\n\n"


class EventHub:
    def __init__(self, capacity: int = 10_000, first_id: int | None = None):
        self.capacity = capacity
        self._ring: deque[Event] = deque(maxlen=capacity)
        self._next = int(time.time() * 1000) if first_id is None else int(first_id)
        self.first_id = self._next
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def last_id(self) -> int:
        return self._next - 1

    def publish(self, type_: str, data: dict, units: list[str] | tuple[str, ...] = ()) -> int:
        """Add an event (thread-safe) and wake every waiting stream."""
        with self._lock:
            ev = Event(self._next, type_, data, tuple(units))
            self._next += 1
            self._ring.append(ev)
            waiters = list(self._waiters)
        for loop, flag in waiters:
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # the loop closed under us
                self._waiters.discard((loop, flag))
        return ev.id

    def after(self, last_id: int | None) -> list[Event]:
        """Events with id > last_id; a ``reset`` first if some of them are no longer held."""
        with self._lock:
            ring = list(self._ring)
        if last_id is None:
            return []
        oldest = ring[0].id if ring else self._next
        if last_id < oldest - 1 or last_id >= self._next:
            return [Event(self.last_id, "reset", {"reason": "events after your last id are no longer held; reload the state"})]
        return [e for e in ring if e.id > last_id]

    async def wait(self, last_id: int, timeout: float) -> None:
        """Until an event newer than ``last_id`` exists, or ``timeout`` seconds pass."""
        if self.last_id > last_id:
            return
        flag = asyncio.Event()
        key = (asyncio.get_running_loop(), flag)
        self._waiters.add(key)
        try:
            if self.last_id > last_id:
                return
            await asyncio.wait_for(flag.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiters.discard(key)


class ChangeWatcher:
    """Publishes what changed in the store since it last looked."""

    MAX_UNITS = 500  # per readings event: the units with new readings (finest level)

    def __init__(self, store, hub: EventHub):
        self.store = store
        self.hub = hub
        self._lock = threading.Lock()
        # unit codes without the sensor id join (DuckDB: the ``readings_by_key`` view), and the
        # column new readings are told by: DuckDB's row id, PostgreSQL's ingested_at
        self._table = getattr(store.readings, "by_key", "readings")
        self._cursor = getattr(store.readings, "cursor_column", "rowid")
        # PostgreSQL: the cursor never passes a batch still in flight (readings.settled)
        self._settled = getattr(store.readings, "settled", None)
        with store.lock:
            con = store.con
            upto, params = self._upto()
            self._row = con.execute(f"SELECT max({self._cursor}) FROM {self._table} WHERE {upto}", params).fetchall()[0][0]
            self._qcounts = store.quarantine.counts()
            self._alert_row = con.execute("SELECT coalesce(max(rowid), -1) FROM alert_events").fetchall()[0][0] if hasattr(store, "alerts") else -1
            self._health = con.execute("SELECT max(as_of) FROM sign_health").fetchall()[0][0] if hasattr(store, "signs") else None
            self._case_row = con.execute("SELECT coalesce(max(rowid), -1) FROM case_events").fetchall()[0][0] if hasattr(store, "cases") else -1
        self._incidents = self._incident_snapshot()

    def check(self) -> list[int]:
        with self._lock:
            return (self._readings() + self._quarantine() + self._alerts() + self._health_snapshots()
                    + self._incident_changes() + self._case_events())

    def _upto(self) -> tuple[str, list]:
        return ("true", []) if self._settled is None else (f"{self._cursor} <= ?", [self._settled()])

    def _readings(self) -> list[int]:
        after = "true" if self._row is None else f"{self._cursor} > ?"
        with self.store.lock:
            upto, params = self._upto()
            rows = self.store.con.execute(
                f"SELECT unit_code, count(*), max({self._cursor}), max(ts) FROM {self._table} "
                f"WHERE {after} AND {upto} GROUP BY unit_code ORDER BY count(*) DESC",
                ([] if self._row is None else [self._row]) + params,
            ).fetchall()
        if not rows:
            return []
        self._row = max(r[2] for r in rows)
        units = {r[0]: r[1] for r in rows[: self.MAX_UNITS] if r[0] is not None}
        data = {"readings": sum(r[1] for r in rows), "units": units, "latest_ts": max(r[3] for r in rows),
                "units_truncated": len(rows) > self.MAX_UNITS}
        return [self.hub.publish("readings", data, tuple(units))]

    def _quarantine(self) -> list[int]:
        counts = self.store.quarantine.counts()
        if counts == self._qcounts:
            return []
        self._qcounts = counts
        return [self.hub.publish("quarantine", {"counts": counts, "total": sum(counts.values())})]

    def _alerts(self) -> list[int]:
        if not hasattr(self.store, "alerts"):
            return []
        with self.store.lock:
            cur = self.store.con.execute(
                "SELECT e.rowid AS row, e.alert_id, e.ts, e.event, e.actor, e.level, a.state, a.level AS alert_level, "
                "a.type, a.source, a.message, s.unit_code FROM alert_events e "
                "JOIN alerts a ON a.id = e.alert_id LEFT JOIN sensors s ON s.id = a.source "
                "WHERE e.rowid > ? ORDER BY e.rowid LIMIT 1000",
                [self._alert_row],
            )
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        if rows:
            self._alert_row = rows[-1].pop("row")
        for r in rows:
            r.pop("row", None)
        return [self.hub.publish("alert", r, (r["unit_code"],) if r["unit_code"] else ()) for r in rows]

    # Incidents are rewritten in place by the diagnose stage (members, causes, counts), so a
    # change is found by comparing a small snapshot of every incident, not by a row id.
    _INC_COLS = "id, state, updated_at, top_cause, n_alerts, n_reports, severity, level, merged_into"

    def _incident_snapshot(self) -> dict[int, tuple]:
        if not hasattr(self.store, "incidents"):
            return {}
        with self.store.lock:
            rows = self.store.con.execute(f"SELECT {self._INC_COLS} FROM incidents").fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    def _incident_changes(self) -> list[int]:
        if not hasattr(self.store, "incidents"):
            return []
        snap = self._incident_snapshot()
        changed = sorted(i for i, v in snap.items() if self._incidents.get(i) != v)
        self._incidents = snap
        if not changed:
            return []
        with self.store.lock:
            cur = self.store.con.execute(
                "SELECT i.id AS incident_id, i.type, i.state, i.title, i.severity, i.level, i.top_cause, i.updated_at, "
                "i.n_alerts, i.n_reports, i.units, (SELECT h.event FROM incident_history h WHERE h.incident_id = i.id "
                "ORDER BY h.ts DESC, h.rowid DESC LIMIT 1) AS event FROM incidents i WHERE list_contains(?, i.id) ORDER BY i.id",
                [changed[:1000]],
            )
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        out = []
        for r in rows:
            units = json.loads(r.pop("units") or "[]")
            out.append(self.hub.publish("incident", r, tuple(units[: self.MAX_UNITS])))
        return out

    def _case_events(self) -> list[int]:
        if not hasattr(self.store, "cases"):
            return []
        with self.store.lock:
            cur = self.store.con.execute(
                "SELECT e.rowid AS row, e.case_id, e.seq, e.ts, e.action, e.actor, e.from_state, e.to_state, "
                "c.state, c.category, c.priority, c.department, c.due_at, c.unit_code FROM case_events e "
                "JOIN cases c ON c.id = e.case_id WHERE e.rowid > ? ORDER BY e.rowid LIMIT 1000",
                [self._case_row],
            )
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        if rows:
            self._case_row = rows[-1]["row"]
        for r in rows:
            r.pop("row", None)
        return [self.hub.publish("case", r, (r["unit_code"],) if r["unit_code"] else ()) for r in rows]

    def _health_snapshots(self) -> list[int]:
        if not hasattr(self.store, "signs"):
            return []
        with self.store.lock:
            latest = self.store.con.execute("SELECT max(as_of) FROM sign_health").fetchall()[0][0]
        if latest is None or latest == self._health:
            return []
        self._health = latest
        return [self.hub.publish("health", {"as_of": latest})]


def visible(ev: Event, scope: set[str] | None, department: str | None = None) -> Event | None:
    """The event as a scoped user may see it (unit lists cut to their area), or None.

    ``department``: a department's staff see only case events of their department's cases.
    """
    if department is not None and ev.type == "case" and ev.data.get("department") != department:
        return None
    if scope is None or not ev.units:
        return ev
    keep = [u for u in ev.units if u in scope]
    if not keep:
        return None
    if ev.type == "readings":
        units = {u: n for u, n in ev.data["units"].items() if u in scope}
        return Event(ev.id, ev.type, {**ev.data, "units": units, "readings": sum(units.values())}, tuple(keep))
    return ev
