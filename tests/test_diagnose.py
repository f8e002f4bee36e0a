"""Diagnose core on a hand-built network: grouping, ranking with evidence, store lifecycle, CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from cityvitals.diagnose import (
    SENSOR_FAULT,
    AssetGraph,
    build_symptoms,
    diagnose_symptoms,
    link,
)
from cityvitals.diagnose.evaluate import score
from cityvitals.diagnose.run import diagnose_store

pytestmark = pytest.mark.both_backends  # DuckDB and PostgreSQL in every run (tests/conftest.py)

T0 = datetime(2024, 7, 15, 2, 0, tzinfo=UTC)


def network():
    """One pump station feeding two mains and zones; a substation; two gas mains."""
    assets = pl.DataFrame({
        "id": ["PS1", "WM1", "WM2", "PZ1", "PZ2", "SUB1", "FD1", "GR1", "GM1", "GM2"],
        "type": ["pump_station", "water_main", "water_main", "pressure_zone", "pressure_zone", "substation", "feeder",
                 "gas_regulator", "gas_main", "gas_main"],
        "name": [None] * 10,
        "lon": [121.40, 121.41, 121.45, 121.42, 121.46, 121.50, 121.51, 121.55, 121.551, 121.60],
        "lat": [31.20, 31.20, 31.20, 31.21, 31.21, 31.25, 31.25, 31.30, 31.301, 31.33],
        "unit_code": ["C1", "C1", "C3", "C1", "C3", "C5", "C5", "C6", "C6", "C7"],
    })
    edges = pl.DataFrame({
        "src": ["PS1", "PS1", "WM1", "WM2", "PZ1", "PZ1", "PZ2", "SUB1", "GR1", "GR1"],
        "dst": ["WM1", "WM2", "PZ1", "PZ2", "C1", "C2", "C3", "FD1", "GM1", "GM2"],
        "relation": ["feeds", "feeds", "feeds", "feeds", "supplies", "supplies", "supplies", "feeds", "feeds", "feeds"],
    })
    ids = ["WP1", "WP2", "WP3", "WP4", "WF1", "WF2", "PL1", "GS1", "GS2", "GS3"]
    sens = pl.DataFrame({
        "id": ids,
        "kind": ["water_pressure"] * 4 + ["water_flow"] * 2 + ["power_load"] + ["gas_concentration"] * 3,
        "lon": [121.42, 121.421, 121.46, 121.461, 121.41, 121.45, 121.50, 121.55, 121.552, 121.60],
        "lat": [31.21, 31.211, 31.21, 31.211, 31.20, 31.20, 31.25, 31.30, 31.301, 31.33],
        "unit_code": [None] * 10,
        "meta": [json.dumps({"asset_id": a}) for a in ["PZ1", "PZ1", "PZ2", "PZ2", "WM1", "WM2", "SUB1", "GM1", "GM1", "GM2"]],
    })
    return assets, edges, sens


def alert(i, src, typ, level, minutes, dur=30, state="resolved"):
    t = T0 + timedelta(minutes=minutes)
    return {"id": i, "source": src, "type": typ, "level": level, "state": state, "first_at": t,
            "last_at": t + timedelta(minutes=dur), "resolved_at": None if state != "resolved" else t + timedelta(minutes=dur)}


ALERTS = [
    # a burst on WM1: its flow jumps, then both pressure points in PZ1 drop
    alert(1, "WF1", "shift", "warning", 0),
    alert(2, "WP1", "threshold", "alarm", 4, state="active"),
    alert(3, "WP2", "threshold", "warning", 6),
    alert(4, "WP2", "health:disagree", "warning", 8),  # the burst zone disagrees with its neighbours
    # a drifting pressure sensor in PZ2, hours later: a sensor fault
    alert(5, "WP3", "shift", "warning", 300),
    alert(6, "WP3", "health:disagree", "warning", 310),
    # a gas leak on GM1: both of its sensors
    alert(7, "GS1", "threshold", "alarm", 120),
    alert(8, "GS2", "threshold", "warning", 125),
]
REPORTS = [
    {"id": "R1", "reported_at": (T0 + timedelta(minutes=30)).isoformat(), "category": "water_outage", "unit_code": "C2",
     "lon": 121.43, "lat": 31.215},
    {"id": "R2", "reported_at": (T0 + timedelta(minutes=40)).isoformat(), "category": "water_outage", "unit_code": "C1",
     "lon": 121.42, "lat": 31.21},
    {"id": "R3", "reported_at": (T0 + timedelta(minutes=40)).isoformat(), "category": "garbage", "unit_code": "C1",
     "lon": 121.42, "lat": 31.21},
]


def diagnoses():
    assets, edges, sens = network()
    g = AssetGraph.build(assets, edges, sens)
    s = build_symptoms(ALERTS, REPORTS, g)
    labels = link(s, g)
    return s, g, labels, diagnose_symptoms(s, g, labels)


def by_member(s, diags, ref):
    return next(d for d in diags if ref in {s.ref[i] for i in d.members})


def test_groups_follow_the_network():
    s, _g, _labels, diags = diagnoses()
    assert "R3" not in s.ref  # rubbish is a service request, not a symptom
    burst = by_member(s, diags, "A2")
    refs = {s.ref[i] for i in burst.members}
    assert refs == {"A1", "A2", "A3", "A4", "R1", "R2"}
    assert by_member(s, diags, "A5") is by_member(s, diags, "A6")
    assert by_member(s, diags, "A5") is not burst
    assert by_member(s, diags, "A7") is by_member(s, diags, "A8")
    assert len(diags) == 3


def test_causes_are_ranked_with_evidence():
    s, _g, _labels, diags = diagnoses()
    burst = by_member(s, diags, "A2")
    assert burst.type == "water_outage"
    assert burst.causes[0].cause == "WM1"
    assert {c.cause for c in burst.causes[:3]} >= {"WM1"}
    # the pump station also feeds WM2/PZ2, which are fine: a poorer suspect than the main
    ps = next(c for c in burst.causes if c.cause == "PS1")
    assert ps.score < burst.causes[0].score
    assert all(c.evidence for c in burst.causes)
    assert abs(sum(c.score for c in burst.causes) - 1) < 0.05
    assert "C2" in burst.units and burst.open
    fault = by_member(s, diags, "A5")
    assert fault.causes[0].cause == SENSOR_FAULT and fault.type == "sensor_fault"
    gas = by_member(s, diags, "A7")
    assert gas.type == "gas_leak" and gas.causes[0].cause == "GM1"


def test_score_counts_fragments_and_mixing():
    incidents = [{"members": [1, 2], "causes": ["WM1", "PS1"]}, {"members": [3], "causes": ["PZ1"]},
                 {"members": [5, 6], "causes": [SENSOR_FAULT]}]
    truth = {"incidents": [{"id": "INC-1", "type": "water_main_burst", "root_cause_asset": "WM1",
                            "start": T0.isoformat(), "end": (T0 + timedelta(hours=2)).isoformat(),
                            "affected_sensors": ["WF1", "WP1", "WP2"]}],
             "faults": [{"sensor": "WP3", "start": (T0 + timedelta(hours=4)).isoformat(),
                         "end": (T0 + timedelta(hours=6)).isoformat()}]}
    alerts = [{"id": a["id"], "source": a["source"], "type": a["type"], "first_at": a["first_at"]} for a in ALERTS]
    res = score(incidents, alerts, truth)
    assert res["single_incident"] == 0.0 and res["top1"] == 1.0 and res["faults_as_faults"] == 1.0


@pytest.fixture
def store(store, tmp_path):
    """conftest's store (DuckDB, or PostgreSQL with CITYVITALS_TEST_BACKEND) holding the test network
    and its alerts, with the reports file."""
    st = store
    assets, edges, sens = network()
    st.assets.replace(assets.with_columns(pl.lit(None, pl.Binary).alias("geometry_wkb"), pl.lit("{}").alias("props")),
                      edges)
    st.sensors.upsert(sens.with_columns(pl.lit("u").alias("unit")))
    with st.transaction() as con:
        for a in ALERTS:
            st.alerts.insert(con, {k: v for k, v in a.items() if k != "id"})
    rp = tmp_path / "reports.ndjson"
    rp.write_text("\n".join(json.dumps(r) for r in REPORTS) + "\n")
    return st, rp


def test_store_lifecycle_keeps_ids_and_closes(store):
    st, rp = store
    now = T0 + timedelta(hours=8)
    res = diagnose_store(st, reports=rp, clock=lambda: now)
    assert res["opened"] == 3 and res["incidents"] == 3
    again = diagnose_store(st, reports=rp, clock=lambda: now)
    assert again["opened"] == 0 and again["unchanged"] == 3
    open_ = st.incidents.list(state="open")
    assert len(open_) == 1 and open_[0]["top_cause"] == "WM1"
    inc = st.incidents.get(open_[0]["id"])
    assert inc["causes"][0]["evidence"] and inc["history"][0]["event"] == "opened"
    assert {m["ref"] for m in inc["members"]} >= {"A2", "R1"}
    # the last open alert resolves: the incident closes on the next run
    st.con.execute("UPDATE alerts SET state = 'resolved', resolved_at = last_at")
    res = diagnose_store(st, reports=rp, clock=lambda: now)
    assert res["closed"] == 1 and st.incidents.list(state="open") == []
    assert st.incidents.get(open_[0]["id"])["history"][-1]["event"] == "closed"
    assert st.status()["incidents_total"] == 3


def test_cli_list_show_run(store, tmp_path):
    import typer

    from cityvitals.cli.incidents import app, diagnose_app

    st, rp = store
    # the CLI opens the store itself: the same DuckDB file, or the same PostgreSQL schema
    url = getattr(st, "url", None)
    where = ["--store", url] if url else ["--home", str(tmp_path / "home")]
    st.close()
    root = typer.Typer()
    root.add_typer(app, name="incidents")
    root.add_typer(diagnose_app, name="diagnose")
    runner = CliRunner()
    r = runner.invoke(root, ["diagnose", "run", *where, "--reports", str(rp), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["opened"] == 3
    r = runner.invoke(root, ["incidents", "list", "--state", "all", *where, "--json"])
    rows = json.loads(r.output)["incidents"]
    assert len(rows) == 3
    r = runner.invoke(root, ["incidents", "show", str(rows[0]["id"]), *where])
    assert r.exit_code == 0 and "probable causes" in r.output
    r = runner.invoke(root, ["incidents", "show", "999", *where])
    assert r.exit_code != 0
    r = runner.invoke(root, ["incidents", "list", "--state", "bogus", *where])
    assert r.exit_code != 0


def test_api_lists_and_shows_incidents(store):
    from fastapi.testclient import TestClient

    from cityvitals.api import create_app

    st, rp = store
    diagnose_store(st, reports=rp, clock=lambda: T0 + timedelta(hours=8))
    key = st.users.add("root", "admin")
    with TestClient(create_app(st)) as client:
        h = {"Authorization": f"Bearer {key}"}
        r = client.get("/api/v1/incidents?state=all", headers=h)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert len(items) == 3
        one = client.get(f"/api/v1/incidents/{items[0]['id']}", headers=h).json()
        assert one["causes"] and one["causes"][0]["evidence"] and "history" in one
        assert client.get("/api/v1/incidents/999", headers=h).status_code == 404
        assert client.get("/api/v1/incidents").status_code == 401


def test_indicator_series_alerts_sit_on_their_unit():
    """Watch's indicator alerts (source ``<indicator>:<unit>``) join the pattern of their unit, never a sensor fault."""
    assets, edges, sens = network()
    g = AssetGraph.build(assets, edges, sens)
    extra = [
        alert(20, "fac.water_pressure_end:C1", "threshold", "alarm", 10),  # the burst zone's own indicator
        alert(21, "env.pm25:C7", "threshold", "warning", 200),  # an area's air, alone
        alert(22, "indicator:wx.rain_1h:C5", "threshold", "warning", 400),
        alert(23, "odd:thing", "threshold", "warning", 400),  # neither a sensor nor an indicator: kept, no crash
    ]
    s = build_symptoms(ALERTS + extra, REPORTS, g)
    k = s.ref.index("A20")
    assert s.indicator[k] and s.unit[k] == "C1" and s.domain[k] == "water" and s.asset[k] is None
    assert s.unit[s.ref.index("A21")] == "C7" and s.domain[s.ref.index("A21")] == "air"
    assert s.unit[s.ref.index("A22")] == "C5" and s.domain[s.ref.index("A22")] == "weather"
    assert not s.indicator[s.ref.index("A23")]
    diags = diagnose_symptoms(s, g, link(s, g))
    burst = by_member(s, diags, "A2")
    assert "A20" in {s.ref[i] for i in burst.members} and burst.causes[0].cause == "WM1"
    assert "fac.water_pressure_end:C1" not in burst.sensors
    for ref in ("A21", "A22"):
        d = by_member(s, diags, ref)
        assert d.causes[0].cause != SENSOR_FAULT and d.type != "sensor_fault"
        assert "C7" in d.units or "C5" in d.units


