"""The main job: `cityvitals demo` builds, loads and measures the simulated city."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cityvitals.cli import app


def test_demo_builds_a_small_city_end_to_end(tmp_path):
    home = str(tmp_path / "home")
    args = ["demo", "--once", "--home", home, "--sensors", "400", "--districts", "2", "--duration", "3h", "--history", "2h", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    status = out["status"]
    assert status["units"]["district"] == 2 and status["units"]["grid"] > 50
    assert status["sensors"] >= 400 and status["readings"] > 400 * 100
    assert sum(status["quarantined"].values()) > 0  # the simulator emits bad records on purpose
    assert out["health"]["unit"] == "0" and 0 <= out["health"]["index"] <= 100
    # Running it again reuses the store: nothing is simulated or stored twice.
    again = json.loads(CliRunner().invoke(app, args).output)
    assert again["status"]["readings"] == status["readings"]


def test_demo_with_its_defaults_runs_once(tmp_path):
    """`make demo`'s city as it is (default size and scenarios), loaded once: the README's main
    command. The small city above missed a crash that only the default city's first minutes hit
    (diagnose given health findings and no other alert)."""
    result = CliRunner().invoke(app, ["demo", "--once", "--home", str(tmp_path / "home"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["status"]["readings"] > 500_000 and out["status"]["incidents_total"] >= 1
    assert 0 <= out["health"]["index"] <= 100
