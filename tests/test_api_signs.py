"""Vital-sign and alert endpoints over the small test city: levels, health with its
explanation, indicator series, alerts listed / acknowledged / scoped / streamed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from test_api_core import NOW, H, build_city

from cityvitals.api import create_app

pytestmark = pytest.mark.both_backends  # the read paths on DuckDB and PostgreSQL


@pytest.fixture
def city(store):
    keys = build_city(store, minutes=180)
    app = create_app(store, clock=lambda: NOW, poll_interval=None)
    with TestClient(app) as client:
        yield client, keys, store, app.state.ctx


def test_alerts_list_ack_scope_and_stream(city):
    from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation

    client, keys, store, ctx = city
    start = ctx.hub.last_id
    AlertManager(store, AlertPolicy(), clock=lambda: NOW).observe([
        Observation("P1", "threshold", 3, NOW, "pressure low"), Observation("P2", "threshold", 2, NOW, "pressure low")])
    ctx.watcher.check()
    items = client.get("/api/v1/alerts", headers=H(keys["analyst"])).json()["items"]
    assert [(a["source"], a["unit_code"], a["level"]) for a in items] == [("P2", "G3", "warning"), ("P1", "G1", "alarm")]
    staff = client.get("/api/v1/alerts", headers=H(keys["staff"])).json()["items"]
    assert [a["source"] for a in staff] == ["P1"]
    p2 = items[0]["id"]
    assert client.get(f"/api/v1/alerts/{p2}", headers=H(keys["staff"])).status_code == 403
    assert client.post(f"/api/v1/alerts/{p2}/ack", headers=H(keys["analyst"])).status_code == 403
    r = client.post(f"/api/v1/alerts/{p2}/ack", json={"note": "on it"}, headers=H(keys["duty"]))
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert client.post(f"/api/v1/alerts/{p2}/ack", headers=H(keys["duty"])).status_code in (200, 409)
    detail = client.get(f"/api/v1/alerts/{p2}", headers=H(keys["duty"])).json()
    assert [e["event"] for e in detail["events"]][:2] == ["raise", "ack"]
    with client.stream("GET", "/api/v1/stream", params={"linger": 0},
                       headers=H(keys["duty"]) | {"Last-Event-ID": str(start)}) as s:
        text = "".join(s.iter_text())
    assert text.count("event: alert") >= 3
    m = client.get("/api/v1/map", headers=H(keys["duty"])).json()
    assert {f["id"]: f["properties"]["open_alerts"] for f in m["geojson"]["features"]} == {"D1": 1, "D2": 1}
    assert client.get("/api/v1/alerts", params={"state": "bogus"}, headers=H(keys["duty"])).json()["field"] == "state"


def test_signs_levels_health_and_series(city):
    from cityvitals.signs import compute_signs

    client, keys, store, ctx = city
    compute_signs(store)
    h = H(keys["analyst"])
    cat = client.get("/api/v1/indicators", headers=h).json()
    assert len(cat["items"]) > 10 and "environment" in cat["categories"]
    lv = client.get("/api/v1/levels", params={"unit": "G2"}, headers=h).json()
    if not lv["items"]:
        pytest.skip("the catalogue computes no indicator from this small city's readings")
    ind = lv["items"][0]["indicator"]
    health = client.get("/api/v1/health", params={"unit": "G2"}, headers=h).json()
    assert 0 <= health["index"] <= 100 and health["level_name"] in ("normal", "attention", "warning", "alarm")
    assert round(100 - sum(r["points"] for r in health["explain"]), 1) == pytest.approx(health["index"], abs=0.1)
    series = client.get(f"/api/v1/indicators/{ind}/values", params={"unit": "G2"}, headers=h).json()
    assert series["items"] and series["indicator"]["id"] == ind
    m = client.get("/api/v1/map", params={"unit": "M1"}, headers=h).json()
    assert m["colour_by"] == "health"
    assert client.get("/api/v1/health", params={"unit": "G3"}, headers=H(keys["staff"])).status_code == 403
    assert client.get("/api/v1/indicators/nope/values", params={"unit": "G2"}, headers=h).status_code == 404
    pub = client.get("/api/v1/public/health").json()
    assert pub["health"] is not None and "explain" not in pub
    end = NOW.isoformat()
    r = client.get(f"/api/v1/indicators/{ind}/values", params={"unit": "G2", "end": end,
                                                                "start": (NOW - timedelta(days=500)).isoformat()}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "end"
