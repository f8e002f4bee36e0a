"""Open311 GeoReport v2: discovery, services, definitions, POST with api_key, GET filters,
tokens, JSON and XML, the spec's errors; a round trip with the `georeport` client from
PyPI against a real local server; reporters' personal data never in any response."""

from __future__ import annotations

import socket
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient

from cityvitals.api import create_app
from cityvitals.dispose import Actor, CaseDesk

pytestmark = pytest.mark.both_backends  # DuckDB and PostgreSQL in every run (tests/conftest.py)

NOW = datetime(2026, 5, 6, 2, 0, tzinfo=timezone.utc)
PII = ["王小明", "13812345678", "xm@example.com", "11010519491231002X", "acct-77", "dev-99", "Wang"]


@pytest.fixture
def app_key(store):
    key = store.users.add("app", "analyst")
    app = create_app(store, clock=lambda: NOW, poll_interval=None, dashboard=False)
    return app, key


def _post(client, key, fmt="json", **extra):
    data = {"api_key": key, "service_code": "event.0102", "lat": "31.2304", "long": "121.4737",
            "description": "我是王小明，电话13812345678，身份证11010519491231002X，垃圾没人清", "first_name": "Wang",
            "last_name": "王小明", "email": "xm@example.com", "phone": "13812345678", "account_id": "acct-77",
            "device_id": "dev-99", **extra}
    return client.post(f"/open311/v2/requests.{fmt}", data=data)


def test_services_definitions_discovery_json_and_xml(app_key):
    app, _ = app_key
    with TestClient(app) as c:
        r = c.get("/open311/v2/services.json")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        svc = {s["service_code"]: s for s in r.json()}
        assert svc["event.0102"]["service_name"] == "暴露垃圾 Exposed garbage" and svc["event.0102"]["type"] == "realtime"
        x = c.get("/open311/v2/services.xml")
        assert x.text.startswith('<?xml version="1.0" encoding="utf-8"?>') and "text/xml" in x.headers["content-type"]
        root = ET.fromstring(x.content)
        assert root.tag == "services" and all(e.tag == "service" for e in root)
        assert {e.findtext("service_code") for e in root} == set(svc)
        d = c.get("/open311/v2/services/event.0102.xml")
        droot = ET.fromstring(d.content)
        assert droot.tag == "service_definition" and droot.findtext("service_code") == "event.0102"
        assert [a.findtext("code") for a in droot.find("attributes")] == ["priority", "time_limit"]
        assert c.get("/open311/v2/services/event.0102.json").json()["attributes"][0]["datatype"] == "singlevaluelist"
        e = c.get("/open311/v2/services/nope.0000.json")
        assert e.status_code == 404 and e.json()[0]["code"] == 404
        j = c.get("/open311/v2/services.xml", params={"jurisdiction_id": "elsewhere.org"})
        assert j.status_code == 404 and ET.fromstring(j.content).find("error/code").text == "404"
        assert c.get("/open311/v2/services.json", params={"jurisdiction_id": "cityvitals.local"}).status_code == 200
        disc = c.get("/open311/discovery.json").json()
        assert disc["endpoints"][0]["specification"] == "http://wiki.open311.org/GeoReport_v2"
        assert ET.fromstring(c.get("/open311/v2/discovery.xml").content).tag == "discovery"


