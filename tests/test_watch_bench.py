"""``cityvitals bench watch`` runs end to end on a small size and reports what the issue asks."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from cityvitals.bench.watch import bench_watch, run_bench


def test_bench_reports_throughput_and_bytes_per_series():
    res = run_bench(series=2000, steps=5, baseline_series=0)
    assert res["points"] == 10_000 and res["points_per_s_per_core"] > 0
    assert set(res["detectors"]) == {"threshold", "shift", "seasonal", "breach", "health", "anomaly"}
    assert res["bytes_per_series_total"] < 1024  # all detectors together stay under 1 KB per series
    assert res["checkpoint_bytes_per_series"] < 1024


def test_bench_command_with_river_baseline():
    pytest.importorskip("river")
    app = typer.Typer()
    app.command("watch")(bench_watch)
    app.command("other")(lambda: None)
    out = CliRunner().invoke(app, ["watch", "--series", "1000", "--steps", "3", "--baseline-series", "2", "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.stdout)
    assert res["baseline"]["points_per_s_per_core"] > 0 and "HalfSpaceTrees" in res["baseline"]["name"]
