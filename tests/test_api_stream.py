"""The live event stream: ids increase, a client resuming with Last-Event-ID misses
nothing, a client too far behind is told to reload, area scope applies to events."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from test_api_core import NOW, H, build_city

from cityvitals.api import create_app
from cityvitals.api.events import EventHub
from cityvitals.ingest import Ingestor, ingest_records

pytestmark = pytest.mark.both_backends  # the read paths on DuckDB and PostgreSQL


def read_events(response) -> list[dict]:
    events, cur = [], {}
    for line in response.iter_lines():
        if line == "":
            if cur:
                events.append(cur)
            cur = {}
        elif line.startswith(":"):
            continue
        else:
            k, _, v = line.partition(": ")
            cur[k] = json.loads(v) if k == "data" else int(v) if k == "id" else v
    return events


def stream(client, key, last=None, linger=0):
    headers = H(key) | ({"Last-Event-ID": str(last)} if last is not None else {})
    with client.stream("GET", "/api/v1/stream", params={"linger": linger}, headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return read_events(r)


@pytest.fixture
def live(store):
    keys = build_city(store)
    app = create_app(store, clock=lambda: NOW, poll_interval=None, hub=EventHub(capacity=5, first_id=1000))
    with TestClient(app) as client:
        yield client, keys, store, app.state.ctx


def post(client, key, records):
    r = client.post("/api/v1/readings", json=records, headers=H(key))
    assert r.status_code == 200
    return r.json()


def reading(sensor, minute, value=0.3):
    return {"sensor_id": sensor, "ts": (NOW + timedelta(minutes=minute)).isoformat(), "value": value}


def test_resume_with_last_event_id_misses_nothing(live):
    client, keys, store, ctx = live
    hello = stream(client, keys["duty"])
    assert [e["event"] for e in hello] == ["hello"]
    start = hello[0]["id"]
    post(client, keys["duty"], [reading("P1", 1), reading("P2", 1)])
    post(client, keys["duty"], [reading("A1", 2, 40), {"sensor_id": "GHOST", "ts": NOW.isoformat(), "value": 1}])
    got = stream(client, keys["duty"], last=start)
    assert [(e["event"], e["id"]) for e in got] == [("readings", start + 1), ("readings", start + 2), ("quarantine", start + 3)]
    assert got[0]["data"]["readings"] == 2 and got[0]["data"]["units"] == {"G1": 1, "G3": 1}
    assert got[2]["data"]["counts"] == {"unknown_sensor": 1}
    # the client saw up to start+2, dropped, reconnects: it gets exactly the rest
    assert [e["id"] for e in stream(client, keys["duty"], last=start + 2)] == [start + 3]
    assert stream(client, keys["duty"], last=start + 3) == []


def test_changes_made_outside_the_api_are_published(live):
    client, keys, store, ctx = live
    start = ctx.hub.last_id
    ingest_records(store, [reading("P1", 5)], ingestor=Ingestor(store, clock=lambda: NOW))
    ctx.watcher.check()
    ctx.watcher.check()  # idempotent: each change once
    got = stream(client, keys["duty"], last=start)
    assert [e["event"] for e in got] == ["readings"] and got[0]["data"]["units"] == {"G1": 1}


def test_a_client_too_far_behind_is_told_to_reload(live):
    client, keys, store, ctx = live
    start = ctx.hub.last_id
    for m in range(7):  # the ring holds 5
        post(client, keys["duty"], [reading("P1", 10 + m)])
    got = stream(client, keys["duty"], last=start)
    assert [e["event"] for e in got] == ["reset"] and got[0]["id"] == ctx.hub.last_id
    assert stream(client, keys["duty"], last=got[0]["id"]) == []
    assert [e["event"] for e in stream(client, keys["duty"], last=10**15)] == ["reset"]  # from another server life
    r = client.get("/api/v1/stream", headers=H(keys["duty"]) | {"Last-Event-ID": "abc"})
    assert r.status_code == 422 and r.json()["field"] == "Last-Event-ID"


def test_area_scope_filters_events(live):
    client, keys, store, ctx = live
    start = ctx.hub.last_id
    post(client, keys["duty"], [reading("P2", 3)])            # D2 only
    post(client, keys["duty"], [reading("P1", 3), reading("P2", 4)])  # both
    got = stream(client, keys["staff"], last=start)           # staff of D1
    assert [e["id"] for e in got] == [start + 2] and got[0]["data"]["units"] == {"G1": 1}
    assert got[0]["data"]["readings"] == 1


def test_an_open_stream_receives_new_events(live):
    client, keys, store, ctx = live
    with client.stream("GET", "/api/v1/stream", params={"linger": 10}, headers=H(keys["duty"])) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("id: ")
        assert next(lines) == "event: hello"
        next(lines), next(lines)
        ctx.hub.publish("note", {"x": 1})  # from another thread, as the watcher does
        got = [next(lines) for _ in range(3)]
        assert got[1] == "event: note" and json.loads(got[2][6:]) == {"x": 1}
