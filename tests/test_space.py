"""The spatial tree (stage ``locate``) on the real NYC boroughs and a generated street layer."""

from __future__ import annotations

import json
from pathlib import Path

import h3
import numpy as np
import polars as pl
import pytest
import shapely
from shapely.geometry import box, mapping, shape
from typer.testing import CliRunner

from cityvitals.cli import app
from cityvitals.errors import InputError
from cityvitals.space import Locator, build_grid, import_layer, tree
from cityvitals.store import open_store

pytestmark = pytest.mark.both_backends  # DuckDB and PostgreSQL in every run (tests/conftest.py)

BOROUGHS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nyc" / "boroughs.geojson"
NYC_BBOX = (-74.26, 40.49, -73.70, 40.92)
KNOWN = [  # (lon, lat, borough or None)
    (-73.9654, 40.7829, "Manhattan"),  # Central Park
    (-73.9690, 40.6602, "Brooklyn"),  # Prospect Park
    (-73.5, 40.3, None),  # Atlantic Ocean
    (-74.17, 40.73, None),  # Newark, New Jersey
]


def _unit(store, code: str) -> dict | None:
    """One unit as a dict (read through ``frame``: a fetchone left open blocks the connection)."""
    rows = store.units.frame().filter(pl.col("code") == code).to_dicts()
    return rows[0] if rows else None


def _fc(features: list[dict]) -> dict:
    return {"type": "FeatureCollection", "features": features}


def _feature(props: dict, geom) -> dict:
    return {"type": "Feature", "properties": props, "geometry": geom if isinstance(geom, dict) else mapping(geom)}


def _write(path: Path, features: list[dict]) -> Path:
    path.write_text(json.dumps(_fc(features)))
    return path


def _borough_geoms() -> dict[str, shapely.Geometry]:
    data = json.loads(BOROUGHS.read_text())
    return {f["properties"]["BoroName"]: shape(f["geometry"]) for f in data["features"]}


def _quadrant_streets(path: Path) -> Path:
    """Each borough cut into the four quadrants of its bounding box: 'Queens Q0' .. 'Queens Q3'."""
    features = []
    for name, geom in _borough_geoms().items():
        x0, y0, x1, y1 = geom.bounds
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        for q, quad in enumerate([(x0, y0, mx, my), (mx, y0, x1, my), (x0, my, mx, y1), (mx, my, x1, y1)]):
            parts = [p for p in shapely.get_parts(geom.intersection(box(*quad))) if p.geom_type == "Polygon" and p.area > 0]
            if parts:
                features.append(_feature({"name": f"{name} Q{q}", "pop": 1000 + q}, shapely.MultiPolygon(parts)))
    return _write(path, features)


@pytest.fixture(scope="module")
def nyc(tmp_path_factory):
    """Districts (boroughs), generated streets and a resolution-8 grid."""
    home = tmp_path_factory.mktemp("nyc")
    streets = _quadrant_streets(home / "streets.geojson")
    with open_store(home) as store:
        districts = import_layer(store, BOROUGHS, level="district", name_field="BoroName", code_field="BoroCode", city_name="New York")
        street_result = import_layer(store, streets, level="street", name_field="name", population_field="pop")
        grid_result = build_grid(store, 8)
        locator = Locator.from_store(store)
        yield {"home": home, "store": store, "districts": districts, "streets": street_result,
               "grid": grid_result, "locator": locator, "streets_path": streets}


@pytest.fixture(scope="module")
def boroughs_only(tmp_path_factory):
    home = tmp_path_factory.mktemp("boroughs")
    with open_store(home) as store:
        import_layer(store, BOROUGHS, level="district", name_field="BoroName", code_field="BoroCode")
        yield {"home": home, "store": store, "locator": Locator.from_store(store)}


# --- import and nesting -----------------------------------------------------------


def test_boroughs_import_under_a_generated_city(nyc):
    store = nyc["store"]
    assert nyc["districts"]["imported"] == 5 and nyc["districts"]["city_created"]
    districts = store.units.frame("district")
    assert sorted(districts["code"].to_list()) == ["1", "2", "3", "4", "5"]
    assert set(districts["parent_code"].to_list()) == {"0"}
    city = _unit(store, "0")
    assert city["name"] == "New York" and city["level"] == "city" and city["parent_code"] is None
    manhattan = _unit(store, "1")
    assert manhattan["name"] == "Manhattan"
    assert 55e6 < manhattan["area_m2"] < 65e6  # 59.1 km² of land
    assert abs(city["area_m2"] - districts["area_m2"].sum()) / city["area_m2"] < 1e-3


