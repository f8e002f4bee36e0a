"""The signal model: the true value of every sensor, one block of steps at a time.

``Model.block(k0, T)`` returns a (T × N) matrix of values in each kind's canonical
unit for steps k0 … k0+T-1. Each kind has a vectorised function over its sensors;
the few physical states that carry over time (ponding depth at low spots, catchment
storage, transformer temperature, the AR(1) noise of every sensor) are advanced step
by step over vectors, so a block costs a handful of NumPy operations per step whatever
the number of sensors. Incidents enter through the same functions (a burst lowers
the zone's pressure, an accident raises the road density), so coupled signals stay
consistent: ponding slows the road it floods, heat raises load and transformer
temperature.
"""

from __future__ import annotations

import numpy as np

from cityvitals.registry import load_kinds
from cityvitals.sim._rng import stream
from cityvitals.sim.index import CityIndex
from cityvitals.sim.profiles import (
    activity,
    bump,
    power_profile,
    sun,
    traffic_demand,
    water_demand,
)
from cityvitals.sim.scenarios import Plan
from cityvitals.sim.weather import Weather

# AR(1) wander and white noise per kind, in canonical units (multiplicative for "log" kinds)
NOISE = {
    "water_pressure": (0.004, 0.0015), "water_flow": (0.03, 0.01), "turbidity": (0.04, 0.02),
    "residual_chlorine": (0.03, 0.01), "water_level": (0.0, 0.002), "waterlogging_depth": (0.0, 0.002),
    "rainfall": (0.0, 0.0),
    "pm25": (0.12, 0.04), "pm10": (0.12, 0.05), "o3": (0.08, 0.03), "no2": (0.12, 0.05), "so2": (0.12, 0.05),
    "co": (0.1, 0.04), "noise": (1.2, 1.0), "traffic_speed": (0.0, 1.5), "traffic_flow": (0.0, 0.04),
    "road_occupancy": (0.0, 1.2), "power_load": (0.012, 0.006), "equipment_temperature": (0.4, 0.15),
    "temperature": (0.15, 0.08), "humidity": (0.8, 0.4), "wind_speed": (0.2, 0.15), "gas_concentration": (0.15, 0.1),
    "manhole_tilt": (0.1, 0.05), "crowd_density": (0.1, 0.05), "elevator_status": (0.0, 0.0),
}
LOG_KINDS = {"pm25", "pm10", "o3", "no2", "so2", "co", "water_flow", "traffic_flow", "power_load", "crowd_density",
             "turbidity", "residual_chlorine"}
DECIMALS = {
    "water_pressure": 4, "water_flow": 1, "turbidity": 2, "residual_chlorine": 2, "water_level": 3,
    "waterlogging_depth": 3, "rainfall": 1,
    "pm25": 0, "pm10": 0, "o3": 0, "no2": 0, "so2": 0, "co": 2, "noise": 1, "traffic_speed": 1, "traffic_flow": 0,
    "road_occupancy": 1, "power_load": 2, "equipment_temperature": 1, "temperature": 1, "humidity": 1,
    "wind_speed": 1, "gas_concentration": 1, "manhole_tilt": 1, "crowd_density": 2, "elevator_status": 0,
}


def ramp(t: np.ndarray, start, end, tau_on: float, tau_off: float) -> np.ndarray:
    """0 before ``start``; rises as 1-exp(-(t-start)/tau_on) until ``end``; decays after it.

    Broadcasts: ``t`` is (T, 1) and ``start`` may be a per-sensor row (1, n).
    """
    t = np.asarray(t, dtype=float)
    on = np.where(t >= start, 1 - np.exp(-(t - start) / max(tau_on, 1e-9)), 0.0)
    at_end = np.where(end >= start, 1 - np.exp(-(end - start) / max(tau_on, 1e-9)), 0.0)
    off = at_end * np.exp(-(t - end) / max(tau_off, 1e-9))
    return np.where(t < end, on, np.where(t >= start, off, 0.0))


