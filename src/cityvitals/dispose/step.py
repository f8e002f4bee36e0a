"""One pass of the disposal loop for a live runner: what became known since the last pass
turns into cases, and what is overdue escalates.

Called after diagnose on every tick (``cityvitals.runtime``): rules open cases for new
alerts and incidents (:func:`~cityvitals.dispose.rules.auto_open`, with its own
watermarks), the citizen and enterprise reports that are due by the clock come in from
the simulator's ``<home>/sim/reports.ndjson`` (or any reports file), and running cases
past their deadline are escalated. Every part is idempotent: a second pass at the same
clock opens, imports and escalates nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable

from cityvitals.dispose.desk import CaseDesk, _as_utc
from cityvitals.dispose.reports import read_reports
from cityvitals.dispose.rules import auto_open

_WM = "reports:{name}"
_CACHE: dict[str, tuple[tuple[int, int], list[tuple[datetime, dict]]]] = {}


def _reports_by_time(path: Path) -> list[tuple[datetime, dict]]:
    """The file's reports with their times, sorted; parsed again only when the file changes."""
    st = path.stat()
    key = (st.st_mtime_ns, st.st_size)
    hit = _CACHE.get(str(path))
    if hit and hit[0] == key:
        return hit[1]
    rows = [(_as_utc(r["reported_at"], f"{path}: report {r['ref']}: reported_at"), r) for r in read_reports(path)
            if r.get("reported_at")]
    rows.sort(key=lambda x: x[0])
    _CACHE[str(path)] = (key, rows)
    return rows


def import_due_reports(desk: CaseDesk, path: str | Path, *, until: datetime | None = None,
                       batch: int = 1000) -> dict:
    """Import the reports of ``path`` made after the last import and by ``until`` (default:
    the desk's clock). The watermark is the latest report time imported; refs make a replay safe."""
    import bisect

    path = Path(path)
    until = until or desk.clock()
    store = desk.store
    name = _WM.format(name=path.name)
    wm_text = store.cases.get_watermark(name)
    wm = _as_utc(wm_text, name) if wm_text else None
    rows = _reports_by_time(path)
    times = [t for t, _ in rows]
    lo = bisect.bisect_right(times, wm) if wm else 0
    hi = bisect.bisect_right(times, until)
    due = [r for _, r in rows[lo:hi]]
    opened = attached = skipped = 0
    for i in range(0, len(due), batch):
        for res in desk.report_many(due[i:i + batch]):
            if res.get("skipped"):
                skipped += 1
            elif res["attached"]:
                attached += 1
            else:
                opened += 1
    if due:
        with store.transaction() as con:
            store.cases.put_watermark(con, name, times[hi - 1].isoformat(), desk.clock())
    return {"reports": len(due), "opened": opened, "attached": attached, "skipped": skipped}


def run_step(store, clock: Callable[[], datetime], *, reports: str | Path | None = None,
             rules: list[dict] | None = None, escalate: bool = True) -> dict:
    """Auto-open from alerts and incidents, import the reports due by ``clock()``, escalate
    overdue cases; returns what each part did. ``reports`` defaults to the simulator's file
    in the store's home (skipped when there is none)."""
    desk = CaseDesk(store, clock=clock)
    if not store.cases.departments():
        desk.sync_departments()
    out: dict = {"auto_open": auto_open(desk, rules=rules)}
    path = Path(reports) if reports else Path(store.home) / "sim" / "reports.ndjson"
    if path.exists():
        out["reports"] = import_due_reports(desk, path, until=clock())
    if escalate:
        out["escalated"] = len(desk.escalate_overdue())
    return out
