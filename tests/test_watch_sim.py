"""Alerts against the simulator's ground truth (needs ``cityvitals.sim``).

Only checks that the harness runs and finds the injected incident; the figures against the
issue's quality bar are reported by the test output (-s) and in the engineer's notes.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

sim = pytest.importorskip("cityvitals.sim")

from cityvitals.store import open_store  # noqa: E402
from cityvitals.watch.eval.truth import evaluate_against_truth  # noqa: E402
from cityvitals.watch.runner import Threshold, watch_readings  # noqa: E402


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
    print(json.dumps({k: v for k, v in res.items() if k != "lead_times_s"}))
    assert res["incidents"] == 1 and res["incident_detection"] == 1.0
    assert res["false_alerts_per_100_sensor_days"] is not None
    store.close()
