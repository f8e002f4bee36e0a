"""The dashboard on a city the size of Beijing's grid (40,625 unit grid cells), in Debian's
Chromium: 'All grid cells' draws every cell on the canvas overlay over the MapLibre map (not
40,625 plotly polygons, not a MapLibre GeoJSON layer), coloured by its value, the map reports
the cells it has drawn, hovering names a cell, clicking a cell drills down to it, and the
overlay follows the map when it zooms. Content assertions only; the timing is in
``cityvitals bench api``. Screenshots go to tmp_path."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from browser_kit import browser_page, requires_chromium, serve

pytestmark = requires_chromium

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
N_GRID = 40_625

MAP = "(() => { const el = document.getElementById('map'); return el._fullLayout.map._subplot.map; })()"


@pytest.fixture(scope="module")
def big(tmp_path_factory):

    from cityvitals.api import create_app
    from cityvitals.bench.api import _add_sensors, build_big_city
    from cityvitals.store import open_store

    store = open_store(tmp_path_factory.mktemp("big") / "home")
    city = build_big_city(store, n_grid=N_GRID)
    _add_sensors(store, 50, NOW, seed=3)
    key = store.users.add("duty", "duty_officer")
    app = create_app(store, clock=lambda: NOW, poll_interval=0.5)
    with serve(app) as url:
        yield {"url": url, "key": key, "city": city}
    store.close()


@pytest.fixture
def page():
    with browser_page(1400, 900) as pg:
        yield pg


def screen_point(page, code: str) -> dict:
    """Where the centre of ``code``'s polygon is on the page."""
    return page.evaluate(
        """(code) => {
            const f = S.view.geojson.features.find(x => x.properties.code === code);
            const ring = f.geometry.coordinates[0];
            const lon = ring.slice(0, -1).reduce((a, c) => a + c[0], 0) / (ring.length - 1);
            const lat = ring.slice(0, -1).reduce((a, c) => a + c[1], 0) / (ring.length - 1);
            const m = """ + MAP + """;
            const p = m.project([lon, lat]), c = m.getCanvas().getBoundingClientRect();
            return {x: c.left + p.x, y: c.top + p.y};
        }""",
        code,
    )


def overlay_pixel(page, pt: dict) -> list[int]:
    """The overlay canvas's colour (RGB) at a page point."""
    return page.evaluate(
        """(p) => { const cv = document.querySelector('#map canvas.cv-overlay'), r = cv.getBoundingClientRect();
            const k = cv.width / r.width, x = Math.round((p.x - r.left) * k), y = Math.round((p.y - r.top) * k);
            return Array.from(cv.getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3)); }""",
        pt,
    )


