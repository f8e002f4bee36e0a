"""The command line: help everywhere, exit codes, one-line errors, JSON for scripts."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from cityvitals import __version__
from cityvitals.cli import app

runner = CliRunner()


def _all_commands():
    root = typer.main.get_command(app)

    def walk(cmd, path):
        yield path
        if hasattr(cmd, "commands"):  # typer ships its own click; duck-type the group
            for name, sub in cmd.commands.items():
                yield from walk(sub, path + [name])

    return list(walk(root, []))


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(path):
    result = runner.invoke(app, path + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_usage_error_exits_2():
    assert runner.invoke(app, ["ingest"]).exit_code == 2
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_bad_input_is_one_line_and_exit_1(tmp_path):
    from cityvitals.cli import main

    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "cityvitals", "ingest", str(tmp_path / "missing.ndjson"), "--home", str(tmp_path / "h")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
    assert callable(main)


def test_ingest_and_status_json(tmp_path):
    home = str(tmp_path / "h")
    sensors = tmp_path / "s.csv"
    sensors.write_text("id,kind,unit,lon,lat,department\nP1,water_pressure,MPa,121.47,31.23,water\n")
    assert runner.invoke(app, ["sensors", "import", str(sensors), "--home", home]).exit_code == 0
    data = tmp_path / "r.ndjson"
    data.write_text(
        '{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":0.3}\n'
        '{"sensor_id":"P1","ts":"2026-05-01T08:00:00+08:00","value":0.3}\n'
        '{"sensor_id":"Q","ts":"2026-05-01T08:00:00+08:00","value":0.3}\n'
        "garbage\n"
    )
    result = runner.invoke(app, ["ingest", str(data), "--home", home, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["accepted"] == 1 and out["duplicates"] == 1
    assert out["quarantined"] == {"malformed": 1, "unknown_sensor": 1}
    assert all(isinstance(v, int) for v in out["quarantined"].values())
    status = json.loads(runner.invoke(app, ["status", "--home", home, "--json"]).output)
    assert status["readings"] == 1 and status["sensors"] == 1
    assert status["quarantined"] == {"malformed": 1, "unknown_sensor": 1}
    q = json.loads(runner.invoke(app, ["quarantine", "list", "--home", home, "--json"]).output)
    assert {r["reason"] for r in q["records"]} == {"malformed", "unknown_sensor"}
    sensors.write_text("id,kind,unit,lon,lat,department\nQ,water_pressure,MPa,121.47,31.23,water\n")
    assert runner.invoke(app, ["sensors", "import", str(sensors), "--home", home]).exit_code == 0
    replayed = json.loads(runner.invoke(app, ["quarantine", "replay", "--home", home, "--json"]).output)
    assert replayed["accepted"] == 1 and replayed["quarantined"] == {"malformed": 1}
    status = json.loads(runner.invoke(app, ["status", "--home", home, "--json"]).output)
    assert status["readings"] == 2 and status["quarantined"] == {"malformed": 1}


def test_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CITYVITALS_HOME", str(tmp_path / "envhome"))
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["path"].startswith(str(tmp_path / "envhome"))


def test_eval_scores_series_by_itself_and_diagnosis_as_a_sub_command(tmp_path):
    """`eval` needs --data and --labels only when no sub-command names another evaluation."""
    bare = runner.invoke(app, ["eval"])
    assert bare.exit_code == 2 and "--data" in bare.output
    half = runner.invoke(app, ["eval", "--data", str(tmp_path)])
    assert half.exit_code == 2 and "--labels" in half.output
    missing = runner.invoke(app, ["eval", "diagnose", "--home", str(tmp_path / "h"), "--truth", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "none.json" in str(missing.exception)
