"""Infrastructure assets and their dependency graph.

Diagnose needs to know that pump station P feeds main M which feeds pressure zone Z
which supplies community C, so the simulator builds the networks a city runs on and
records every dependency as an edge ``(from, to, relation)`` pointing from the
supplier to what depends on it:

- water: source → pump station → main → pressure zone → community (``feeds``/``supplies``);
  water-quality points sit in zones (``contains``);
- power: substation → feeder → supply area → community;
- drainage: pumping station → catchment → low-lying spot (``drains``/``contains``),
  low spot → road segment (``floods``), pumping station → river gauge (``discharges_to``);
- roads: a jittered lattice of segments (``connects`` between segments sharing a
  junction), bridges and tunnels carry segments, manholes sit on segments;
- gas: gate station → regulator → gas main → community;
- sites without a network: construction sites, buildings (lifts), crowd hot spots,
  air-quality and weather stations, noise points.

Pressure zones, power areas and catchments are drawn independently of the
administrative units (as in real cities), so a diagnosis cannot lean on admin borders.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Point
from shapely.geometry.base import BaseGeometry

from cityvitals.sim._rng import stream
from cityvitals.sim.geo import LocalFrame, partition, points_in
from cityvitals.sim.names import place_name

TYPE_NAMES = {
    "water_source": ("水厂", "Water works"),
    "pump_station": ("加压泵站", "Booster pump station"),
    "water_main": ("供水干管", "Water main"),
    "pressure_zone": ("供水压力分区", "Pressure zone"),
    "water_quality_point": ("水质监测点", "Water quality point"),
    "substation": ("变电站", "Substation"),
    "feeder": ("馈线", "Feeder"),
    "power_area": ("供电片区", "Power supply area"),
    "catchment": ("排水片区", "Drainage catchment"),
    "drainage_pumping_station": ("雨水泵站", "Storm-water pumping station"),
    "low_spot": ("低洼易涝点", "Low-lying spot"),
    "river_gauge": ("河道水位站", "River gauge"),
    "road_segment": ("路段", "Road segment"),
    "bridge": ("桥梁", "Bridge"),
    "tunnel": ("隧道", "Tunnel"),
    "manhole": ("窨井", "Manhole"),
    "gas_gate_station": ("燃气门站", "Gas gate station"),
    "gas_regulator": ("燃气调压站", "Gas regulator station"),
    "gas_main": ("燃气管道", "Gas main"),
    "construction_site": ("建筑工地", "Construction site"),
    "building": ("楼宇", "Building"),
    "hotspot": ("人流密集场所", "Crowd hot spot"),
    "air_station": ("空气质量监测站", "Air quality station"),
    "weather_station": ("气象站", "Weather station"),
    "noise_point": ("噪声监测点", "Noise monitoring point"),
}

FREE_SPEED = {"expressway": 80.0, "arterial": 50.0, "secondary": 40.0}


@dataclass
class Assets:
    """Assets as parallel lists (geometry in the local metric frame) plus the edge list."""

    ids: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    geoms: list[BaseGeometry] = field(default_factory=list)
    props: list[dict[str, Any]] = field(default_factory=list)
    unit_codes: list[str | None] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _index: dict[str, int] = field(default_factory=dict)

    def add(self, type_: str, id_: str, geom: BaseGeometry, **props: Any) -> int:
        zh, en = TYPE_NAMES[type_]
        self._index[id_] = len(self.ids)
        self.ids.append(id_)
        self.types.append(type_)
        self.names.append(props.pop("name", None) or f"{zh} {id_}")
        self.geoms.append(geom)
        self.props.append(props)
        self.unit_codes.append(None)
        return len(self.ids) - 1

    def edge(self, src: str, dst: str, relation: str) -> None:
        self.edges.append((src, dst, relation))

    def index(self, id_: str) -> int:
        return self._index[id_]

    def of_type(self, type_: str) -> np.ndarray:
        return np.array([i for i, t in enumerate(self.types) if t == type_], dtype=np.int64)

    def finalize(self, communities: list, frame: LocalFrame | None = None) -> None:
        """Representative points and the community each asset lies in (vectorised)."""
        geoms = np.array(self.geoms, dtype=object)
        pts = shapely.point_on_surface(geoms)
        lines = np.array([g.geom_type == "LineString" for g in self.geoms])
        if lines.any():
            pts[lines] = shapely.line_interpolate_point(geoms[lines], 0.5, normalized=True)
        self.x, self.y = shapely.get_x(pts), shapely.get_y(pts)
        codes = locate_points(communities, self.x, self.y)
        self.unit_codes = [c for c in codes]

    def children(self, src: str, relation: str | None = None) -> list[str]:
        return [d for s, d, r in self.edges if s == src and (relation is None or r == relation)]

    # ----------------------------------------------------------------- files
    def write(self, out: Path, frame: LocalFrame) -> dict[str, str]:
        geoms = frame.geom_to_lonlat(np.array(self.geoms, dtype=object))
        gj = shapely.to_geojson(geoms)
        lon, lat = frame.to_lonlat(self.x, self.y)
        feats = []
        for i, g in enumerate(gj):
            props = {"id": self.ids[i], "type": self.types[i], "name": self.names[i], "unit_code": self.unit_codes[i],
                     "lon": round(float(lon[i]), 7), "lat": round(float(lat[i]), 7), **self.props[i]}
            feats.append('{"type":"Feature","properties":' + json.dumps(props, ensure_ascii=False) + ',"geometry":' + g + "}")
        (out / "assets.geojson").write_text(
            '{"type":"FeatureCollection","features":[\n' + ",\n".join(feats) + "\n]}\n", encoding="utf-8")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["from", "to", "relation"])
        w.writerows(self.edges)
        (out / "edges.csv").write_text(buf.getvalue(), encoding="utf-8")
        return {"assets": "assets.geojson", "edges": "edges.csv"}

    @classmethod
    def read(cls, folder: Path, frame: LocalFrame) -> Assets:
        doc = json.loads((folder / "assets.geojson").read_text("utf-8"))
        a = cls()
        feats = doc["features"]
        geoms = shapely.from_geojson([json.dumps(f["geometry"]) for f in feats])
        geoms = shapely.transform(geoms, lambda c: np.c_[frame.to_xy(c[:, 0], c[:, 1])])
        xs, ys = [], []
        for f, g in zip(feats, geoms):
            p = dict(f["properties"])
            i = len(a.ids)
            a._index[p["id"]] = i
            a.ids.append(p.pop("id"))
            a.types.append(p.pop("type"))
            a.names.append(p.pop("name"))
            a.unit_codes.append(p.pop("unit_code"))
            x, y = frame.to_xy(p.pop("lon"), p.pop("lat"))
            xs.append(float(x))
            ys.append(float(y))
            a.geoms.append(g)
            a.props.append(p)
        a.x, a.y = np.array(xs), np.array(ys)
        with (folder / "edges.csv").open(encoding="utf-8") as fh:
            r = csv.reader(fh)
            next(r)
            a.edges = [(s, d, rel) for s, d, rel in r]
        return a


def locate_points(units: list, x: np.ndarray, y: np.ndarray) -> list[str | None]:
    """The code of the unit containing each point (nearest unit for points on no polygon)."""
    geoms = [u.geom for u in units]
    tree = shapely.STRtree(geoms)
    pts = shapely.points(np.c_[x, y])
    pidx, uidx = tree.query(pts, predicate="intersects")
    out: list[str | None] = [None] * len(x)
    # first hit wins (lowest unit index for points on shared borders)
    order = np.lexsort((uidx, pidx))
    seen = np.zeros(len(x), dtype=bool)
    for p, u in zip(pidx[order], uidx[order]):
        if not seen[p]:
            out[p] = units[u].code
            seen[p] = True
    missing = np.flatnonzero(~seen)
    if len(missing):
        near = tree.nearest(pts[missing])
        for p, u in zip(missing, near):
            out[p] = units[u].code
    return out


def _nearest(src_xy: np.ndarray, dst_xy: np.ndarray) -> np.ndarray:
    """Index into ``dst_xy`` of the nearest point for each row of ``src_xy``."""
    d = ((src_xy[:, None, :] - dst_xy[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


def _boundary_points(outline: BaseGeometry, n: int, rng: np.random.Generator, inset: float) -> np.ndarray:
    ring = outline.exterior
    fr = np.sort(rng.uniform(0, 1, n))
    pts = shapely.line_interpolate_point(ring, fr, normalized=True)
    xy = np.c_[shapely.get_x(pts), shapely.get_y(pts)]
    norm = np.hypot(xy[:, 0], xy[:, 1])[:, None]
    return xy * (1 - inset / np.maximum(norm, 1))


def _rep(g: BaseGeometry) -> tuple[float, float]:
    p = g.point_on_surface() if g.geom_type != "LineString" else g.interpolate(0.5, normalized=True)
    return p.x, p.y


def build_assets(city, seed: int) -> Assets:
    """All networks for ``city`` sized for its sensor budget (see :func:`sensors.kind_counts`)."""
    from cityvitals.sim.sensors import kind_counts

    counts = kind_counts(int(city.params["sensors"]))
    outline = city.outline
    area_km2 = outline.area / 1e6
    comm = city.communities
    a = Assets()

    # ---- roads: a jittered lattice
    rng = stream(seed, "assets", "roads")
    n_seg_target = max(80, counts["traffic_speed"])
    s = math.sqrt(2 * outline.area / n_seg_target)
    minx, miny, maxx, maxy = outline.bounds
    nx, ny = int((maxx - minx) / s) + 2, int((maxy - miny) / s) + 2
    gi, gj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    nxy = np.c_[minx + gi.ravel() * s, miny + gj.ravel() * s] + rng.uniform(-0.18 * s, 0.18 * s, (nx * ny, 2))
    inside = shapely.contains_xy(outline, nxy[:, 0], nxy[:, 1]).reshape(nx, ny)
    nid = np.arange(nx * ny).reshape(nx, ny)
    segs: list[tuple[int, int, str, str]] = []  # node a, node b, class, line name key
    row_names: dict[tuple[str, int], tuple[str, str]] = {}

    def rclass(k: int) -> str:
        return "expressway" if k % 4 == 0 else ("arterial" if k % 2 == 0 else "secondary")

    used_names: set[str] = set()
    for key in [("h", j) for j in range(ny)] + [("v", i) for i in range(nx)]:
        cls = rclass(key[1])
        row_names[key] = place_name(rng, "高架路" if cls == "expressway" else "路", "Elevated Road" if cls == "expressway" else "Road", used_names)
    h_ok = inside[:-1, :] & inside[1:, :]
    for i, j in zip(*np.nonzero(h_ok)):
        segs.append((nid[i, j], nid[i + 1, j], rclass(j), ("h", j)))
    v_ok = inside[:, :-1] & inside[:, 1:]
    for i, j in zip(*np.nonzero(v_ok)):
        segs.append((nid[i, j], nid[i, j + 1], rclass(i), ("v", i)))
    seg_ids = []
    node_segs: dict[int, list[str]] = {}
    for k, (na, nb, cls, key) in enumerate(segs):
        sid = f"RD{k + 1:05d}"
        seg_ids.append(sid)
        zh, en = row_names[key]
        a.add("road_segment", sid, LineString([nxy[na], nxy[nb]]), name=f"{zh} ({sid})", name_en=en,
              road_class=cls, free_speed_kmh=FREE_SPEED[cls], lanes=int({"expressway": 6, "arterial": 4, "secondary": 2}[cls]))
        node_segs.setdefault(int(na), []).append(sid)
        node_segs.setdefault(int(nb), []).append(sid)
    for node in sorted(node_segs):
        ss = node_segs[node]
        for p in range(len(ss)):
            for q in range(p + 1, len(ss)):
                a.edge(ss[p], ss[q], "connects")
    seg_idx = np.array([a.index(x) for x in seg_ids])
    seg_cls = np.array([segs[k][2] for k in range(len(segs))])

    def on_segments(rng: np.random.Generator, n: int, mask: np.ndarray | None = None, replace: bool = False) -> tuple[list[str], np.ndarray]:
        pool = np.flatnonzero(mask) if mask is not None else np.arange(len(seg_ids))
        pick = rng.choice(pool, n, replace=replace or n > len(pool))
        frac = rng.uniform(0.15, 0.85, n)
        lines = np.array([a.geoms[seg_idx[k]] for k in pick], dtype=object)
        p = shapely.line_interpolate_point(lines, frac, normalized=True)
        return [seg_ids[k] for k in pick], np.c_[shapely.get_x(p), shapely.get_y(p)]

    # ---- bridges and tunnels
    rng = stream(seed, "assets", "structures")
    n_tun = max(1, counts["water_level"] // 12)
    segs_t, xy_t = on_segments(rng, n_tun, seg_cls != "secondary")
    for k, (sid, xy) in enumerate(zip(segs_t, xy_t)):
        tid = f"TN{k + 1:03d}"
        a.add("tunnel", tid, Point(xy), length_m=int(rng.integers(300, 2500)))
        a.edge(tid, sid, "carries")
    n_br = max(2, len(seg_ids) // 40)
    segs_b, xy_b = on_segments(rng, n_br)
    for k, (sid, xy) in enumerate(zip(segs_b, xy_b)):
        bid = f"BR{k + 1:03d}"
        a.add("bridge", bid, Point(xy), span_m=int(rng.integers(30, 400)))
        a.edge(bid, sid, "carries")

    # ---- water network
    rng = stream(seed, "assets", "water")
    src_xy = _boundary_points(outline, 2, rng, 400.0)
    for k, xy in enumerate(src_xy):
        a.add("water_source", f"WS{k + 1:02d}", Point(xy), capacity_m3_per_day=int(rng.integers(600, 1500)) * 1000)
    n_zone = max(3, round(area_km2 / 6))
    zones = partition(outline, n_zone, rng, lloyd=3)
    n_ps = max(2, math.ceil(len(zones) / 4))
    ps_xy = points_in(outline.buffer(-500), n_ps, rng)
    ps_src = _nearest(ps_xy, src_xy)
    for k, xy in enumerate(ps_xy):
        pid = f"PS{k + 1:03d}"
        a.add("pump_station", pid, Point(xy), head_m=int(rng.integers(28, 40)))
        a.edge(f"WS{ps_src[k] + 1:02d}", pid, "feeds")
    z_xy = np.array([_rep(z) for z in zones])
    z_ps = _nearest(z_xy, ps_xy)
    comm_xy = np.array([_rep(c.geom) for c in comm])
    for k, z in enumerate(zones):
        zid, mid, pid = f"PZ{k + 1:03d}", f"WM{k + 1:03d}", f"PS{z_ps[k] + 1:03d}"
        a.add("water_main", mid, LineString([ps_xy[z_ps[k]], z_xy[k]]), diameter_mm=int(rng.choice([600, 800, 1000, 1200])))
        a.add("pressure_zone", zid, z, base_pressure_mpa=round(float(rng.uniform(0.27, 0.36)), 3))
        a.edge(pid, mid, "feeds")
        a.edge(mid, zid, "feeds")
        inz = shapely.contains_xy(z, comm_xy[:, 0], comm_xy[:, 1])
        for ci in np.flatnonzero(inz):
            a.edge(zid, comm[ci].code, "supplies")
    n_wq = max(0, max(counts["turbidity"], counts["residual_chlorine"]) - n_ps)
    wq_xy = points_in(outline, n_wq, rng)
    wq_zone = _assign_polys(zones, wq_xy)
    for k, xy in enumerate(wq_xy):
        wid = f"WQ{k + 1:03d}"
        a.add("water_quality_point", wid, Point(xy))
        a.edge(f"PZ{wq_zone[k] + 1:03d}", wid, "contains")

    # ---- power
    rng = stream(seed, "assets", "power")
    n_sub = max(3, round(area_km2 / 10))
    sub_xy = points_in(outline.buffer(-300), n_sub, rng)
    areas = partition(outline, n_sub * 3, rng, lloyd=2)
    ar_xy = np.array([_rep(g) for g in areas])
    ar_sub = _nearest(ar_xy, sub_xy)
    # every substation serves at least the area nearest to it
    for k, near_area in enumerate(_nearest(sub_xy, ar_xy)):
        if not (ar_sub == k).any():
            ar_sub[near_area] = k
    pops = np.array([c.population for c in comm], dtype=float)
    sub_peak = np.zeros(n_sub)
    area_rows = []
    for k, g in enumerate(areas):
        inside_c = shapely.contains_xy(g, comm_xy[:, 0], comm_xy[:, 1])
        pop = float(pops[inside_c].sum())
        peak = max(2.0, pop * 1.5e-3 + g.area / 1e6 * 3.0)
        sub_peak[ar_sub[k]] += peak
        area_rows.append((g, inside_c, peak))
    for k, xy in enumerate(sub_xy):
        a.add("substation", f"SUB{k + 1:02d}", Point(xy), voltage_kv=110,
              rated_mw=round(float(max(sub_peak[k], 5.0) * rng.uniform(1.3, 1.6)), 1))
    for k, (g, inside_c, peak) in enumerate(area_rows):
        sid, fid, aid = f"SUB{ar_sub[k] + 1:02d}", f"FD{k + 1:03d}", f"PA{k + 1:03d}"
        a.add("feeder", fid, LineString([sub_xy[ar_sub[k]], ar_xy[k]]), voltage_kv=10, peak_mw=round(peak, 2))
        a.add("power_area", aid, g, peak_mw=round(peak, 2))
        a.edge(sid, fid, "feeds")
        a.edge(fid, aid, "feeds")
        for ci in np.flatnonzero(inside_c):
            a.edge(aid, comm[ci].code, "supplies")

    # ---- drainage
    rng = stream(seed, "assets", "drainage")
    n_cat = max(3, round(area_km2 / 12))
    cats = partition(outline, n_cat, rng, lloyd=2)
    for k, g in enumerate(cats):
        cid, did = f"CA{k + 1:02d}", f"DPS{k + 1:02d}"
        a.add("catchment", cid, g, design_rain_mm_per_h=int(rng.choice([36, 45, 58])))
        dxy = points_in(g, 1, rng)[0]
        a.add("drainage_pumping_station", did, Point(dxy), capacity_m3_per_s=round(float(rng.uniform(5, 25)), 1))
        a.edge(did, cid, "drains")
    n_low = max(3, round(counts["water_level"] * 0.6))
    segs_l, xy_l = on_segments(rng, n_low, seg_cls != "expressway")
    low_cat = _assign_polys(cats, xy_l)
    for k, (sid, xy) in enumerate(zip(segs_l, xy_l)):
        lid = f"LS{k + 1:03d}"
        runoff = float(rng.uniform(4.0, 8.0))  # m of depth per m of rain reaching the spot
        a.add("low_spot", lid, Point(xy), runoff_factor=round(runoff, 2),
              drain_m_per_h=round(runoff * float(rng.uniform(30, 50)) / 1000.0, 3), kind_zh=str(rng.choice(["下立交", "道路低洼处", "小区出入口"])))
        a.edge(f"CA{low_cat[k] + 1:02d}", lid, "contains")
        a.edge(lid, sid, "floods")
    n_rg = max(1, round(counts["water_level"] * 0.15))
    rg_xy = points_in(outline, n_rg, rng)
    rg_cat = _assign_polys(cats, rg_xy)
    for k, xy in enumerate(rg_xy):
        rid = f"RG{k + 1:03d}"
        a.add("river_gauge", rid, Point(xy), normal_level_m=round(float(rng.uniform(2.5, 3.2)), 2), warning_level_m=4.2)
        a.edge(f"DPS{rg_cat[k] + 1:02d}", rid, "discharges_to")

    # ---- gas
    rng = stream(seed, "assets", "gas")
    gg_xy = _boundary_points(outline, 2, rng, 600.0)
    for k, xy in enumerate(gg_xy):
        a.add("gas_gate_station", f"GG{k + 1:02d}", Point(xy))
    n_reg = max(3, round(area_km2 / 10))
    reg_xy = points_in(outline.buffer(-300), n_reg, rng)
    reg_gg = _nearest(reg_xy, gg_xy)
    gm = 0
    for k, xy in enumerate(reg_xy):
        rid = f"GR{k + 1:03d}"
        a.add("gas_regulator", rid, Point(xy), outlet_kpa=int(rng.choice([4, 100, 400])))
        a.edge(f"GG{reg_gg[k] + 1:02d}", rid, "feeds")
        for _ in range(3):
            ang = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(800, 2200)
            end = xy + length * np.array([math.cos(ang), math.sin(ang)])
            line = LineString([xy, end]).intersection(outline)
            if line.is_empty or line.geom_type != "LineString":
                line = LineString([xy, xy + 50 * np.array([math.cos(ang), math.sin(ang)])])
            gm += 1
            mid = f"GM{gm:03d}"
            a.add("gas_main", mid, line, pressure_class=str(rng.choice(["medium", "low"])))
            a.edge(rid, mid, "feeds")
    gm_lines = [a.geoms[i] for i in a.of_type("gas_main")]
    gm_end = np.array([[ln.coords[-1][0], ln.coords[-1][1]] for ln in gm_lines])
    for k, code in enumerate(locate_points(comm, gm_end[:, 0], gm_end[:, 1])):
        a.edge(f"GM{k + 1:03d}", code, "supplies")

    # ---- manholes on roads
    rng = stream(seed, "assets", "manholes")
    segs_m, xy_m = on_segments(rng, counts["manhole_tilt"], replace=True)
    nets = np.array(["sewer", "storm", "water", "power", "telecom", "gas"])
    net = rng.choice(nets, len(segs_m), p=[0.25, 0.25, 0.15, 0.15, 0.15, 0.05])
    for k, (sid, xy) in enumerate(zip(segs_m, xy_m)):
        mid = f"MH{k + 1:06d}"
        a.add("manhole", mid, Point(xy), network=str(net[k]))
        a.edge(sid, mid, "hosts")

    # ---- sites
    rng = stream(seed, "assets", "sites")
    n_cs = max(3, round(area_km2 / 8))
    for k, xy in enumerate(points_in(outline, n_cs, rng)):
        a.add("construction_site", f"CS{k + 1:03d}", Point(xy), night_work=bool(rng.uniform() < 0.4))
    n_bld = max(1, math.ceil(counts["elevator_status"] / 2.5))
    # buildings cluster where people live: draw by community population
    cidx = rng.choice(len(comm), n_bld, p=pops / pops.sum())
    for k, ci in enumerate(cidx):
        xy = points_in(comm[ci].geom, 1, rng)[0]
        a.add("building", f"BLD{k + 1:05d}", Point(xy), floors=int(rng.integers(6, 40)))
    for k, xy in enumerate(points_in(outline, counts["crowd_density"], rng)):
        kind = str(rng.choice(["metro_station", "plaza", "mall", "scenic_spot"]))
        a.add("hotspot", f"HS{k + 1:03d}", Point(xy), place_type=kind, area_m2=int(rng.integers(2000, 30000)))
    for k, xy in enumerate(points_in(outline, counts["pm25"], rng)):
        a.add("air_station", f"AQ{k + 1:03d}", Point(xy))
    for k, xy in enumerate(points_in(outline, counts["rainfall"], rng)):
        a.add("weather_station", f"WX{k + 1:03d}", Point(xy))
    n_np = max(0, counts["noise"] - 2 * n_cs)
    segs_n, xy_n = on_segments(rng, n_np, replace=True)
    for k, (sid, xy) in enumerate(zip(segs_n, xy_n)):
        a.add("noise_point", f"NP{k + 1:04d}", Point(xy), road=sid)

    a.finalize(comm)
    return a


def _assign_polys(polys: list[BaseGeometry], xy: np.ndarray) -> np.ndarray:
    """Index of the polygon containing each point (nearest polygon otherwise)."""
    if len(xy) == 0:
        return np.zeros(0, dtype=np.int64)
    tree = shapely.STRtree(polys)
    return tree.nearest(shapely.points(xy)).astype(np.int64)
