"""The alert lifecycle: what a duty officer sees, and why it does not nag.

* One open alert per (source, type); a condition that fires again while its alert is open
  adds an occurrence instead of a new alert.
* active -> acknowledged -> resolved, with who and when. Auto-resolve has hysteresis: the
  condition must stay clear for ``resolve_after`` before the alert closes.
* Flapping: a condition that comes back within ``reopen_within`` of its alert's
  auto-resolution reopens that alert (occurrence + 1); after ``flap_threshold`` reopenings
  the alert is marked flapping (shown once, not re-announced).
* Escalation: an ``alarm`` still unacknowledged ``escalate_after`` after it was raised (or
  last escalated) escalates one step; a rise in level re-activates an acknowledged alert.
* Every change is written to the alert event log. The clock is injected.

>>> from datetime import datetime, timedelta, timezone
>>> from cityvitals.store import open_store
>>> from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation
>>> import tempfile
>>> store = open_store(tempfile.mkdtemp())
>>> t0 = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)
>>> now = [t0]
>>> mgr = AlertManager(store, AlertPolicy(escalate_after=timedelta(minutes=15)), clock=lambda: now[0])
>>> mgr.observe([Observation("P-17", "threshold", 3, t0, "pressure 0.12 MPa below alarm 0.14")])["raised"]
1
>>> now[0] = t0 + timedelta(minutes=20)
>>> [a["escalation"] for a in mgr.escalate()]
[1]
>>> alert = store.alerts.list(state="open")[0]
>>> mgr.ack(alert["id"], "duty officer Li")["state"]
'acknowledged'
>>> _ = mgr.observe([Observation("P-17", "threshold", 0, t0 + timedelta(minutes=m)) for m in (21, 40)])
>>> store.alerts.get(alert["id"])["resolved_by"]
'auto'
>>> [e["event"] for e in store.alerts.events(alert["id"])]
['raise', 'escalate', 'ack', 'auto_resolve']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

from cityvitals.errors import InputError

LEVELS = ("normal", "attention", "warning", "alarm")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class AlertPolicy:
    resolve_after: timedelta = timedelta(minutes=10)
    reopen_within: timedelta = timedelta(minutes=30)
    flap_threshold: int = 3
    escalate_after: timedelta = timedelta(minutes=15)


@dataclass
class Observation:
    """One detector's verdict on one source at one time; level 0 means "clear"."""

    source: str
    type: str
    level: int
    at: datetime
    message: str = ""