def test_generated_streets_nest_under_the_borough_they_were_cut_from(nyc):
    store = nyc["store"]
    streets = store.units.frame("street")
    assert nyc["streets"]["parent_level"] == "district" and streets.height == nyc["streets"]["imported"] >= 16
    names = dict(zip(store.units.frame("district")["code"].to_list(), store.units.frame("district")["name"].to_list()))
    for row in streets.iter_rows(named=True):
        assert row["name"].rsplit(" ", 1)[0] == names[row["parent_code"]]
        # stable generated code: parent code + 3-digit rank of the name among its siblings
        assert row["code"].startswith(row["parent_code"]) and len(row["code"]) == len(row["parent_code"]) + 3
        assert row["population"] == 1000 + int(row["name"][-1])
    assert _unit(store, "1001")["name"] == "Manhattan Q0"


def test_reimporting_the_same_streets_keeps_codes(nyc, tmp_path):
    home = tmp_path
    with open_store(home) as store:
        import_layer(store, BOROUGHS, level="district", name_field="BoroName", code_field="BoroCode")
        import_layer(store, nyc["streets_path"], level="street", name_field="name")
        first = store.units.frame("street").select("code", "name", "parent_code").sort("code")
        again = import_layer(store, nyc["streets_path"], level="street", name_field="name")
        assert again["imported"] == first.height
        assert store.units.frame("street").select("code", "name", "parent_code").sort("code").equals(first)


# --- the grid ---------------------------------------------------------------------


def test_grid_cells_have_one_parent_each_the_street_they_overlap_most(nyc):
    store = nyc["store"]
    grid = store.units.frame("grid")
    assert grid.height == nyc["grid"]["cells"] > 1000
    assert grid["code"].n_unique() == grid.height and (grid["code"] == grid["h3_cell"]).all()
    assert all(h3.get_resolution(c) == 8 for c in grid["code"].to_list())
    streets = store.units.frame("street", geometry=True)
    street_codes = np.array(streets["code"].to_list(), dtype=object)
    street_geoms = shapely.from_wkb(np.array(streets["geometry_wkb"].to_list(), dtype=object))
    assert set(grid["parent_code"].to_list()) <= set(street_codes)
    # independent check, cell by cell: the street with the largest intersection area
    hexes = [shapely.Polygon([(lng, lat) for lat, lng in h3.cell_to_boundary(c)]) for c in grid["code"].to_list()]
    tree_ = shapely.STRtree(street_geoms)
    for cell_hex, parent in zip(hexes, grid["parent_code"].to_list()):
        candidates = tree_.query(cell_hex)
        areas = shapely.area(shapely.intersection(cell_hex, street_geoms[candidates]))
        assert areas.max() > 0
        assert street_codes[candidates[np.argmax(areas)]] == parent


def test_grid_population_adds_up_and_border_cells_are_flagged(nyc):
    store = nyc["store"]
    grid = store.units.frame("grid")
    streets = store.units.frame("street")
    sums = grid.group_by("parent_code").agg(pl.col("population").sum())
    per_parent = dict(zip(sums["parent_code"].to_list(), sums["population"].to_list()))
    for code, pop in zip(streets["code"].to_list(), streets["population"].to_list()):
        assert per_parent[code] == pytest.approx(pop)
    border = [json.loads(p)["border"] for p in grid["props"].to_list()]
    assert 0 < sum(border) < len(border) == nyc["grid"]["cells"]
    assert sum(border) == nyc["grid"]["border_cells"]


def test_grid_needs_a_polygon_layer_and_a_valid_resolution(store):
    with pytest.raises(InputError, match="import one first"):
        build_grid(store, 8)
    import_layer(store, BOROUGHS, level="district", name_field="BoroName")
    with pytest.raises(InputError, match="resolution"):
        build_grid(store, 16)
    with pytest.raises(InputError, match="coarser resolution"):
        build_grid(store, 15)