@pytest.mark.slow  # a 40,625-cell city built and drawn in software GL: about 50 s on a busy 2-core machine
def test_all_grid_cells_drawn_as_one_layer_and_a_click_drills_down(big, page, tmp_path):
    page.goto(f"{big['url']}/#key={big['key']}")
    page.wait_for_function("() => document.getElementById('map').dataset.unit === '110000'", timeout=30000)
    page.wait_for_function("() => document.getElementById('map').dataset.drawn === '16'", timeout=30000)
    assert page.get_attribute("#map", "data-renderer") == "map"  # 16 districts: a plotly trace, as before

    page.click("#all-grid")
    page.wait_for_function(f"() => document.getElementById('map').dataset.drawn === '{N_GRID}'", timeout=90000)
    assert page.get_attribute("#map", "data-renderer") == "canvas"
    assert page.get_attribute("#map", "data-layer-level") == "grid"
    # every cell is in view and drawn on the overlay
    assert page.evaluate("() => renderedUnits()") == N_GRID
    # the overlay, not a plotly trace per polygon nor a MapLibre layer
    assert page.evaluate("() => document.querySelectorAll('#map canvas.cv-overlay').length") == 1
    layers = page.evaluate("() => " + MAP + ".getStyle().layers.map(l => l.id)")
    assert not any(lid.startswith("cv-units") for lid in layers)
    assert page.evaluate("() => document.getElementById('map')._fullData.map(t => [t.type, t.locations.length])") == [["choroplethmap", 0]]
    assert f"{N_GRID} 个单元 units (grid)" in page.inner_text("#map-note")
    assert "readings/h" in page.inner_text("#legend")  # the city has readings but no vital signs yet
    page.screenshot(path=str(tmp_path / "all-grid.png"))

    # a cell that has readings: it is coloured darker than the empty ones, and hovering names it
    code, n = page.evaluate("() => { const p = S.view.geojson.features.find(f => f.properties.readings_1h > 0).properties;"
                            " return [p.code, p.readings_1h]; }")
    pt = screen_point(page, code)
    # the pixel there has the cell's colour (pale for no readings, dark blue for the most)
    rgb = overlay_pixel(page, pt)
    empty = screen_point(page, page.evaluate("() => S.view.geojson.features.find(f => f.properties.readings_1h === 0).properties.code"))
    assert sum(rgb) < sum(overlay_pixel(page, empty)) - 60, (rgb, overlay_pixel(page, empty))

    # zoom in on the cell: the overlay is drawn again with the map's new transform, fewer cells in view
    page.evaluate("(p) => { const m = " + MAP + "; const c = m.getCanvas().getBoundingClientRect();"
                  " m.jumpTo({center: m.unproject([p.x - c.left, p.y - c.top]), zoom: m.getZoom() + 3}); }", pt)
    page.wait_for_function(f"() => renderedUnits() < {N_GRID // 10}", timeout=15000)
    pt = screen_point(page, code)
    want = page.evaluate("(code) => { const p = S.view.geojson.features.find(f => f.properties.code === code).properties;"
                         " return cellColour(p, S.view.colour_by, Math.max(...S.view.geojson.features.map(f => f.properties.readings_1h), 1)); }",
                         code)
    assert overlay_pixel(page, pt) == [int(v) for v in want[4:-1].split(",")]  # "rgb(r,g,b)"
    # hover names the cell under the pointer (checked zoomed in: at the whole city a cell is
    # about 3 px wide, and the pointer's position is whole pixels, so its centre may sit in a neighbour)
    page.mouse.move(pt["x"], pt["y"])
    page.wait_for_function("(code) => !document.getElementById('map-tip').hidden"
                           " && document.getElementById('map-tip').textContent.includes(code)", arg=code, timeout=15000)
    assert f"Readings/h {n}" in page.inner_text("#map-tip")
    page.screenshot(path=str(tmp_path / "all-grid-zoomed.png"))

    page.mouse.click(pt["x"], pt["y"])
    page.wait_for_function("(code) => document.getElementById('map').dataset.unit === code", arg=code, timeout=30000)
    page.wait_for_function("() => document.getElementById('map').dataset.drawn !== ''", timeout=30000)
    crumbs = page.locator("#crumbs button").all_inner_texts()
    assert len(crumbs) == 5 and crumbs[0] == "北京样例市 Big City" and crumbs[-1].endswith(code[-9:])
    # the cell among its community's cells, drawn by plotly again; the big layer is gone
    assert page.get_attribute("#map", "data-renderer") == "map"
    assert page.evaluate("() => S.view.highlight") == code
    # the unit panel counts the cell's own readings, not its neighbours' too
    page.wait_for_function("(n) => document.getElementById('readings-1h')"
                           " && Number(document.getElementById('readings-1h').textContent) === n", arg=n, timeout=15000)
    assert code in page.evaluate("() => S.view.geojson.features.map(f => f.properties.code)")
    assert page.evaluate("() => document.querySelectorAll('#map canvas.cv-overlay').length") == 0
    page.screenshot(path=str(tmp_path / "drilled.png"))
    assert page.errors == []
