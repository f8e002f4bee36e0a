"""Alert lifecycle: one open alert per (source, type), hysteresis, flapping, escalation, CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import typer
from typer.testing import CliRunner

from cityvitals.cli import alerts as alerts_cli
from cityvitals.errors import InputError
from cityvitals.store import open_store
from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def _m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture()
def env(tmp_path):
    store = open_store(tmp_path)
    now = [T0]
    mgr = AlertManager(
        store,
        AlertPolicy(resolve_after=timedelta(minutes=10), reopen_within=timedelta(minutes=30), flap_threshold=2,
                    escalate_after=timedelta(minutes=15)),
        clock=lambda: now[0],
    )
    yield store, mgr, now
    store.close()


def test_one_open_alert_per_source_and_type_with_occurrences(env):
    store, mgr, _ = env
    mgr.observe([Observation("S1", "threshold", 1, _m(0)), Observation("S1", "threshold", 2, _m(1))])
    mgr.observe([Observation("S1", "threshold", 0, _m(2)), Observation("S1", "threshold", 2, _m(3))])
    mgr.observe([Observation("S1", "shift", 2, _m(3)), Observation("S2", "threshold", 1, _m(3))])
    rows = store.alerts.list(state="open")
    assert len(rows) == 3
    a = store.alerts.list(source="S1", type_="threshold")[0]
    assert a["occurrences"] == 2 and a["level"] == "warning" and a["state"] == "active"
    assert [e["event"] for e in store.alerts.events(a["id"])] == ["raise", "level", "repeat"]


def test_auto_resolve_needs_the_condition_clear_for_a_while(env):
    store, mgr, _ = env
    mgr.observe([Observation("S1", "threshold", 3, _m(0))])
    mgr.observe([Observation("S1", "threshold", 0, _m(m)) for m in (1, 5, 9)])
    assert store.alerts.list(state="open")  # clear only 8 minutes: still open
    res = mgr.observe([Observation("S1", "threshold", 0, _m(12))])
    assert res["resolved"] == 1 and not store.alerts.list(state="open")
    assert store.alerts.list(state="resolved")[0]["resolved_by"] == "auto"


def test_flapping_reopens_instead_of_new_alerts(env):
    store, mgr, _ = env
    for cycle in range(3):
        base = cycle * 20
        mgr.observe([Observation("S1", "threshold", 2, _m(base))])
        mgr.observe([Observation("S1", "threshold", 0, _m(base + 1)), Observation("S1", "threshold", 0, _m(base + 12))])
    rows = store.alerts.list(state="all")
    assert len(rows) == 1
    assert rows[0]["occurrences"] == 3 and rows[0]["reopened"] == 2 and rows[0]["flapping"]
    # far later, a new alert
    mgr.observe([Observation("S1", "threshold", 2, _m(500))])
    assert len(store.alerts.list(state="all")) == 2


def test_escalation_and_acknowledgement(env):
    store, mgr, now = env
    mgr.observe([Observation("S1", "threshold", 3, _m(0), "alarm"), Observation("S2", "threshold", 2, _m(0))])
    now[0] = _m(10)
    assert mgr.escalate() == []
    now[0] = _m(16)
    esc = mgr.escalate()
    assert [a["source"] for a in esc] == ["S1"] and esc[0]["escalation"] == 1
    now[0] = _m(25)
    assert mgr.escalate() == []  # next step only 15 minutes after the last
    now[0] = _m(31)
    assert mgr.escalate()[0]["escalation"] == 2
    aid = esc[0]["id"]
    row = mgr.ack(aid, "officer Wang", "crew sent")
    assert row["state"] == "acknowledged" and row["acknowledged_by"] == "officer Wang"
    now[0] = _m(60)
    assert mgr.escalate() == []
    row = mgr.resolve(aid, "officer Wang")
    assert row["state"] == "resolved" and row["resolved_at"] == _m(60)
    with pytest.raises(InputError, match="already resolved"):
        mgr.ack(aid, "x")
    with pytest.raises(InputError, match="no such alert"):
        mgr.resolve(9999, "x")


def test_level_rise_reactivates_acknowledged(env):
    store, mgr, _ = env
    mgr.observe([Observation("S1", "threshold", 1, _m(0))])
    aid = store.alerts.list()[0]["id"]
    mgr.ack(aid, "a")
    mgr.observe([Observation("S1", "threshold", 3, _m(2))])
    row = store.alerts.get(aid)
    assert row["state"] == "active" and row["level"] == "alarm"


def test_cli_list_ack_resolve(tmp_path):
    store = open_store(tmp_path)
    AlertManager(store).observe([Observation("S9", "health:stale", 2, T0, "no data for 30 min")])
    aid = store.alerts.list()[0]["id"]
    store.close()
    app = typer.Typer()
    app.add_typer(alerts_cli.app, name="alerts")
    r = CliRunner()
    home = ["--home", str(tmp_path)]
    out = r.invoke(app, ["alerts", "list", *home, "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["count"] == 1 and data["alerts"][0]["type"] == "health:stale"
    out = r.invoke(app, ["alerts", "ack", str(aid), "--by", "Li", *home, "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["state"] == "acknowledged"
    out = r.invoke(app, ["alerts", "resolve", str(aid), "--by", "Li", *home])
    assert out.exit_code == 0 and "resolved" in out.stdout
    out = r.invoke(app, ["alerts", "list", "--state", "resolved", "--events", *home, "--json"])
    ev = [e["event"] for e in json.loads(out.stdout)["alerts"][0]["events"]]
    assert ev == ["raise", "ack", "resolve"]
    out = r.invoke(app, ["alerts", "list", "--state", "bogus", *home])
    assert out.exit_code != 0
