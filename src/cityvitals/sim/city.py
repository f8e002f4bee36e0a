"""Generate a city: nested administrative polygons, population, assets and sensors.

The city lives in real longitude/latitude around a chosen centre (central Shanghai by
default). Districts, streets and communities are relaxed Voronoi cells of seeded points,
each level clipped to its parent, so the tree nests by construction. Population density
falls off from the centre with lognormal scatter. Assets and sensors are placed by
:mod:`cityvitals.sim.assets` and :mod:`cityvitals.sim.sensors`.

Everything is drawn from named streams of one seed, so a seed is a city.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from cityvitals.errors import InputError
from cityvitals.sim._rng import stream
from cityvitals.sim.geo import LocalFrame, blob, partition
from cityvitals.sim.names import place_name

DEFAULT_CENTRE = (121.47, 31.23)
CITY_FORMAT = 1

LAYER_FILES = {"district": "districts.geojson", "street": "streets.geojson", "community": "communities.geojson"}


@dataclass
class Unit:
    code: str
    name: str
    name_en: str
    level: str
    parent: str | None
    geom: BaseGeometry  # metric frame
    population: int = 0


@dataclass
class City:
    """A generated city in memory (geometry in the local metric frame)."""

    params: dict[str, Any]
    frame: LocalFrame
    outline: BaseGeometry
    units: dict[str, list[Unit]]
    assets: Any = None  # cityvitals.sim.assets.Assets
    sensors: Any = None  # cityvitals.sim.sensors.Sensors
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def communities(self) -> list[Unit]:
        return self.units["community"]


def parse_centre(text: str | None) -> tuple[float, float]:
    """``"121.47,31.23"`` → (lon, lat); the default is central Shanghai."""
    if not text:
        return DEFAULT_CENTRE
    try:
        lon, lat = (float(p) for p in text.split(","))
    except ValueError:
        raise InputError(f"--centre {text!r}: expected LON,LAT such as 121.47,31.23") from None
    if not (-180 <= lon <= 180 and -80 <= lat <= 80):
        raise InputError(f"--centre {text!r}: longitude must be in [-180, 180] and latitude in [-80, 80]")
    return lon, lat


def _density(r_m: np.ndarray) -> np.ndarray:
    """Residents per km² at distance r from the centre (central Shanghai-like)."""
    return 32_000 * np.exp(-r_m / 6_000) + 1_500


def generate_city(
    seed: int,
    *,
    districts: int = 7,
    centre: tuple[float, float] = DEFAULT_CENTRE,
    sensors: int = 5_000,
    resolution: int = 9,
) -> City:
    """Build the whole city in memory: layers, population, assets, sensors."""
    from cityvitals.sim.assets import build_assets
    from cityvitals.sim.sensors import place_sensors

    if districts < 1 or districts > 99:
        raise InputError(f"--districts {districts}: must be between 1 and 99")
    if sensors < 100:
        raise InputError(f"--sensors {sensors}: at least 100 sensors are needed to cover every kind")
    if not 5 <= resolution <= 12:
        raise InputError(f"--resolution {resolution}: H3 resolution must be between 5 and 12")
    frame = LocalFrame(*centre)
    area_km2 = 35.0 * districts
    radius = math.sqrt(area_km2 * 1e6 / math.pi)
    outline = blob(radius, stream(seed, "city", "outline"))

    used: set[str] = set()
    units: dict[str, list[Unit]] = {"district": [], "street": [], "community": []}
    rng_d = stream(seed, "city", "districts")
    for i, geom in enumerate(partition(outline, districts, rng_d)):
        zh, en = place_name(rng_d, "区", "District", used)
        units["district"].append(Unit(f"3101{i + 1:02d}", zh, en, "district", None, geom))
    for d in units["district"]:
        rng_s = stream(seed, "city", "streets", d.code)
        n_streets = int(rng_s.integers(4, 8))
        for j, geom in enumerate(partition(d.geom, n_streets, rng_s)):
            zh, en = place_name(rng_s, "街道", "Subdistrict", used)
            units["street"].append(Unit(f"{d.code}{j + 1:03d}", zh, en, "street", d.code, geom))
    for s in units["street"]:
        rng_c = stream(seed, "city", "communities", s.code)
        n_comm = int(rng_c.integers(5, 11))
        for k, geom in enumerate(partition(s.geom, n_comm, rng_c)):
            zh, en = place_name(rng_c, "居委会", "Community", used)
            units["community"].append(Unit(f"{s.code}{k + 1:03d}", zh, en, "community", s.code, geom))

    comm = units["community"]
    cent = shapely.centroid([c.geom for c in comm])
    r = np.hypot(shapely.get_x(cent), shapely.get_y(cent))
    area = shapely.area([c.geom for c in comm]) / 1e6
    scatter = stream(seed, "city", "population").lognormal(0.0, 0.35, len(comm))
    pops = np.round(area * _density(r) * scatter).astype(np.int64)
    for c, p in zip(comm, pops):
        c.population = int(p)
    by_street: dict[str, int] = {}
    for c in comm:
        by_street[c.parent] = by_street.get(c.parent, 0) + c.population
    for s in units["street"]:
        s.population = by_street.get(s.code, 0)
    by_district: dict[str, int] = {}
    for s in units["street"]:
        by_district[s.parent] = by_district.get(s.parent, 0) + s.population
    for d in units["district"]:
        d.population = by_district.get(d.code, 0)

    params = {
        "format": CITY_FORMAT,
        "seed": int(seed),
        "districts": int(districts),
        "centre": [float(centre[0]), float(centre[1])],
        "sensors": int(sensors),
        "resolution": int(resolution),
        "city_name": "Simulated City",
        "city_name_zh": "模拟市",
        "utc_offset_hours": 8,
        "area_km2": round(float(outline.area) / 1e6, 3),
        "population": int(sum(d.population for d in units["district"])),
        "counts": {k: len(v) for k, v in units.items()},
    }
    city = City(params, frame, outline, units)
    city.assets = build_assets(city, seed)
    city.sensors = place_sensors(city, seed, sensors)
    params["counts"]["assets"] = len(city.assets.ids)
    params["counts"]["edges"] = len(city.assets.edges)
    params["counts"]["sensors"] = len(city.sensors.ids)
    return city


# --------------------------------------------------------------------------- output


def _feature_collection(features: list[str]) -> str:
    return '{"type":"FeatureCollection","features":[\n' + ",\n".join(features) + "\n]}\n"


def _feature(geom_json: str, props: dict[str, Any]) -> str:
    return '{"type":"Feature","properties":' + json.dumps(props, ensure_ascii=False) + ',"geometry":' + geom_json + "}"


def write_city(city: City, out: Path | str) -> dict[str, str]:
    """Write the city's files into ``out``; returns {what: file name}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for level, fname in LAYER_FILES.items():
        units = city.units[level]
        geoms = city.frame.geom_to_lonlat(np.array([u.geom for u in units], dtype=object))
        gj = shapely.to_geojson(geoms)
        feats = []
        for u, g in zip(units, gj):
            props = {"name": u.name, "name_en": u.name_en, "code": u.code, "population": u.population}
            if u.parent:
                props["parent_code"] = u.parent
            feats.append(_feature(g, props))
        (out / fname).write_text(_feature_collection(feats), encoding="utf-8")
        written[level] = fname
    outline = city.frame.geom_to_lonlat(city.outline)
    (out / "city.geojson").write_text(
        _feature_collection([_feature(shapely.to_geojson(outline), {"name": city.params["city_name"], "name_zh": city.params["city_name_zh"]})]),
        encoding="utf-8",
    )
    written["outline"] = "city.geojson"
    written.update(city.assets.write(out, city.frame))
    written.update(city.sensors.write(out))
    (out / "city.json").write_text(json.dumps(city.params, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    written["params"] = "city.json"
    return written


def load_city(folder: Path | str) -> City:
    """Read a city folder written by :func:`write_city` back into memory."""
    from cityvitals.sim.assets import Assets
    from cityvitals.sim.sensors import Sensors

    folder = Path(folder)
    pfile = folder / "city.json"
    if not pfile.exists():
        raise InputError(f"{folder}: no city.json (run `cityvitals simulate city --out {folder}` first)")
    params = json.loads(pfile.read_text("utf-8"))
    frame = LocalFrame(*params["centre"])
    inv = lambda g: shapely.transform(g, lambda c: np.c_[frame.to_xy(c[:, 0], c[:, 1])])
    units: dict[str, list[Unit]] = {}
    for level, fname in LAYER_FILES.items():
        doc = json.loads((folder / fname).read_text("utf-8"))
        feats = doc["features"]
        geoms = inv(shapely.from_geojson([json.dumps(f["geometry"]) for f in feats]))
        units[level] = [
            Unit(f["properties"]["code"], f["properties"]["name"], f["properties"].get("name_en", ""), level,
                 f["properties"].get("parent_code"), g, int(f["properties"].get("population") or 0))
            for f, g in zip(feats, geoms)
        ]
    outline_doc = json.loads((folder / "city.geojson").read_text("utf-8"))
    outline = inv(shapely.from_geojson(json.dumps(outline_doc["features"][0]["geometry"])))
    city = City(params, frame, outline, units)
    city.assets = Assets.read(folder, frame)
    city.sensors = Sensors.read(folder)
    return city
