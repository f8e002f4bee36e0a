"""The case state machine: the current state of a case is a fold over its event log.

Nothing here touches the store. :data:`ACTIONS` says, for every action, the states it may
start from, the state it leads to and the roles that may take it; :func:`check` refuses
anything else with a :class:`TransitionError` naming the case, the action, the state
and what would have been allowed. :func:`fold` replays a log (oldest first) into a
:class:`CaseState`, including the deadline, which counts working time from each
dispatch and stops while an extension request or a suspension is pending.

Roles (domain.md §4.4): ``inspector`` (监督员), ``operator`` (受理员), ``supervisor``
(值班长), ``dispatcher`` (派遣员), ``department`` (专业部门), ``system`` (rules, timers)
and ``admin``, who may do anything any role may.

>>> from datetime import datetime, timezone
>>> t = datetime(2026, 5, 6, 1, 0, tzinfo=timezone.utc)          # Wednesday 09:00 Shanghai
>>> log = [Event("report", t, "lin", "inspector", {"category": "event.0102", "source": "inspector"})]
>>> s = fold(log)
>>> s.state, check(s, "dispatch", Actor("x", "dispatcher"))
Traceback (most recent call last):
...
cityvitals.dispose.workflow.TransitionError: case ?: cannot dispatch from state 'reported' (allowed from: filed, returned, rework)
>>> log.append(Event("file", t, "wu", "supervisor"))
>>> log.append(Event("dispatch", t, "he", "dispatcher", {"department": "sanitation"}))
>>> s = fold(log)
>>> s.state, s.department, s.due_at.isoformat()                 # 4 working hours: 13:00+08 after lunch
('dispatched', 'sanitation', '2026-05-06T06:00:00+00:00')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cityvitals.dispose.codes import PRIORITIES, CodeTable
from cityvitals.errors import InputError

ROLES = ("inspector", "operator", "supervisor", "dispatcher", "department", "system", "admin")
STATES = ("reported", "verifying", "verified", "filed", "rejected", "void", "dispatched", "in_progress",
          "extension_requested", "returned", "handled", "checking", "closed", "rework", "suspended")
FINAL = ("closed", "rejected", "void")
OPEN = tuple(s for s in STATES if s not in FINAL)
PAUSED = ("extension_requested", "suspended")
SUSPENDABLE = ("filed", "dispatched", "in_progress", "returned", "rework")
SOURCES = ("public", "enterprise", "inspector", "sensor", "alert", "incident", "hotline")
PUBLIC_SOURCES = ("public", "enterprise", "hotline")

# action -> (from states, to state (None: unchanged, "<back>": before suspension), roles)
ACTIONS: dict[str, tuple[tuple[str, ...], str | None, tuple[str, ...]]] = {
    "request_verify": (("reported",), "verifying", ("operator", "supervisor")),
    "verify": (("verifying",), "verified", ("inspector",)),
    "file": (("reported", "verified"), "filed", ("supervisor",)),
    "reject": (("reported", "verifying", "verified"), "rejected", ("operator", "supervisor", "inspector")),
    "void": (("reported", "verifying", "verified", "filed"), "void", ("supervisor",)),
    "dispatch": (("filed", "returned", "rework"), "dispatched", ("dispatcher",)),
    "accept": (("dispatched",), "in_progress", ("department",)),
    "return": (("dispatched", "in_progress"), "returned", ("department",)),
    "request_extension": (("in_progress",), "extension_requested", ("department",)),
    "grant_extension": (("extension_requested",), "in_progress", ("dispatcher", "supervisor")),
    "refuse_extension": (("extension_requested",), "in_progress", ("dispatcher", "supervisor")),
    "handle": (("in_progress",), "handled", ("department",)),
    "forward": (("handled",), "checking", ("dispatcher",)),
    "close": (("checking",), "closed", ("inspector", "supervisor")),
    "rework": (("checking",), "rework", ("inspector", "supervisor")),
    "suspend": (SUSPENDABLE, "suspended", ("supervisor",)),
    "resume": (("suspended",), "<back>", ("supervisor",)),
    "escalate": (OPEN, None, ("supervisor", "system")),
    "assign_crew": (("dispatched", "in_progress"), None, ("department", "dispatcher")),
    "attach_report": (OPEN, None, ("system", "operator", "supervisor")),
    "comment": (STATES, None, ROLES),
}
# What a citizen sees of each state (Open311 status_notes) and whether it counts as open.
STAGE_TEXT = {
    "reported": "已受理 Received", "verifying": "核实中 Being verified on site", "verified": "已核实 Verified",
    "filed": "已立案 Filed", "rejected": "不予立案 Not filed", "void": "作废 Void (duplicate or invalid)",
    "dispatched": "已派遣 Dispatched", "in_progress": "处置中 In progress",
    "extension_requested": "申请延期 Extension requested", "returned": "回退重派 Being re-dispatched",
    "handled": "已处置 Handled, awaiting check", "checking": "核查中 Being checked",
    "closed": "已结案 Closed", "rework": "返工 Rework ordered", "suspended": "挂账 Suspended (long-term)",
}


class TransitionError(InputError):
    """An action that the case's state or the actor's role does not allow."""


@dataclass(frozen=True)
class Actor:
    name: str
    role: str
    department: str | None = None   # a department actor acts only on its department's cases


@dataclass(frozen=True)
class Event:
    action: str
    ts: datetime
    actor: str
    role: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseState:
    case_id: Any = None
    state: str | None = None
    category: str | None = None
    priority: str = "normal"
    source: str | None = None
    reported_at: datetime | None = None
    updated_at: datetime | None = None
    verified: bool = False
    inspector: str | None = None
    filed_at: datetime | None = None
    department: str | None = None
    crew: str | None = None
    dispatched_at: datetime | None = None
    handled_at: datetime | None = None
    closed_at: datetime | None = None
    limit_h: float = 0.0
    natural_clock: bool = False
    extra_h: float = 0.0
    paused_h: float = 0.0
    pause_started: datetime | None = None
    due_at: datetime | None = None
    suspended_from: str | None = None
    escalation: int = 0
    returns: int = 0
    reworks: int = 0
    extensions: int = 0
    on_time: bool | None = None     # last handling before the deadline (None until handled)
    seq: int = 0

    @property
    def open(self) -> bool:
        return self.state in OPEN

    @property
    def paused(self) -> bool:
        return self.state in PAUSED

    def overdue(self, now: datetime) -> bool:
        """Running (not paused, not yet handled) and past its deadline."""
        return (self.state in ("dispatched", "in_progress", "returned", "rework") and self.due_at is not None
                and now > self.due_at)


def check(s: CaseState, action: str, actor: Actor) -> str:
    """The state ``action`` leads to, or TransitionError saying why it is refused."""
    if action not in ACTIONS:
        raise TransitionError(f"case {s.case_id or '?'}: unknown action {action!r}; one of: {', '.join(ACTIONS)}")
    frm, to, roles = ACTIONS[action]
    who = f"case {s.case_id or '?'}"
    if s.state is None:
        raise TransitionError(f"{who}: does not exist (report it first)")
    if s.state not in frm:
        raise TransitionError(f"{who}: cannot {action} from state {s.state!r} (allowed from: {', '.join(frm)})")
    if actor.role not in roles and actor.role != "admin":
        raise TransitionError(f"{who}: role {actor.role!r} may not {action} (needs: {', '.join(roles)})")
    if actor.role == "department" and actor.department is not None and actor.department != s.department:
        raise TransitionError(f"{who}: belongs to department {s.department!r}, not {actor.department!r}")
    if action == "file" and s.source in PUBLIC_SOURCES and not s.verified:
        raise TransitionError(f"{who}: a {s.source} report must be verified on site before it is filed "
                              "(request_verify, then verify)")
    if to == "<back>":
        return s.suspended_from or "filed"
    return s.state if to is None else to


def _due_inputs(s: CaseState) -> tuple:
    return s.dispatched_at, s.limit_h + s.extra_h + s.paused_h, s.natural_clock


def _recompute_due(s: CaseState, cal) -> None:
    if s.dispatched_at is not None:
        s.due_at = cal.add(s.dispatched_at, s.limit_h + s.extra_h + s.paused_h, s.natural_clock)


def _copy(s: CaseState) -> CaseState:
    """A shallow copy without the dataclass constructor (the fold's hot path: every event)."""
    new = object.__new__(CaseState)
    new.__dict__.update(s.__dict__)
    return new


def apply(s: CaseState, ev: Event, codes: CodeTable) -> CaseState:
    """The state after ``ev``; raises TransitionError if it is not allowed. Pure: ``s`` is not changed."""
    due_before = _due_inputs(s) if s.due_at is not None else None
    s = _copy(s)
    cal = codes.calendar
    d = ev.data or {}
    if ev.action == "report":
        if s.state is not None:
            raise TransitionError(f"case {s.case_id or '?'}: already reported")
        cat = codes.get(str(d.get("category", ""))).code
        pri = d.get("priority", "normal")
        if pri not in PRIORITIES:
            raise TransitionError(f"case {s.case_id or '?'}: priority {pri!r} is not one of {', '.join(PRIORITIES)}")
        src = d.get("source", "public")
        if src not in SOURCES:
            raise TransitionError(f"case {s.case_id or '?'}: source {src!r} is not one of {', '.join(SOURCES)}")
        s.state, s.category, s.priority, s.source = "reported", cat, pri, src
        s.reported_at = s.updated_at = ev.ts
        if src == "inspector":
            s.inspector = ev.actor
        s.seq = 1
        return s
    to = check(s, ev.action, Actor(ev.actor, ev.role, d.get("actor_department")))
    was = s.state
    if was in PAUSED and to not in PAUSED and s.pause_started is not None:
        s.paused_h += cal.between(s.pause_started, ev.ts, s.natural_clock)
        s.pause_started = None
    a = ev.action
    if a == "verify":
        s.verified = True
        s.inspector = s.inspector or ev.actor
    elif a == "file":
        s.filed_at = ev.ts
    elif a == "dispatch":
        dept = d.get("department")
        if not dept:
            raise TransitionError(f"case {s.case_id or '?'}: dispatch needs a department")
        if "priority" in d:
            if d["priority"] not in PRIORITIES:
                raise TransitionError(f"case {s.case_id or '?'}: priority {d['priority']!r} is not one of "
                                      f"{', '.join(PRIORITIES)}")
            s.priority = d["priority"]
        lim = codes.limit(s.category, s.priority)
        s.department, s.crew = dept, d.get("crew")
        s.dispatched_at, s.handled_at, s.on_time = ev.ts, None, None
        s.limit_h, s.natural_clock, s.extra_h, s.paused_h = lim.hours, lim.natural, 0.0, 0.0
    elif a == "return":
        s.returns += 1
        s.crew = None
    elif a == "grant_extension":
        hours = float(d.get("hours", 0))
        if hours <= 0:
            raise TransitionError(f"case {s.case_id or '?'}: grant_extension needs hours > 0")
        s.extra_h += hours
        s.extensions += 1
    elif a == "handle":
        s.handled_at = ev.ts
        s.on_time = s.due_at is None or ev.ts <= s.due_at
    elif a == "close":
        s.closed_at = ev.ts
    elif a == "rework":
        s.reworks += 1
    elif a == "suspend":
        s.suspended_from = was
    elif a == "resume":
        s.suspended_from = None
    elif a == "escalate":
        s.escalation = int(d.get("level", s.escalation + 1))
    elif a == "assign_crew":
        s.crew = d.get("crew")
    if to in PAUSED and was not in PAUSED:
        s.pause_started = ev.ts
    s.state = to
    s.updated_at = ev.ts
    s.seq += 1
    if due_before is None or _due_inputs(s) != due_before:   # the calendar walk only when its inputs moved
        _recompute_due(s, cal)
    return s


def fold(events: list[Event], codes: CodeTable | None = None, case_id: Any = None) -> CaseState:
    """Replay a case's log, oldest first, into its current state."""
    codes = codes or CodeTable.load()
    s = CaseState(case_id=case_id)
    for ev in events:
        s = apply(s, ev, codes)
    return s


def escalation_level(s: CaseState, now: datetime, cal) -> int:
    """1 once overdue, one more for every further full limit overdue (the 督办 ladder)."""
    if not s.overdue(now) or s.limit_h <= 0:
        return 0
    late = cal.between(s.due_at, now, s.natural_clock)
    return 1 + int(late // max(s.limit_h, 1e-9))


def allowed(s: CaseState, role: str) -> list[str]:
    """Actions ``role`` may take on ``s`` now (for UIs and help texts)."""
    out = []
    for a, (frm, _, roles) in ACTIONS.items():
        if s.state in frm and (role in roles or role == "admin"):
            out.append(a)
    return out