def test_reports_of_two_domains_in_one_community_stay_apart():
    assets, edges, sens = network()
    g = AssetGraph.build(assets, edges, sens)
    t = (T0 + timedelta(minutes=30)).isoformat()
    reps = [{"id": f"W{k}", "reported_at": t, "category": "water_outage", "unit_code": "C5"} for k in range(2)]
    reps += [{"id": f"P{k}", "reported_at": t, "category": "power_outage", "unit_code": "C5"} for k in range(2)]
    s = build_symptoms([], reps, g)
    labels = link(s, g)
    assert labels[s.ref.index("W0")] == labels[s.ref.index("W1")]
    assert labels[s.ref.index("W0")] != labels[s.ref.index("P0")]


def test_score_an_alert_of_two_causes_mixes_nothing():
    t1 = (T0 + timedelta(hours=2)).isoformat()
    truth = {"incidents": [
        {"id": "INC-1", "type": "traffic_accident", "root_cause_asset": "R1", "start": T0.isoformat(), "end": t1,
         "affected_sensors": ["T1", "T2"]},
        {"id": "INC-2", "type": "rainstorm", "root_cause_asset": "DPS1", "start": T0.isoformat(), "end": t1,
         "affected_sensors": ["T2", "RF1"]}]}
    alerts = [{"id": k, "source": src, "type": "threshold", "first_at": T0 + timedelta(minutes=k)}
              for k, src in ((1, "T1"), (2, "T2"), (3, "RF1"))]
    # the accident's incident also holds T2's alert (the rain slows that road too): not mixed
    res = score([{"members": [1, 2], "causes": ["R1"]}, {"members": [3], "causes": ["DPS1"]}], alerts, truth)
    assert res["mixed"] == 0.0 and res["single_incident"] == 1.0 and res["top1"] == 1.0
    assert [p["shared_alerts"] for p in res["per_incident"]] == [1, 1]
    # the two causes' own alerts in one incident: mixed
    res = score([{"members": [1, 2, 3], "causes": ["R1"]}], alerts, truth)
    assert res["mixed"] == 1.0