# --- locating points --------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["nyc", "boroughs_only"])
def test_known_points(fixture, request):
    locator: Locator = request.getfixturevalue(fixture)["locator"]
    lon = np.array([p[0] for p in KNOWN])
    lat = np.array([p[1] for p in KNOWN])
    codes = locator.locate(lon, lat)
    for (x, y, borough), code in zip(KNOWN, codes):
        found = locator.locate_one(x, y)
        if borough is None:
            assert found is None and code is None
            continue
        assert found["code"] == code
        names = {p["level"]: p["name"] for p in found["path"]}
        assert names["district"] == borough and found["path"][-1]["level"] == "city"
        assert found["path"][0] == {"code": found["code"], "name": found["name"], "level": found["level"]}
        assert locator.ancestor(np.array([code]), "district")[0] == {"Manhattan": "1", "Brooklyn": "3"}[borough]
    if fixture == "nyc":
        assert locator.locate_one(*KNOWN[0][:2])["level"] == "grid"
        assert [p["level"] for p in locator.locate_one(*KNOWN[0][:2])["path"]] == ["grid", "street", "district", "city"]


@pytest.mark.parametrize("fixture", ["nyc", "boroughs_only"])
def test_vectorised_equals_scalar_and_matches_the_polygons(fixture, request):
    locator: Locator = request.getfixturevalue(fixture)["locator"]
    rng = np.random.default_rng(20260501)
    lon = rng.uniform(NYC_BBOX[0], NYC_BBOX[2], 10_000)
    lat = rng.uniform(NYC_BBOX[1], NYC_BBOX[3], 10_000)
    codes = locator.locate(lon, lat)
    scalar = [locator.locate_one(x, y) for x, y in zip(lon, lat)]
    assert [s["code"] if s else None for s in scalar] == codes.tolist()
    # inside the city exactly where the boroughs are (the grid's border cells are tested exactly)
    geoms = _borough_geoms()
    union = shapely.union_all(list(geoms.values()))
    inside = shapely.intersects_xy(union, lon, lat)
    assert ((codes != None) == inside).all()  # noqa: E711
    assert 0.2 < inside.mean() < 0.8
    if fixture == "boroughs_only":  # no grid: the unit is the borough containing the point
        names = {"1": "Manhattan", "2": "Bronx", "3": "Brooklyn", "4": "Queens", "5": "Staten Island"}
        for code, x, y in zip(codes[inside][:500], lon[inside][:500], lat[inside][:500]):
            assert geoms[names[code]].intersects(shapely.Point(x, y))


def test_locate_handles_bad_coordinates_as_outside(nyc):
    codes = nyc["locator"].locate(np.array([np.nan, 200.0, -73.9654]), np.array([40.7, 95.0, 40.7829]))
    assert codes[0] is None and codes[1] is None and codes[2] is not None
    assert nyc["locator"].locate(np.array([]), np.array([])).shape == (0,)


def test_locator_needs_units(store):
    with pytest.raises(InputError, match="space import"):
        Locator.from_store(store)


@pytest.mark.slow
def test_a_grid_of_50k_cells_and_a_million_points(tmp_path):
    """Scale, not speed: timings belong to benchmarks, not to assertions on a shared machine."""
    with open_store(tmp_path) as store:
        import_layer(store, BOROUGHS, level="district", name_field="BoroName", code_field="BoroCode")
        result = build_grid(store, 10)
        locator = Locator.from_store(store)
    assert result["cells"] > 40_000
    rng = np.random.default_rng(7)
    lon = rng.uniform(-74.0, -73.8, 1_000_000)
    lat = rng.uniform(40.6, 40.8, 1_000_000)
    codes = locator.locate(lon, lat)
    assert (codes != None).mean() > 0.5  # noqa: E711


# --- tree -------------------------------------------------------------------------


def test_tree_nests_and_collapses_grid_cells(nyc):
    store = nyc["store"]
    (root,) = tree(store, grid=False)
    assert root["code"] == "0" and root["n_children"] == 5
    assert sum(s.get("grid_cells", 0) for d in root["children"] for s in d["children"]) == nyc["grid"]["cells"]
    assert all(s["children"] == [] for d in root["children"] for s in d["children"])
    (shallow,) = tree(store, 1)
    assert all(d["children"] == [] and d["n_children"] >= 3 for d in shallow["children"])
    (full,) = tree(store)
    assert sum(len(s["children"]) for d in full["children"] for s in d["children"]) == nyc["grid"]["cells"]


# --- errors -----------------------------------------------------------------------

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}


def _import_error(store, tmp_path, features, **kw) -> str:
    path = _write(tmp_path / "layer.geojson", features)
    kw = {"level": "district", "name_field": "name", **kw}
    with pytest.raises(InputError) as info:
        import_layer(store, path, **kw)
    return str(info.value)