@dataclass
class AlertManager:
    store: object
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    clock: Callable[[], datetime] = utcnow

    @property
    def repo(self):
        return self.store.alerts  # type: ignore[attr-defined]

    def observe(self, observations: Iterable[Observation]) -> dict[str, int]:
        """Apply a batch of verdicts in time order; returns what changed."""
        obs = sorted(observations, key=lambda o: o.at)
        counts = {"raised": 0, "repeated": 0, "reopened": 0, "level_changed": 0, "resolved": 0}
        if not obs:
            return counts
        pol = self.policy
        with self.store.transaction() as con:  # type: ignore[attr-defined]
            open_ = self.repo.open_for(list({(o.source, o.type) for o in obs}))
            for o in obs:
                key = (o.source, o.type)
                cur = open_.get(key)
                lvl = int(o.level)
                if lvl <= 0:
                    if cur is None:
                        continue
                    if cur["clear_since"] is None:
                        cur["clear_since"] = o.at
                        self.repo.update(con, cur["id"], {"clear_since": o.at})
                    elif o.at - cur["clear_since"] >= pol.resolve_after:
                        ch = {"state": "resolved", "resolved_by": "auto", "resolved_at": o.at, "clear_since": None}
                        self.repo.update(con, cur["id"], ch)
                        self.repo.log(con, cur["id"], o.at, "auto_resolve", "auto", cur["level"])
                        del open_[key]
                        counts["resolved"] += 1
                    continue
                name = LEVELS[min(lvl, 3)]
                if cur is not None:
                    ch: dict = {"last_at": o.at, "message": o.message or cur["message"]}
                    if cur["clear_since"] is not None:
                        ch["clear_since"] = None
                        ch["occurrences"] = cur["occurrences"] + 1
                        self.repo.log(con, cur["id"], o.at, "repeat", None, name, o.message)
                        counts["repeated"] += 1
                    if name != cur["level"]:
                        ch["level"] = name
                        if LEVELS.index(name) > LEVELS.index(cur["level"]) and cur["state"] == "acknowledged":
                            ch["state"] = "active"
                        self.repo.log(con, cur["id"], o.at, "level", None, name, o.message)
                        counts["level_changed"] += 1
                    self.repo.update(con, cur["id"], ch)
                    cur.update(ch)
                    continue
                last = self.repo.last_resolved(o.source, o.type)
                if last is not None and last["resolved_by"] == "auto" and o.at - last["resolved_at"] <= pol.reopen_within:
                    reopened = last["reopened"] + 1
                    ch = {
                        "state": "active", "level": name, "last_at": o.at, "message": o.message or last["message"],
                        "occurrences": last["occurrences"] + 1, "reopened": reopened, "resolved_by": None,
                        "resolved_at": None, "clear_since": None, "flapping": reopened >= pol.flap_threshold,
                    }
                    self.repo.update(con, last["id"], ch)
                    self.repo.log(con, last["id"], o.at, "reopen", None, name, o.message)
                    last.update(ch)
                    open_[key] = last
                    counts["reopened"] += 1
                    continue
                row = {
                    "source": o.source, "type": o.type, "level": name, "state": "active", "message": o.message,
                    "first_at": o.at, "last_at": o.at, "occurrences": 1, "escalation": 0, "flapping": False,
                    "reopened": 0,
                }
                row["id"] = self.repo.insert(con, row)
                row.update({"clear_since": None, "acknowledged_by": None, "resolved_by": None, "escalated_at": None})
                self.repo.log(con, row["id"], o.at, "raise", None, name, o.message)
                open_[key] = row
                counts["raised"] += 1
        return counts

    def escalate(self, now: datetime | None = None) -> list[dict]:
        """Escalate alarms left unacknowledged past ``escalate_after``; returns the escalated alerts."""
        now = now or self.clock()

        def due() -> list[dict]:
            return [a for a in self.repo.open_alerts() if a["state"] == "active" and a["level"] == "alarm"
                    and not a["flapping"] and now - (a["escalated_at"] or a["first_at"]) >= self.policy.escalate_after]

        if not due():  # the usual case, asked after every window the watch runs: no transaction
            return []
        with self.store.transaction() as con:  # type: ignore[attr-defined]
            out = due()  # again, under the transaction (an officer may have acknowledged one since)
            for a in out:
                ch = {"escalation": a["escalation"] + 1, "escalated_at": now}
                self.repo.update(con, a["id"], ch)
                self.repo.log(con, a["id"], now, "escalate", "auto", a["level"], f"step {ch['escalation']}")
                a.update(ch)
        return out

    def _open_or_fail(self, alert_id: int) -> dict:
        a = self.repo.get(alert_id)
        if a is None:
            raise InputError(f"alert {alert_id}: no such alert")
        if a["state"] == "resolved":
            raise InputError(f"alert {alert_id}: already resolved (by {a['resolved_by']} at {a['resolved_at']})")
        return a

    def ack(self, alert_id: int, who: str, note: str | None = None) -> dict:
        if not who:
            raise InputError(f"alert {alert_id}: say who acknowledges it (--by)")
        a = self._open_or_fail(alert_id)
        now = self.clock()
        with self.store.transaction() as con:  # type: ignore[attr-defined]
            self.repo.update(con, alert_id, {"state": "acknowledged", "acknowledged_by": who, "acknowledged_at": now})
            self.repo.log(con, alert_id, now, "ack", who, a["level"], note)
        return self.repo.get(alert_id)

    def resolve(self, alert_id: int, who: str, note: str | None = None) -> dict:
        if not who:
            raise InputError(f"alert {alert_id}: say who resolves it (--by)")
        a = self._open_or_fail(alert_id)
        now = self.clock()
        with self.store.transaction() as con:  # type: ignore[attr-defined]
            self.repo.update(con, alert_id, {"state": "resolved", "resolved_by": who, "resolved_at": now, "clear_since": None})
            self.repo.log(con, alert_id, now, "resolve", who, a["level"], note)
        return self.repo.get(alert_id)