def test_post_get_filters_tokens_errors_and_no_personal_data(app_key, store):
    app, key = app_key
    with TestClient(app) as c:
        assert _post(c, "").status_code == 403
        bad = _post(c, "cv_00000000_" + "x" * 40, fmt="xml")
        assert bad.status_code == 403 and ET.fromstring(bad.content).find("error/description").text == "Invalid api_key"
        assert _post(c, key, service_code="nope.0000").status_code == 404
        assert _post(c, key, lat="", long="").status_code == 400
        r = _post(c, key)
        assert r.status_code == 200
        sid = r.json()[0]["service_request_id"]
        assert isinstance(sid, str) and "token" not in r.json()[0]
        x = _post(c, key, fmt="xml", lat="31.2306")                           # a duplicate: attached
        assert ET.fromstring(x.content).find("request/service_request_id").text == sid
        b = _post(c, key, service_code="event.0699", lat="31.30")             # a batch service: token only
        tok = b.json()[0]["token"]
        assert "service_request_id" not in b.json()[0]
        t = c.get(f"/open311/v2/tokens/{tok}.json").json()[0]
        assert t["token"] == tok and t["service_request_id"].isdigit()
        assert c.get("/open311/v2/tokens/nope.json").status_code == 404
        # move the first case along: still open, with notes, agency and expected time
        desk = CaseDesk(store, clock=lambda: NOW)
        cid = int(sid)
        for a, who in [("request_verify", Actor("o", "operator")), ("verify", Actor("i", "inspector")),
                       ("file", Actor("s", "supervisor")), ("dispatch", Actor("d", "dispatcher"))]:
            desk.act(cid, a, who)
        one = c.get(f"/open311/v2/requests/{sid}.json").json()
        assert len(one) == 1 and one[0]["status"] == "open" and one[0]["status_notes"].startswith("已派遣")
        assert one[0]["agency_responsible"].startswith("环卫所") and one[0]["expected_datetime"] == "2026-05-06T07:00:00Z"
        assert one[0]["service_code"] == "event.0102" and one[0]["requested_datetime"] == "2026-05-06T02:00:00Z"
        assert c.get("/open311/v2/requests/99999.json").status_code == 404
        allr = c.get("/open311/v2/requests.json").json()
        assert len(allr) == 2
        assert [r["service_request_id"] for r in c.get("/open311/v2/requests.json", params={"status": "closed"}).json()] == []
        assert len(c.get("/open311/v2/requests.json", params={"service_code": "event.0699"}).json()) == 1
        assert len(c.get("/open311/v2/requests.json", params={"service_request_id": sid, "status": "closed"}).json()) == 1
        assert len(c.get("/open311/v2/requests.json", params={"start_date": "2026-05-07T00:00:00Z"}).json()) == 0
        assert c.get("/open311/v2/requests.json", params={"start_date": "2026-01-01T00:00:00Z",
                                                          "end_date": "2026-05-01T00:00:00Z"}).status_code == 400
        assert c.get("/open311/v2/requests.json", params={"status": "pending"}).status_code == 400
        assert len(c.get("/open311/v2/requests.json", params={"page_size": "1", "page": "2"}).json()) == 1
        xr = ET.fromstring(c.get("/open311/v2/requests.xml").content)
        assert xr.tag == "service_requests" and len(xr.findall("request")) == 2
        assert all(req.find(f) is not None for req in xr for f in ("service_request_id", "status", "requested_datetime"))
        # personal data never appears, in any format, on any resource
        bodies = [c.get(u).text for u in (
            "/open311/v2/requests.json", "/open311/v2/requests.xml", f"/open311/v2/requests/{sid}.xml",
            f"/open311/v2/requests/{sid}.json", f"/open311/v2/tokens/{tok}.xml")] + [r.text, x.text, b.text]
        for body in bodies:
            for secret in PII:
                assert secret not in body, secret
        assert {p["name"] for p in store.cases.reporters(cid)} == {"Wang 王小明"}          # kept for case workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_round_trip_with_the_georeport_client(app_key):
    georeport = pytest.importorskip("georeport")
    import httpx
    import uvicorn

    app, key = app_key
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}/open311/v2"
        r = httpx.post(f"{base}/requests.json", data={"api_key": key, "service_code": "component.0118",
                                                      "lat": "31.2", "long": "121.4", "description": "路灯不亮"})
        sid = r.json()[0]["service_request_id"]
        for fmt in ("json", "xml"):
            gr = georeport.GeoReport(base, jurisdiction="cityvitals.local", output_format=fmt)
            codes = [s["service_code"] for s in gr.get_service_list()]
            assert "component.0118" in codes
            assert gr.get_service_definition("component.0118")["service_code"] == "component.0118"
            one = gr.get_service_request(sid)
            assert one["service_request_id"] == sid and one["status"] == "open"
            many = gr.get_service_requests(service_code="component.0118")
            many = many if isinstance(many, list) else [many]          # xmltodict gives a dict for one element
            assert [m["service_request_id"] for m in many] == [sid]
    finally:
        server.should_exit = True
        th.join(timeout=10)