def test_cache_reranks_only_touched_groups():
    assets, edges, sens = network()
    g = AssetGraph.build(assets, edges, sens)
    cache: dict = {}
    s = build_symptoms(ALERTS[:-1], REPORTS, g)
    first = diagnose_symptoms(s, g, link(s, g), cache=cache)
    s2 = build_symptoms(ALERTS, REPORTS, g)  # the gas leak's second alert arrives
    second = diagnose_symptoms(s2, g, link(s2, g), cache=cache)
    burst1, burst2 = by_member(s, first, "A2"), by_member(s2, second, "A2")
    assert burst2.causes is burst1.causes  # untouched: kept
    gas1, gas2 = by_member(s, first, "A7"), by_member(s2, second, "A7")
    assert gas2.causes is not gas1.causes and {s2.ref[i] for i in gas2.members} == {"A7", "A8"}
    fresh = diagnose_symptoms(s2, g, link(s2, g))
    assert [d.causes[0].cause for d in second] == [d.causes[0].cause for d in fresh]


def drainage_network():
    """Two storm-water stations, each draining a catchment with one monitored low spot; two rain gauges."""
    assets = pl.DataFrame({
        "id": ["DPS1", "DPS2", "CA1", "CA2", "LS1", "LS2", "WX1", "WX2"],
        "type": ["drainage_pumping_station", "drainage_pumping_station", "catchment", "catchment", "low_spot", "low_spot",
                 "weather_station", "weather_station"],
        "name": [None] * 8,
        "lon": [121.40, 121.50, 121.40, 121.50, 121.41, 121.51, 121.42, 121.52],
        "lat": [31.20, 31.20, 31.20, 31.20, 31.21, 31.21, 31.22, 31.22],
        "unit_code": ["C1", "C2", None, None, "C1", "C2", "C1", "C2"],
    })
    edges = pl.DataFrame({"src": ["DPS1", "DPS2", "CA1", "CA2"], "dst": ["CA1", "CA2", "LS1", "LS2"],
                          "relation": ["drains", "drains", "contains", "contains"]})
    sens = pl.DataFrame({
        "id": ["WD1", "WD2", "RF1", "RF2"], "kind": ["waterlogging_depth", "waterlogging_depth", "rainfall", "rainfall"],
        "lon": [121.41, 121.51, 121.42, 121.52], "lat": [31.21, 31.21, 31.22, 31.22], "unit_code": [None] * 4,
        "meta": [json.dumps({"asset_id": a}) for a in ["LS1", "LS2", "WX1", "WX2"]],
    })
    return AssetGraph.build(assets, edges, sens)


