"""The live stages in a process of their own (``cityvitals.live.StagesProcess``), as
``serve --follow`` runs them beside a PostgreSQL store: alerts raised after each commit, the
watch checkpointed on close, and no stages process outliving a killed server.

Real PostgreSQL (127.0.0.1:5432, a schema per test) and, for the server, the Mosquitto on
127.0.0.1:1883. Readings are stamped near the real clock: the child's watch runs on it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from cityvitals.ingest import Ingestor
from cityvitals.store import open_store
from cityvitals.watch.runner import STATE_NAME, Threshold
from waits import wait_for

PM25 = {"pm25": Threshold((300.0, 500.0, 700.0), "higher", 0)}


def _gone(pid: int) -> bool:
    """No such process, or only its zombie left for whoever reaps orphans."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def pg_store(tmp_path, pg_schema):
    s = open_store(tmp_path / "home", url=pg_schema, migrate=True)
    s.sensors.upsert(pl.DataFrame({"id": ["A1", "A2"], "kind": ["pm25", "pm25"], "unit": ["ug/m3", "ug/m3"]}))
    yield s
    s.close()


def test_stages_process_raises_the_alert_reports_runs_and_checkpoints_on_close(pg_store):
    from cityvitals.live import StagesProcess

    store = pg_store
    runs: list[tuple[dict, float]] = []
    live = StagesProcess(store.url, thresholds=PM25, use_catalog=False, checkpoint_seconds=3600,
                         on_watch=lambda summary, done: runs.append((summary, done))).start()
    try:
        assert live.alive() and live.pid != os.getpid()
        now = datetime.now(timezone.utc).replace(microsecond=0)
        ing = Ingestor(store)
        base = now - timedelta(minutes=30)
        calm = [{"sensor_id": s, "ts": (base + timedelta(minutes=m)).isoformat(), "value": 40.0}
                for s in ("A1", "A2") for m in range(20)]
        assert ing.ingest_records(calm).accepted == 40
        live.notify()
        assert live.wait_caught_up(60)
        assert store.alerts.list(state="open", type_="threshold") == []
        spike = [{"sensor_id": "A1", "ts": (base + timedelta(minutes=m)).isoformat(), "value": 800.0}
                 for m in range(20, 25)]
        assert ing.ingest_records(spike).accepted == 5
        live.notify()
        assert live.wait_caught_up(60)
        [alert] = store.alerts.list(state="open", type_="threshold")
        assert (alert["source"], alert["level"]) == ("A1", "alarm")
        assert store.alerts.get_watch_state(STATE_NAME) == (None, None)  # in the child's memory until closed
        st = live.stats()
        assert len(st["watch_runs"]) >= 2 and st["errors"] == [] and live.pid in st["pids"]
        assert sum(s["points"] for s, _ in runs) == 45  # every reading watched once, reported here
        assert any(s["alerts"] for s, _ in runs)
    finally:
        live.close()
    assert not live.alive()
    wm, blob = store.alerts.get_watch_state(STATE_NAME)
    assert wm is not None and blob


def test_stages_process_that_cannot_start_says_why(tmp_path):
    from cityvitals.live import StagesProcess

    with pytest.raises(RuntimeError, match="did not start"):
        StagesProcess("postgresql://nobody@127.0.0.1:1/none", start_timeout=60).start()


def test_a_second_stages_process_on_the_same_store_refuses_to_start(pg_store, tmp_path):
    """Several servers may ingest into one store, but only one may watch it: a second
    stages process on the same schema, or ``cityvitals watch run``, is refused while the
    first holds its lock, saying why; once the first has closed, both may run."""

    from typer.testing import CliRunner

    from cityvitals.cli import app
    from cityvitals.live import StagesProcess

    def watch_cli():
        return CliRunner().invoke(app, ["watch", "run", "--store", pg_store.url, "--home", str(tmp_path / "h"),
                                        "--json"])

    first = StagesProcess(pg_store.url, thresholds=PM25, use_catalog=False, signs=False).start()
    try:
        with pytest.raises(RuntimeError, match="already runs the live stages"):
            StagesProcess(pg_store.url, thresholds=PM25, use_catalog=False, signs=False, exclusive_wait=0.5).start()
        r = watch_cli()  # nor may a one-off watch run beside it
        assert r.exit_code != 0 and "already runs the live stages" in str(r.exception or "") + r.output
        # nor a second server's: it waits out the lock (10 s, a killed server's may be freeing) and says why
        r = CliRunner().invoke(app, ["serve", "--no-http", "--follow", "--mqtt", "mqtt://127.0.0.1:1883",
                                     "--store", pg_store.url, "--home", str(tmp_path / "h")])
        assert r.exit_code != 0 and "--follow" in str(r.exception) and "already runs the live stages" in str(r.exception)
        assert first.alive()
    finally:
        first.close()
    assert watch_cli().exit_code == 0
    again = StagesProcess(pg_store.url, thresholds=PM25, use_catalog=False, signs=False, exclusive_wait=5).start()
    again.close()


def _serve_follow(home: Path, url: str, prefix: str, client_id: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cityvitals", "serve", "--no-http", "--follow", "--mqtt", "mqtt://127.0.0.1:1883",
           "--mqtt-layout", prefix + "/{kind}/{sensor_id}", "--mqtt-client-id", client_id, "--home", str(home),
           "--store", url]
    env = {k: v for k, v in os.environ.items() if k != "CITYVITALS_STORE"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def test_serve_follow_alerts_from_its_stages_process_which_dies_with_the_server(tmp_path, pg_store):
    """``serve --follow`` on PostgreSQL: a reading published over MQTT becomes an alert raised
    by the stages' child process; SIGKILL the server and the child goes too (no old watch left
    beside the next server's)."""
    import paho.mqtt.client as mqtt

    store = pg_store
    run = uuid.uuid4().hex[:10]
    prefix, client_id = f"cvtest/{run}", f"cv-follow-{run}"
    from cityvitals.ingest.mqtt import MqttConfig, drop_session, ensure_session

    cfg = MqttConfig(url="mqtt://127.0.0.1:1883", layout=prefix + "/{kind}/{sensor_id}", client_id=client_id)
    ensure_session(cfg)  # what is published from now on is kept for the server
    proc = _serve_follow(tmp_path / "home", store.url, prefix, client_id)
    child = None
    try:
        line = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not line.startswith("mqtt:"):
            line = proc.stderr.readline()
            m = re.search(r"live stages: watch and signs in process (\d+)", line)
            if m:
                child = int(m.group(1))
        assert child is not None and line.startswith("mqtt:"), f"the server did not start: {line}"
        assert child != proc.pid and not _gone(child)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        pub.connect("127.0.0.1", 1883)
        pub.loop_start()
        try:
            # above the catalogue's PM2.5 alarm for longer than its five minutes
            payload = [{"sensor_id": "A2", "ts": (now - timedelta(minutes=8 - m)).isoformat(), "value": 900.0}
                       for m in range(8)]
            pub.publish(f"{prefix}/pm25/A2", json.dumps(payload).encode(), qos=1).wait_for_publish(10)
        finally:
            pub.disconnect()
            pub.loop_stop()
        wait_for(lambda: proc.poll() is not None or any(
            a["source"] == "A2" for a in store.alerts.list(state="open", type_="threshold")), 60,
            f"the alert ({store.readings.frame().height} readings stored, "
            f"quarantined: {store.quarantine.frame().select('reason', 'message').rows()})")
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: _gone(child), 10, "the stages process to end with the server")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)
        drop_session(cfg)
