"""Per-sensor levels from the asset a sensor is mounted on (its rating, its class).

Why: some limits are not one number per kind. A substation's load is heavy at 80% of *its*
rated capacity, a road is congested below a share of *its* free-flow speed, a river gauge
warns at *its* warning level, and the catalogue's ponding depths apply to water-level
sensors at low spots and tunnels, not to pumping-station wells that always hold a metre.
The asset registry (``store.assets``; a sensor's ``meta.asset_id``) carries those ratings,
so the levels are derived from it per sensor; they override the kind's catalogue levels.

Rules (asset property -> levels attention / warning / alarm, direction):

* ``power_load`` on an asset with ``rated_mw``: 80%, 90%, 100% of it (heavy load, warning,
  overload), higher is worse;
* ``traffic_speed`` on a road with ``free_speed_kmh``: 33%, 27%, 20% of it (congestion
  bands as shares of free flow, GB/T 33171 style), lower is worse;
* ``water_level`` on an asset with ``warning_level_m`` (a river gauge): half-way from its
  ``normal_level_m``, the warning level, and half as far again above it;
* ``water_level`` on a ``low_spot`` or ``tunnel``: the catalogue's ponding depths
  (``sf.waterlogging_depth``);
* ``water_level`` in a ``drainage_pumping_station``'s wet well (no warning level of its own):
  ``WELL_RISE`` metres above the well's own resting level (``cityvitals.watch.rest``), higher is worse.
  A wet well always holds its metre or so (its pumps start and stop around it) and fills
  when the pumps cannot keep up; river levels would never fire on it and one fixed depth
  would not fit every well, so the gauge is judged against itself (``relative_thresholds``).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cityvitals.watch.runner import Threshold

SHARES = {"power_load": ((0.8, 0.9, 1.0), "rated_mw", "higher"),
          "traffic_speed": ((0.33, 0.27, 0.20), "free_speed_kmh", "lower")}
PONDING_ASSETS = ("low_spot", "tunnel")
PONDING_INDICATOR = "sf.waterlogging_depth"
WELL_ASSETS = ("drainage_pumping_station",)
WELL_RISE = (0.5, 1.0, 2.0)  # metres above the resting level: attention, warning, alarm


def _ponding_levels() -> tuple[float, float, float] | None:
    from cityvitals.signs import load_catalog
    from cityvitals.watch.catalog import indicator_levels

    ind = load_catalog().get(PONDING_INDICATOR)
    got = indicator_levels(ind) if ind is not None else None
    return tuple(got[0]) if got else None  # type: ignore[return-value]


def asset_thresholds(store) -> dict[str, Threshold]:
    """Sensor id -> ``Threshold`` for sensors whose asset says what their limits are."""
    if not hasattr(store, "assets"):
        return {}
    df = store.assets.sensor_asset_props(
        ["power_load", "traffic_speed", "water_level"],
        {"rated_mw": "rated_mw", "free_speed_kmh": "free_speed_kmh", "warn_m": "warning_level_m", "normal_m": "normal_level_m"},
    )
    out: dict[str, Threshold] = {}
    if df.height == 0:
        return out
    for kind, (shares, col, direction) in SHARES.items():
        sub = df.filter((pl.col("kind") == kind) & pl.col(col).is_not_null() & (pl.col(col) > 0))
        for sid, base in zip(sub["id"].to_list(), sub[col].to_list()):
            out[sid] = Threshold([round(base * f, 6) for f in shares], direction)
    wl = df.filter(pl.col("kind") == "water_level")
    river = wl.filter(pl.col("warn_m").is_not_null())
    for sid, warn, normal in zip(river["id"].to_list(), river["warn_m"].to_list(), river["normal_m"].to_list()):
        normal = warn - 1.0 if normal is None or not np.isfinite(normal) or normal >= warn else normal
        out[sid] = Threshold([(normal + warn) / 2, warn, warn + (warn - normal) / 2], "higher")
    pond = _ponding_levels()
    if pond is not None:
        for sid in wl.filter(pl.col("atype").is_in(PONDING_ASSETS) & pl.col("warn_m").is_null())["id"].to_list():
            out[sid] = Threshold(list(pond), "higher")
    return out


def relative_thresholds(store) -> dict[str, Threshold]:
    """Sensor id -> levels as *offsets* above the sensor's own resting level (wet-well gauges)."""
    if not hasattr(store, "assets"):
        return {}
    df = store.assets.sensor_asset_props(["water_level"], {"warn_m": "warning_level_m"})
    if df.height == 0:
        return {}
    wells = df.filter(pl.col("atype").is_in(WELL_ASSETS) & pl.col("warn_m").is_null())["id"].to_list()
    return {sid: Threshold(list(WELL_RISE), "higher") for sid in wells}