def test_bow_tie_polygon_is_named(store, tmp_path):
    bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    msg = _import_error(store, tmp_path, [_feature({"name": "Fine"}, SQUARE), _feature({"name": "Bow Tie"}, bow_tie)])
    assert "feature 1 ('Bow Tie')" in msg and "invalid geometry" in msg and "Self-intersection" in msg


def test_missing_name_field_is_named(store, tmp_path):
    msg = _import_error(store, tmp_path, [_feature({"name": "A"}, SQUARE), _feature({"title": "B"}, SQUARE)])
    assert "feature 1" in msg and "'name'" in msg and "title" in msg


@pytest.mark.parametrize(
    "features, expected",
    [
        ([_feature({"name": "Spot"}, {"type": "Point", "coordinates": [0, 0]})], "feature 0 ('Spot'): geometry is a Point"),
        ([_feature({"name": "A", "c": 1}, SQUARE), _feature({"name": "B", "c": 1}, SQUARE)], "feature 1 ('B'): duplicate code '1'"),
        ([_feature({"name": "A", "c": ""}, SQUARE)], "feature 0 ('A'): missing or empty code field 'c'"),
        ([_feature({"name": "A", "p": "many"}, SQUARE)], "feature 0 ('A'): population field 'p' is not a number"),
        ([_feature({"name": "Far"}, {"type": "Polygon", "coordinates": [[[0, 0], [1e6, 0], [1e6, 1e6], [0, 0]]]})], "not longitude/latitude"),
        ([], "has no features"),
    ],
)
def test_feature_errors(store, tmp_path, features, expected):
    kw = {"code_field": "c"} if any("c" in f["properties"] for f in features) else {}
    if any("p" in f["properties"] for f in features):
        kw["population_field"] = "p"
    assert expected in _import_error(store, tmp_path, features, **kw)


def test_unreadable_and_wrong_files(store, tmp_path):
    for content, expected in [(b"\x00\xff garbage", "cannot read"), (b'{"type": "Feature"}', "not a GeoJSON FeatureCollection")]:
        path = tmp_path / "bad.geojson"
        path.write_bytes(content)
        with pytest.raises(InputError, match=expected):
            import_layer(store, path, level="district", name_field="name")
    with pytest.raises(InputError, match="cannot read"):
        import_layer(store, tmp_path / "missing.geojson", level="district", name_field="name")
    with pytest.raises(InputError, match="not one of"):
        import_layer(store, BOROUGHS, level="grid", name_field="BoroName")


def test_a_layer_in_shanghai_nests_nowhere(boroughs_only, tmp_path):
    shanghai = box(121.40, 31.15, 121.55, 31.30)
    manhattan_part = box(-74.00, 40.75, -73.95, 40.78)
    path = _write(tmp_path / "streets.geojson", [
        _feature({"name": "Midtown"}, manhattan_part), _feature({"name": "Huangpu"}, shanghai),
    ])
    store = boroughs_only["store"]
    before = store.units.status()
    with pytest.raises(InputError, match=r"feature 1 \('Huangpu'\): nests nowhere"):
        import_layer(store, path, level="street", name_field="name")
    assert store.units.status() == before  # nothing written


def test_codes_must_be_unique_across_levels(boroughs_only, tmp_path):
    path = _write(tmp_path / "streets.geojson", [_feature({"name": "Midtown", "c": "1"}, box(-74.00, 40.75, -73.95, 40.78))])
    with pytest.raises(InputError, match="already used by a district unit"):
        import_layer(boroughs_only["store"], path, level="street", name_field="name", code_field="c")


# --- re-import and re-parenting ----------------------------------------------------


def _halves(west: str, east: str, split: float) -> list[dict]:
    return [_feature({"name": west}, box(0, 0, split, 1)), _feature({"name": east}, box(split, 0, 2, 1))]


