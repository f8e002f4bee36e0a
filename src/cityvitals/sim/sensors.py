"""Sensors of every registered kind, placed on the assets they watch.

A pressure sensor sits in a pressure zone, a ponding gauge at a low-lying spot, a
tilt sensor on a manhole cover, loop detectors on road segments, and so on; the
``asset_id`` column ties each sensor to its asset so scenarios and diagnose can follow
the dependency graph. A share of sensors reports in an accepted non-canonical unit
(kPa, cm, kW, km/h) so the ingest stage's conversions are exercised. Kinds added to the
registry that the simulator does not model get generic sensors in communities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from cityvitals.registry import load_kinds
from cityvitals.sim._rng import stream
from cityvitals.sim.geo import points_in

SHARES: dict[str, float] = {
    "water_pressure": 0.08, "water_flow": 0.03, "turbidity": 0.015, "residual_chlorine": 0.015,
    "water_level": 0.05, "rainfall": 0.02,
    "pm25": 0.03, "pm10": 0.02, "o3": 0.015, "no2": 0.015, "so2": 0.01, "co": 0.015,
    "noise": 0.06, "traffic_speed": 0.09, "traffic_flow": 0.07, "road_occupancy": 0.05,
    "power_load": 0.06, "equipment_temperature": 0.04,
    "temperature": 0.025, "humidity": 0.02, "wind_speed": 0.015,
    "gas_concentration": 0.06, "manhole_tilt": 0.12, "crowd_density": 0.02, "elevator_status": 0.08,
}
GENERIC_SHARE = 0.01

# kinds carved out of another kind's placement: (parent kind, asset types). The parent's
# sensors on those assets report the carved kind instead, so the city (assets, sensor
# ids, positions, random streams) is the same as before the split.
CARVED: dict[str, tuple[str, tuple[str, ...]]] = {
    "waterlogging_depth": ("water_level", ("low_spot", "tunnel")),  # ponding depth vs river/wet-well stage
}

PREFIX = {
    "water_pressure": "WP", "water_flow": "WF", "turbidity": "TB", "residual_chlorine": "CL", "water_level": "WL",
    "rainfall": "RF", "pm25": "P25", "pm10": "P10", "o3": "O3", "no2": "NO2", "so2": "SO2", "co": "CO",
    "noise": "NS", "traffic_speed": "TS", "traffic_flow": "TF", "road_occupancy": "TO", "power_load": "PL",
    "equipment_temperature": "ET", "temperature": "TA", "humidity": "RH", "wind_speed": "WD",
    "gas_concentration": "GS", "manhole_tilt": "MT", "crowd_density": "CD", "elevator_status": "EV",
}

DEPARTMENT = {
    "water_pressure": "water", "water_flow": "water", "turbidity": "water", "residual_chlorine": "water",
    "water_level": "drainage", "rainfall": "meteorology", "pm25": "environment", "pm10": "environment",
    "o3": "environment", "no2": "environment", "so2": "environment", "co": "environment", "noise": "environment",
    "traffic_speed": "traffic", "traffic_flow": "traffic", "road_occupancy": "traffic", "power_load": "power",
    "equipment_temperature": "power", "temperature": "meteorology", "humidity": "meteorology",
    "wind_speed": "meteorology", "gas_concentration": "gas", "manhole_tilt": "municipal",
    "crowd_density": "public_security", "elevator_status": "market_supervision",
}

# (accepted unit, share of sensors of the kind reporting in it)
ALT_UNITS: dict[str, tuple[str, float]] = {
    "water_pressure": ("kPa", 0.2), "water_level": ("cm", 0.1), "power_load": ("kW", 0.3), "wind_speed": ("km/h", 0.1),
}

# where each kind's sensors go: asset types tried in order (first fills first)
PLACEMENT: dict[str, tuple[str, ...]] = {
    "water_pressure": ("pressure_zone",),
    "water_flow": ("water_main", "pump_station", "drainage_pumping_station"),
    "turbidity": ("pump_station", "water_quality_point"),
    "residual_chlorine": ("pump_station", "water_quality_point"),
    "water_level": ("low_spot", "drainage_pumping_station", "river_gauge", "tunnel"),
    "rainfall": ("weather_station",),
    "pm25": ("air_station",), "pm10": ("air_station",), "o3": ("air_station",), "no2": ("air_station",),
    "so2": ("air_station",), "co": ("tunnel", "air_station"),
    "noise": ("construction_site", "noise_point"),
    "traffic_speed": ("road_segment",), "traffic_flow": ("road_segment",), "road_occupancy": ("road_segment",),
    "power_load": ("substation", "feeder"), "equipment_temperature": ("substation", "feeder"),
    "temperature": ("weather_station", "air_station"), "humidity": ("weather_station", "air_station"),
    "wind_speed": ("weather_station", "air_station"),
    "gas_concentration": ("gas_regulator", "gas_main"), "manhole_tilt": ("manhole",),
    "crowd_density": ("hotspot",), "elevator_status": ("building",),
}
# sensors per asset on the first pass (construction sites get two noise meters)
_FIRST_PASS = {("noise", "construction_site"): 2}


def kind_counts(n: int) -> dict[str, int]:
    """Sensors per kind for a city of ``n`` sensors: every registered kind gets at least 3.

    >>> c = kind_counts(5000)
    >>> c["water_pressure"], sum(c.values()) >= 5000 - 30
    (400, True)
    """
    kinds = load_kinds()
    out: dict[str, int] = {}
    for k in kinds:
        if k in CARVED:  # counted in (and placed with) its parent kind
            continue
        out[k] = max(3, int(round(n * SHARES.get(k, GENERIC_SHARE))))
    return out


@dataclass
class Sensors:
    ids: np.ndarray
    kind: np.ndarray
    unit: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    department: np.ndarray
    installed: np.ndarray
    asset_id: np.ndarray

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame({
            "id": self.ids, "kind": self.kind, "unit": self.unit,
            "lon": np.round(self.lon, 7), "lat": np.round(self.lat, 7),
            "department": self.department, "installed": self.installed, "asset_id": self.asset_id,
        })

    def write(self, out: Path) -> dict[str, str]:
        self.frame().write_csv(out / "sensors.csv")
        return {"sensors": "sensors.csv"}

    @classmethod
    def read(cls, folder: Path) -> Sensors:
        df = pl.read_csv(folder / "sensors.csv", schema_overrides={"installed": pl.String, "asset_id": pl.String, "unit": pl.String})
        col = lambda c: df[c].to_numpy().astype(object) if df[c].dtype == pl.String else df[c].to_numpy()
        return cls(col("id"), col("kind"), col("unit"), df["lon"].to_numpy(), df["lat"].to_numpy(),
                   col("department"), col("installed"), np.array([x or "" for x in df["asset_id"].to_list()], dtype=object))


def place_sensors(city, seed: int, n: int) -> Sensors:
    """Place ``kind_counts(n)`` sensors on the city's assets; sensors are grouped by kind."""
    assets = city.assets
    counts = kind_counts(n)
    kinds = load_kinds()
    frame = city.frame
    ids, kind_col, unit_col, xs, ys, dept, inst, aid = [], [], [], [], [], [], [], []
    comm = city.communities
    for kind, cnt in counts.items():
        rng = stream(seed, "sensors", kind)
        types = PLACEMENT.get(kind, ())
        chosen: list[int] = []
        for t in types:
            pool = assets.of_type(t)
            if len(pool) == 0:
                continue
            per = _FIRST_PASS.get((kind, t), 1)
            take = np.repeat(pool, per)[: cnt - len(chosen)]
            chosen.extend(take.tolist())
            if len(chosen) >= cnt:
                break
        if types and len(chosen) < cnt:
            pool = np.concatenate([assets.of_type(t) for t in types])
            if kind == "water_pressure":  # extra pressure points go to zones by area
                area = np.array([assets.geoms[i].area for i in pool])
                extra = rng.choice(pool, cnt - len(chosen), p=area / area.sum())
            else:
                extra = rng.choice(pool, cnt - len(chosen))
            chosen.extend(extra.tolist())
        if types:
            idx = np.array(chosen, dtype=np.int64)
            x = assets.x[idx].copy()
            y = assets.y[idx].copy()
            # pressure points are spread over their zone; others sit at their asset
            for j, ai in enumerate(idx):
                if assets.types[ai] in ("pressure_zone",):
                    px, py = points_in(assets.geoms[ai], 1, rng)[0]
                    x[j], y[j] = px, py
                elif assets.types[ai] in ("gas_main", "water_main", "feeder"):
                    p = assets.geoms[ai].interpolate(float(rng.uniform(0.1, 0.9)), normalized=True)
                    x[j], y[j] = p.x, p.y
            x += rng.normal(0, 8, len(idx))
            y += rng.normal(0, 8, len(idx))
            a_ids = [assets.ids[i] for i in idx]
        else:  # a kind the simulator does not model: spread over communities
            ci = rng.choice(len(comm), cnt)
            pts = np.array([points_in(comm[c].geom, 1, rng)[0] for c in ci])
            x, y = pts[:, 0], pts[:, 1]
            a_ids = [""] * cnt
        # keep sensors inside the city
        inside = __import__("shapely").contains_xy(city.outline, x, y)
        x = np.where(inside, x, x * 0.98)
        y = np.where(inside, y, y * 0.98)
        lon, lat = frame.to_lonlat(x, y)
        k = kinds[kind]
        units = np.full(cnt, k.unit, dtype=object)
        if kind in ALT_UNITS and ALT_UNITS[kind][0] in k.accepts:
            alt, share = ALT_UNITS[kind]
            units[rng.uniform(size=cnt) < share] = alt
        prefix = PREFIX.get(kind, kind[:3].upper())
        ids.extend(f"{prefix}{i + 1:06d}" for i in range(cnt))
        kind_col.extend([kind] * cnt)
        unit_col.extend(units.tolist())
        xs.append(lon)
        ys.append(lat)
        dept.extend([DEPARTMENT.get(kind, "operations")] * cnt)
        days = rng.integers(0, 365 * 8, cnt)
        inst.extend((np.datetime64("2015-01-01") + days.astype("timedelta64[D]")).astype(str).tolist())
        aid.extend(a_ids)
    kind_arr = np.array(kind_col, dtype=object)
    atypes = np.array([assets.types[assets.index(a)] if a else "" for a in aid], dtype=object)
    for carved, (parent, types) in CARVED.items():
        if carved in kinds:
            kind_arr[(kind_arr == parent) & np.isin(atypes, types)] = carved
    return Sensors(
        np.array(ids, dtype=object), kind_arr, np.array(unit_col, dtype=object),
        np.concatenate(xs), np.concatenate(ys), np.array(dept, dtype=object), np.array(inst, dtype=object),
        np.array(aid, dtype=object),
    )
