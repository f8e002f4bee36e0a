"""The cases API: roles acting as workflow roles, department and area scope, the actions a caller
is offered, errors naming the field, the audit log, and case / incident events on the live
stream. Over the small test city of test_api_core, with cases opened through the desk."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from test_api_core import LAT, LON, NOW, H, build_city
from test_api_stream import read_events

from cityvitals.api import create_app

pytestmark = pytest.mark.both_backends  # DuckDB and PostgreSQL in every run (tests/conftest.py)

pytest.importorskip("cityvitals.dispose")


@pytest.fixture
def city(store):
    from cityvitals.dispose import CaseDesk

    keys = build_city(store)
    keys["sanit"] = store.users.add("sun", "department_staff", department="sanitation")
    desk = CaseDesk(store, clock=lambda: NOW)
    desk.sync_departments()
    # an inspector's report (no on-site verification needed) in G1 (district D1), and a citizen's in G3 (D2)
    a = desk.report(category="SA01", lon=LON + 0.01, lat=LAT + 0.01, text="垃圾堆积 rubbish piled up",
                    source="inspector", actor="lin", role="inspector")["case_id"]
    b = desk.report(category="SA01", lon=LON + 0.06, lat=LAT + 0.01, text="路灯不亮 street light out",
                    source="public", reporter={"name": "王伟", "phone": "13812345678"})["case_id"]
    app = create_app(store, clock=lambda: NOW + timedelta(hours=1), poll_interval=None)
    with TestClient(app) as client:
        yield client, keys, store, app.state.ctx, a, b


def act(client, key, case_id, action, **body):
    return client.post(f"/api/v1/cases/{case_id}/{action}", json=body, headers=H(key))


def test_list_get_and_the_actions_each_caller_is_offered(city):
    client, keys, store, ctx, a, b = city
    items = client.get("/api/v1/cases", headers=H(keys["duty"])).json()["items"]
    assert [c["id"] for c in items] == [b, a] and all("token" not in c for c in items)
    offered = {c["id"]: {x["action"]: x["as"] for x in c["actions"]} for c in items}
    assert offered[a]["file"] == "supervisor" and offered[a]["reject"] == "operator" and "dispatch" not in offered[a]
    assert offered[b]["request_verify"] == "operator"
    assert all(c["actions"] == [] for c in client.get("/api/v1/cases", headers=H(keys["analyst"])).json()["items"])
    one = client.get(f"/api/v1/cases/{a}", headers=H(keys["analyst"])).json()
    assert one["state"] == "reported" and [e["action"] for e in one["events"]] == ["report"] and one["actions"] == []
    assert "王伟" not in json.dumps(client.get(f"/api/v1/cases/{b}", headers=H(keys["admin"])).json(), ensure_ascii=False)
    depts = client.get("/api/v1/cases/departments", headers=H(keys["analyst"])).json()["items"]
    assert {"sanitation", "water"} <= {d["code"] for d in depts}


def test_a_case_through_file_dispatch_handle_forward_close(city):
    client, keys, store, ctx, a, b = city
    duty, sanit = keys["duty"], keys["sanit"]
    r = act(client, duty, a, "file")
    assert r.status_code == 403 and r.json()["field"] == "as"          # a duty officer says which desk role
    assert act(client, duty, a, "file", **{"as": "supervisor"}).json()["state"] == "filed"
    r = act(client, duty, a, "dispatch", **{"as": "dispatcher", "department": "sanitation"})
    assert r.status_code == 200 and r.json()["state"] == "dispatched" and r.json()["department"] == "sanitation"
    assert r.json()["due_at"] is not None
    # the sanitation department now sees the case and is offered accept / return
    mine = client.get("/api/v1/cases", headers=H(sanit)).json()["items"]
    assert [c["id"] for c in mine] == [a]
    assert {x["action"] for x in mine[0]["actions"]} == {"accept", "return"}
    assert act(client, sanit, a, "accept").json()["state"] == "in_progress"
    assert act(client, sanit, a, "handle", note="cleared").json()["state"] == "handled"
    assert act(client, duty, a, "forward", **{"as": "dispatcher"}).json()["state"] == "checking"
    assert act(client, sanit, a, "close").status_code == 409              # the department cannot close its own case
    assert act(client, duty, a, "close", **{"as": "inspector"}).json()["state"] == "closed"
    log = [e["action"] for e in client.get(f"/api/v1/cases/{a}", headers=H(duty)).json()["events"]]
    assert log == ["report", "file", "dispatch", "accept", "handle", "forward", "close"]
    assert client.get("/api/v1/cases", params={"state": "closed"}, headers=H(duty)).json()["items"][0]["id"] == a
    audit = [e for e in client.get("/api/v1/audit", headers=H(keys["admin"])).json()["items"] if "/cases/" in e["action"]]
    assert ("sun", 200) in [(e["actor"], e["status"]) for e in audit] and ("sun", 409) in [(e["actor"], e["status"]) for e in audit]


def test_roles_department_and_area_scope(city):
    client, keys, store, ctx, a, b = city
    assert act(client, keys["analyst"], a, "file").status_code == 403
    r = act(client, keys["sanit"], a, "accept")       # not dispatched to anyone yet: not theirs
    assert r.status_code == 403 and r.json()["field"] == "case_id"
    assert client.get(f"/api/v1/cases/{a}", headers=H(keys["sanit"])).status_code == 403
    assert client.get("/api/v1/cases", headers=H(keys["sanit"])).json()["items"] == []
    # staff of D1's water department: a D2 case is outside the area, a D1 case outside the department
    act(client, keys["duty"], a, "file", **{"as": "supervisor"})
    act(client, keys["duty"], a, "dispatch", **{"as": "dispatcher", "department": "water"})
    staff = client.get("/api/v1/cases", headers=H(keys["staff"])).json()["items"]
    assert [c["id"] for c in staff] == [a]
    assert client.get(f"/api/v1/cases/{b}", headers=H(keys["staff"])).status_code == 403
    r = client.get(f"/api/v1/cases/{a}/reporters", params={"purpose": "call back"}, headers=H(keys["analyst"]))
    assert r.status_code == 403, r.json()
    rep = client.get(f"/api/v1/cases/{b}/reporters", params={"purpose": "call back"}, headers=H(keys["admin"])).json()
    assert rep["reporters"][0]["phone"] == "13812345678"
    assert client.get("/api/v1/cases", headers={}).status_code == 401


def test_bad_input_names_the_field(city):
    client, keys, store, ctx, a, b = city
    duty = keys["duty"]
    r = act(client, duty, a, "teleport", **{"as": "supervisor"})
    assert r.status_code == 404 and r.json()["field"] == "action"
    r = act(client, duty, 99999, "file", **{"as": "supervisor"})
    assert r.status_code == 404 and r.json()["field"] == "case_id"
    r = act(client, duty, a, "file", **{"as": "supervisor", "colour": "red"})
    assert r.status_code == 422 and r.json()["field"] == "colour"
    r = act(client, duty, a, "dispatch", **{"as": "dispatcher", "department": "water"})   # not filed yet
    assert r.status_code == 409 and "filed" in r.json()["problem"]
    r = act(client, duty, a, "file", **{"as": "janitor"})
    assert r.status_code == 403 and r.json()["field"] == "as"
    assert client.get("/api/v1/cases/abc", headers=H(duty)).json()["field"] == "case_id"
    r = client.get("/api/v1/cases", params={"state": "lost"}, headers=H(duty))
    assert r.status_code == 422 and r.json()["field"] == "state"
    assert client.get("/api/v1/cases", params={"limit": 0}, headers=H(duty)).json()["field"] == "limit"
    r = client.get("/api/v1/cases/stats", params={"by": "colour"}, headers=H(duty))
    assert r.status_code == 422 and r.json()["field"] == "by"
    assert client.get("/api/v1/cases/stats", params={"by": "department"}, headers=H(duty)).status_code == 200
    r = client.put(f"/api/v1/cases/{a}/photos", content=b"not an image", headers=H(duty))
    assert r.status_code == 422 and r.json()["field"] == "body"


def test_case_and_incident_changes_reach_the_stream_with_department_scope(city):
    client, keys, store, ctx, a, b = city
    start = ctx.hub.last_id
    act(client, keys["duty"], a, "file", **{"as": "supervisor"})
    act(client, keys["duty"], a, "dispatch", **{"as": "dispatcher", "department": "water"})
    with client.stream("GET", "/api/v1/stream", params={"linger": 0},
                       headers=H(keys["duty"]) | {"Last-Event-ID": str(start)}) as s:
        got = [e for e in read_events(s) if e["event"] == "case"]
    assert [(e["data"]["case_id"], e["data"]["action"], e["data"]["to_state"]) for e in got] == [
        (a, "file", "filed"), (a, "dispatch", "dispatched")]
    with client.stream("GET", "/api/v1/stream", params={"linger": 0},
                       headers=H(keys["sanit"]) | {"Last-Event-ID": str(start)}) as s:
        assert [e for e in read_events(s) if e["event"] == "case"] == []   # another department's case
    if not hasattr(store, "incidents"):
        return
    with store.transaction() as con:
        con.execute("INSERT INTO incidents (id, type, state, title, severity, level, top_cause, units, updated_at, n_alerts) "
                    "VALUES (7, 'water_main_burst', 'open', 'water outage', 'high', 3, 'WM004', '[\"G3\"]', ?, 2)", [NOW])
        con.execute("INSERT INTO incident_history VALUES (7, ?, 'opened', NULL)", [NOW])
    mark = ctx.hub.last_id
    ctx.watcher.check()
    ctx.watcher.check()  # each change once
    with client.stream("GET", "/api/v1/stream", params={"linger": 0},
                       headers=H(keys["duty"]) | {"Last-Event-ID": str(mark)}) as s:
        inc = read_events(s)
    assert [(e["event"], e["data"]["incident_id"], e["data"]["event"]) for e in inc] == [("incident", 7, "opened")]
    with client.stream("GET", "/api/v1/stream", params={"linger": 0},
                       headers=H(keys["staff"]) | {"Last-Event-ID": str(mark)}) as s:
        assert read_events(s) == []  # the incident lies in D2, outside the staff's area
