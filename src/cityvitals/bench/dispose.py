"""Benchmark of the disposal loop: cases through the full workflow per second, and the
Open311 request-list latency over a large case table (1,000,000 stored cases by default).

The workflow part drives ``n_cases`` cases through report → file → dispatch → accept →
handle → forward → close in batches (the way the desk is meant to be fed). The Open311
part bulk-loads synthetic closed/open snapshot rows with Arrow (not through the workflow:
that would measure the workflow again) and times GET /open311/v2/requests.json with
default and filtered queries through the ASGI app.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path


def bench_dispose(*, n_cases: int = 2000, batch: int = 500, stored: int = 1_000_000, queries: int = 20,
                  home: str | Path | None = None) -> dict:
    import numpy as np
    import pyarrow as pa
    from fastapi.testclient import TestClient

    from cityvitals.api import create_app
    from cityvitals.dispose import Actor, CaseDesk
    from cityvitals.store import open_store

    home = Path(home or tempfile.mkdtemp(prefix="cv-bench-dispose-"))
    t0 = datetime(2026, 5, 6, 1, 0, tzinfo=timezone.utc)
    out: dict = {"n_cases": n_cases, "batch": batch, "stored": stored}
    with open_store(home) as store:
        desk = CaseDesk(store, clock=lambda: t0)
        desk.sync_departments()
        rng = np.random.default_rng(7)
        steps = [("file", Actor("s", "supervisor")), ("dispatch", Actor("d", "dispatcher")),
                 ("accept", Actor("c", "department")), ("handle", Actor("c", "department")),
                 ("forward", Actor("d", "dispatcher")), ("close", Actor("i", "inspector"))]
        start = time.perf_counter()
        for i in range(0, n_cases, batch):
            k = min(batch, n_cases - i)
            reps = [{"category": "event.0102", "lon": 121.3 + float(rng.uniform(0, 0.3)),
                     "lat": 31.1 + float(rng.uniform(0, 0.2)), "source": "inspector", "actor": "i", "role": "inspector",
                     "reported_at": t0} for _ in range(k)]
            ids = [r["case_id"] for r in desk.report_many(reps, check_duplicates=False)]
            for action, actor in steps:
                desk.act_many([{"case_id": cid, "action": action, "actor": actor, "data": {"crew": None}
                                if action == "dispatch" else {}} for cid in ids])
        dt = time.perf_counter() - start
        out["workflow_s"] = round(dt, 3)
        out["cases_per_s"] = round(n_cases / dt, 1)
        out["events_per_s"] = round(n_cases * 7 / dt, 1)
        # bulk rows for the Open311 list
        n = stored
        with store.transaction() as con:
            first = store.cases.next_ids(con, 1)[0] + 1
            secs = rng.integers(0, 180 * 86400, n)
            rep = pa.array([t0 - timedelta(seconds=int(s)) for s in secs], type=pa.timestamp("us", tz="UTC"))
            states = np.where(rng.uniform(size=n) < 0.7, "closed", "in_progress")
            cats = np.array(["event.0102", "event.0505", "component.0118", "event.0601"])[rng.integers(0, 4, n)]
            tbl = pa.table({"id": pa.array(np.arange(first, first + n), pa.int64()),
                            "category": pa.array(cats), "state": pa.array(states), "priority": pa.array(["normal"] * n),
                            "source": pa.array(["public"] * n), "reported_at": rep, "updated_at": rep,
                            "description": pa.array(["synthetic"] * n), "department": pa.array(["sanitation"] * n),
                            "lon": pa.array(rng.uniform(121.3, 121.6, n)), "lat": pa.array(rng.uniform(31.1, 31.3, n))})
            store.cases.insert_cases(con, tbl)
            con.execute("SELECT setval('cases_id_seq', ?)", [first + n])
        app = create_app(store, clock=lambda: t0, poll_interval=None, dashboard=False)
        res = {}
        with TestClient(app) as c:
            for name, params in (("default", {}), ("open_one_code", {"status": "open", "service_code": "event.0505"}),
                                 ("30_days_xml", {"start_date": "2026-04-01T00:00:00Z",
                                                  "end_date": "2026-05-01T00:00:00Z"}),
                                 ("by_ids", {"service_request_id": ",".join(str(first + i) for i in range(50))})):
                fmt = "xml" if name.endswith("xml") else "json"
                c.get(f"/open311/v2/requests.{fmt}", params=params)
                ts = []
                for _ in range(queries):
                    q0 = time.perf_counter()
                    r = c.get(f"/open311/v2/requests.{fmt}", params=params)
                    ts.append((time.perf_counter() - q0) * 1000)
                    assert r.status_code == 200
                res[name] = {"p50_ms": round(statistics.median(ts), 1), "max_ms": round(max(ts), 1)}
        out["open311_list"] = res
        out["stored_total"] = store.cases.count()
    return out
