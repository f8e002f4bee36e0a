"""NAB-style scoring on hand-built cases, and our detector against the windowed Gaussian."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from cityvitals.cli.eval import eval_cmd
from cityvitals.errors import InputError
from cityvitals.watch.anomaly import AnomalyScoreDetector
from cityvitals.watch.eval.harness import evaluate, run_detector
from cityvitals.watch.eval.nab import LabelledSeries, probation_length, scaled_sigmoid, score_corpus
from cityvitals.watch.eval.synthetic import make_corpus, write_corpus
from cityvitals.watch.gaussian import WindowedGaussian

N = 2000
WINDOWS = [(800, 899), (1500, 1599)]


def _series():
    return [LabelledSeries("a.csv", np.arange(N) * 300, np.zeros(N), list(WINDOWS))]


def _scores(*hits):
    sc = np.zeros(N)
    for h in hits:
        sc[h] = 1.0
    return [sc]


def test_sigmoid_shape():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-4)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(10.0) == -1.0
    assert probation_length(4000) == 600 and probation_length(10000) == 750


def test_perfect_is_100_null_is_0_for_every_profile():
    perfect = score_corpus(_series(), _scores(800, 1500))
    null = score_corpus(_series(), [np.zeros(N)])
    for prof in ("standard", "reward_low_fp", "reward_low_fn"):
        assert perfect[prof] == pytest.approx(100.0)
        assert null[prof] == pytest.approx(0.0)
    assert perfect["metrics"]["recall"] == 1.0 and perfect["metrics"]["precision"] == 1.0
    assert perfect["metrics"]["mean_detection_delay_s"] == 0.0


def test_early_detection_beats_late_and_only_first_counts():
    early = score_corpus(_series(), _scores(810, 1510))["standard"]
    late = score_corpus(_series(), _scores(880, 1580))["standard"]
    assert 0 < late < early < 100
    both = score_corpus(_series(), _scores(810, 880, 1510))  # a second hit in a window adds nothing
    assert both["standard"] == pytest.approx(score_corpus(_series(), _scores(810, 1510))["standard"])


def test_false_positives_cost_more_far_from_windows_and_more_in_low_fp_profile():
    base = score_corpus(_series(), _scores(800, 1500))
    near = score_corpus(_series(), _scores(800, 1500, 905))  # just after the first window
    far = score_corpus(_series(), _scores(800, 1500, 700))  # before any window: full cost
    assert base["standard"] > near["standard"] > far["standard"]
    drop_std = base["standard"] - far["standard"]
    drop_fp = base["reward_low_fp"] - far["reward_low_fp"]
    assert drop_fp == pytest.approx(2 * drop_std, rel=1e-6)
    # probationary detections are ignored
    assert score_corpus(_series(), _scores(800, 1500, 10))["standard"] == pytest.approx(100.0)


def test_threshold_is_chosen_to_maximise_score():
    sc = np.zeros(N)
    sc[800], sc[1500] = 0.9, 0.8
    sc[700] = 0.85  # a false positive between the two true ones
    res = score_corpus(_series(), [sc])
    # firing at >= 0.8 catches both windows at the price of one FP; that beats 0.9 alone
    assert res["profiles"]["standard"]["threshold"] == pytest.approx(0.8)
    assert res["metrics"]["false_detections"] == 1 and res["metrics"]["detected_windows"] == 2


def test_profiles_weigh_misses_and_false_positives_differently():
    # everything caught, with false positives: the low-FN profile forgives the FPs most
    res = score_corpus(_series(), _scores(800, 1500, 650, 700, 1000))
    assert res["reward_low_fn"] > res["standard"] > res["reward_low_fp"]


def test_our_detector_beats_windowed_gaussian_on_synthetic_corpus():
    corpus = make_corpus(n_files=6, n_points=3000, seed=11)
    ours = score_corpus(corpus, [run_detector(AnomalyScoreDetector, s) for s in corpus])
    base = score_corpus(corpus, [run_detector(WindowedGaussian, s) for s in corpus])
    assert ours["standard"] > base["standard"] + 15
    assert ours["standard"] > 50


def test_eval_command_json_and_scores_out(tmp_path):
    corpus = make_corpus(n_files=2, n_points=800, seed=5)
    write_corpus(corpus, tmp_path / "data", tmp_path / "labels.json")
    app = typer.Typer()
    app.command("eval")(eval_cmd)
    app.command("other")(lambda: None)
    out = CliRunner().invoke(app, [
        "eval", "--data", str(tmp_path / "data"), "--labels", str(tmp_path / "labels.json"),
        "--detector", "windowed_gaussian", "--scores-out", str(tmp_path / "scores"), "--json",
    ])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    for prof in ("standard", "reward_low_fp", "reward_low_fn"):
        assert isinstance(res[prof], float)
    assert {"precision", "recall", "f1", "mean_detection_delay_s"} <= set(res["metrics"])
    written = pl.read_csv(tmp_path / "scores" / corpus[0].name)
    assert written.columns == ["timestamp", "value", "anomaly_score"] and written.height == 800
    # other scorers reading those scores get the same number
    again = score_corpus(corpus, [pl.read_csv(tmp_path / "scores" / s.name)["anomaly_score"].to_numpy() for s in corpus])
    assert again["standard"] == pytest.approx(res["standard"], abs=1e-3)


def test_eval_input_errors_name_the_item(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.csv").write_text("timestamp,value\n2015-01-01 00:00:00,1\n2015-01-01 00:05:00,abc\n")
    (tmp_path / "labels.json").write_text(json.dumps({"x.csv": []}))
    with pytest.raises(InputError, match="line 3"):
        evaluate(tmp_path / "data", tmp_path / "labels.json")
    (tmp_path / "labels.json").write_text(json.dumps({"missing.csv": []}))
    with pytest.raises(InputError, match="missing.csv"):
        evaluate(tmp_path / "data", tmp_path / "labels.json")
    with pytest.raises(InputError, match="--detector"):
        evaluate(tmp_path / "data", tmp_path / "labels.json", detector="nope")


def test_an_incident_touching_no_sensor_is_unobservable_not_a_miss(tmp_path):
    """A burst main whose zone has no sensor (a small city) cannot be seen by watching readings."""
    from datetime import datetime, timezone

    from cityvitals.store import open_store
    from cityvitals.watch.alerts import AlertManager, AlertPolicy, Observation
    from cityvitals.watch.eval.truth import evaluate_against_truth

    at = datetime(2024, 7, 15, 2, 0, tzinfo=timezone.utc)
    truth = {
        "steps": 480, "interval_s": 60, "city": {"sensors": 10},
        "incidents": [
            {"id": "INC-001", "category": "incident", "start": "2024-07-15T01:00:00+00:00",
             "end": "2024-07-15T03:00:00+00:00", "affected_sensors": []},
            {"id": "INC-002", "category": "incident", "start": "2024-07-15T01:00:00+00:00",
             "end": "2024-07-15T03:00:00+00:00", "affected_sensors": ["WP1"]},
            {"id": "INC-003", "category": "incident", "start": "2024-07-15T01:00:00+00:00",
             "end": "2024-07-15T03:00:00+00:00", "affected_sensors": ["WP2"]},
        ],
    }
    store = open_store(tmp_path / "home")
    try:
        AlertManager(store, AlertPolicy(), lambda: at).observe([Observation("WP1", "threshold", 2, at)])
        res = evaluate_against_truth(store, truth)
    finally:
        store.close()
    assert res["incidents_unobservable"] == ["INC-001"]
    assert (res["incidents"], res["incidents_detected"], res["incident_detection"]) == (2, 1, 0.5)
