"""The dashboard in a real browser (Debian's Chromium via Playwright): the map draws the
units, a click drills down and the breadcrumbs follow, a reading posted to the API shows
up live. Screenshots go to tmp_path."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import pytest
from test_api_core import NOW, build_city

from browser_kit import ARGS, CHROMIUM, browser_page, free_port, requires_chromium, serve  # noqa: F401

pytestmark = requires_chromium


@pytest.fixture
def server(store):
    from cityvitals.api import create_app

    keys = build_city(store)
    clock = lambda: NOW  # noqa: E731 - the city's readings are around NOW
    app = create_app(store, clock=clock, poll_interval=0.5)
    with serve(app) as url:
        yield url, keys


@pytest.fixture
def page():
    with browser_page(1280, 800) as pg:
        yield pg


def map_codes(page) -> list[str]:
    return page.evaluate("() => S.view.geojson.features.map(f => f.properties.code)")


def click_unit(page, code: str) -> None:
    """Click the polygon of ``code`` where it is drawn (the centre of its bounding box on screen)."""
    box = page.evaluate(
        """(code) => {
            const el = document.getElementById('map');
            const f = S.view.geojson.features.find(x => x.properties.code === code);
            const ring = f.geometry.coordinates[0];
            const lon = (Math.min(...ring.map(c => c[0])) + Math.max(...ring.map(c => c[0]))) / 2;
            const lat = (Math.min(...ring.map(c => c[1])) + Math.max(...ring.map(c => c[1]))) / 2;
            const r = el.getBoundingClientRect();
            if (el.dataset.renderer === 'map') {
                const m = el._fullLayout.map._subplot.map;
                const p = m.project([lon, lat]);
                const c = m.getCanvas().getBoundingClientRect();
                return {x: c.left + p.x, y: c.top + p.y};
            }
            const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis;
            return {x: r.left + xa._offset + xa.l2p(lon), y: r.top + ya._offset + ya.l2p(lat)};
        }""",
        code,
    )
    page.mouse.move(box["x"], box["y"])
    page.mouse.click(box["x"], box["y"])


def test_dashboard_map_drilldown_and_live_update(server, page, tmp_path):
    url, keys = server
    page.goto(url + "/")
    page.wait_for_function("() => document.getElementById('public').textContent.includes('Test City')", timeout=15000)
    page.fill("#key", keys["duty"])
    page.click("#keyform button[type=submit]")
    page.wait_for_function("() => document.getElementById('map').dataset.unit === 'C'", timeout=15000)
    # the map drew the two districts' polygons
    page.wait_for_function(
        "() => { const el = document.getElementById('map');"
        " return el.dataset.renderer === 'map' ? !!el.querySelector('canvas') : el.querySelectorAll('path.js-fill').length >= 2; }",
        timeout=15000,
    )
    assert sorted(map_codes(page)) == ["D1", "D2"]
    assert page.locator("#crumbs button").all_inner_texts() == ["测试市 Test City"]
    page.wait_for_timeout(500)  # let the map finish its first paint before clicking on it
    page.screenshot(path=str(tmp_path / "city.png"))

    click_unit(page, "D2")
    page.wait_for_function("() => document.getElementById('map').dataset.unit === 'D2'", timeout=15000)
    assert page.locator("#crumbs button").all_inner_texts() == ["测试市 Test City", "西区 West"]
    assert map_codes(page) == ["M2"] and page.get_attribute("#map", "data-layer-level") == "community"
    page.screenshot(path=str(tmp_path / "district.png"))

    # a live update: the live-events feed and the unit's reading count change without a reload
    page.wait_for_function("() => document.getElementById('live-status').className === 'on'", timeout=15000)
    before = int(page.inner_text("#readings-1h"))
    r = httpx.post(url + "/api/v1/readings", headers={"X-API-Key": keys["duty"]},
                   json=[{"sensor_id": "P2", "ts": datetime(2026, 5, 1, 11, 59, 30, tzinfo=timezone.utc).isoformat(), "value": 0.3}])
    assert r.status_code == 200 and r.json()["accepted"] == 1
    page.wait_for_function("() => document.getElementById('feed-live').textContent.includes('New readings: 1')", timeout=15000)
    page.wait_for_function(f"() => Number(document.getElementById('readings-1h').textContent) === {before + 1}", timeout=15000)
    page.screenshot(path=str(tmp_path / "live.png"))
    assert page.errors == []