def test_reimport_reparents_finer_levels_and_rebuilds_the_grid(store, tmp_path):
    import_layer(store, _write(tmp_path / "d1.geojson", _halves("West", "East", 1.0)), level="district", name_field="name")
    streets = [_feature({"name": f"S{i}"}, box(i * 0.5, 0, (i + 1) * 0.5, 1)) for i in range(4)]
    import_layer(store, _write(tmp_path / "s.geojson", streets), level="street", name_field="name")
    parents = dict(zip(store.units.frame("street")["name"].to_list(), store.units.frame("street")["parent_code"].to_list()))
    assert parents == {"S0": "02", "S1": "02", "S2": "01", "S3": "01"}  # East=01, West=02
    # move the district border: S1 (0.5..1.0) now lies mostly in East (0.6..2)
    result = import_layer(store, _write(tmp_path / "d2.geojson", _halves("West", "East", 0.6)), level="district", name_field="name")
    assert result["reparented"] == {"street": 4}
    parents = dict(zip(store.units.frame("street")["name"].to_list(), store.units.frame("street")["parent_code"].to_list()))
    assert parents == {"S0": "02", "S1": "01", "S2": "01", "S3": "01"}
    build_grid(store, 5)
    cells = store.units.frame("grid").height
    # re-importing the finest polygon level rebuilds the grid under it
    result = import_layer(store, _write(tmp_path / "s.geojson", streets), level="street", name_field="name")
    assert result["grid_rebuilt"] == cells
    assert set(store.units.frame("grid")["parent_code"].to_list()) <= set(store.units.frame("street")["code"].to_list())
    # a new district layer that leaves streets outside is refused before anything changes
    before = store.units.frame("district").sort("code")
    with pytest.raises(InputError, match="re-import the street layer"):
        import_layer(store, _write(tmp_path / "d3.geojson", [_feature({"name": "Tiny"}, box(0, 0, 0.1, 0.1))]), level="district", name_field="name")
    assert store.units.frame("district").sort("code").equals(before)


def test_city_layer_replaces_the_generated_root(store, tmp_path):
    import_layer(store, _write(tmp_path / "d.geojson", _halves("West", "East", 1.0)), level="district", name_field="name")
    assert _unit(store, "0")["name"] == "City"
    result = import_layer(store, _write(tmp_path / "c.geojson", [_feature({"name": "Metropolis"}, box(-0.1, -0.1, 2.1, 1.1))]), level="city", name_field="name")
    assert result["reparented"] == {"district": 2}
    assert _unit(store, "0")["name"] == "Metropolis"
    assert set(store.units.frame("district")["parent_code"].to_list()) == {"0"}


# --- CLI --------------------------------------------------------------------------

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args))


def test_cli_import_grid_locate_tree(tmp_path):
    home = str(tmp_path / "home")
    res = _cli("space", "import", str(BOROUGHS), "--level", "district", "--name-field", "BoroName",
               "--code-field", "BoroCode", "--city-name", "New York", "--home", home, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"level": "district", "imported": 5, "parent_level": "city",
                                      "city_created": True, "reparented": {}, "grid_rebuilt": None}
    res = _cli("space", "grid", "--resolution", "7", "--home", home, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["cells"] > 100
    res = _cli("space", "locate", "-73.9654", "40.7829", "--home", home, "--json")
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    assert found["outside"] is False and found["level"] == "grid"
    assert [p["name"] for p in found["path"]][1:] == ["Manhattan", "New York"]
    res = _cli("space", "locate", "-73.9690", "40.6602", "--home", home)
    assert res.exit_code == 0 and "Brooklyn › New York" in res.stdout
    res = _cli("space", "locate", "-74.17", "40.73", "--home", home)
    assert res.exit_code == 0 and res.stdout.strip() == "outside"
    res = _cli("space", "locate", "-73.5", "40.3", "--home", home, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["outside"] is True
    res = _cli("space", "tree", "--home", home)
    assert res.exit_code == 0 and "Staten Island" in res.stdout and "grid cells" in res.stdout
    res = _cli("space", "tree", "--depth", "1", "--home", home, "--json")
    (root,) = json.loads(res.stdout)["units"]
    assert res.exit_code == 0 and root["name"] == "New York" and len(root["children"]) == 5


def test_cli_errors_and_usage(tmp_path):
    home = str(tmp_path / "home")
    res = _cli("space", "import", str(BOROUGHS), "--level", "grid", "--name-field", "BoroName", "--home", home)
    assert res.exit_code == 2
    res = _cli("space", "grid", "--resolution", "16", "--home", home)
    assert res.exit_code == 2
    res = _cli("space", "import", str(tmp_path / "missing.geojson"), "--level", "district", "--name-field", "x", "--home", home)
    assert res.exit_code == 1 and res.stderr.startswith("error: cannot read") and len(res.stderr.strip().splitlines()) == 1
    res = _cli("space", "import", str(BOROUGHS), "--level", "district", "--name-field", "Nope", "--home", home)
    assert res.exit_code == 1 and "feature 0" in res.stderr and "'Nope'" in res.stderr
    res = _cli("space", "locate", "0", "0", "--home", home)
    assert res.exit_code == 1 and "space import" in res.stderr
    for sub in ("import", "grid", "locate", "tree"):
        assert _cli("space", sub, "--help").exit_code == 0
