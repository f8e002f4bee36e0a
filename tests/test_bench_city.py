"""The generated benchmark city (``bench api``, the big-city dashboard test) at any size.

A small ``--grid`` used to leave some angular district sectors without a street, and merging
an empty district made shapely's coverage union fail on mixed dimensions."""

import pytest

from cityvitals.bench.api import build_big_city
from cityvitals.store import open_store


@pytest.mark.parametrize("n_grid", [100, 500, 3000])
def test_every_level_is_a_nonempty_tree(tmp_path, n_grid):
    store = open_store(tmp_path / "home")
    try:
        city = build_big_city(store, n_grid=n_grid)
        units = store.frame("SELECT code, level, parent_code, geometry_wkb FROM units")
    finally:
        store.close()
    assert city["grid"] == n_grid
    by_level = {lvl: units.filter(units["level"] == lvl) for lvl in ("city", "district", "street", "community", "grid")}
    assert len(by_level["grid"]) == n_grid
    assert len(by_level["district"]) == city["districts"] >= 1
    import shapely
    for lvl, parent_lvl in (("district", "city"), ("street", "district"), ("community", "street"), ("grid", "community")):
        parents = set(by_level[parent_lvl]["code"].to_list())
        assert set(by_level[lvl]["parent_code"].to_list()) == parents, f"every {parent_lvl} has a {lvl} child"
    for wkb in by_level["district"]["geometry_wkb"].to_list():
        geom = shapely.from_wkb(wkb)
        assert not geom.is_empty and geom.area > 0