STORM = [alert(1, "RF1", "threshold", "warning", 0, dur=120), alert(2, "RF2", "threshold", "warning", 10, dur=110)]


@pytest.mark.parametrize(("wd1_minutes", "joins", "first"), [(90, False, "LS1"), (200, True, "DPS1")])
def test_ponding_that_outlasts_the_rain_points_at_its_station(wd1_minutes, joins, first):
    g = drainage_network()
    # LS1 ponds from 40 min; the rain alerts end at 120 min. LS2 recedes with the rain either way.
    alerts = [*STORM, alert(3, "WD1", "threshold", "warning", 40, dur=wd1_minutes),
              alert(4, "WD2", "threshold", "attention", 50, dur=60)]
    s = build_symptoms(alerts, [], g)
    labels = link(s, g)
    assert bool(labels[2] == labels[0]) is joins  # the slow catchment's ponding is one story with the storm
    assert labels[3] != labels[0]  # a catchment that drains stays its own puddle
    diags = diagnose_symptoms(s, g, labels)
    mine = next(d for d in diags if 2 in d.members)
    assert mine.causes[0].cause == first
    if joins:
        top = mine.causes[0]
        assert mine.type == "rainstorm" and top.kind == "asset"
        assert "stayed 2 h 0 min after the rain eased" in top.evidence[0]
        assert mine.causes[1].cause == "weather"


