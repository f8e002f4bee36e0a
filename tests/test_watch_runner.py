"""``watch run`` over the store: new readings only, alerts raised and cleared, faults vs events."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import typer
from typer.testing import CliRunner

from cityvitals.cli import watch as watch_cli
from cityvitals.store import open_store
from cityvitals.watch.runner import Threshold, nearest_neighbours, watch_readings

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
IDS = [f"P{i}" for i in range(5)]


def _sensors(store):
    store.sensors.upsert(pl.DataFrame({
        "id": IDS, "kind": ["water_pressure"] * 5, "unit": ["MPa"] * 5,
        "lon": [121.0 + 0.001 * i for i in range(5)], "lat": [31.0] * 5,
    }))


def _insert(store, minutes: range, value_fn, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in minutes:
        for i, sid in enumerate(IDS):
            rows.append((sid, T0 + timedelta(minutes=m), float(value_fn(i, m, rng)), None, "water_pressure", None,
                         T0 + timedelta(minutes=m, seconds=5)))
    df = pl.DataFrame(rows, schema=["sensor_id", "ts", "value", "quality", "kind", "unit_code", "ingested_at"], orient="row")
    store.readings.bulk_load(df)


def _normal(i, m, rng):
    return 0.40 + rng.normal(0, 0.003)


def test_neighbours_are_nearest_of_same_kind():
    df = pl.DataFrame({"id": ["a", "b", "c", "d"], "kind": ["k", "k", "k", "other"],
                       "lon": [0.0, 0.001, 0.5, 0.0005], "lat": [0.0, 0.0, 0.0, 0.0]})
    nb = nearest_neighbours(df, k=2, max_km=1.0)
    assert nb == {"a": ["b"], "b": ["a"]}


def test_watch_readings_fault_vs_event_thresholds_and_watermark(tmp_path):
    store = open_store(tmp_path)
    _sensors(store)
    now = [T0 + timedelta(minutes=120)]
    th = {"water_pressure": Threshold((0.30, 0.25, 0.20), "lower")}
    _insert(store, range(0, 120), _normal)
    res = watch_readings(store, thresholds=th, clock=lambda: now[0])
    assert res["points"] == 600 and res["series"] == 5
    assert store.alerts.list(state="open") == []  # quiet data: no alerts

    # P0 jumps alone: a sensor fault, not an event (the verdict waits 10 minutes for the neighbours)
    _insert(store, range(120, 125), lambda i, m, rng: 0.9 if i == 0 else _normal(i, m, rng), seed=1)
    now[0] = T0 + timedelta(minutes=125)
    watch_readings(store, thresholds=th, clock=lambda: now[0])
    assert not store.alerts.list(state="open", type_="health:disagree")
    _insert(store, range(125, 135), lambda i, m, rng: 0.9 if i == 0 else _normal(i, m, rng), seed=4)
    now[0] = T0 + timedelta(minutes=135)
    watch_readings(store, thresholds=th, clock=lambda: now[0])
    types = {(a["source"], a["type"]) for a in store.alerts.list(state="open")}
    assert ("P0", "health:disagree") in types
    assert not any(src != "P0" for src, _ in types)

    # all pressures fall together below the alarm level: an event on every sensor, no fault
    _insert(store, range(135, 155), lambda i, m, rng: 0.18 + rng.normal(0, 0.002), seed=2)
    now[0] = T0 + timedelta(minutes=155)
    res = watch_readings(store, thresholds=th, clock=lambda: now[0])
    assert res["points"] == 100  # only the new readings
    alarms = {a["source"] for a in store.alerts.list(state="open", type_="threshold") if a["level"] == "alarm"}
    assert alarms == set(IDS)
    assert not {a["source"] for a in store.alerts.list(state="open", type_="health:disagree")} - {"P0"}

    # nothing new: nothing watched
    assert watch_readings(store, thresholds=th, clock=lambda: now[0])["points"] == 0

    # recovery clears threshold alerts after the hysteresis time
    _insert(store, range(155, 185), _normal, seed=3)
    now[0] = T0 + timedelta(minutes=185)
    watch_readings(store, thresholds=th, clock=lambda: now[0])
    assert store.alerts.list(state="open", type_="threshold") == []
    store.close()


def test_stale_sensor_alert_and_cli(tmp_path):
    store = open_store(tmp_path)
    _sensors(store)
    _insert(store, range(0, 60), _normal)
    store.close()
    (tmp_path / "th.yaml").write_text("water_pressure: {levels: [0.3, 0.25, 0.2], direction: lower}\n")
    app = typer.Typer()
    app.add_typer(watch_cli.app, name="watch")
    r = CliRunner()
    out = r.invoke(app, ["watch", "run", "--home", str(tmp_path), "--thresholds", str(tmp_path / "th.yaml"), "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["points"] == 300
    # the wall clock is far past the data: every sensor is stale
    store = open_store(tmp_path)
    stale = {a["source"] for a in store.alerts.list(state="open", type_="health:stale")}
    assert stale == set(IDS)
    store.close()
    (tmp_path / "bad.yaml").write_text("water_pressure: {levels: [a], direction: up}\n")
    out = r.invoke(app, ["watch", "run", "--home", str(tmp_path), "--thresholds", str(tmp_path / "bad.yaml")])
    assert out.exit_code != 0


def test_neighbours_kdtree_equals_all_pairs():
    """The k-d tree's answer is the all-pairs answer (equirectangular, same kind, within max_km)."""
    rng = np.random.default_rng(3)
    n = 3000
    df = pl.DataFrame({"id": [f"S{i}" for i in range(n)], "kind": rng.choice(["a", "b"], n).tolist(),
                       "lon": 121.2 + rng.random(n) * 0.4, "lat": 31.0 + rng.random(n) * 0.4})
    got = nearest_neighbours(df, k=5, max_km=3.0)
    want: dict[str, list[str]] = {}
    for (kind,), grp in df.group_by(["kind"]):
        ids = grp["id"].to_list()
        lon, lat = np.radians(grp["lon"].to_numpy()), np.radians(grp["lat"].to_numpy())
        dx = (lon[:, None] - lon[None, :]) * np.cos((lat[:, None] + lat[None, :]) / 2)
        d = 6371.0 * np.hypot(dx, lat[:, None] - lat[None, :])
        np.fill_diagonal(d, np.inf)
        for i, row in enumerate(np.argsort(d, axis=1, kind="stable")[:, :5]):
            keep = [ids[j] for j in row if d[i, j] <= 3.0]
            if keep:
                want[ids[i]] = keep
    assert got == want and len(got) > n * 0.9


