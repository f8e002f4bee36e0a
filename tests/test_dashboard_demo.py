"""The dashboard on the live demo city, in Debian's Chromium: the simulated city runs through
ingest → signs → watch in the server process (LocalRunner on a SimClock advanced by the test),
the duty officer drills from the city to a grid cell, a water main bursts, its pressure alert
appears in the alerts feed by itself (over the event stream), the officer acknowledges it in
the page, and the page and the store agree. Screenshots go to tmp_path.

The simulated clock does not run by itself (speed 0): the test moves it and calls
``runner.step`` so what happens is deterministic; only the browser's reaction is waited for,
with a bound.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import shapely
from browser_kit import browser_page, requires_chromium, serve

pytestmark = requires_chromium
sim = pytest.importorskip("cityvitals.sim")

HISTORY = timedelta(minutes=30)   # loaded before the page opens; the burst starts at 46 min (seed 5)
BURST_SEEN = timedelta(minutes=75)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 300-sensor, 2-district city with a water main burst in its first hour, served live."""
    from cityvitals.api import create_app
    from cityvitals.runtime import LocalRunner, ReplaySource, SimClock
    from cityvitals.store import open_store

    base = tmp_path_factory.mktemp("demo")
    sim.run_simulation(base / "city", scenario="water_main_burst", duration="2h", seed=5, city_sensors=300,
                       city_districts=2, write_reports=False)
    store = open_store(base / "home")
    sim.load_folder(store, base / "city", readings=False)
    source = ReplaySource(base / "city")
    clock = SimClock(source.start, speed=0)
    runner = LocalRunner(store, source, clock)
    clock.advance(HISTORY.total_seconds())
    runner.step()
    key = store.users.add("duty", "duty_officer")
    app = create_app(store, clock=clock, poll_interval=0.2)
    with serve(app) as url:
        yield {"url": url, "key": key, "store": store, "runner": runner, "clock": clock, "source": source,
               "ctx": app.state.ctx}
    store.close()


@pytest.fixture
def page():
    with browser_page(1400, 900) as pg:
        yield pg


def wait_map(page, unit: str) -> None:
    page.wait_for_function(f"() => document.getElementById('map').dataset.unit === {unit!r} && S.view && S.view.unit.code === {unit!r}",
                           timeout=20000)
    page.wait_for_function("() => !!document.querySelector('#map canvas') || document.querySelectorAll('#map path.js-fill').length > 0",
                           timeout=20000)
    # drawMap has finished (data-drawn is set after Plotly.react resolves) and MapLibre has settled,
    # so a click lands on a drawn, interactive map even on a busy machine
    page.wait_for_function(
        "() => { const el = document.getElementById('map'); if (!el.dataset.drawn) return false;"
        " if (el.dataset.renderer === 'svg') return true; const m = el._fullLayout.map._subplot.map;"
        " return m.loaded() && !m.isMoving(); }", timeout=20000)
    page.wait_for_timeout(300)  # the first paint after the data arrived


def click_unit(page, code: str) -> None:
    """Click a point inside the unit's polygon (shapely's point on surface), where the map draws it."""
    geom = page.evaluate("(c) => S.view.geojson.features.find(f => f.properties.code === c).geometry", code)
    pt = shapely.geometry.shape(geom).point_on_surface()
    xy = page.evaluate(
        """([lon, lat]) => {
            const el = document.getElementById('map');
            if (el.dataset.renderer === 'map') {
                const m = el._fullLayout.map._subplot.map, p = m.project([lon, lat]);
                const c = m.getCanvas().getBoundingClientRect();
                return {x: c.left + p.x, y: c.top + p.y};
            }
            const r = el.getBoundingClientRect(), xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis;
            return {x: r.left + xa._offset + xa.l2p(lon), y: r.top + ya._offset + ya.l2p(lat)};
        }""",
        [pt.x, pt.y],
    )
    page.mouse.move(xy["x"], xy["y"])
    page.mouse.click(xy["x"], xy["y"])


