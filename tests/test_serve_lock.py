"""While `cityvitals serve` holds the DuckDB file, other commands cannot open it (DuckDB lets
one process open it): they say so in one line, naming the server's pid and address and how to
do the same through its API, and the API way works. Once the server stops, the CLI works again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
from browser_kit import free_port
from typer.testing import CliRunner

from cityvitals.cli import app

runner = CliRunner()


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command in its own process, as a user runs it (errors go to the real stderr)."""
    return subprocess.run([sys.executable, "-m", "cityvitals", *args], check=False, capture_output=True, text=True,
                          timeout=120)


def test_a_command_on_a_store_held_by_the_server_names_it_and_the_api_way(tmp_path):
    home = str(tmp_path / "h")
    sensors = tmp_path / "s.csv"
    sensors.write_text("id,kind,unit,lon,lat,department\nP1,water_pressure,MPa,121.47,31.23,water\n")
    assert runner.invoke(app, ["sensors", "import", str(sensors), "--home", home]).exit_code == 0
    added = runner.invoke(app, ["users", "add", "ops", "--role", "duty_officer", "--home", home, "--json"])
    assert added.exit_code == 0, added.output
    key = json.loads(added.output)["key"]
    data = tmp_path / "r.ndjson"
    data.write_text('{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":0.3}\n')

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "cityvitals", "serve", "--port", str(port), "--home", home],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded wait for the server to answer
            assert server.poll() is None, server.stderr.read()
            try:
                if httpx.get(url + "/api/v1/public/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("cityvitals serve did not answer within 60 s")

        r = cli("ingest", str(data), "--home", home)
        assert r.returncode == 1
        line = r.stderr.strip()
        assert "\n" not in line, line
        assert f"pid {server.pid}" in line and url in line and "held by the running server" in line
        assert f"POST {url}/api/v1/readings" in line and "Traceback" not in line
        r = cli("users", "list", "--home", home)  # no API way of its own: the API docs
        assert r.returncode == 1 and f"{url}/api/v1/docs" in r.stderr and f"pid {server.pid}" in r.stderr

        # the way the message names works
        posted = httpx.post(url + "/api/v1/readings", headers={"Authorization": f"Bearer {key}"},
                            json=[{"sensor_id": "P1", "ts": "2026-05-01T08:00:00+08:00", "value": 0.3}], timeout=30)
        assert posted.status_code == 200 and posted.json()["accepted"] == 1
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    assert not os.path.exists(os.path.join(home, "server.json"))  # the server withdrew its record
    status = runner.invoke(app, ["status", "--home", home, "--json"])
    assert status.exit_code == 0 and json.loads(status.output)["readings"] == 1