def test_session_keeps_state_in_memory_and_checkpoints(tmp_path):
    """A session gives the same alerts as runs that checkpoint every time, writes its
    checkpoint only when due (or on close), and a restart resumes from that checkpoint."""
    from cityvitals.watch.runner import STATE_NAME, WatchSession

    th = {"water_pressure": Threshold((0.30, 0.25, 0.20), "lower")}
    mono = [0.0]
    stores = {}
    for name in ("plain", "session"):
        s = stores[name] = open_store(tmp_path / name)
        _sensors(s)
        _insert(s, range(0, 60), _normal)
    session = WatchSession(checkpoint_seconds=30, clock=lambda: mono[0])
    now = T0 + timedelta(minutes=60)
    for name, s in stores.items():
        watch_readings(s, thresholds=th, clock=lambda: now, session=session if name == "session" else None)
    assert stores["session"].alerts.get_watch_state(STATE_NAME) == (None, None)   # not due yet
    for k, (lo, hi) in enumerate(((60, 70), (70, 90))):
        for s in stores.values():
            _insert(s, range(lo, hi), lambda i, m, rng: 0.18 + rng.normal(0, 0.002), seed=k)
        now = T0 + timedelta(minutes=hi)
        mono[0] += 20
        for name, s in stores.items():
            res = watch_readings(s, thresholds=th, clock=lambda: now, session=session if name == "session" else None)
            assert res["points"] == 5 * (hi - lo)
    alarms = {n: sorted((a["source"], a["level"]) for a in s.alerts.list(state="open")) for n, s in stores.items()}
    assert alarms["plain"] == alarms["session"] and len(alarms["plain"]) == 5
    wm, blob = stores["session"].alerts.get_watch_state(STATE_NAME)
    assert wm == T0 + timedelta(minutes=89, seconds=5) and blob         # due at 40 s: the third run wrote it
    _insert(stores["session"], range(90, 95), _normal, seed=9)
    mono[0] += 10                                                        # 10 s after the checkpoint: not due
    watch_readings(stores["session"], thresholds=th, clock=lambda: now, session=session)
    assert stores["session"].alerts.get_watch_state(STATE_NAME)[0] == T0 + timedelta(minutes=89, seconds=5)
    session.checkpoint(stores["session"])                                # what close() does
    assert stores["session"].alerts.get_watch_state(STATE_NAME)[0] == T0 + timedelta(minutes=94, seconds=5)
    # a new process resumes from the checkpoint: nothing new to watch
    assert watch_readings(stores["session"], thresholds=th, clock=lambda: now, session=WatchSession())["points"] == 0
    for s in stores.values():
        s.close()