class Model:
    def __init__(self, ix: CityIndex, weather: Weather, plan: Plan, seed: int, dt: float):
        self.ix, self.w, self.plan, self.seed, self.dt = ix, weather, plan, seed, dt
        self.kinds = load_kinds()
        n = ix.n
        self.n = n
        a = ix.assets
        rng = stream(seed, "model", "params")
        # noise
        self.sig_ar = np.zeros(n)
        self.sig_w = np.zeros(n)
        self.lo = np.zeros(n)
        self.hi = np.zeros(n)
        self.scale = np.ones(n)
        for k, idx in ix.by_kind.items():
            ar, wh = NOISE.get(k, (0.0, 0.01))
            self.sig_ar[idx], self.sig_w[idx] = ar, wh
            kd = self.kinds[k]
            self.lo[idx], self.hi[idx] = kd.min, kd.max
            self.scale[idx] = 10.0 ** DECIMALS.get(k, 3)
        self.phi = float(np.exp(-dt / 1800.0))
        self.z = rng.standard_normal(n)  # AR state
        self.per = rng.uniform(0, 1, n)  # a per-sensor uniform for static offsets
        self.per2 = rng.normal(0, 1, n)
        # roads
        segs = ix.of_type("road_segment")
        self.seg_pos = {a.ids[i]: p for p, i in enumerate(segs)}
        self.seg_vf = np.array([a.props[i]["free_speed_kmh"] for i in segs], dtype=float)
        self.seg_lanes = np.array([a.props[i]["lanes"] for i in segs], dtype=float)
        cls = np.array([a.props[i]["road_class"] for i in segs])
        self.seg_load = np.where(cls == "expressway", 0.52, np.where(cls == "arterial", 0.48, 0.36)) * rng.uniform(0.7, 1.2, len(segs))
        self.seg_x, self.seg_y = a.x[segs], a.y[segs]
        self.sensor_seg = np.array([self.seg_pos.get(x, -1) for x in ix.sensors.asset_id], dtype=np.int64)
        # ponds: low spots and tunnels
        ponds = np.concatenate([ix.of_type("low_spot"), ix.of_type("tunnel")])
        self.pond_pos = {a.ids[i]: p for p, i in enumerate(ponds)}
        self.pond_x, self.pond_y = a.x[ponds], a.y[ponds]
        self.pond_runoff = np.array([a.props[i].get("runoff_factor", 2.0) for i in ponds], dtype=float)
        self.pond_drain = np.array([a.props[i].get("drain_m_per_h", 0.6) for i in ponds], dtype=float)
        cat_ids = [a.ids[i] for i in ix.of_type("catchment")]
        self.cat_pos = {c: p for p, c in enumerate(cat_ids)}
        self.cat_x, self.cat_y = a.x[ix.of_type("catchment")], a.y[ix.of_type("catchment")]
        dps_of_cat = {}
        for c in cat_ids:
            par = ix.parents(c, "drains")
            dps_of_cat[c] = a.index(par[0]) if par else -1
        self.cat_cap = np.array([plan.dps_capacity.get(dps_of_cat[c], 1.0) for c in cat_ids])
        pond_cat = []
        for i in ponds:
            par = ix.parents(a.ids[i], "contains")
            pond_cat.append(self.cat_pos.get(par[0], -1) if par else -1)
        self.pond_cat = np.array(pond_cat, dtype=np.int64)
        weak = self.pond_cat >= 0
        self.pond_drain[weak] *= np.where(self.cat_cap[self.pond_cat[weak]] < 1, 0.4, 1.0)
        is_tunnel = np.array([a.types[i] == "tunnel" for i in ponds])
        self.pond_drain[is_tunnel] = 0.5  # tunnels have their own sump pumps
        self.pond_runoff[is_tunnel] = 3.0
        self.pond_S = np.zeros(len(ponds))
        self.cat_S = np.zeros(len(cat_ids))
        self.sensor_pond = np.array([self.pond_pos.get(x, -1) for x in ix.sensors.asset_id], dtype=np.int64)
        seg_pond: dict[int, list[int]] = {}
        for i in ix.of_type("low_spot"):
            for sname in ix.children(a.ids[i], "floods"):
                seg_pond.setdefault(self.seg_pos[sname], []).append(self.pond_pos[a.ids[i]])
        self.flood_seg = np.array(sorted(seg_pond), dtype=np.int64)
        self.flood_pond = np.array([seg_pond[s][0] for s in sorted(seg_pond)], dtype=np.int64)
        # catchment of DPS / river gauges
        def cat_of_asset(aid: str) -> int:
            t = a.types[a.index(aid)]
            if t == "drainage_pumping_station":
                ch = ix.children(aid, "drains")
                return self.cat_pos.get(ch[0], -1) if ch else -1
            if t == "river_gauge":
                par = ix.parents(aid, "discharges_to")
                return cat_of_asset(par[0]) if par else -1
            return -1
        self.sensor_cat = np.array([cat_of_asset(x) if x and a.types[a.index(x)] in ("drainage_pumping_station", "river_gauge") else -1
                                    for x in ix.sensors.asset_id], dtype=np.int64)
        # power
        areas = ix.of_type("power_area")
        self.area_pos = {a.ids[i]: p for p, i in enumerate(areas)}
        self.area_peak = np.array([a.props[i]["peak_mw"] for i in areas], dtype=float)
        subs = ix.of_type("substation")
        self.sub_pos = {a.ids[i]: p for p, i in enumerate(subs)}
        self.sub_rated = np.array([a.props[i]["rated_mw"] for i in subs], dtype=float)
        self.area_sub = np.zeros(len(areas), dtype=np.int64)
        self.feeder_area: dict[str, int] = {}
        for i in ix.of_type("feeder"):
            fid = a.ids[i]
            ar = ix.children(fid, "feeds")
            sb = ix.parents(fid, "feeds")
            if ar and sb:
                self.feeder_area[fid] = self.area_pos[ar[0]]
                self.area_sub[self.area_pos[ar[0]]] = self.sub_pos[sb[0]]
        self.sensor_area = np.array([self.feeder_area.get(x, -1) for x in ix.sensors.asset_id], dtype=np.int64)
        self.sensor_sub = np.array([self.sub_pos.get(x, -1) for x in ix.sensors.asset_id], dtype=np.int64)
        self.eq_T = None  # transformer temperature state per sensor (set on first block)
        # water
        zones = ix.of_type("pressure_zone")
        self.zone_pos = {a.ids[i]: p for p, i in enumerate(zones)}
        self.zone_p0 = np.array([a.props[i]["base_pressure_mpa"] for i in zones], dtype=float)
        self.sensor_zone = np.array([self.zone_pos.get(x, -1) for x in ix.sensors.asset_id], dtype=np.int64)
        # overload multipliers need the noise-free baseline; computed lazily per incident
        self._overload = self._prepare_overload()
        self.r_centre = np.hypot(ix.sx, ix.sy)

    # ------------------------------------------------------------------ helpers
    def _area_load_base(self, steps: np.ndarray) -> np.ndarray:
        w = self.w
        h, d = w.hour[steps], w.dow[steps]
        shape = 0.45 + 0.55 * power_profile(h, d)
        heat = 1 + 0.022 * np.clip(w.temp[steps] - 28.0, 0, None)
        return (shape * heat)[:, None] * self.area_peak[None, :]

    def _prepare_overload(self) -> list[dict]:
        out = []
        for inc in self.plan.incidents:
            if inc.type != "substation_overload":
                continue
            sp = self.sub_pos[inc.params["substation"]]
            steps = np.arange(inc.start, inc.end)
            if len(steps) == 0:
                continue
            base = self._area_load_base(steps)[:, self.area_sub == sp].sum(1)
            m = inc.params["target_ratio"] * self.sub_rated[sp] / max(base.max(), 1e-6)
            out.append({"sub": sp, "start": inc.start, "end": inc.end, "m": max(m, 1.0),
                        "trip_area": self.feeder_area.get(inc.params["trip_feeder"], -1),
                        "trip_start": inc.params["trip_start"], "trip_end": inc.params["trip_end"]})
        return out

    def _area_load(self, steps: np.ndarray) -> np.ndarray:
        L = self._area_load_base(steps)
        tt = steps[:, None].astype(float)
        ramp_steps = 2700.0 / self.dt
        for ov in self._overload:
            cols = self.area_sub == ov["sub"]
            r = ramp(tt, ov["start"], ov["end"], ramp_steps / 2, ramp_steps / 2)
            L[:, cols] *= 1 + (ov["m"] - 1) * r
            if ov["trip_area"] >= 0:
                off = (steps >= ov["trip_start"]) & (steps < ov["trip_end"])
                L[off, ov["trip_area"]] = 0.0
        return L

    # ------------------------------------------------------------------ the block
    def block(self, k0: int, T: int) -> tuple[np.ndarray, np.ndarray]:
        """(values T×N canonical, rain_1h helper T×N or empty) for steps k0..k0+T-1."""
        ix, w = self.ix, self.w
        steps = np.arange(k0, k0 + T)
        rng = stream(self.seed, "model", "block", k0)
        # AR(1) noise for all sensors, advanced step by step over vectors
        Z = np.empty((T, self.n))
        eps = rng.standard_normal((T, self.n), dtype=np.float32)
        c = np.sqrt(1 - self.phi**2)
        z = self.z
        for i in range(T):
            z = self.phi * z + c * eps[i]
            Z[i] = z
        self.z = z
        Wn = rng.standard_normal((T, self.n), dtype=np.float32)
        V = np.empty((T, self.n))
        h, dow = w.hour[steps], w.dow[steps]
        ctx = {"steps": steps, "h": h, "dow": dow, "Z": Z, "W": Wn, "rng": rng, "T": T}
        # shared physical states for this block
        ctx["road_k"] = self._roads(ctx)
        for kind, idx in ix.by_kind.items():
            fn = getattr(self, "_k_" + kind, None)
            base = fn(ctx, idx) if fn else self._generic(ctx, idx)
            ar, wh = self.sig_ar[idx], self.sig_w[idx]
            if kind in LOG_KINDS:
                base = base * np.exp(ar * Z[:, idx] + wh * Wn[:, idx])
            elif kind not in ("elevator_status", "rainfall"):
                base = base + ar * Z[:, idx] + wh * Wn[:, idx]
            V[:, idx] = base
        self._events(V, steps)
        np.clip(V, self.lo, self.hi, out=V)
        return V, ctx

    # ------------------------------------------------------------------ physical states
    def _rain_at(self, steps, x, y) -> np.ndarray:
        return self.w.rain(steps, x, y)

    def _roads(self, ctx) -> np.ndarray:
        steps, T = ctx["steps"], ctx["T"]
        # ponding at low spots and tunnels, and catchment storage, advanced step by step
        rain_p = self._rain_at(steps, self.pond_x, self.pond_y)
        rain_c = self._rain_at(steps, self.cat_x, self.cat_y)
        dt_h = self.dt / 3600.0
        depth = np.empty((T, len(self.pond_S)))
        cat = np.empty((T, len(self.cat_S)))
        S, C = self.pond_S, self.cat_S
        cap_c = 40.0 * self.cat_cap  # mm/h of runoff a catchment's pumps remove
        for i in range(T):
            S = np.maximum(0.0, S + (rain_p[i] * self.pond_runoff / 1000.0 - self.pond_drain) * dt_h)
            C = np.maximum(0.0, C + (rain_c[i] * 0.7 - cap_c) * dt_h)
            depth[i], cat[i] = S, C
        self.pond_S, self.cat_S = S, C
        ctx["pond_depth"], ctx["cat_store"], ctx["rain_c"] = depth, cat, rain_c
        # road density k in [0, 1]: demand, rain, ponding, incidents
        dem = traffic_demand(ctx["h"], ctx["dow"])
        k = dem[:, None] * self.seg_load[None, :]
        rain_s = self._rain_at(steps, self.seg_x, self.seg_y)
        k = k + 0.1 * np.tanh(rain_s / 20.0)
        if len(self.flood_seg):
            d = depth[:, self.flood_pond]
            k[:, self.flood_seg] = np.maximum(k[:, self.flood_seg], 0.95 * np.clip((d - 0.05) / 0.25, 0, 1))
        for inc in self.plan.incidents:
            if inc.type != "traffic_accident":
                continue
            onset = inc.params["onset_per_hop_s"] / self.dt
            for sname, hop in inc.params["hops"].items():
                target = {0: 0.9, 1: 0.78, 2: 0.62, 3: 0.5}[hop]
                r = ramp(steps.astype(float), inc.start + hop * onset, inc.end, 2.0 * 60 / self.dt + hop, 1200.0 / self.dt)
                p = self.seg_pos[sname]
                k[:, p] = np.maximum(k[:, p], target * r)
        ctx["rain_seg"] = rain_s
        return np.clip(k, 0.0, 0.97)

    # ------------------------------------------------------------------ kinds
    def _generic(self, ctx, idx):
        kd = self.kinds[self.ix.kind[idx[0]]]
        mid = kd.min + 0.3 * (kd.max - kd.min)
        self.sig_w[idx] = 0.01 * (kd.max - kd.min)
        return np.broadcast_to(mid + 0.05 * (kd.max - kd.min) * self.per2[idx], (ctx["T"], len(idx))).copy()

    def _k_water_pressure(self, ctx, idx):
        z = self.sensor_zone[idx]
        p0 = np.where(z >= 0, self.zone_p0[np.maximum(z, 0)], 0.3)
        elev = np.clip(0.012 * self.per2[idx], -0.025, 0.025)
        v = (p0 + elev)[None, :] - 0.06 * water_demand(ctx["h"])[:, None]
        tt = ctx["steps"][:, None].astype(float)
        for inc in self.plan.incidents:
            if inc.type != "water_main_burst":
                continue
            ps = inc.params["pressure_sensors"]
            pos = np.searchsorted(idx, ps)
            r = ramp(tt, inc.start + inc.params["delay"][None, :], inc.end, 4.0 * 60 / self.dt, 25.0 * 60 / self.dt)
            v[:, pos] = v[:, pos] * (1 - r) + inc.params["p_low"][None, :] * r
        return v

    def _k_water_flow(self, ctx, idx):
        a, ix = self.ix.assets, self.ix
        types = ix.asset_type[idx]
        dem = water_demand(ctx["h"])[:, None]
        base = np.where(types == "pump_station", 3000 + 6000 * self.per[idx], 800 + 2200 * self.per[idx])
        v = base[None, :] * (0.45 + 0.8 * dem)
        dps = types == "drainage_pumping_station"
        if dps.any():
            cats = self.sensor_cat[idx[dps]]
            store = ctx["cat_store"][:, np.maximum(cats, 0)]
            capf = self.cat_cap[np.maximum(cats, 0)]
            cap = np.array([a.props[ix.asset_of[j]].get("capacity_m3_per_s", 10.0) for j in idx[dps]]) * 3600.0
            v[:, dps] = 150.0 + cap[None, :] * capf[None, :] * np.clip(store / 8.0, 0, 1)
        tt = ctx["steps"][:, None].astype(float)
        for inc in self.plan.incidents:
            if inc.type != "water_main_burst":
                continue
            for key, gain in (("main_flow", 1.6), ("pump_flow", 0.45)):
                sel = inc.params[key]
                if len(sel):
                    pos = np.searchsorted(idx, sel)
                    r = ramp(tt, inc.start, inc.end, 3.0 * 60 / self.dt, 10.0 * 60 / self.dt)
                    v[:, pos] *= 1 + gain * r
        return v

    def _k_turbidity(self, ctx, idx):
        v = np.broadcast_to(0.12 + 0.3 * self.per[idx], (ctx["T"], len(idx))).copy()
        tt = ctx["steps"][:, None].astype(float)
        for inc in self.plan.incidents:
            if inc.type != "water_main_burst" or not len(inc.params["turbidity"]):
                continue
            pos = np.searchsorted(idx, inc.params["turbidity"])
            during = 0.4 * ramp(tt, inc.start, inc.end, 10 * 60 / self.dt, 30 * 60 / self.dt)
            after = np.where(tt >= inc.end, inc.params["turbidity_peak"] * np.exp(-(tt - inc.end) * self.dt / 5400.0), 0.0)
            after = after * np.clip((tt - inc.end + 1) / max(1.0, 600 / self.dt), 0, 1)
            v[:, pos] += during + after
        return v

    def _k_residual_chlorine(self, ctx, idx):
        at_ps = self.ix.asset_type[idx] == "pump_station"
        base = np.where(at_ps, 0.8 + 0.3 * self.per[idx], 0.3 + 0.4 * self.per[idx])
        return base[None, :] * (1 - 0.15 * water_demand(ctx["h"])[:, None])

    def _k_waterlogging_depth(self, ctx, idx):
        """Standing water at ponding gauges (low spots, tunnels): the pond model's depth."""
        v = np.zeros((ctx["T"], len(idx)))
        pond = self.sensor_pond[idx]
        m = pond >= 0
        v[:, m] = ctx["pond_depth"][:, pond[m]]
        return v

    def _k_water_level(self, ctx, idx):
        """River stage and wet-well levels (ponding gauges report ``waterlogging_depth``)."""
        T = ctx["T"]
        types = self.ix.asset_type[idx]
        v = self._k_waterlogging_depth(ctx, idx)  # a water_level sensor on a pond (a user's city): its depth
        cat = self.sensor_cat[idx]
        store = ctx["cat_store"][:, np.maximum(cat, 0)]
        well = types == "drainage_pumping_station"
        v[:, well] = 0.8 + 0.4 * self.per[idx[well]] + 2.5 * np.tanh(store[:, well] / 10.0)
        riv = types == "river_gauge"
        if riv.any():
            a = self.ix.assets
            normal = np.array([a.props[self.ix.asset_of[j]].get("normal_level_m", 2.8) for j in idx[riv]])
            tide = 0.35 * np.sin(2 * np.pi * self.w.t[ctx["steps"]] / 44712.0 + 1.3)
            v[:, riv] = normal[None, :] + tide[:, None] + 1.6 * np.tanh(store[:, riv] / 25.0)
        return v

    def _k_rainfall(self, ctx, idx):
        ix = self.ix
        r = self._rain_at(ctx["steps"], ix.sx[idx], ix.sy[idx]) * self.dt / 3600.0
        r = r * (1 + 0.05 * ctx["W"][:, idx])
        return np.where(r < 0.05, 0.0, np.round(r * 10) / 10)

    def _air_base(self, ctx, idx):
        mix = self.w.mixing[ctx["steps"]][:, None]
        traffic = traffic_demand(ctx["h"], ctx["dow"])[:, None]
        off = np.exp(0.2 * self.per2[idx])[None, :]
        return mix, traffic, off

    def _k_pm25(self, ctx, idx):
        mix, traffic, off = self._air_base(ctx, idx)
        return (22.0 * mix + 8.0 * traffic) * off

    def _k_pm10(self, ctx, idx):
        mix, traffic, off = self._air_base(ctx, idx)
        return (36.0 * mix + 16.0 * traffic) * off

    def _k_no2(self, ctx, idx):
        mix, traffic, off = self._air_base(ctx, idx)
        return (16.0 * mix + 32.0 * traffic) * off

    def _k_so2(self, ctx, idx):
        mix, _, off = self._air_base(ctx, idx)
        return 7.0 * mix * off

    def _k_co(self, ctx, idx):
        mix, traffic, off = self._air_base(ctx, idx)
        tunnel = (self.ix.asset_type[idx] == "tunnel")[None, :]
        return np.where(tunnel, 1.2 + 6.5 * traffic, (0.45 * mix + 0.35 * traffic) * off)

    def _k_o3(self, ctx, idx):
        temp = self.w.temp[ctx["steps"]]
        drive = sun(ctx["h"]) * np.clip((temp - 22.0) / 10.0, 0.2, 1.4)
        return (35.0 + 115.0 * drive)[:, None] * np.exp(0.12 * self.per2[idx])[None, :]

    def _k_noise(self, ctx, idx):
        h = ctx["h"]
        traffic = traffic_demand(h, ctx["dow"])[:, None]
        act = activity(h)[:, None]
        v = 47.0 + 14.0 * traffic + 5.0 * act + 3.0 * self.per2[idx][None, :]
        site = (self.ix.asset_type[idx] == "construction_site")[None, :]
        working = ((h >= 7.0) & (h < 18.0) & (ctx["dow"] < 6))[:, None]
        return np.where(site & working, v + 12.0, v)

    def _speed_like(self, ctx, idx):
        seg = self.sensor_seg[idx]
        return ctx["road_k"][:, np.maximum(seg, 0)], np.maximum(seg, 0)

    def _k_traffic_speed(self, ctx, idx):
        k, seg = self._speed_like(ctx, idx)
        return self.seg_vf[seg][None, :] * (1 - k) * (1 - 0.08 * np.tanh(ctx["rain_seg"][:, seg] / 15.0))

    def _k_traffic_flow(self, ctx, idx):
        k, seg = self._speed_like(ctx, idx)
        return self.seg_lanes[seg][None, :] * 1900.0 * 4 * k * (1 - k) + 20.0

    def _k_road_occupancy(self, ctx, idx):
        k, _ = self._speed_like(ctx, idx)
        return 2.0 + 93.0 * k

    def _k_power_load(self, ctx, idx):
        L = self._area_load(ctx["steps"])
        ctx["area_load"] = L
        v = np.zeros((ctx["T"], len(idx)))
        ar = self.sensor_area[idx]
        m = ar >= 0
        v[:, m] = L[:, ar[m]]
        sb = self.sensor_sub[idx]
        ms = sb >= 0
        if ms.any():
            sub_load = np.zeros((ctx["T"], len(self.sub_rated)))
            for s in range(len(self.sub_rated)):
                sub_load[:, s] = L[:, self.area_sub == s].sum(1)
            ctx["sub_load"] = sub_load
            v[:, ms] = sub_load[:, sb[ms]]
        return np.maximum(v, 0.0)

    def _k_equipment_temperature(self, ctx, idx):
        if "area_load" not in ctx:
            self._k_power_load(ctx, idx[:0])
        L = ctx["area_load"]
        sb, ar = self.sensor_sub[idx], self.sensor_area[idx]
        ratio = np.zeros((ctx["T"], len(idx)))
        if (sb >= 0).any():
            sub_load = ctx.get("sub_load")
            if sub_load is None:
                sub_load = np.stack([L[:, self.area_sub == s].sum(1) for s in range(len(self.sub_rated))], 1)
            ratio[:, sb >= 0] = sub_load[:, sb[sb >= 0]] / self.sub_rated[sb[sb >= 0]]
        if (ar >= 0).any():
            ratio[:, ar >= 0] = L[:, ar[ar >= 0]] / self.area_peak[ar[ar >= 0]] * 0.6
        amb = self.w.temp[ctx["steps"]][:, None]
        target = amb + np.where((sb >= 0)[None, :], 12.0 + 40.0 * ratio**2, 5.0 + 15.0 * ratio**2)
        a = 1 - np.exp(-self.dt / 1800.0)
        if self.eq_T is None or len(self.eq_T) != len(idx):
            self.eq_T = target[0].copy()
        out = np.empty_like(target)
        e = self.eq_T
        for i in range(ctx["T"]):
            e = e + a * (target[i] - e)
            out[i] = e
        self.eq_T = e
        return out

    def _k_temperature(self, ctx, idx):
        uhi = 1.5 * np.exp(-self.r_centre[idx] / 5000.0)
        return self.w.temp[ctx["steps"]][:, None] + uhi[None, :] + 0.3 * self.per2[idx][None, :]

    def _k_humidity(self, ctx, idx):
        return self.w.humidity[ctx["steps"]][:, None] + 2.0 * self.per2[idx][None, :]

    def _k_wind_speed(self, ctx, idx):
        f = 0.6 + 0.7 * self.per[idx]
        return np.maximum(0.0, self.w.wind[ctx["steps"]][:, None] * f[None, :])

    def _k_gas_concentration(self, ctx, idx):
        v = np.broadcast_to(0.3 + 1.2 * self.per[idx], (ctx["T"], len(idx))).copy()
        tt = ctx["steps"][:, None].astype(float)
        for inc in self.plan.incidents:
            if inc.type != "gas_leak" or not len(inc.sensors):
                continue
            pos = np.searchsorted(idx, inc.sensors)
            r = ramp(tt, inc.start, inc.end, 15 * 60 / self.dt, 10 * 60 / self.dt)
            wob = 1 + 0.15 * ctx["W"][:, inc.sensors]
            v[:, pos] += inc.params["peak"][None, :] * r * wob
        return np.maximum(v, 0.0)

    def _k_manhole_tilt(self, ctx, idx):
        v = np.broadcast_to(0.3 + 2.7 * self.per[idx], (ctx["T"], len(idx))).copy()
        tt = ctx["steps"][:, None].astype(float)
        for inc in self.plan.incidents:
            if inc.type != "manhole_displaced":
                continue
            pos = np.searchsorted(idx, inc.sensors)
            on = (tt >= inc.start) & (tt < inc.end)
            v[:, pos] = np.where(on, inc.params["tilt"], v[:, pos])
        return v

    def _k_crowd_density(self, ctx, idx):
        a, ix = self.ix.assets, self.ix
        h, we = ctx["h"], (ctx["dow"] >= 5)
        kinds = np.array([a.props[ix.asset_of[j]].get("place_type", "plaza") for j in idx])
        metro = 0.15 + np.where(we, 0.6 * bump(h, 15, 3), 1.3 * bump(h, 8.4, 0.9) + 1.1 * bump(h, 18.1, 1.1))
        plaza = 0.08 + np.where(we, 1.2, 0.8) * bump(h, 20.0, 2.0)
        mall = 0.1 + np.where(we, 1.3, 0.8) * bump(h, 15.5, 3.2)
        scenic = 0.1 + np.where(we, 1.5, 0.8) * bump(h, 15.0, 3.0)
        table = {"metro_station": metro, "plaza": plaza, "mall": mall, "scenic_spot": scenic}
        v = np.empty((ctx["T"], len(idx)))
        for name, series in table.items():
            m = kinds == name
            v[:, m] = series[:, None]
        return v * (0.6 + 0.7 * self.per[idx])[None, :]

    def _k_elevator_status(self, ctx, idx):
        return np.zeros((ctx["T"], len(idx)))

    # ------------------------------------------------------------------ background events
    def _events(self, V: np.ndarray, steps: np.ndarray) -> None:
        tt = steps[:, None]
        for ev in self.plan.background:
            if ev.end <= steps[0] or ev.start > steps[-1] or not len(ev.sensors):
                continue
            on = ((tt >= ev.start) & (tt < ev.end))[:, 0]
            if ev.type.startswith("elevator_"):
                V[on, ev.sensors[0]] = ev.params["code"]
            elif ev.type == "night_construction_noise":
                V[np.ix_(on, ev.sensors)] += ev.params["extra_db"]
