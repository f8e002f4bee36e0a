"""Crew assignment within a department: nearest crew, penalised by its open workload.

>>> crews = [{"id": "A", "lon": 121.40, "lat": 31.20, "workload": 5},
...          {"id": "B", "lon": 121.45, "lat": 31.20, "workload": 0}]
>>> choose_crew(crews, 121.40, 31.20, workload_km=2.0)   # A is 0 km + 10, B is ~4.8 km + 0
'B'
>>> choose_crew(crews, 121.40, 31.20, workload_km=0.5)
'A'
"""

from __future__ import annotations

import numpy as np


def choose_crew(crews: list[dict], lon: float | None, lat: float | None, *, workload_km: float = 2.0) -> str | None:
    """The crew with the smallest ``km + workload_km * workload`` (distance 0 where unknown)."""
    if not crews:
        return None
    load = np.array([float(c.get("workload") or 0) for c in crews])
    if lon is None or lat is None:
        km = np.zeros(len(crews))
    else:
        clon = np.array([np.nan if c.get("lon") is None else c["lon"] for c in crews], dtype=float)
        clat = np.array([np.nan if c.get("lat") is None else c["lat"] for c in crews], dtype=float)
        dx = (clon - lon) * 111.32 * np.cos(np.radians(lat))
        dy = (clat - lat) * 111.32
        km = np.nan_to_num(np.hypot(dx, dy), nan=0.0)
    score = km + workload_km * load
    return str(crews[int(np.argmin(score))]["id"])