def test_sensor_registered_after_first_run_without_levels_is_watched(tmp_path):
    """A later batch brings a series of a kind without threshold levels (issue #11 round 2).

    Sixteen series fill the detectors' first arrays exactly; the seventeenth, a kind no
    threshold covers, made the time-to-breach assignment index past the breach arrays.
    """
    store = open_store(tmp_path)
    ids = [f"Q{i:02d}" for i in range(16)]
    store.sensors.upsert(pl.DataFrame({
        "id": ids, "kind": ["water_pressure"] * 16, "unit": ["MPa"] * 16,
        "lon": [121.0 + 0.001 * i for i in range(16)], "lat": [31.0] * 16,
    }))
    th = {"water_pressure": Threshold((0.30, 0.25, 0.20), "lower")}

    def load(rows):
        df = pl.DataFrame(rows, schema=["sensor_id", "ts", "value", "quality", "kind", "unit_code", "ingested_at"],
                          orient="row")
        store.readings.bulk_load(df)

    load([(sid, T0 + timedelta(minutes=m), 0.4, None, "water_pressure", None, T0 + timedelta(minutes=m, seconds=5))
          for m in range(30) for sid in ids])
    now = [T0 + timedelta(minutes=30)]
    assert watch_readings(store, thresholds=th, use_catalog=False, clock=lambda: now[0])["series"] == 16
    store.sensors.upsert(pl.DataFrame({"id": ["H1"], "kind": ["humidity"], "unit": ["%"],
                                       "lon": [121.02], "lat": [31.0]}))
    load([(sid, T0 + timedelta(minutes=m), 0.4 if sid != "H1" else 60.0, None,
           "humidity" if sid == "H1" else "water_pressure", None, T0 + timedelta(minutes=m, seconds=5))
          for m in range(30, 60) for sid in [*ids, "H1"]])
    now[0] = T0 + timedelta(minutes=60)
    res = watch_readings(store, thresholds=th, use_catalog=False, clock=lambda: now[0])
    assert res["series"] == 17 and res["points"] == 17 * 30
    assert store.alerts.list(state="open", type_="threshold") == []
    store.close()


def test_wet_well_gauge_judged_against_its_own_rest(tmp_path):
    """A pumping station's wet-well gauge fills (its pumps cannot keep up): an alert, though
    river levels would never fire at 3 m; a quiet well a few centimetres off its rest does not,
    and a river gauge keeps its own levels (a 0.46 m rise from 2.8 m stays below attention at 3.5 m)."""
    store = open_store(tmp_path)
    store.assets.replace(
        pl.DataFrame({"id": ["DPS1", "DPS2", "RG1"], "type": ["drainage_pumping_station"] * 2 + ["river_gauge"],
                      "name": ["D1", "D2", "R1"], "geometry_wkb": [None] * 3, "lon": [121.0, 121.05, 121.1],
                      "lat": [31.0] * 3, "unit_code": ["g1"] * 3,
                      "props": ['{"capacity_m3_per_s": 10}', '{"capacity_m3_per_s": 12}',
                                '{"normal_level_m": 2.8, "warning_level_m": 4.2}']}),
        pl.DataFrame({"src": [], "dst": [], "relation": []}, schema={"src": pl.Utf8, "dst": pl.Utf8, "relation": pl.Utf8}))
    ids = ["W1", "W2", "R1"]
    store.sensors.upsert(pl.DataFrame({
        "id": ids, "kind": ["water_level"] * 3, "unit": ["m"] * 3, "lon": [121.0, 121.05, 121.1], "lat": [31.0] * 3,
        "meta": ['{"asset_id": "DPS1"}', '{"asset_id": "DPS2"}', '{"asset_id": "RG1"}']}))
    rng = np.random.default_rng(5)

    def level(sid, m):
        rise = min(2.3, max(0.0, (m - 180) * 0.05)) if m >= 180 else 0.0  # fills from 03:00, 5 cm a minute
        base = {"W1": 1.0, "W2": 0.85, "R1": 2.8}[sid]
        return base + {"W1": rise, "W2": 0.0, "R1": rise / 5}[sid] + rng.normal(0, 0.003)

    def load(minutes):
        rows = [(sid, T0 + timedelta(minutes=m), float(level(sid, m)), None, "water_level", None,
                 T0 + timedelta(minutes=m, seconds=5)) for m in minutes for sid in ids]
        store.readings.bulk_load(pl.DataFrame(rows, schema=["sensor_id", "ts", "value", "quality", "kind", "unit_code",
                                                            "ingested_at"], orient="row"))

    load(range(0, 180))
    now = [T0 + timedelta(minutes=180)]
    watch_readings(store, clock=lambda: now[0])
    assert store.alerts.list(type_="threshold") == []  # quiet: no well is off its rest
    load(range(180, 300))
    now[0] = T0 + timedelta(minutes=300)
    watch_readings(store, clock=lambda: now[0])
    alerts = {a["source"]: a for a in store.alerts.list(type_="threshold")}
    assert set(alerts) == {"W1"}
    assert alerts["W1"]["level"] == "alarm"
    store.close()


