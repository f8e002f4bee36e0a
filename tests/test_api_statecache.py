"""The map's state cache: one computation per view and data version, never shared across
area scopes, invalidated by writes (through the API and, via the change watcher, elsewhere),
served pre-encoded and pre-gzipped, computed once when many ask at the same moment."""

from __future__ import annotations

import gzip
import threading
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from test_api_core import NOW, H, build_city

from cityvitals.api import create_app
from cityvitals.api.statecache import StateCache

pytestmark = pytest.mark.both_backends  # the read paths on DuckDB and PostgreSQL


@pytest.fixture
def city(store):
    keys = build_city(store, minutes=30)
    app = create_app(store, clock=lambda: NOW, poll_interval=None)
    with TestClient(app) as client:
        yield client, keys, store, app.state.ctx


def readings_by_code(m: dict) -> dict[str, int]:
    return {f["id"]: f["properties"]["readings_1h"] for f in m["geojson"]["features"]}


def test_a_scoped_user_never_gets_an_answer_cached_for_another_scope(city):
    client, keys, _, ctx = city
    city_wide = client.get("/api/v1/map", params={"unit": "D1", "depth": 4}, headers=H(keys["analyst"])).json()
    assert [p["code"] for p in city_wide["path"]] == ["C", "D1"]
    staff = client.get("/api/v1/map", params={"unit": "D1", "depth": 4}, headers=H(keys["staff"])).json()
    assert [p["code"] for p in staff["path"]] == ["D1"]  # its own breadcrumbs, not the cached city-wide ones
    assert {f["id"] for f in staff["geojson"]["features"]} == {"G1", "G2"}
    # the whole city, cached for a city-wide key, stays out of reach of the district key
    assert client.get("/api/v1/map", headers=H(keys["analyst"])).status_code == 200
    r = client.get("/api/v1/map", params={"unit": "C"}, headers=H(keys["staff"]))
    assert r.status_code == 403 and r.json()["field"] == "unit"
    default = client.get("/api/v1/map", headers=H(keys["staff"])).json()
    assert default["unit"]["code"] == "D1" and {f["id"] for f in default["geojson"]["features"]} == {"M1"}
    assert ctx.states.misses == 4 and ctx.states.hits == 0
    # the same view for the same scope is served from the cache, byte for byte
    again = client.get("/api/v1/map", params={"unit": "D1", "depth": 4}, headers=H(keys["duty"])).json()
    assert again == city_wide and ctx.states.hits == 1


def test_a_write_through_the_api_shows_on_the_next_map(city):
    client, keys, _, ctx = city
    before = readings_by_code(client.get("/api/v1/map", params={"unit": "M1"}, headers=H(keys["duty"])).json())
    assert before == {"G1": 30, "G2": 30}
    body = [{"sensor_id": "P1", "ts": (NOW - timedelta(seconds=s)).isoformat(), "value": 0.3} for s in (5, 10, 15)]
    assert client.post("/api/v1/readings", json=body, headers=H(keys["duty"])).status_code == 200
    after = readings_by_code(client.get("/api/v1/map", params={"unit": "M1"}, headers=H(keys["duty"])).json())
    assert after == {"G1": 33, "G2": 30}
    assert ctx.states.misses == 2


def test_a_write_elsewhere_shows_once_the_watcher_looks_or_the_entry_is_too_old(city):
    from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation

    client, keys, store, ctx = city
    t = [0.0]
    ctx.states = StateCache(ttl_s=2.0, monotonic=lambda: t[0])

    def alerts() -> dict[str, int]:
        m = client.get("/api/v1/map", headers=H(keys["duty"])).json()
        return {f["id"]: f["properties"]["open_alerts"] for f in m["geojson"]["features"]}

    assert alerts() == {"D1": 0, "D2": 0}
    AlertManager(store, AlertPolicy(), clock=lambda: NOW).observe([Observation("P1", "threshold", 3, NOW, "low")])
    assert alerts() == {"D1": 0, "D2": 0}  # written behind the API's back, the watcher has not looked yet
    ctx.watcher.check()                    # its look publishes the alert: the version moves
    assert alerts() == {"D1": 1, "D2": 0}
    AlertManager(store, AlertPolicy(), clock=lambda: NOW).observe([Observation("P2", "threshold", 3, NOW, "low")])
    t[0] += 2.5                            # no look, but the entry is older than its time to live
    assert alerts() == {"D1": 1, "D2": 1}


def test_served_pre_gzipped_to_clients_that_take_gzip(city, monkeypatch):
    from cityvitals.api import responses

    client, keys, _, ctx = city
    h = H(keys["duty"])
    small = client.get("/api/v1/public/health", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers and small.json()["unit"]["code"] == "C"  # under 4 KB: as is
    monkeypatch.setattr(responses, "GZIP_MIN_BYTES", 100)  # the test city's layers are small
    plain = client.get("/api/v1/map", params={"depth": 4, "format": "compact"}, headers=h | {"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with client.stream("GET", "/api/v1/map", params={"depth": 4, "format": "compact"},
                       headers=h | {"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert r.headers["content-encoding"] == "gzip" and "Accept-Encoding" in r.headers["vary"]
    assert gzip.decompress(raw) == plain.content  # gzipped once, not twice by the middleware
    assert plain.json()["compact"]["codes"] == ["G1", "G2", "G3"]
    assert ctx.states.misses == 2  # the public summary and the layer, each computed once


def test_many_clients_asking_at_once_share_one_computation():
    cache = StateCache(ttl_s=60)
    n, asked, made = 8, [0], []
    lock = threading.Lock()

    def make():
        deadline = time.monotonic() + 5
        while asked[0] < n and time.monotonic() < deadline:  # until every thread has asked (bounded)
            time.sleep(0.005)
        made.append(1)
        return {"state": "computed"}

    out = []

    def ask():
        with lock:
            asked[0] += 1
        out.append(cache.get(("map", "C"), 7, make).body)

    threads = [threading.Thread(target=ask) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert out == [b'{"state":"computed"}'] * n and len(made) == 1


def test_an_entry_only_too_old_is_refreshed_by_one_thread_while_others_get_it():
    t = [0.0]
    cache = StateCache(ttl_s=1.0, monotonic=lambda: t[0])
    cache.get("k", 1, lambda: {"v": 1})
    t[0] = 5.0
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return {"v": 2}

    th = threading.Thread(target=lambda: cache.get("k", 1, slow))
    th.start()
    assert started.wait(5)
    assert cache.get("k", 1, lambda: {"v": 3}).body == b'{"v":1}'  # the old bytes while the refresh runs
    assert cache.stale_served == 1
    release.set()
    th.join(5)
    assert cache.get("k", 1, lambda: {"v": 4}).body == b'{"v":2}'
    # a version change is never answered with old bytes, even while a refresh runs
    assert cache.get("k", 2, lambda: {"v": 5}).body == b'{"v":5}'


def test_the_oldest_entries_go_beyond_the_size_bounds():
    cache = StateCache(ttl_s=60, max_entries=3, max_bytes=10_000)
    for i in range(5):
        cache.get(("at", i), 1, lambda i=i: {"i": i})
    assert list(cache._entries) == [("at", 2), ("at", 3), ("at", 4)]
    cache.get(("big",), 1, lambda: {"x": "a" * 10_000})  # over the byte budget with the others: they go
    assert list(cache._entries) == [("big",)] and cache.nbytes() > 10_000  # the newest stays, even alone too big
