"""Evaluation (综合评价, CJ/T 292 / GB/T 30428.4) per region, department or inspector, any period.

The cohort is the cases reported in ``[start, end)``. For each group:

- ``cases``: cases opened; ``reports``: reports received (duplicates attached included);
- ``filed`` and ``filed_rate`` = filed / cases;
- ``closed`` and ``close_rate`` = closed / filed;
- ``on_time_close_rate`` = closed cases whose last handling came before their deadline / closed;
- ``handled`` (cases handled at least once) and ``rework_rate`` = cases with a rework / handled;
- ``returns``, ``extensions`` (counts of those events), ``overdue`` (cases escalated as overdue);
- ``avg_handling_h`` = mean natural hours from filing to closing, over closed cases;
- ``due`` (应处置数): cases dispatched whose deadline has come by ``as_of`` (the period's end,
  or now) or that were already handled; over it, as domain.md §4.6 defines them,
  ``handle_rate`` (处置率) = handled / due, ``on_time_handle_rate`` (按期处置率) = handled
  before the deadline / due, and ``on_time_close_rate_due`` (按期结案率) = closed cases
  handled before the deadline / due. ``on_time_close_rate`` keeps its share-of-closed meaning.

``filed_rate`` counts distinct problems: a duplicate report attached to an open case is in
``reports`` but not in the denominator (it is not a separate problem to file). Returns are
counted against the department that returned the case (the one the return event names),
not the one it ended up with, when grouping by department.

One SQL query, grouped in DuckDB (plus one over the log for returns by department).
"""

from __future__ import annotations

from datetime import datetime, timezone

from cityvitals.errors import InputError

GROUPS = {"region": "region_code", "department": "department", "inspector": "inspector", "category": "category",
          "all": "'all'"}


def case_stats(store, *, by: str = "region", start: datetime | None = None, end: datetime | None = None,
               as_of: datetime | None = None) -> list[dict]:
    if by not in GROUPS:
        raise InputError(f"--by: {by!r} is not one of {', '.join(GROUPS)}")
    col = GROUPS[by]
    as_of = as_of or end or datetime.now(timezone.utc)
    where, params = [], []
    if start is not None:
        where.append("reported_at >= ?")
        params.append(start)
    if end is not None:
        where.append("reported_at < ?")
        params.append(end)
    w = (" WHERE " + " AND ".join(where)) if where else ""
    sql = f"""
        SELECT {col} AS "group", count(*) AS cases, sum(reports) AS reports,
               count(filed_at) AS filed,
               count(*) FILTER (WHERE state = 'closed') AS closed,
               count(*) FILTER (WHERE state = 'closed' AND on_time) AS closed_on_time,
               count(*) FILTER (WHERE id IN (SELECT case_id FROM case_events WHERE action = 'handle')) AS handled,
               count(*) FILTER (WHERE reworks > 0) AS reworked,
               sum(returns) AS returns, sum(extensions) AS extensions,
               count(*) FILTER (WHERE escalation > 0) AS overdue,
               avg(epoch(closed_at - filed_at) / 3600.0) FILTER (WHERE state = 'closed') AS avg_handling_h,
               count(*) FILTER (WHERE dispatched_at IS NOT NULL
                                  AND (handled_at IS NOT NULL OR due_at <= ?::TIMESTAMPTZ)) AS due,
               count(*) FILTER (WHERE dispatched_at IS NOT NULL AND handled_at IS NOT NULL) AS handled_now,
               count(*) FILTER (WHERE dispatched_at IS NOT NULL AND handled_at IS NOT NULL AND on_time) AS handled_on_time
        FROM cases{w} GROUP BY 1 ORDER BY 1 NULLS LAST"""
    rows = store.cases._rows(sql, [as_of] + params)
    if by == "department":
        rows = _returns_by_returning_department(store, rows, w, params)
    out = []
    for r in rows:
        r = {k: (int(v) if isinstance(v, (int,)) or (hasattr(v, "is_integer") and k not in ("avg_handling_h",)
                                                        and v is not None and float(v).is_integer()) else v)
             for k, v in r.items()}
        r["filed_rate"] = _rate(r["filed"], r["cases"])
        r["close_rate"] = _rate(r["closed"], r["filed"])
        r["on_time_close_rate"] = _rate(r["closed_on_time"], r["closed"])
        r["rework_rate"] = _rate(r["reworked"], r["handled"])
        r["handle_rate"] = _rate(r["handled_now"], r["due"])
        r["on_time_handle_rate"] = _rate(r["handled_on_time"], r["due"])
        r["on_time_close_rate_due"] = _rate(r["closed_on_time"], r["due"])
        if r["avg_handling_h"] is not None:
            r["avg_handling_h"] = round(float(r["avg_handling_h"]), 3)
        out.append(r)
    return out


def _returns_by_returning_department(store, rows: list[dict], w: str, params: list) -> list[dict]:
    """Move each return to the department that made it (a returned case is usually
    re-dispatched elsewhere, and the wrong dispatch is not the new department's doing)."""
    cw = w.replace("reported_at", "c.reported_at")
    got = store.cases._rows(
        f"""SELECT json_extract_string(e.data, '$.department') AS "group", count(*) AS n
            FROM case_events e JOIN cases c ON c.id = e.case_id
            {cw + (' AND' if cw else ' WHERE')} e.action = 'return' GROUP BY 1""", params)
    made = {g["group"]: int(g["n"]) for g in got}
    for r in rows:
        r["returns"] = made.pop(r["group"], 0)
    zero = {k: 0 for k in rows[0]} if rows else {}
    for g, n in made.items():       # a department that only returned cases
        rows.append({**zero, "group": g, "returns": n, "avg_handling_h": None})
    return rows


def _rate(a, b) -> float | None:
    return round(a / b, 4) if b else None
