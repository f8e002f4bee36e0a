"""HTTP API: auth, roles, area scope, audit, users, units/sensors/readings/quarantine,
keyset pagination, error shape, input limits. A small city built in the test."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
import shapely
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cityvitals.api import Limits, create_app
from cityvitals.ingest import Ingestor, ingest_records

pytestmark = pytest.mark.both_backends  # the read paths on DuckDB and PostgreSQL

UTC = timezone.utc
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LON, LAT = 116.30, 39.90
# code, name, level, depth, parent, (x0, y0, x1, y1) in 0.01 degree steps
UNITS = [
    ("C", "测试市 Test City", "city", 0, None, (0, 0, 8, 4)),
    ("D1", "东区 East", "district", 1, "C", (0, 0, 4, 4)),
    ("D2", "西区 West", "district", 1, "C", (4, 0, 8, 4)),
    ("S1", "一街 Street 1", "street", 2, "D1", (0, 0, 4, 4)),
    ("S2", "二街 Street 2", "street", 2, "D2", (4, 0, 8, 4)),
    ("M1", "一社区 Community 1", "community", 3, "S1", (0, 0, 4, 4)),
    ("M2", "二社区 Community 2", "community", 3, "S2", (4, 0, 8, 4)),
    ("G1", "网格1", "grid", 4, "M1", (0, 0, 2, 4)),
    ("G2", "网格2", "grid", 4, "M1", (2, 0, 4, 4)),
    ("G3", "网格3", "grid", 4, "M2", (4, 0, 8, 4)),
]
SENSORS = [("P1", "water_pressure", "MPa", "G1"), ("A1", "pm25", "ug/m3", "G2"), ("P2", "water_pressure", "MPa", "G3")]


def build_city(store, *, now: datetime = NOW, minutes: int = 30) -> dict[str, str]:
    """Units, sensors, a half hour of readings; users admin/duty/analyst/staff(D1). Returns keys."""
    boxes = [shapely.box(LON + b[0] / 100, LAT + b[1] / 100, LON + b[2] / 100, LAT + b[3] / 100) for *_, b in UNITS]
    store.units.upsert(pl.DataFrame({
        "code": [u[0] for u in UNITS], "name": [u[1] for u in UNITS], "level": [u[2] for u in UNITS],
        "depth": [u[3] for u in UNITS], "parent_code": [u[4] for u in UNITS],
        "geometry_wkb": [shapely.to_wkb(b) for b in boxes],
        "centroid_lon": [b.centroid.x for b in boxes], "centroid_lat": [b.centroid.y for b in boxes],
    }))
    store.sensors.upsert(pl.DataFrame({
        "id": [s[0] for s in SENSORS], "kind": [s[1] for s in SENSORS], "unit": [s[2] for s in SENSORS],
        "unit_code": [s[3] for s in SENSORS], "department": ["water", "env", "water"],
    }))
    recs = []
    for m in range(minutes):
        ts = (now - timedelta(minutes=minutes - m)).isoformat()
        recs += [{"sensor_id": "P1", "ts": ts, "value": 0.30}, {"sensor_id": "P2", "ts": ts, "value": 0.31},
                 {"sensor_id": "A1", "ts": ts, "value": 35.0 + m}]
    ingest_records(store, recs, ingestor=Ingestor(store, clock=lambda: now))
    return {
        "admin": store.users.add("root", "admin"),
        "duty": store.users.add("li", "duty_officer"),
        "analyst": store.users.add("wang", "analyst"),
        "staff": store.users.add("zhao", "department_staff", area="D1", department="water"),
    }


def H(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def city(store):
    keys = build_city(store)
    app = create_app(store, clock=lambda: NOW, poll_interval=None, limits=Limits(max_body_bytes=64_000, max_records=100))
    with TestClient(app) as client:
        yield client, keys, store


# ------------------------------------------------------------------ auth, roles, scope

def test_everything_but_public_health_needs_a_key(city):
    client, keys, _ = city
    r = client.get("/api/v1/units")
    assert r.status_code == 401 and r.json()["field"] == "authorization" and "Bearer" in r.json()["problem"]
    assert client.get("/api/v1/units", headers={"X-API-Key": "cv_00000000_" + "x" * 43}).status_code == 401
    assert client.get("/api/v1/units", headers={"X-API-Key": keys["analyst"]}).status_code == 200
    pub = client.get("/api/v1/public/health").json()
    assert pub["unit"]["code"] == "C" and pub["readings_1h"] == 90


def test_roles_and_revocation_and_rotation(city):
    client, keys, store = city
    body = [{"sensor_id": "P1", "ts": NOW.isoformat(), "value": 0.3}]
    r = client.post("/api/v1/readings", json=body, headers=H(keys["analyst"]))
    assert r.status_code == 403 and r.json()["field"] == "role" and "duty_officer" in r.json()["problem"]
    assert client.post("/api/v1/readings", json=body, headers=H(keys["duty"])).json()["accepted"] == 1
    assert client.get("/api/v1/audit", headers=H(keys["duty"])).status_code == 403
    store.users.revoke("wang")
    assert client.get("/api/v1/me", headers=H(keys["analyst"])).status_code == 401
    new = store.users.rotate("li")
    assert client.get("/api/v1/me", headers=H(keys["duty"])).status_code == 401
    assert client.get("/api/v1/me", headers=H(new)).json()["role"] == "duty_officer"


def test_area_scope_hides_other_districts(city):
    client, keys, _ = city
    h = H(keys["staff"])
    me = client.get("/api/v1/me", headers=h).json()
    assert me["area_code"] == "D1" and me["home_unit"] == "D1"
    codes = [u["code"] for u in client.get("/api/v1/units", headers=h).json()["items"]]
    assert codes == ["D1", "G1", "G2", "M1", "S1"]
    r = client.get("/api/v1/units/D2", headers=h)
    assert r.status_code == 403 and r.json()["field"] == "code"
    assert [s["id"] for s in client.get("/api/v1/sensors", headers=h).json()["items"]] == ["A1", "P1"]
    assert client.get("/api/v1/sensors/P2", headers=h).status_code == 403
    rd = client.get("/api/v1/readings", params={"start": (NOW - timedelta(hours=1)).isoformat(),
                                                "end": NOW.isoformat()}, headers=h).json()
    assert {r["sensor_id"] for r in rd["items"]} == {"A1", "P1"}
    assert client.get("/api/v1/readings", params={"start": NOW.isoformat(), "end": NOW.isoformat(), "unit": "G3"},
                      headers=h).status_code in (403, 422)
    assert client.get("/api/v1/quarantine", headers=h).status_code == 403
    m = client.get("/api/v1/map", headers=h).json()
    assert [p["code"] for p in m["path"]] == ["D1"]
    assert client.get("/api/v1/map", params={"unit": "C"}, headers=h).status_code == 403


def test_writes_are_audited(city):
    client, keys, _ = city
    body = [{"sensor_id": "P1", "ts": NOW.isoformat(), "value": 0.3}, {"sensor_id": "NOPE", "ts": NOW.isoformat(), "value": 1}]
    client.post("/api/v1/readings", json=body, headers=H(keys["duty"]))
    client.post("/api/v1/readings", json=body, headers=H(keys["analyst"]))  # refused: audited too
    log = client.get("/api/v1/audit", headers=H(keys["admin"])).json()["items"]
    api = [e for e in log if e["action"].startswith("POST")]
    assert [(e["actor"], e["status"]) for e in api] == [("wang", 403), ("li", 200)]
    assert '"accepted": 1' in api[1]["detail"] and api[1]["action"] == "POST /api/v1/readings"
    assert {e["action"] for e in log} >= {"user.add"}


# ------------------------------------------------------------------ resources

def test_units_tree_detail_children_search(city):
    client, keys, _ = city
    h = H(keys["analyst"])
    tree = client.get("/api/v1/units/tree", params={"depth": 4}, headers=h).json()
    assert tree["code"] == "C" and [c["code"] for c in tree["children"]] == ["D1", "D2"]
    assert tree["children"][0]["children"][0]["children"][0]["children"][1]["code"] == "G2"
    u = client.get("/api/v1/units/G1", headers=h).json()
    assert [p["code"] for p in u["path"]] == ["C", "D1", "S1", "M1", "G1"]
    assert u["geometry"]["type"] == "Polygon" and len(u["geometry"]["coordinates"][0]) == 5
    assert [c["code"] for c in client.get("/api/v1/units/M1/children", headers=h).json()["items"]] == ["G1", "G2"]
    assert [c["code"] for c in client.get("/api/v1/units", params={"q": "社区"}, headers=h).json()["items"]] == ["M1", "M2"]
    assert [c["code"] for c in client.get("/api/v1/units", params={"q": "G"}, headers=h).json()["items"]] == ["G1", "G2", "G3"]
    r = client.get("/api/v1/units/NOPE", headers=h)
    assert r.status_code == 404 and r.json() == {"error": "not_found", "field": "code", "problem": "no unit with code 'NOPE'"}


def test_map_drills_down_two_clicks_from_city_to_grid(city):
    client, keys, _ = city
    h = H(keys["analyst"])
    m = client.get("/api/v1/map", headers=h).json()
    assert m["unit"]["code"] == "C" and m["layer_level"] == "district" and m["colour_by"] in ("readings_1h", "health")
    feats = {f["properties"]["code"]: f["properties"] for f in m["geojson"]["features"]}
    assert set(feats) == {"D1", "D2"} and feats["D1"]["readings_1h"] == 60 and feats["D2"]["readings_1h"] == 30
    m = client.get("/api/v1/map", params={"unit": "D1"}, headers=h).json()  # click 1: a district shows communities
    assert m["layer_level"] == "community" and [p["code"] for p in m["path"]] == ["C", "D1"]
    m = client.get("/api/v1/map", params={"unit": "M1"}, headers=h).json()  # click 2: grid cells
    assert m["layer_level"] == "grid" and {f["id"] for f in m["geojson"]["features"]} == {"G1", "G2"}
    m = client.get("/api/v1/map", params={"unit": "G1"}, headers=h).json()  # a grid cell among its neighbours
    assert m["highlight"] == "G1" and {f["id"] for f in m["geojson"]["features"]} == {"G1", "G2"}
    all_grids = client.get("/api/v1/map", params={"depth": 4}, headers=h).json()
    assert all_grids["n_units"] == 3


def test_sensors_filter_by_kind_and_unit(city):
    client, keys, _ = city
    h = H(keys["analyst"])
    assert [s["id"] for s in client.get("/api/v1/sensors", params={"kind": "water_pressure"}, headers=h).json()["items"]] == ["P1", "P2"]
    assert [s["id"] for s in client.get("/api/v1/sensors", params={"unit": "D2"}, headers=h).json()["items"]] == ["P2"]
    assert client.get("/api/v1/sensors/A1", headers=h).json()["department"] == "env"


def test_readings_keyset_pagination_walks_every_row_once(city):
    client, keys, _ = city
    h = H(keys["analyst"])
    params = {"start": (NOW - timedelta(hours=1)).isoformat(), "end": NOW.isoformat(), "limit": 7}
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get("/api/v1/readings", params={**params, **({"cursor": cursor} if cursor else {})}, headers=h).json()
        seen += [(x["ts"], x["sensor_id"]) for x in r["items"]]
        pages += 1
        cursor = r["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 90 == len(set(seen)) and seen == sorted(seen) and pages == 13
    r = client.get("/api/v1/readings", params={**params, "limit": 5000}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "limit"
    assert client.get("/api/v1/readings", params={**params, "cursor": "!!"}, headers=h).json()["field"] == "cursor"


def test_readings_resampled_with_time_bucket(city):
    client, keys, _ = city
    h = H(keys["analyst"])
    r = client.get("/api/v1/readings", params={"start": (NOW - timedelta(hours=1)).isoformat(), "end": NOW.isoformat(),
                                               "interval": "PT15M", "sensor": "A1"}, headers=h).json()
    assert [x["n"] for x in r["items"]] == [15, 15]
    assert r["items"][0]["mean"] == pytest.approx(35 + 7) and r["items"][1]["max"] == 35 + 29
    bad = client.get("/api/v1/readings", params={"start": NOW.isoformat(), "end": NOW.isoformat(), "interval": "5m"}, headers=h)
    assert bad.status_code == 422


def test_quarantine_list_and_counts(city):
    client, keys, _ = city
    client.post("/api/v1/readings", json=[{"sensor_id": "NOPE", "ts": NOW.isoformat(), "value": 1}, {"sensor_id": "P1"}],
                headers=H(keys["duty"]))
    h = H(keys["analyst"])
    c = client.get("/api/v1/quarantine/counts", headers=h).json()
    assert c["total"] == 2
    q = client.get("/api/v1/quarantine", params={"limit": 1}, headers=h).json()
    assert len(q["items"]) == 1 and q["next_cursor"]
    q2 = client.get("/api/v1/quarantine", params={"limit": 1, "cursor": q["next_cursor"]}, headers=h).json()
    assert q2["items"][0]["id"] < q["items"][0]["id"] and q2["next_cursor"] is None


# ------------------------------------------------------------------ errors and limits

def test_validation_errors_name_the_field(city):
    client, keys, _ = city
    h = H(keys["analyst"])
    r = client.get("/api/v1/readings", params={"start": "yesterday", "end": NOW.isoformat()}, headers=h)
    body = r.json()
    assert r.status_code == 422 and body["error"] == "invalid" and body["field"] == "start" and body["problem"]
    r = client.get("/api/v1/readings", params={"end": NOW.isoformat()}, headers=h)
    assert r.json()["field"] == "start"
    r = client.get("/api/v1/readings", params={"start": "2026-05-01T10:00:00", "end": NOW.isoformat()}, headers=h)
    assert r.json()["field"] == "start" and "offset" in r.json()["problem"]
    r = client.get("/api/v1/readings", params={"start": NOW.isoformat(), "end": (NOW - timedelta(hours=1)).isoformat()}, headers=h)
    assert r.json() == {"error": "invalid", "field": "end", "problem": "end must be after start"}
    r = client.post("/api/v1/readings", content=b"{not json", headers=H(keys["duty"]))
    assert r.status_code == 422 and r.json()["field"] == "body"
    r = client.post("/api/v1/readings", json={"sensor_id": "P1"}, headers=H(keys["duty"]))
    assert r.status_code == 422 and "array" in r.json()["problem"]


def test_limits_body_size_list_length_time_range(city):
    client, keys, _ = city
    h = H(keys["duty"])
    big = [{"sensor_id": "P1", "ts": NOW.isoformat(), "value": 0.3, "pad": "x" * 1000}] * 80
    r = client.post("/api/v1/readings", json=big, headers=h)
    assert r.status_code == 413 and r.json()["field"] == "body" and "64,000" in r.json()["problem"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(100):
            yield b"x" * 1000

    assert client.post("/api/v1/readings", content=chunks(), headers=h).status_code == 413
    many = [{"sensor_id": "P1", "ts": NOW.isoformat(), "value": 0.3}] * 101
    r = client.post("/api/v1/readings", json=many, headers=h)
    assert r.status_code == 422 and "at most 100" in r.json()["problem"]
    r = client.get("/api/v1/readings", params={"start": (NOW - timedelta(days=30)).isoformat(), "end": NOW.isoformat()}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "end" and "7 days" in r.json()["problem"]
    ok = client.get("/api/v1/readings", params={"start": (NOW - timedelta(days=30)).isoformat(), "end": NOW.isoformat(),
                                                "interval": "PT1H"}, headers=h)
    assert ok.status_code == 200
    r = client.get("/api/v1/units", params={"q": "x" * 500}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "q"


def test_post_readings_is_stored_before_the_answer(city):
    client, keys, store = city
    n0 = store.readings.count()
    body = [{"sensor_id": "P1", "ts": (NOW + timedelta(seconds=i)).isoformat(), "value": 0.3} for i in range(3)]
    r = client.post("/api/v1/readings", json=body, headers=H(keys["duty"])).json()
    assert r["accepted"] == 3 and store.readings.count() == n0 + 3
    again = client.post("/api/v1/readings", json=body, headers=H(keys["duty"])).json()
    assert again["accepted"] == 0 and again["duplicates"] == 3


def test_openapi_document_lists_the_resources(city):
    client, _, _ = city
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for p in ("/api/v1/units", "/api/v1/units/{code}", "/api/v1/sensors", "/api/v1/readings", "/api/v1/quarantine",
              "/api/v1/stream", "/api/v1/public/health", "/api/v1/map"):
        assert p in paths


# ------------------------------------------------------------------ CLI

def test_users_cli_prints_key_once_and_manages_it(tmp_path):
    from cityvitals.cli.users import app
    from cityvitals.store import open_store

    home = str(tmp_path / "h")
    runner = CliRunner()
    r = runner.invoke(app, ["add", "li", "--role", "duty_officer", "--home", home])
    assert r.exit_code == 0, r.output
    key = r.output.strip().splitlines()[-1]
    assert key.startswith("cv_")
    r = runner.invoke(app, ["list", "--home", home, "--json"])
    assert key not in r.output and '"duty_officer"' in r.output
    r = runner.invoke(app, ["add", "x", "--role", "boss", "--home", home])
    assert r.exit_code != 0 and "boss" in str(r.exception or r.output)
    r = runner.invoke(app, ["rotate", "li", "--home", home])
    new = r.output.strip().splitlines()[-1]
    assert runner.invoke(app, ["revoke", "li", "--home", home]).exit_code == 0
    with open_store(home) as store:
        assert store.users.authenticate(key) is None and store.users.authenticate(new) is None
        row = store.con.execute("SELECT key_hash FROM users").fetchall()[0][0]
        assert row is None
        assert [e["action"] for e in store.users.audit_log()] == ["user.revoke", "user.rotate", "user.add"]
