"""Scenarios: incidents, sensor faults and background events injected into a run.

A scenario name maps to a builder that picks the root-cause asset, the window and the
affected sensors from the city's dependency graph, and says which thresholds the
truth should time (``track``). The signal model applies the effects; the ground truth
(:mod:`cityvitals.sim.truth`) records what was injected and when each signal first
crossed each level. Sensor faults are not incidents: they touch one sensor and
nothing downstream of it.

>>> sorted(INCIDENT_TYPES)[:3]
['air_pollution', 'gas_leak', 'manhole_displaced']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cityvitals.errors import InputError
from cityvitals.sim._rng import stream
from cityvitals.sim.index import CityIndex
from cityvitals.sim.profiles import bump
from cityvitals.sim.weather import RainCell, Weather

# kind -> typical size of a normal swing, in the canonical unit (faults are scaled by it)
SCALE = {
    "water_pressure": 0.03, "water_flow": 300.0, "turbidity": 0.3, "residual_chlorine": 0.15, "water_level": 0.3,
    "waterlogging_depth": 0.3,
    "rainfall": 1.0, "pm25": 12.0, "pm10": 20.0, "o3": 25.0, "no2": 12.0, "so2": 4.0, "co": 0.3, "noise": 4.0,
    "traffic_speed": 8.0, "traffic_flow": 300.0, "road_occupancy": 8.0, "power_load": 3.0,
    "equipment_temperature": 6.0, "temperature": 1.5, "humidity": 6.0, "wind_speed": 1.2,
    "gas_concentration": 1.5, "manhole_tilt": 1.0, "crowd_density": 0.3, "elevator_status": 1.0,
}
SPEED_ALARM = {"expressway": 20.0, "arterial": 15.0, "secondary": 10.0}


@dataclass
class Track:
    """Time when ``kind`` at ``sensors`` first crosses ``op value`` (per sensor values allowed)."""

    kind: str
    name: str
    op: str  # "<", "<=", ">", ">="
    value: Any  # float or array aligned with sensors
    sensors: np.ndarray
    transform: str | None = None  # "sum_1h" for rainfall


@dataclass
class Incident:
    id: str
    type: str
    start: int  # step index
    end: int  # step index (exclusive), when the cause is removed
    root_asset: str | None
    cause: str
    sensors: np.ndarray
    units: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    track: list[Track] = field(default_factory=list)
    category: str = "incident"  # incident | background


@dataclass
class Fault:
    id: str
    type: str
    sensor: int
    start: int
    end: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    scenarios: list[str]
    incidents: list[Incident] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    background: list[Incident] = field(default_factory=list)
    dps_capacity: dict[int, float] = field(default_factory=dict)  # asset idx -> capacity factor
    heatwave: bool = False

    def all_events(self) -> list[Incident]:
        return self.incidents + self.background


@dataclass
class Ctx:
    ix: CityIndex
    weather: Weather
    steps: int
    dt: float
    seed: int
    plan: Plan
    used: set[str] = field(default_factory=set)
    counter: list[int] = field(default_factory=lambda: [0, 0, 0])

    def next_id(self, what: int, prefix: str) -> str:
        self.counter[what] += 1
        return f"{prefix}-{self.counter[what]:03d}"

    def window(self, rng: np.random.Generator, typical_s: float, lo: float = 0.1, hi: float = 0.6) -> tuple[int, int]:
        dur = max(2, int(min(typical_s / self.dt, 0.5 * self.steps)))
        latest = max(int(lo * self.steps) + 1, min(int(hi * self.steps), self.steps - dur))
        start = int(rng.integers(int(lo * self.steps), latest)) if latest > int(lo * self.steps) else 0
        return start, min(self.steps, start + dur)

    def pick(self, rng: np.random.Generator, candidates: list[str]) -> str:
        free = [c for c in candidates if c not in self.used] or candidates
        choice = free[int(rng.integers(len(free)))]
        self.used.add(choice)
        return choice


def _units_of_sensors(ix: CityIndex, sensors: np.ndarray) -> list[str]:
    a = ix.assets
    return sorted({a.unit_codes[ix.asset_of[j]] for j in sensors if ix.asset_of[j] >= 0 and a.unit_codes[ix.asset_of[j]]})


# ------------------------------------------------------------------ incident builders


def water_main_burst(ctx: Ctx, rng: np.random.Generator) -> None:
    ix = ctx.ix
    mains = [ix.assets.ids[i] for i in ix.of_type("water_main")]
    ok = [m for m in mains if len(ix.sensors_on(ix.children(m, "feeds"), "water_pressure")) >= 2] or mains
    main = ctx.pick(rng, ok)
    zone = ix.children(main, "feeds")[0]
    pump = ix.parents(main, "feeds")[0]
    start, end = ctx.window(rng, 3 * 3600)
    wp = ix.sensors_on([zone], "water_pressure")
    zx, zy = ix.assets.x[ix.assets.index(zone)], ix.assets.y[ix.assets.index(zone)]
    delay = np.hypot(ix.sx[wp] - zx, ix.sy[wp] - zy) / 900.0 * 60.0 / ctx.dt  # ~900 m per minute
    flows = np.concatenate([ix.sensors_on([main], "water_flow"), ix.sensors_on([pump], "water_flow")])
    wq_assets = ix.children(zone, "contains")
    wq = np.concatenate([ix.sensors_on(wq_assets, "turbidity"), ix.sensors_on(wq_assets, "residual_chlorine")])
    sensors = np.unique(np.concatenate([wp, flows, wq])).astype(np.int64)
    inc = Incident(
        ctx.next_id(0, "INC"), "water_main_burst", start, end, main,
        f"water main {main} burst; pressure zone {zone} loses pressure until the main is isolated and repaired",
        sensors, ix.supplied_units(zone),
        params={"zone": zone, "pump_station": pump, "pressure_sensors": wp, "p_low": rng.uniform(0.03, 0.09, len(wp)),
                "delay": delay, "main_flow": ix.sensors_on([main], "water_flow"), "pump_flow": ix.sensors_on([pump], "water_flow"),
                "turbidity": ix.sensors_on(wq_assets, "turbidity"), "turbidity_peak": float(rng.uniform(1.6, 4.0))},
        track=[Track("water_pressure", "water_pressure < 0.14 MPa (warning: CJ/T 316 minimum service pressure)", "<", 0.14, wp),
               Track("water_pressure", "water_pressure < 0.10 MPa (alarm)", "<", 0.10, wp),
               Track("turbidity", "turbidity > 1.0 NTU (GB 5749-2022)", ">", 1.0, ix.sensors_on(wq_assets, "turbidity"))],
    )
    ctx.plan.incidents.append(inc)


def rainstorm(ctx: Ctx, rng: np.random.Generator) -> None:
    ix = ctx.ix
    start, end = ctx.window(rng, 3.5 * 3600, 0.1, 0.45)
    dur_s = (end - start) * ctx.dt
    radius = float(np.sqrt(ix.city.outline.area / np.pi))
    ang = rng.uniform(0, 2 * np.pi)
    speed = 1.4 * radius / max(dur_s, 600.0)
    x0, y0 = -0.7 * radius * np.cos(ang), -0.7 * radius * np.sin(ang)
    peak = float(rng.uniform(75, 110))
    ctx.weather.cells.append(RainCell(start * ctx.dt, end * ctx.dt, peak, x0, y0, speed * np.cos(ang), speed * np.sin(ang),
                                      float(rng.uniform(0.35, 0.55) * radius)))
    dps = [ix.assets.ids[i] for i in ix.of_type("drainage_pumping_station")]
    gauges = {d: _station_gauges(ix, d) for d in dps}
    under = [d for d in dps if _storm_peak(ctx, ix, gauges[d], start, end) >= STATION_FAIL_MM_H]
    failed = ctx.pick(rng, under or [d for d in dps if gauges[d]] or dps)
    ctx.plan.dps_capacity[ix.assets.index(failed)] = 0.25
    rain = ix.by_kind.get("rainfall", np.zeros(0, np.int64))
    wl = ix.by_kind.get("water_level", np.zeros(0, np.int64))
    wd = ix.by_kind.get("waterlogging_depth", np.zeros(0, np.int64))
    ponds = wd[np.isin(ix.asset_type[wd], ["low_spot", "tunnel"])]
    rivers = wl[ix.asset_type[wl] == "river_gauge"]
    river_warn = np.array([ix.assets.props[ix.asset_of[j]].get("warning_level_m", 4.2) for j in rivers], dtype=float)
    flooded_roads = [d for j in ponds for d in ix.children(ix.assets.ids[ix.asset_of[j]], "floods")]
    ts = ix.sensors_on(flooded_roads, "traffic_speed")
    ts_thr = np.array([SPEED_ALARM[ix.assets.props[ix.asset_of[j]]["road_class"]] for j in ts], dtype=float)
    sensors = np.unique(np.concatenate([rain, ponds, rivers, ts, ix.sensors_on([failed], "water_flow")])).astype(np.int64)
    inc = Incident(
        ctx.next_id(0, "INC"), "rainstorm", start, end, failed,
        f"rainstorm (peak {peak:.0f} mm/h) crossing the city; storm-water pumping station {failed} runs at 25% capacity",
        sensors, [], params={"peak_mm_h": peak, "failed_pumping_station": failed},
        track=[Track("rainfall", "rain_1h >= 35 mm (Shanghai blue rainstorm signal)", ">=", 35.0, rain, "sum_1h"),
               Track("rainfall", "rain_1h >= 50 mm (yellow)", ">=", 50.0, rain, "sum_1h"),
               Track("waterlogging_depth", "ponding depth >= 0.15 m (GB 51222-2017)", ">=", 0.15, ponds),
               Track("waterlogging_depth", "ponding depth >= 0.30 m (impassable)", ">=", 0.30, ponds),
               Track("water_level", "river level >= warning level", ">=", river_warn, rivers),
               Track("traffic_speed", "traffic_speed <= severe-congestion speed of the road class (GB/T 33171)", "<=", ts_thr, ts)],
    )
    ctx.plan.incidents.append(inc)


# what a storm-water pumping station's failure moves that a gauge can read: ponding in its
# catchment and the river stage it discharges to
STATION_KINDS = ("water_level", "waterlogging_depth")
STATION_FAIL_MM_H = 35.0  # the storm must be heavy (blue signal) where the failure shows


def _station_gauges(ix: CityIndex, station: str) -> list[str]:
    """Low spots of ``station``'s catchment and river gauges below it that carry a level gauge.

    Why the rainstorm fails only a station that has some: a failure no gauge reads is not a
    diagnosis problem but an unmonitored asset, and ground truth naming it would score the
    diagnoser against something no data shows.
    """
    cats = ix.children(station, "drains")
    around = [*ix.children(station, "discharges_to"), *(x for c in cats for x in ix.children(c, "contains"))]
    return [x for x in around if np.isin(ix.kind[ix.sensors_on([x])], STATION_KINDS).any()]


def _storm_peak(ctx: Ctx, ix: CityIndex, places: list[str], start: int, end: int) -> float:
    """Peak rain (mm/h) of the storm window over ``places``.

    Why: a station fails under the load of the storm over it (flooded wet well, tripped
    supply); where the storm stays light its catchment would not pond either way.
    """
    if not places:
        return 0.0
    k = np.array([ix.assets.index(p) for p in places])
    return float(ctx.weather.rain(np.arange(start, end), ix.assets.x[k], ix.assets.y[k]).max())


def substation_overload(ctx: Ctx, rng: np.random.Generator) -> None:
    ix = ctx.ix
    w = ctx.weather
    if not ctx.plan.heatwave:
        ctx.plan.heatwave = True
        extra = 5.5 + 2.0 * bump(w.hour, 15.0, 4.0)
        w.heat_offset = w.heat_offset + extra
        w.temp = w.temp + extra
        w.humidity = np.clip(w.humidity - 8, 25, 99)
    subs = [ix.assets.ids[i] for i in ix.of_type("substation")]
    sub = ctx.pick(rng, subs)
    # the afternoon peak of the first day that the run covers, else a random window
    cand = np.flatnonzero((w.hour >= 12.5) & (w.hour < 13.0))
    cand = cand[cand < ctx.steps - int(3600 / ctx.dt)]
    if len(cand):
        start = int(cand[0])
        end = min(ctx.steps, start + int(4.5 * 3600 / ctx.dt))
    else:
        start, end = ctx.window(rng, 4 * 3600)
    feeders = ix.children(sub, "feeds")
    trip_feeder = feeders[int(rng.integers(len(feeders)))] if feeders else None
    trip_start = start + int(0.55 * (end - start))
    trip_end = min(end, trip_start + max(1, int(2400 / ctx.dt)))
    sub_sensors = ix.sensors_on([sub])
    fsens = ix.sensors_on(feeders)
    pl = sub_sensors[ix.kind[sub_sensors] == "power_load"]
    rated = float(ix.assets.props[ix.assets.index(sub)]["rated_mw"])
    et = sub_sensors[ix.kind[sub_sensors] == "equipment_temperature"]
    temp = ix.by_kind.get("temperature", np.zeros(0, np.int64))
    units = ix.supplied_units(sub)
    inc = Incident(
        ctx.next_id(0, "INC"), "substation_overload", start, end, sub,
        f"heatwave air-conditioning load plus load transferred from a neighbouring substation overloads {sub}; "
        f"protection trips feeder {trip_feeder}",
        np.unique(np.concatenate([sub_sensors, fsens])).astype(np.int64), units,
        params={"substation": sub, "target_ratio": float(rng.uniform(1.05, 1.12)), "trip_feeder": trip_feeder,
                "trip_start": trip_start, "trip_end": trip_end,
                "outage_units": ix.supplied_units(trip_feeder) if trip_feeder else []},
        track=[Track("power_load", "load >= 90% of rated capacity (warning)", ">=", 0.9 * rated, pl),
               Track("power_load", "load >= 100% of rated capacity (overload)", ">=", 1.0 * rated, pl),
               Track("equipment_temperature", "transformer temperature >= 90 degC", ">=", 90.0, et),
               Track("temperature", "air temperature >= 35 degC (heat)", ">=", 35.0, temp),
               Track("temperature", "air temperature >= 37 degC (orange heat signal)", ">=", 37.0, temp)],
    )
    ctx.plan.incidents.append(inc)


def traffic_accident(ctx: Ctx, rng: np.random.Generator) -> None:
    ix = ctx.ix
    a = ix.assets
    segs = [a.ids[i] for i in ix.of_type("road_segment") if a.props[i]["road_class"] != "secondary"]
    seg = ctx.pick(rng, [s for s in segs if len(ix.sensors_on([s], "traffic_speed"))] or segs)
    hops = {seg: 0}
    frontier = [seg]
    for h in range(1, 4):
        nxt = []
        for s in frontier:
            for n in ix.children(s, "connects") + ix.parents(s, "connects"):
                if n not in hops:
                    hops[n] = h
                    nxt.append(n)
        frontier = nxt
    start, end = ctx.window(rng, float(rng.uniform(60, 120)) * 60)
    seg_list = sorted(hops)
    sensors = ix.sensors_on(seg_list)
    ts = sensors[ix.kind[sensors] == "traffic_speed"]
    thr = np.array([SPEED_ALARM[a.props[ix.asset_of[j]]["road_class"]] for j in ts], dtype=float)
    inc = Incident(
        ctx.next_id(0, "INC"), "traffic_accident", start, end, seg,
        f"collision blocking lanes on {a.names[a.index(seg)]}; queues spread to connected segments",
        sensors, sorted({a.unit_codes[a.index(s)] for s in seg_list if a.unit_codes[a.index(s)]}),
        params={"hops": {s: h for s, h in hops.items()}, "onset_per_hop_s": 360.0},
        track=[Track("traffic_speed", "traffic_speed <= severe-congestion speed of the road class (GB/T 33171)", "<=", thr, ts)],
    )
    ctx.plan.incidents.append(inc)


def gas_leak(ctx: Ctx, rng: np.random.Generator) -> None:
    ix = ctx.ix
    gs = ix.by_kind.get("gas_concentration", np.zeros(0, np.int64))
    on_main = gs[ix.asset_type[gs] == "gas_main"]
    anchor = int(on_main[int(rng.integers(len(on_main)))]) if len(on_main) else int(gs[int(rng.integers(len(gs)))])
    asset = ix.assets.ids[ix.asset_of[anchor]]
    ctx.used.add(asset)
    lx, ly = ix.sx[anchor] + rng.normal(0, 30), ix.sy[anchor] + rng.normal(0, 30)
    near = ix.near(lx, ly, 600.0, "gas_concentration")
    d = np.hypot(ix.sx[near] - lx, ix.sy[near] - ly)
    peak = rng.uniform(60, 90) * np.exp(-d / 220.0)
    keep = peak > 3.0
    near, peak = near[keep], peak[keep]
    start, end = ctx.window(rng, float(rng.uniform(1.5, 3.0)) * 3600)
    inc = Incident(
        ctx.next_id(0, "INC"), "gas_leak", start, end, asset,
        f"leak on {asset}; gas accumulates around the leak until the section is shut off", near,
        _units_of_sensors(ix, near), params={"peak": peak, "leak_lon_lat": [float(v) for v in ix.city.frame.to_lonlat(lx, ly)]},
        track=[Track("gas_concentration", "combustible gas >= 25 %LEL (1st alarm, GB/T 50493-2019)", ">=", 25.0, near),
               Track("gas_concentration", "combustible gas >= 50 %LEL (2nd alarm)", ">=", 50.0, near)],
    )
    ctx.plan.incidents.append(inc)


def manhole_displaced(ctx: Ctx, rng: np.random.Generator) -> None:
    ix = ctx.ix
    mt = ix.by_kind.get("manhole_tilt", np.zeros(0, np.int64))
    j = int(mt[int(rng.integers(len(mt)))])
    asset = ix.assets.ids[ix.asset_of[j]]
    ctx.used.add(asset)
    start, end = ctx.window(rng, float(rng.uniform(2, 5)) * 3600)
    sensors = np.array([j], dtype=np.int64)
    inc = Incident(
        ctx.next_id(0, "INC"), "manhole_displaced", start, end, asset,
        f"manhole cover {asset} displaced by a passing vehicle; open until a crew re-seats it", sensors,
        _units_of_sensors(ix, sensors), params={"tilt": float(rng.uniform(25, 75))},
        track=[Track("manhole_tilt", "manhole tilt >= 15 deg (cover displaced)", ">=", 15.0, sensors)],
    )
    ctx.plan.incidents.append(inc)


def air_pollution(ctx: Ctx, rng: np.random.Generator) -> None:
    ix = ctx.ix
    w = ctx.weather
    start, end = ctx.window(rng, 12 * 3600, 0.05, 0.4)
    peak = float(rng.uniform(3.4, 4.6))
    t = np.arange(ctx.steps)
    rise = max(1.0, 0.4 * (end - start))
    up = np.clip((t - start) / rise, 0, 1)
    down = np.where(t >= end, np.exp(-(t - end) * ctx.dt / 7200.0), 1.0)
    f = 1 + (peak - 1) * up * down * (t >= start)
    w.mixing = w.mixing * f
    w.wind = w.wind / (1 + 0.5 * (f - 1))
    pm25 = ix.by_kind.get("pm25", np.zeros(0, np.int64))
    pm10 = ix.by_kind.get("pm10", np.zeros(0, np.int64))
    inc = Incident(
        ctx.next_id(0, "INC"), "air_pollution", start, end, None,
        "regional transport under a temperature inversion with calm wind traps primary pollutants",
        np.concatenate([pm25, pm10]).astype(np.int64), [], params={"peak_factor": peak},
        track=[Track("pm25", "PM2.5 > 75 ug/m3 (GB 3095-2012 grade II 24-h limit)", ">", 75.0, pm25),
               Track("pm25", "PM2.5 > 115 ug/m3 (moderate pollution)", ">", 115.0, pm25),
               Track("pm10", "PM10 > 150 ug/m3", ">", 150.0, pm10)],
    )
    ctx.plan.incidents.append(inc)


def quiet_day(ctx: Ctx, rng: np.random.Generator) -> None:
    """Nothing injected: the baseline city with its ordinary background events."""


INCIDENT_TYPES: dict[str, Callable[[Ctx, np.random.Generator], None]] = {
    "water_main_burst": water_main_burst,
    "rainstorm": rainstorm,
    "substation_overload": substation_overload,
    "traffic_accident": traffic_accident,
    "gas_leak": gas_leak,
    "manhole_displaced": manhole_displaced,
    "air_pollution": air_pollution,
}

# ------------------------------------------------------------------ sensor faults

FAULT_KINDS = {
    "stuck": [k for k in SCALE if k not in ("elevator_status", "rainfall")],
    "drift": ["water_pressure", "pm25", "temperature", "noise", "gas_concentration", "humidity", "water_flow"],
    "dropout": list(SCALE),
    "spikes": [k for k in SCALE if k not in ("elevator_status",)],
    "wrong_unit": ["traffic_speed", "wind_speed", "pm25", "pm10", "no2"],
}
# a sensor "reporting in the wrong unit": values in this unit, labelled with the registered one
WRONG_UNIT = {"traffic_speed": ("mph", 1 / 1.609344), "wind_speed": ("km/h", 3.6), "pm25": ("mg/m3", 0.001),
              "pm10": ("mg/m3", 0.001), "no2": ("mg/m3", 0.001)}
FAULT_TYPES = tuple(FAULT_KINDS)


def add_fault(ctx: Ctx, rng: np.random.Generator, ftype: str, exclude: set[int]) -> None:
    ix = ctx.ix
    kinds = [k for k in FAULT_KINDS[ftype] if k in ix.by_kind]
    for _ in range(50):
        kind = kinds[int(rng.integers(len(kinds)))]
        pool = ix.by_kind[kind]
        j = int(pool[int(rng.integers(len(pool)))])
        if j not in exclude:
            break
    exclude.add(j)
    typical = {"stuck": 5 * 3600, "drift": 12 * 3600, "dropout": 3 * 3600, "spikes": 8 * 3600, "wrong_unit": 10 * 3600}[ftype]
    start, end = ctx.window(rng, typical, 0.05, 0.5)
    params: dict[str, Any] = {"kind": kind}
    if ftype == "drift":
        params["total"] = float(rng.choice([-1, 1]) * rng.uniform(4, 8) * SCALE[kind])
    elif ftype == "spikes":
        params["rate"] = 0.04
        params["size"] = float(rng.uniform(5, 10) * SCALE[kind])
    elif ftype == "wrong_unit":
        params["unit_used"], params["factor"] = WRONG_UNIT[kind]
    ctx.plan.faults.append(Fault(ctx.next_id(1, "FLT"), ftype, j, start, end, params))


# ------------------------------------------------------------------ background events


def background(ctx: Ctx) -> None:
    """Ordinary life the truth also lists: lift faults, night construction, sensors offline."""
    ix, w = ctx.ix, ctx.weather
    rng = stream(ctx.seed, "background")
    days = max(ctx.steps * ctx.dt / 86400.0, 1 / 24)
    ev = ix.by_kind.get("elevator_status", np.zeros(0, np.int64))
    n_ev = int(rng.poisson(len(ev) * 0.02 * days))
    for j in rng.choice(ev, min(n_ev, len(ev)), replace=False) if len(ev) else []:
        code = int(rng.choice([1, 2, 3], p=[0.45, 0.15, 0.40]))
        typ = {1: "elevator_fault", 2: "elevator_entrapment", 3: "elevator_maintenance"}[code]
        s, e = ctx.window(rng, float(rng.uniform(0.5, 2.5)) * 3600, 0.0, 0.95)
        ctx.plan.background.append(Incident(ctx.next_id(2, "BG"), typ, s, e, ix.assets.ids[ix.asset_of[j]], typ.replace("_", " "),
                                            np.array([j]), _units_of_sensors(ix, np.array([j])), params={"code": code}))
    # night construction: sites with night work make noise between about 22:00 and 02:00
    a = ix.assets
    nights = np.flatnonzero((w.hour >= 22.0) & (w.hour < 22.0 + ctx.dt / 3600.0))
    for i in ix.of_type("construction_site"):
        if not a.props[i].get("night_work"):
            continue
        for s0 in nights:
            if rng.uniform() < 0.6:
                s = int(s0 + rng.integers(0, max(1, int(3600 / ctx.dt))))
                e = min(ctx.steps, s + int(rng.uniform(2.5, 4.5) * 3600 / ctx.dt))
                if s >= ctx.steps:
                    continue
                sens = ix.sensors_on([a.ids[i]], "noise")
                ctx.plan.background.append(Incident(
                    ctx.next_id(2, "BG"), "night_construction_noise", s, e, a.ids[i],
                    "construction work at night", sens, [a.unit_codes[i]] if a.unit_codes[i] else [],
                    params={"extra_db": float(rng.uniform(12, 18))},
                    track=[Track("noise", "noise >= 55 dB(A) at night (GB 12523-2011 site boundary)", ">=", 55.0, sens)]))
    # sensors that go offline for a while (maintenance, power, network)
    n_off = int(rng.poisson(ix.n * 0.003 * days))
    for j in rng.choice(ix.n, min(n_off, ix.n), replace=False):
        s, e = ctx.window(rng, float(rng.uniform(0.5, 4)) * 3600, 0.0, 0.95)
        ctx.plan.background.append(Incident(ctx.next_id(2, "BG"), "sensor_offline", s, e, None, "sensor offline (no data)",
                                            np.array([int(j)]), [], category="background"))
    for inc in ctx.plan.background:
        inc.category = "background"


def parse_scenarios(text: str | None) -> list[str]:
    names = [n.strip() for n in (text or "quiet_day").split(",") if n.strip()]
    valid = {"quiet_day", "sensor_faults", *INCIDENT_TYPES, *FAULT_TYPES}
    for n in names:
        if n not in valid:
            raise InputError(f"--scenario {n!r}: unknown scenario; choose from {', '.join(sorted(valid))}")
    return names


def build_plan(ix: CityIndex, weather: Weather, names: list[str], seed: int, steps: int, dt: float,
               random_incidents: int = 0) -> Plan:
    """Turn scenario names into injected incidents, faults and background events."""
    plan = Plan(scenarios=list(names))
    ctx = Ctx(ix, weather, steps, dt, seed, plan)
    order: list[str] = []
    for n in names:
        order.extend(FAULT_TYPES if n == "sensor_faults" else [n])
    rr = stream(seed, "scenario", "random")
    types = sorted(INCIDENT_TYPES)
    extra = [types[int(rr.integers(len(types)))] for _ in range(int(random_incidents))]
    incident_names = [n for n in order if n in INCIDENT_TYPES or n == "quiet_day"] + extra
    for occ, n in enumerate(incident_names):
        INCIDENT_TYPES.get(n, quiet_day)(ctx, stream(seed, "scenario", n, occ))
    exclude = {int(j) for inc in plan.incidents for j in inc.sensors}
    for inc in plan.incidents:  # weather-wide incidents: keep faults off the kinds they move
        if inc.type in ("rainstorm", "air_pollution", "substation_overload"):
            for t in inc.track:
                exclude.update(int(j) for j in t.sensors)
    for occ, n in enumerate(x for x in order if x in FAULT_TYPES):
        add_fault(ctx, stream(seed, "fault", n, occ), n, exclude)
    background(ctx)
    return plan
