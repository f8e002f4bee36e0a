"""Lookups over a city that the scenarios and the signal model share.

Built once per run: which asset each sensor sits on, the sensors of each asset, the
dependency graph as adjacency lists, and sensor positions in the metric frame.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cityvitals.sim.city import City


class CityIndex:
    def __init__(self, city: City):
        self.city = city
        a, s = city.assets, city.sensors
        self.assets = a
        self.sensors = s
        self.n = len(s.ids)
        self.kind = s.kind
        self.kinds = list(dict.fromkeys(s.kind.tolist()))
        self.by_kind = {k: np.flatnonzero(s.kind == k) for k in self.kinds}
        self.sx, self.sy = city.frame.to_xy(s.lon, s.lat)
        self.asset_of = np.array([a._index.get(x, -1) if x else -1 for x in s.asset_id], dtype=np.int64)
        self.asset_type = np.array([a.types[i] if i >= 0 else "" for i in self.asset_of], dtype=object)
        self.sensors_of: dict[str, list[int]] = defaultdict(list)
        for j, x in enumerate(s.asset_id):
            if x:
                self.sensors_of[x].append(j)
        self.out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self.inn: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for src, dst, rel in a.edges:
            self.out[src].append((dst, rel))
            self.inn[dst].append((src, rel))
        self.community_codes = {u.code for u in city.communities}

    def children(self, asset_id: str, relation: str | None = None) -> list[str]:
        return [d for d, r in self.out.get(asset_id, []) if relation is None or r == relation]

    def parents(self, asset_id: str, relation: str | None = None) -> list[str]:
        return [s for s, r in self.inn.get(asset_id, []) if relation is None or r == relation]

    def of_type(self, type_: str) -> np.ndarray:
        return self.assets.of_type(type_)

    def sensors_on(self, asset_ids, kind: str | None = None) -> np.ndarray:
        idx = sorted({j for x in asset_ids for j in self.sensors_of.get(x, [])})
        arr = np.array(idx, dtype=np.int64)
        if kind is not None and len(arr):
            arr = arr[self.kind[arr] == kind]
        return arr

    def near(self, x: float, y: float, radius: float, kind: str | None = None) -> np.ndarray:
        pool = self.by_kind.get(kind, np.zeros(0, dtype=np.int64)) if kind else np.arange(self.n)
        d = np.hypot(self.sx[pool] - x, self.sy[pool] - y)
        return pool[d <= radius]

    def supplied_units(self, asset_id: str) -> list[str]:
        """Communities reached downstream of an asset through the dependency graph."""
        seen, stack, out = {asset_id}, [asset_id], []
        while stack:
            cur = stack.pop()
            for d, rel in self.out.get(cur, []):
                if rel == "connects" or d in seen:
                    continue
                seen.add(d)
                if d in self.community_codes:
                    out.append(d)
                else:
                    stack.append(d)
        return sorted(out)
