"""A plain city for benchmarks: square districts over the sensors' box and an H3 grid under them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import polars as pl


def build_bench_city(store, sensors: pl.DataFrame, *, side: int = 4, resolution: int = 9) -> dict:
    from cityvitals.space import build_grid, import_layer

    lo_lon, hi_lon = sensors["lon"].min() - 0.001, sensors["lon"].max() + 0.001
    lo_lat, hi_lat = sensors["lat"].min() - 0.001, sensors["lat"].max() + 0.001
    dx, dy = (hi_lon - lo_lon) / side, (hi_lat - lo_lat) / side
    features = []
    for i in range(side):
        for j in range(side):
            x0, y0 = lo_lon + i * dx, lo_lat + j * dy
            ring = [[x0, y0], [x0 + dx, y0], [x0 + dx, y0 + dy], [x0, y0 + dy], [x0, y0]]
            features.append({"type": "Feature", "properties": {"name": f"District {i * side + j + 1:02d}"},
                             "geometry": {"type": "Polygon", "coordinates": [ring]}})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "districts.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        import_layer(store, path, level="district", name_field="name", city_name="Bench City")
    return build_grid(store, resolution)
