"""Stage ``dispose``: incidents, alerts and reports become cases, run through the digital
urban-management loop (report → verify → file → dispatch → handle → check → close, with
returns, extensions, rework, suspension and escalation) and are evaluated.

Pure cores: :mod:`~cityvitals.dispose.workflow` (state machine, fold over the event log),
:mod:`~cityvitals.dispose.calendar` (working time), :mod:`~cityvitals.dispose.codes` (code
and ownership tables), :mod:`~cityvitals.dispose.dispatch` (crew choice),
:mod:`~cityvitals.dispose.pii` (desensitising text). I/O at the edge:
:class:`~cityvitals.dispose.desk.CaseDesk` (all writes), :func:`~cityvitals.dispose.stats.case_stats`,
:func:`~cityvitals.dispose.rules.auto_open`, :func:`~cityvitals.dispose.reports.import_reports`, and
:func:`~cityvitals.dispose.step.run_step`, one pass of all of them for the live runner.
"""

from cityvitals.dispose.calendar import Limit, WorkCalendar
from cityvitals.dispose.codes import CodeTable, Ownership
from cityvitals.dispose.desk import CaseDesk
from cityvitals.dispose.reports import import_reports, read_reports
from cityvitals.dispose.rules import Source, auto_open, load_rules
from cityvitals.dispose.stats import case_stats
from cityvitals.dispose.step import import_due_reports, run_step
from cityvitals.dispose.workflow import ACTIONS, STATES, Actor, CaseState, Event, TransitionError, check, fold

__all__ = [
    "ACTIONS", "STATES", "Actor", "CaseDesk", "CaseState", "CodeTable", "Event", "Limit", "Ownership", "Source",
    "TransitionError", "WorkCalendar", "auto_open", "case_stats", "check", "fold", "import_reports", "load_rules",
    "import_due_reports", "read_reports", "run_step",
]
