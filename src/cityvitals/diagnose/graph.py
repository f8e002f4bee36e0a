"""The city's dependency graph as diagnose walks it, with the sensors that watch each asset.

Why its own object: every update asks the same questions ("what supplies this zone?",
"which sensors sit below this main?", "which segments are within three hops?"), so the
graph is built once from ``store.assets`` and kept; communities appear as nodes because
``supplies`` edges end at community codes, which is how citizen reports (located in a
community) reach the network.

>>> import polars as pl
>>> g = AssetGraph.build(
...     pl.DataFrame({"id": ["PS1", "WM1", "PZ1"], "type": ["pump_station", "water_main", "pressure_zone"],
...                   "lon": [0.0, 0.0, 0.0], "lat": [0.0, 0.0, 0.0]}),
...     pl.DataFrame({"src": ["PS1", "WM1", "PZ1"], "dst": ["WM1", "PZ1", "C1"], "relation": ["feeds", "feeds", "supplies"]}))
>>> g.ancestors("C1")
{'C1': 0, 'PZ1': 1, 'WM1': 2, 'PS1': 3}
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from cityvitals.diagnose.domains import UP_RELATIONS, domain_of_kind

CELL_M = 800.0  # grid cell for linking symptoms by distance (gas, manholes, reports)


@dataclass
class AssetGraph:
    type_of: dict[str, str] = field(default_factory=dict)
    name_of: dict[str, str] = field(default_factory=dict)
    xy: dict[str, tuple[float, float]] = field(default_factory=dict)
    unit_of: dict[str, str | None] = field(default_factory=dict)
    parents: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    connects: dict[str, list[str]] = field(default_factory=dict)
    # sensors
    sensor_asset: dict[str, str] = field(default_factory=dict)
    sensor_kind: dict[str, str] = field(default_factory=dict)
    sensor_xy: dict[str, tuple[float, float]] = field(default_factory=dict)
    sensor_unit: dict[str, str | None] = field(default_factory=dict)
    sensors_on: dict[str, list[str]] = field(default_factory=dict)
    lat0: float = 31.2
    _anc: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    _desc: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)
    _below: dict[tuple, list[str]] = field(default_factory=dict)
    _link_keys: dict[tuple[str, str], tuple[list[str], list[int]]] = field(default_factory=dict)  # grouping keys
    _node_id: dict[str, int] = field(default_factory=dict)  # integer ids for array work, given out on first use
    _node_names: list[str] = field(default_factory=list)
    _reach: dict[tuple[str, bool], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def build(cls, assets: pl.DataFrame, edges: pl.DataFrame, sensors: pl.DataFrame | None = None) -> AssetGraph:
        g = cls()
        if assets.height:
            g.lat0 = float(np.nanmean(assets["lat"].to_numpy())) if assets["lat"].null_count() < assets.height else 31.2
        cols = assets.columns
        for row in assets.iter_rows(named=True):
            a = row["id"]
            g.type_of[a] = row["type"]
            g.name_of[a] = row.get("name") or a if "name" in cols else a
            if row.get("lon") is not None and row.get("lat") is not None:
                g.xy[a] = g.to_xy(row["lon"], row["lat"])
            g.unit_of[a] = row.get("unit_code") if "unit_code" in cols else None
        for s, d, r in edges.select("src", "dst", "relation").iter_rows():
            if r == "connects":
                g.connects.setdefault(s, []).append(d)
                g.connects.setdefault(d, []).append(s)
            elif r in UP_RELATIONS:
                g.parents.setdefault(d, []).append(s)
                g.children.setdefault(s, []).append(d)
                if d not in g.type_of:  # a community code at the end of a `supplies` edge
                    g.type_of[d] = "community"
                    g.name_of[d] = d
        if sensors is not None:
            g.add_sensors(sensors)
        return g

    def add_sensors(self, sensors: pl.DataFrame) -> None:
        if "asset_id" in sensors.columns:  # the simulator's own table
            metas = [json.dumps({"asset_id": a}) if a else None for a in sensors["asset_id"].to_list()]
        else:
            metas = sensors["meta"].to_list() if "meta" in sensors.columns else [None] * sensors.height
        for sid, kind, lon, lat, unit, meta in zip(sensors["id"].to_list(), sensors["kind"].to_list(),
                                                   sensors["lon"].to_list(), sensors["lat"].to_list(),
                                                   sensors["unit_code"].to_list() if "unit_code" in sensors.columns
                                                   else [None] * sensors.height, metas):
            asset = None
            if meta:
                try:
                    asset = json.loads(meta).get("asset_id") or None
                except (ValueError, AttributeError):
                    asset = None
            self.sensor_kind[sid] = kind
            self.sensor_unit[sid] = unit
            if lon is not None and lat is not None:
                self.sensor_xy[sid] = self.to_xy(lon, lat)
            if asset:
                self.sensor_asset[sid] = asset
                self.sensors_on.setdefault(asset, []).append(sid)

    @classmethod
    def from_store(cls, store) -> AssetGraph:
        return cls.build(store.assets.frame(), store.assets.edges(), store.sensors.frame())

    # ---------------------------------------------------------------- geometry
    def to_xy(self, lon: float, lat: float) -> tuple[float, float]:
        """Metres on a local equirectangular frame (good to a few metres over a city)."""
        k = 111_320.0
        return float(lon) * k * math.cos(math.radians(self.lat0)), float(lat) * 110_574.0

    def cell(self, xy: tuple[float, float]) -> tuple[int, int]:
        return int(xy[0] // CELL_M), int(xy[1] // CELL_M)

    # ---------------------------------------------------------------- walks
    def ancestors(self, node: str, max_depth: int = 4) -> dict[str, int]:
        """``node`` and what supplies it, with the number of hops up."""
        key = (node, max_depth)
        hit = self._anc.get(key)
        if hit is None:
            hit = self._walk(node, self.parents, max_depth)
            self._anc[key] = hit
        return hit

    def descendants(self, node: str, max_depth: int = 4) -> dict[str, int]:
        key = (node, max_depth)
        hit = self._desc.get(key)
        if hit is None:
            hit = self._walk(node, self.children, max_depth)
            self._desc[key] = hit
        return hit

    def road_hops(self, seg: str, max_hops: int = 3) -> dict[str, int]:
        key = ("~road", seg, max_hops)
        hit = self._desc.get(key)  # type: ignore[arg-type]
        if hit is None:
            hit = self._walk(seg, self.connects, max_hops)
            self._desc[key] = hit  # type: ignore[index]
        return hit

    @staticmethod
    def _walk(node: str, adj: dict[str, list[str]], max_depth: int) -> dict[str, int]:
        out = {node: 0}
        q = deque([node])
        while q:
            n = q.popleft()
            d = out[n]
            if d >= max_depth:
                continue
            for m in adj.get(n, ()):
                if m not in out:
                    out[m] = d + 1
                    q.append(m)
        return out

    def node_id(self, node: str) -> int:
        i = self._node_id.get(node)
        if i is None:
            i = self._node_id[node] = len(self._node_names)
            self._node_names.append(node)
        return i

    def node_name(self, i: int) -> str:
        return self._node_names[i]

    def reach(self, site: str, road: bool) -> tuple[np.ndarray, np.ndarray]:
        """(node ids, hops) of what could explain ``site``: three road hops around a segment, else four up.

        Why arrays: ranking a storm's group sums the coverage of thousands of sites over tens
        of thousands of nodes; with ids it is one ``bincount`` instead of a dict update per pair.
        """
        key = (site, road)
        hit = self._reach.get(key)
        if hit is None:
            walk = self.road_hops(site, 3) if road else self.ancestors(site, 4)
            hit = (np.fromiter((self.node_id(n) for n in walk), dtype=np.int64, count=len(walk)),
                   np.fromiter(walk.values(), dtype=np.int64, count=len(walk)))
            self._reach[key] = hit
        return hit

    def monitored_below(self, node: str, kinds: set[str], max_depth: int = 4) -> list[str]:
        """Sensors of ``kinds`` on ``node`` or anything it supplies: who should feel its failure."""
        key = (node, max_depth, frozenset(kinds))
        hit = self._below.get(key)
        if hit is None:
            hit = []
            for a in self.descendants(node, max_depth):
                hit.extend(s for s in self.sensors_on.get(a, ()) if self.sensor_kind.get(s) in kinds)
            self._below[key] = hit
        return hit

    def road_monitored(self, seg: str, kinds: set[str], max_hops: int = 3) -> list[str]:
        """Sensors of ``kinds`` on segments within ``max_hops`` of ``seg``: who should feel a blockage there."""
        key = ("~road", seg, max_hops, frozenset(kinds))
        hit = self._below.get(key)
        if hit is None:
            hit = sorted({x for b in self.road_hops(seg, max_hops) for x in self.sensors_on.get(b, ())
                          if self.sensor_kind.get(x) in kinds})
            self._below[key] = hit
        return hit

    def domain_of_sensor(self, sid: str) -> str:
        return domain_of_kind(self.sensor_kind.get(sid))
