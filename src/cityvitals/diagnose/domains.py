"""What a symptom is about: the domain of a sensor kind or report category, and its incident type.

Why a table: grouping links symptoms only within one domain (a pressure drop and a traffic
jam at the same corner are not one incident), and the incident type a duty officer reads
follows from the domains of its symptoms.

>>> domain_of_kind("water_pressure"), domain_of_report("gas_smell")
('water', 'gas')
"""

from __future__ import annotations

KIND_DOMAIN: dict[str, str] = {
    "water_pressure": "water", "water_flow": "water", "turbidity": "water", "residual_chlorine": "water",
    "water_level": "drainage", "waterlogging_depth": "drainage", "rainfall": "weather", "temperature": "weather",
    "humidity": "weather",
    "wind_speed": "weather", "pm25": "air", "pm10": "air", "o3": "air", "no2": "air", "so2": "air", "co": "air",
    "noise": "noise", "traffic_speed": "road", "traffic_flow": "road", "road_occupancy": "road",
    "power_load": "power", "equipment_temperature": "power", "gas_concentration": "gas",
    "manhole_tilt": "structure", "crowd_density": "crowd", "elevator_status": "elevator",
}
REPORT_DOMAIN: dict[str, str] = {
    "water_outage": "water", "flooding": "drainage", "night_noise": "noise", "gas_smell": "gas",
    "manhole": "structure", "traffic_accident": "road", "power_outage": "power", "air_quality": "air",
    "elevator_entrapment": "elevator",
}
# domains whose symptoms are linked by the dependency graph (else by distance, or city-wide)
GRAPH_DOMAINS = {"water", "power", "drainage", "road"}
SPATIAL_DOMAINS = {"gas", "structure", "noise", "crowd", "elevator", "drainage", "road"}
CITYWIDE_DOMAINS = {"weather", "air"}
# relations followed upwards (from dependent to supplier) when looking for causes
UP_RELATIONS = {"feeds", "supplies", "contains", "drains", "floods", "discharges_to", "carries", "hosts"}

INCIDENT_TYPE: dict[str, str] = {
    "water": "water_outage", "drainage": "waterlogging", "power": "power_outage", "road": "traffic_congestion",
    "gas": "gas_leak", "air": "pollution_episode", "structure": "manhole_displaced", "noise": "noise_nuisance",
    "crowd": "crowding", "elevator": "elevator_fault", "weather": "severe_weather",
}
WEATHER_TYPE = {"rainfall": "rainstorm", "temperature": "heatwave", "wind_speed": "strong_wind", "humidity": "severe_weather"}

# how likely an asset type is to be the thing that broke (zones and areas are places, not parts)
TYPE_PRIOR: dict[str, float] = {
    "water_main": 1.0, "pump_station": 0.8, "water_source": 0.5, "pressure_zone": 0.35, "water_quality_point": 0.4,
    "substation": 1.0, "feeder": 0.85, "power_area": 0.3, "catchment": 0.3, "drainage_pumping_station": 0.9,
    "low_spot": 0.8, "river_gauge": 0.3, "road_segment": 1.0, "bridge": 0.6, "tunnel": 0.6, "manhole": 1.0,
    "gas_gate_station": 0.5, "gas_regulator": 0.8, "gas_main": 1.0, "construction_site": 1.0, "building": 1.0,
    "hotspot": 0.9, "air_station": 0.2, "weather_station": 0.2, "noise_point": 0.5, "community": 0.1,
}


def domain_of_kind(kind: str | None) -> str:
    return KIND_DOMAIN.get(kind or "", "other")


def domain_of_report(category: str | None) -> str | None:
    """None for ordinary service requests (parking, rubbish, ...) that are not symptoms."""
    return REPORT_DOMAIN.get(category or "")

# asset types that can be the cause of a pattern in each domain
DOMAIN_ASSETS: dict[str, set[str]] = {
    "water": {"water_source", "pump_station", "water_main", "pressure_zone", "water_quality_point"},
    "power": {"substation", "feeder", "power_area"},
    "drainage": {"drainage_pumping_station", "catchment", "low_spot", "river_gauge", "tunnel"},
    "road": {"road_segment", "bridge", "tunnel", "low_spot"},
    "gas": {"gas_gate_station", "gas_regulator", "gas_main"},
    "structure": {"manhole"}, "noise": {"construction_site", "noise_point"}, "crowd": {"hotspot"},
    "elevator": {"building"}, "weather": {"drainage_pumping_station"}, "air": {"tunnel", "construction_site"},
}