def test_link_matches_the_key_rule_on_chains_and_leaves():
    """Anchors on one key chain while active (+ slack); a leaf joins only an anchor active near its onset."""
    g = AssetGraph.build(*network()[:2], network()[2])
    alerts = [
        alert(1, "WP1", "threshold", "warning", 0, dur=30),  # PZ1 anchor
        alert(2, "WP2", "threshold", "warning", 100, dur=30),  # PZ1 anchor, chains (within the two-hour chain slack)
        alert(3, "WP1", "threshold", "warning", 600, dur=30),  # PZ1 anchor, far later: a new episode
        alert(4, "WF1", "shift", "warning", 20, dur=10),  # WM1, a leaf of PZ1's key (WM1 feeds PZ1): joins episode 1
        alert(5, "WF2", "shift", "warning", 900, dur=10),  # WM2: nothing of PZ2 is active
    ]
    labels = link(build_symptoms(alerts, [], g), g)
    assert labels[0] == labels[1] == labels[3]
    assert labels[2] != labels[0]
    assert len({labels[0], labels[2], labels[4]}) == 3


def test_a_queue_one_blockage_explains_is_not_the_weather():
    """Rain at the same time, but the slowdown spreads out from one segment and every road below it is slow."""
    segs = ["RD1", "RD2", "RD3", "RD4"]
    assets = pl.DataFrame({"id": [*segs, "WX1"], "type": ["road_segment"] * 4 + ["weather_station"], "name": [None] * 5,
                           "lon": [121.40, 121.401, 121.402, 121.403, 121.45], "lat": [31.2] * 5,
                           "unit_code": ["C1"] * 5})
    edges = pl.DataFrame({"src": ["RD1", "RD2", "RD3"], "dst": ["RD2", "RD3", "RD4"], "relation": ["connects"] * 3})
    sens = pl.DataFrame({"id": ["TS1", "TS2", "TS3", "TS4", "RF1"], "kind": ["traffic_speed"] * 4 + ["rainfall"],
                         "lon": [121.40, 121.401, 121.402, 121.403, 121.45], "lat": [31.2] * 5, "unit_code": [None] * 5,
                         "meta": [json.dumps({"asset_id": a}) for a in [*segs, "WX1"]]})
    g = AssetGraph.build(assets, edges, sens)
    alerts = [alert(1, "RF1", "threshold", "warning", 0, dur=180),
              *(alert(2 + k, f"TS{k + 1}", "threshold", "alarm" if k == 0 else "warning", 10 + 6 * k, dur=60) for k in range(4))]
    s = build_symptoms(alerts, [], g)
    jam = next(d for d in diagnose_symptoms(s, g, link(s, g)) if d.type == "traffic_congestion")
    assert [c.cause for c in jam.causes[:2]] == ["RD1", "RD2"]  # where the queue started, then its neighbour
    assert "weather" not in [c.cause for c in jam.causes[:3]]


def test_health_findings_alone_group_per_sensor():
    """Only sensor-health findings and no plain alert (the demo's first minutes): they group per
    sensor. An empty list of plain alerts used to make a column of nulls that could not join."""
    import numpy as np

    from cityvitals.diagnose.group import attach_health
    from cityvitals.diagnose.symptoms import Symptoms

    n = 3
    s = Symptoms(ref=["A1", "A2", "A3"], origin=np.array(["alert"] * n), source=["P1", "P1", "P2"],
                 type=["stale", "flatline", "stale"], kind=["water_pressure"] * n, domain=["water"] * n,
                 level=np.array([1, 1, 1]), t0=np.array([0.0, 60.0, 0.0]), t1=np.array([120.0, 180.0, 120.0]),
                 open=np.ones(n, bool), health=np.ones(n, bool), asset=[None] * n, unit=["G1"] * n,
                 x=np.zeros(n), y=np.zeros(n))
    labels = attach_health(s, np.arange(n))
    assert labels[0] == labels[1] != labels[2]
