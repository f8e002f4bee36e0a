"""Evaluation (综合评价, CJ/T 292 / GB/T 30428.4) per region, department or inspector, any period.

The cohort is the cases reported in ``[start, end)``. For each group:

- ``cases``: cases opened; ``reports``: reports received (duplicates attached included);
- ``filed`` and ``filed_rate`` = filed / cases;
- ``closed`` and ``close_rate`` = closed / filed;
- ``on_time_close_rate`` = closed cases whose last handling came before their deadline / closed;
- ``handled`` (cases handled at least once) and ``rework_rate`` = cases with a rework / handled;
- ``returns``, ``extensions`` (counts of those events), ``overdue`` (cases escalated as overdue);
- ``avg_handling_h`` = mean natural hours from filing to closing, over closed cases.

One SQL query, grouped in DuckDB.
"""

from __future__ import annotations

from datetime import datetime

from cityvitals.errors import InputError

GROUPS = {"region": "region_code", "department": "department", "inspector": "inspector", "category": "category",
          "all": "'all'"}


def case_stats(store, *, by: str = "region", start: datetime | None = None, end: datetime | None = None) -> list[dict]:
    if by not in GROUPS:
        raise InputError(f"--by: {by!r} is not one of {', '.join(GROUPS)}")
    col = GROUPS[by]
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
               avg(epoch(closed_at - filed_at) / 3600.0) FILTER (WHERE state = 'closed') AS avg_handling_h
        FROM cases{w} GROUP BY 1 ORDER BY 1 NULLS LAST"""
    rows = store.cases._rows(sql, params)
    out = []
    for r in rows:
        r = {k: (int(v) if isinstance(v, (int,)) or (hasattr(v, "is_integer") and k not in ("avg_handling_h",)
                                                        and v is not None and float(v).is_integer()) else v)
             for k, v in r.items()}
        r["filed_rate"] = _rate(r["filed"], r["cases"])
        r["close_rate"] = _rate(r["closed"], r["filed"])
        r["on_time_close_rate"] = _rate(r["closed_on_time"], r["closed"])
        r["rework_rate"] = _rate(r["reworked"], r["handled"])
        if r["avg_handling_h"] is not None:
            r["avg_handling_h"] = round(float(r["avg_handling_h"]), 3)
        out.append(r)
    return out


def _rate(a, b) -> float | None:
    return round(a / b, 4) if b else None
