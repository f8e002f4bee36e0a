"""Benchmark of the disposal loop: cases through the full workflow per second, and the
Open311 request-list latency over a large case table (1,000,000 stored cases by default).

The workflow part drives ``n_cases`` cases through report → file → dispatch → accept →
handle → forward → close in batches (the way the desk is meant to be fed: the runner,
report import and auto-open all hand it batches), first on an empty store, then again
after the large table is loaded, so the figure holds for a city with a long history.
The bulk rows are synthetic snapshots written with Arrow (not through the workflow: that
would measure the workflow again), in report-time order with ascending ids, as cases
arrive. GET /open311/v2/requests is timed through the ASGI app with default and filtered
queries, and one deep page.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

STEPS = ("file", "dispatch", "accept", "handle", "forward", "close")


def run_workflow(desk, n_cases: int, batch: int, t0: datetime, seed: int = 7) -> dict:
    """Report ``n_cases`` inspector cases near each other and take them all to closed."""
    import numpy as np

    from cityvitals.dispose import Actor

    actors = {"file": Actor("s", "supervisor"), "dispatch": Actor("d", "dispatcher"),
              "accept": Actor("c", "department"), "handle": Actor("c", "department"),
              "forward": Actor("d", "dispatcher"), "close": Actor("i", "inspector")}
    rng = np.random.default_rng(seed)
    attached = events = 0
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, n_cases, batch):
        k = min(batch, n_cases - i)
        lon, lat = 121.3 + rng.uniform(0, 0.3, k), 31.1 + rng.uniform(0, 0.2, k)
        reps = [{"category": "event.0102", "lon": float(x), "lat": float(y), "source": "inspector", "actor": "i",
                 "role": "inspector", "reported_at": t0} for x, y in zip(lon, lat)]
        res = desk.report_many(reps)             # with the duplicate search, as in production
        ids = [r["case_id"] for r in res if not r["attached"]]
        attached += len(res) - len(ids)
        events += len(res) + len(ids) * len(STEPS)
        for action in STEPS:
            desk.act_many([{"case_id": cid, "action": action, "actor": actors[action], "data": {}} for cid in ids])
    dt, cpu = time.perf_counter() - start, time.process_time() - cpu
    # cpu_s (all threads of this process) is the figure to compare on a shared machine
    return {"seconds": round(dt, 3), "cpu_s": round(cpu, 3), "reports": n_cases, "attached": attached,
            "cases_per_s": round((n_cases - attached) / dt, 1), "events_per_s": round(events / dt, 1)}


def load_synthetic(store, n: int, t0: datetime, seed: int = 11) -> int:
    """``n`` closed/open snapshot rows over the 180 days before ``t0``; returns the first id."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    with store.transaction() as con:
        first = store.cases.next_ids(con, 1)[0] + 1
        secs = np.sort(rng.integers(0, 180 * 86400, n))[::-1]          # oldest first
        rep = pa.array((np.datetime64(t0.replace(tzinfo=None), "us") - secs.astype("timedelta64[s]")),
                       type=pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
        states = np.where(rng.uniform(size=n) < 0.7, "closed", "in_progress")
        cats = np.array(["event.0102", "event.0505", "component.0118", "event.0601"])[rng.integers(0, 4, n)]
        tbl = pa.table({"id": pa.array(np.arange(first, first + n), pa.int64()),
                        "category": pa.array(cats), "state": pa.array(states), "priority": pa.array(["normal"] * n),
                        "source": pa.array(["public"] * n), "reported_at": rep, "updated_at": rep,
                        "description": pa.array(["synthetic"] * n), "department": pa.array(["sanitation"] * n),
                        "lon": pa.array(rng.uniform(121.3, 121.6, n)), "lat": pa.array(rng.uniform(31.1, 31.3, n)),
                        **{c: pa.array(np.zeros(n, np.int32)) for c in ("escalation", "returns", "reworks", "extensions")},
                        "seq": pa.array(np.full(n, 1, np.int32)), "reports": pa.array(np.ones(n, np.int32))})
        store.cases.insert_cases(con, tbl)
        con.execute("SELECT setval('cases_id_seq', ?)", [first + n])
    return first


def bench_dispose(*, n_cases: int = 2000, batch: int = 500, stored: int = 1_000_000, queries: int = 20,
                  home: str | Path | None = None) -> dict:
    from fastapi.testclient import TestClient

    from cityvitals.api import create_app
    from cityvitals.dispose import CaseDesk
    from cityvitals.store import open_store

    home = Path(home or tempfile.mkdtemp(prefix="cv-bench-dispose-"))
    t0 = datetime(2026, 5, 6, 1, 0, tzinfo=timezone.utc)
    out: dict = {"n_cases": n_cases, "batch": batch, "stored": stored}
    with open_store(home) as store:
        desk = CaseDesk(store, clock=lambda: t0)
        desk.sync_departments()
        out["workflow_empty"] = run_workflow(desk, n_cases, batch, t0)
        q0 = time.perf_counter()
        first = load_synthetic(store, stored, t0)
        out["bulk_load_s"] = round(time.perf_counter() - q0, 2)
        t1 = t0 + timedelta(days=1)
        desk = CaseDesk(store, clock=lambda: t1)
        out["workflow_at_stored"] = run_workflow(desk, n_cases, batch, t1, seed=8)
        out["cases_per_s"] = out["workflow_at_stored"]["cases_per_s"]
        app = create_app(store, clock=lambda: t1, poll_interval=None, dashboard=False)
        res = {}
        with TestClient(app) as c:
            for name, params in (("default", {}), ("open_one_code", {"status": "open", "service_code": "event.0505"}),
                                 ("30_days_xml", {"start_date": "2026-04-01T00:00:00Z",
                                                  "end_date": "2026-05-01T00:00:00Z"}),
                                 ("page_50", {"page": "50", "page_size": "100"}),
                                 ("by_ids", {"service_request_id": ",".join(str(first + i * 997) for i in range(50))})):
                fmt = "xml" if name.endswith("xml") else "json"
                c.get(f"/open311/v2/requests.{fmt}", params=params)
                ts = []
                for _ in range(queries):
                    q0 = time.perf_counter()
                    r = c.get(f"/open311/v2/requests.{fmt}", params=params)
                    ts.append((time.perf_counter() - q0) * 1000)
                    assert r.status_code == 200, r.text
                res[name] = {"p50_ms": round(statistics.median(ts), 1), "max_ms": round(max(ts), 1)}
        out["open311_list"] = res
        out["stored_total"] = store.cases.count()
    return out