def first_with_children(page) -> str:
    return page.evaluate("() => S.view.geojson.features.find(f => f.properties.has_children).properties.code")


def test_demo_drilldown_live_alert_and_acknowledge(demo, page, tmp_path):
    store, runner, clock = demo["store"], demo["runner"], demo["clock"]
    page.goto(f"{demo['url']}/#key={demo['key']}")
    city = store.units.frame("city")["code"][0]
    wait_map(page, city)
    assert page.evaluate("() => location.hash") == ""  # the key left the address bar
    assert page.inner_text("#who").startswith("duty · duty_officer")
    districts = set(store.units.frame("district")["code"])
    assert set(page.evaluate("() => S.view.geojson.features.map(f => f.properties.code)")) == districts
    assert page.get_attribute("#map", "data-layer-level") == "district"
    page.wait_for_function("() => document.getElementById('live-status').className === 'on'", timeout=15000)
    page.screenshot(path=str(tmp_path / "1-city.png"))

    # two clicks from the city to grid cells: a district shows its communities, a community its grid cells
    district = first_with_children(page)
    click_unit(page, district)
    wait_map(page, district)
    assert page.get_attribute("#map", "data-layer-level") == "community"
    community = first_with_children(page)
    click_unit(page, community)
    wait_map(page, community)
    assert page.get_attribute("#map", "data-layer-level") == "grid"
    cell = page.evaluate("() => S.view.geojson.features[0].properties.code")
    click_unit(page, cell)  # a grid cell: shown among its neighbours, outlined
    wait_map(page, cell)
    crumbs = page.locator("#crumbs button").all_inner_texts()
    names = dict(zip(store.units.frame()["code"], store.units.frame()["name"]))
    assert crumbs[0] == names[city] and crumbs[1] == names[district] and crumbs[-1] == names[cell]
    assert page.evaluate("() => S.view.highlight") == cell
    assert names[cell] in page.inner_text("#detail-body")
    page.screenshot(path=str(tmp_path / "2-grid-cell.png"))

    # nothing about water pressure is open yet; then the simulated city runs past the burst
    assert page.locator("#feed-alerts li[data-type='threshold']").count() == 0
    clock.advance((BURST_SEEN - HISTORY).total_seconds())
    report = runner.step()
    assert report.accepted > 0 and "watch" in report.stages
    raised = store.frame(  # the server runs in other threads: every query takes the store's lock
        "SELECT a.id, a.source FROM alerts a JOIN sensors s ON s.id = a.source "
        "WHERE a.type = 'threshold' AND s.kind = 'water_pressure' AND a.state = 'active' ORDER BY a.id")
    assert raised.height, "the burst raised no pressure alert"
    alert_id, sensor = raised.row(0)
    item = page.locator(f"#feed-alerts li[data-alert='{alert_id}']")
    item.wait_for(timeout=20000)  # pushed over the event stream: no reload, no polling by the page
    assert item.get_attribute("data-state") == "active" and sensor in item.inner_text()
    assert int(page.inner_text("#live-count")) > 0  # it came with the live events (alerts, incidents, cases)
    page.screenshot(path=str(tmp_path / "3-alert-live.png"))

    item.locator("button[data-act='ack']").click()
    page.wait_for_function(
        f"() => {{ const li = document.querySelector(\"#feed-alerts li[data-alert='{alert_id}']\");"
        " return li && li.dataset.state === 'acknowledged'; }", timeout=15000)
    text = page.locator(f"#feed-alerts li[data-alert='{alert_id}']").inner_text()
    assert "已确认 acknowledged" in text and "by duty" in text
    assert page.locator(f"#feed-alerts li[data-alert='{alert_id}'] button[data-act='ack']").count() == 0
    state, by = store.frame("SELECT state, acknowledged_by FROM alerts WHERE id = ?", [alert_id]).row(0)
    assert (state, by) == ("acknowledged", "duty")
    page.screenshot(path=str(tmp_path / "4-acknowledged.png"))
    assert page.errors == []
