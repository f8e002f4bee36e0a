"""Alerts against the simulator's ground truth (needs ``cityvitals.sim``): the issue's quality bar.

Small cities (300 sensors), seeds 1 and 2 (and 4 for the mix). The quiet day runs a whole day from scratch, so it
also checks that nothing fires on the daily pattern before the seasonal baseline is mature.
Each assertion names the issue's bar; where the stage does not reach it yet on every seed
the assertion is at the level reached, with the bar beside it (see the engineer's notes).
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import typer
from typer.testing import CliRunner

sim = pytest.importorskip("cityvitals.sim")

from cityvitals.cli import watch as watch_cli  # noqa: E402
from cityvitals.store import open_store  # noqa: E402
from cityvitals.watch.eval.truth import evaluate_against_truth, evaluate_sim_folder  # noqa: E402
from cityvitals.watch.runner import Threshold, watch_readings  # noqa: E402


def _short(res: dict) -> str:
    return json.dumps({k: v for k, v in res.items() if k != "lead_times_s"})


@pytest.mark.slow
def test_water_main_burst_is_detected(tmp_path):
    sim.run_simulation(tmp_path / "sim", scenario="water_main_burst", duration="12h", seed=3, city_sensors=600,
                       interval="60s", write_reports=False)
    truth = json.loads((tmp_path / "sim" / "truth.json").read_text())
    store = open_store(tmp_path / "home")
    sim.load_folder(store, tmp_path / "sim")
    end = datetime.fromisoformat(truth["end"])
    watch_readings(store, thresholds={"water_pressure": Threshold((0.16, 0.14, 0.10), "lower")}, clock=lambda: end)
    res = evaluate_against_truth(store, truth)
    print(_short(res))
    assert res["incidents"] == 1 and res["incident_detection"] == 1.0
    assert res["false_alerts_per_100_sensor_days"] is not None
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_quiet_day_false_alerts(tmp_path, seed):
    sim.run_simulation(tmp_path / "sim", scenario="quiet_day", duration="1d", seed=seed, city_sensors=300,
                       write_reports=False)
    res = evaluate_sim_folder(tmp_path / "sim")
    print(seed, _short(res))
    # no level-shift or seasonal alert before a day of history (the daily pattern is not an incident)
    assert not {"shift", "seasonal"} & set(res["false_alerts_by_type"])
    assert res["false_alerts_per_100_sensor_days"] <= 1.0  # issue's bar: <= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 4])  # seed 4: an isolated pm2.5 drift, and a burst whose zone has no sensor
def test_incidents_detected_and_faults_told_apart(tmp_path, seed):
    sim.run_simulation(tmp_path / "sim", scenario="water_main_burst,traffic_accident,gas_leak,manhole_displaced,sensor_faults",
                       duration="8h", seed=seed, city_sensors=300, write_reports=False)
    res = evaluate_sim_folder(tmp_path / "sim")
    print(seed, _short(res))
    assert res["incident_detection"] >= 0.95  # issue's bar: >= 95%
    assert res["faults_as_faults"] >= 0.9  # issue's bar: >= 90% (1.0 on seeds 1-9 at 300 and 400 sensors)
    assert res["faults_as_incidents"] <= 0.2


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_slow_onset_warning_lead_time(tmp_path, seed):
    sim.run_simulation(tmp_path / "sim", scenario="substation_overload,air_pollution", duration="16h", seed=seed,
                       city_sensors=300, write_reports=False)
    res = evaluate_sim_folder(tmp_path / "sim")
    print(seed, _short(res))
    assert res["lead_times_s"], "no forecast warning came before a crossing"
    assert res["median_lead_time_s"] >= 600  # issue's bar: >= 600 s


def test_eval_sim_cli_names_a_missing_truth(tmp_path):
    app = typer.Typer()
    app.add_typer(watch_cli.app, name="watch")
    out = CliRunner().invoke(app, ["watch", "eval-sim", "--sim", str(tmp_path), "--json"])
    assert out.exit_code != 0 and "truth.json" in str(out.exception or out.output)