def test_session_warm_up_computes_neighbours_once_until_the_registry_changes(tmp_path, monkeypatch):
    """A server computes the registry's neighbours at start (``warm``) and reuses them for
    series that first report later, until the registry changes. Series still enter the
    state only when they report: a registered sensor that never has is not called stale,
    and the alerts are those of runs without a session."""
    import cityvitals.watch.runner as runner
    from cityvitals.watch.runner import WatchSession

    calls = []
    real = runner.nearest_neighbours
    monkeypatch.setattr(runner, "nearest_neighbours", lambda *a, **k: calls.append(1) or real(*a, **k))
    th = {"water_pressure": Threshold((0.30, 0.25, 0.20), "lower")}
    stores = {name: open_store(tmp_path / name) for name in ("plain", "session")}
    for s in stores.values():
        _sensors(s)
        s.sensors.upsert(pl.DataFrame({"id": ["P9"], "kind": ["water_pressure"], "unit": ["MPa"],
                                       "lon": [121.0025], "lat": [31.0]}))   # registered, never reports
    session = WatchSession()
    session.warm(stores["session"], thresholds=th)
    assert len(calls) == 1 and session.state.ids == []

    def run(ids, minutes, value, now):
        rows = [(sid, T0 + timedelta(minutes=m), value(sid, m), None, "water_pressure", None,
                 T0 + timedelta(minutes=m, seconds=5)) for m in minutes for sid in ids]
        for name, s in stores.items():
            s.readings.bulk_load(pl.DataFrame(rows, schema=["sensor_id", "ts", "value", "quality", "kind", "unit_code",
                                                            "ingested_at"], orient="row"))
            watch_readings(s, thresholds=th, clock=lambda: now, session=session if name == "session" else None)

    rng = np.random.default_rng(0)
    normal = lambda sid, m: 0.40 + float(rng.normal(0, 0.003))  # noqa: E731
    run(IDS[:3], range(0, 60), normal, T0 + timedelta(minutes=60))
    run(IDS, range(60, 80), lambda sid, m: 0.18 if sid == "P2" else normal(sid, m), T0 + timedelta(minutes=80))
    assert len(calls) == 1 + 2   # the plain runs computed them for each batch with new series, the session never
    assert session.state.ids == IDS
    for s in stores.values():   # the registry changes: the next new series is configured afresh
        s.sensors.upsert(pl.DataFrame({"id": ["Q1"], "kind": ["water_pressure"], "unit": ["MPa"],
                                       "lon": [121.003], "lat": [31.0]}))
    run([*IDS, "Q1"], range(80, 100), normal, T0 + timedelta(minutes=130))   # half an hour past the data: stale
    assert len(calls) == 3 + 2
    alerts = {n: sorted((a["source"], a["type"], a["level"], a["state"]) for a in s.alerts.list(state="all"))
              for n, s in stores.items()}
    assert alerts["plain"] == alerts["session"]
    assert ("P2", "threshold", "alarm", "resolved") in alerts["session"]   # raised, then recovered
    stale = {src for src, typ, _, _ in alerts["session"] if typ == "health:stale"}
    assert stale == {*IDS, "Q1"}   # P9 never reported: not stale
    for s in stores.values():
        s.close()


def test_session_writes_due_checkpoints_from_a_thread(tmp_path):
    """With a background store, the run that makes a checkpoint due copies the state and a
    thread writes the copy: what lands is that run's state and watermark although the watch
    goes on; ``checkpoint()`` (what close does) waits for it, then writes the newest."""
    from cityvitals.watch.runner import STATE_NAME, WatchSession

    th = {"water_pressure": Threshold((0.30, 0.25, 0.20), "lower")}
    store = open_store(tmp_path)
    _sensors(store)
    mono = [0.0]
    session = WatchSession(checkpoint_seconds=30, clock=lambda: mono[0], background_store=store)
    _insert(store, range(0, 60), _normal)
    watch_readings(store, thresholds=th, clock=lambda: T0 + timedelta(minutes=60), session=session)
    _insert(store, range(60, 70), _normal, seed=1)
    mono[0] = 40.0
    watch_readings(store, thresholds=th, clock=lambda: T0 + timedelta(minutes=70), session=session)  # due
    want = session.state.to_bytes()
    _insert(store, range(70, 80), _normal, seed=2)
    mono[0] = 41.0
    watch_readings(store, thresholds=th, clock=lambda: T0 + timedelta(minutes=80), session=session)  # goes on
    session.wait(60)
    assert store.alerts.get_watch_state(STATE_NAME) == (T0 + timedelta(minutes=69, seconds=5), want)
    assert session.state.to_bytes() != want and session.checkpoint_errors == []
    session.checkpoint(store)
    assert store.alerts.get_watch_state(STATE_NAME) == (T0 + timedelta(minutes=79, seconds=5), session.state.to_bytes())
    store.close()
