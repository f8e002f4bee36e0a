"""Detectors: the protocol, batch = point-by-point, state size, checkpoints, behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from cityvitals.watch.anomaly import AnomalyScoreDetector
from cityvitals.watch.base import Detector, rounds
from cityvitals.watch.breach import BreachForecaster
from cityvitals.watch.gaussian import WindowedGaussian
from cityvitals.watch.health import SensorHealthDetector
from cityvitals.watch.seasonal import SeasonalDetector, slot_of
from cityvitals.watch.shift import LevelShiftDetector
from cityvitals.watch.threshold import ThresholdDetector

ALL = [
    lambda: ThresholdDetector(levels=(1.0, 2.0, 3.0), min_duration=120),
    LevelShiftDetector,
    SeasonalDetector,
    lambda: BreachForecaster(level=3.0),
    lambda: SensorHealthDetector(valid_range=(-10, 10)),
    AnomalyScoreDetector,
    lambda: WindowedGaussian(window=50),
]


def _data(n_series=5, n_steps=400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(n_steps) * 300, n_series)
    s = np.tile(np.arange(n_series), n_steps)
    x = np.sin(2 * np.pi * t / 86400) + rng.normal(0, 0.2, t.size) + s * 0.1
    x[(s == 2) & (t > 300 * 300)] += 2.5
    return s, t, x


@pytest.mark.parametrize("factory", ALL)
def test_protocol_and_batch_equals_point_by_point(factory):
    s, t, x = _data()
    det = factory()
    assert isinstance(det, Detector)
    batch = det.update_many(s, t, x)
    assert batch.shape == x.shape and np.all((batch >= 0) & (batch <= 1))
    one = factory()
    single = np.array([one.update_one(v, series=int(k), ts=int(tt)) for k, tt, v in zip(s, t, x)])
    np.testing.assert_allclose(batch, single, atol=1e-9)
    assert isinstance(det.explain(float(batch[-1]), series=2), str)


@pytest.mark.parametrize("factory", ALL[:-1])  # the windowed Gaussian is a reference, not a live detector
def test_state_is_small_and_round_trips(factory):
    s, t, x = _data()
    det = factory()
    det.update_many(s, t, x)
    assert det.bytes_per_series <= 1024
    back = type(det).from_bytes(det.to_bytes())
    assert back.to_bytes() == det.to_bytes()
    nxt = np.array([0, 1, 2]), np.full(3, 400 * 300), np.array([0.1, 0.2, 9.0])
    np.testing.assert_allclose(back.update_many(*nxt), det.update_many(*nxt))
    assert isinstance(det.state(1), dict)


def test_score_many_does_not_learn():
    s, t, x = _data()
    det = AnomalyScoreDetector()
    det.update_many(s, t, x)
    before = det.to_bytes()
    det.score_many([0, 1], [10**6, 10**6], [5.0, 5.0])
    assert det.to_bytes() == before


def test_rounds_split_repeated_series_in_time_order():
    s = np.array([3, 1, 3, 3, 1])
    t = np.array([30, 10, 10, 20, 20])
    rs = rounds(s, t)
    assert [sorted(s[r].tolist()) for r in rs] == [[1, 3], [1, 3], [3]]
    assert [t[r][s[r] == 3].tolist() for r in rs] == [[10], [20], [30]]


def test_threshold_hysteresis_and_min_duration():
    det = ThresholdDetector(levels=(50, 70, 90), min_duration=120, hysteresis_abs=5)
    lv = [round(det.update_one(v, ts=60 * i) * 3) for i, v in enumerate([75, 75, 75, 75, 95, 66, 66, 66, 64, 64, 64])]
    # enters warning only after 2 minutes; a single 95 is too short for alarm; leaves only below 70-5
    assert lv == [0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 1]


def test_threshold_lower_is_worse_per_series():
    det = ThresholdDetector()
    det.set_levels([0, 1], [[0.2, 0.15, 0.1], [30, 40, 50]], ["lower", "higher"])
    out = det.update_many([0, 1], [0, 0], [0.12, 45])
    assert (out * 3).round().tolist() == [2, 2]
    assert "lower is worse" in det.explain(out[0], series=0)


def test_level_shift_detects_step_and_not_noise():
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(10, 0.5, 300), rng.normal(12, 0.5, 100)]
    sc = LevelShiftDetector().update_many(np.zeros(400, int), np.arange(400) * 60, x)
    assert sc[30:300].max() < 1.0
    assert 300 <= int(np.argmax(sc >= 1.0)) <= 306


def test_seasonal_learns_time_of_day_and_explains():
    t = np.arange(0, 28 * 86400, 1800)
    x = 100 + 40 * (((t % 86400) // 3600 >= 7) & ((t % 86400) // 3600 <= 9))  # morning peak
    det = SeasonalDetector()
    det.update_many(np.zeros(t.size, int), t, x.astype(float))
    tue8 = 26 * 86400 + 8 * 3600  # day 26 after 1970-01-01 is a Tuesday
    assert slot_of(np.array([tue8]))[0] == 8
    assert det.score_one(140.0, ts=tue8) == 0.0  # the peak is normal at 08:00
    assert det.score_one(100.0, ts=tue8) == 1.0  # no peak at 08:00 is not
    assert det.score_one(140.0, ts=tue8 - 6 * 3600) == 1.0  # a peak at 02:00 is not either
    det.update_one(100.0, ts=tue8)
    assert det.explain(1.0).startswith("seasonal baseline for Tuesday 08:00 is 140")


def test_breach_warns_before_crossing():
    det = BreachForecaster(level=4.5, horizon=3600)
    rng = np.random.default_rng(2)
    t = np.arange(120) * 60
    x = 3.0 + 0.02 * np.arange(120) + rng.normal(0, 0.01, 120)  # crosses 4.5 at minute 75
    sc = det.update_many(np.zeros(120, int), t, x)
    first_warn = int(np.argmax(sc >= 0.5))
    assert first_warn < 75 - 10  # at least 10 minutes of lead time
    det2 = BreachForecaster(level=4.5)
    flat = det2.update_many(np.zeros(120, int), t, 3.0 + rng.normal(0, 0.01, 120))
    assert flat.max() == 0.0


def test_health_fault_versus_event_and_stuck_and_range():
    det = SensorHealthDetector(valid_range=(0, 2.5), flat_k=5)
    det.set_neighbours({i: [j for j in range(5) if j != i] for i in range(5)})
    rng = np.random.default_rng(3)
    ids = np.arange(5)
    for k in range(50):
        det.update_many(ids, np.full(5, 60 * k), 0.4 + rng.normal(0, 0.005, 5))
    out = det.update_many(ids, np.full(5, 3000), [0.9, 0.4, 0.4, 0.4, 0.4])
    assert out.tolist() == [1, 0, 0, 0, 0] and det.faults(0) == ["disagree"]
    det.update_many(ids, np.full(5, 3060), [0.4] * 5)
    out = det.update_many(ids, np.full(5, 3120), [0.25, 0.25, 0.26, 0.24, 0.25])
    assert out.tolist() == [0] * 5 and all(det.events(i) for i in range(5))
    for k in range(9):
        out = det.update_many(ids, np.full(5, 3180 + 60 * k), [0.3, 0.3 + rng.normal(0, 0.01), 3.0, 0.3, 0.3])
    assert "flat" in det.faults(0) and "out_of_range" in det.faults(2)
    assert det.check_stale(now=3660 + 600).all()


def test_anomaly_detector_fires_once_on_shift():
    rng = np.random.default_rng(4)
    t = np.arange(4000) * 300
    x = 50 + 10 * np.sin(2 * np.pi * t / 86400) + rng.normal(0, 1, 4000)
    x[3000:] += 12
    sc = AnomalyScoreDetector().update_many(np.zeros(4000, int), t, x)
    assert 3000 <= int(np.argmax(sc)) <= 3005
    assert sc[700:3000].max() < sc[3000:3006].max()
    assert (sc[3010:] >= sc[3000:3006].max()).sum() == 0


def _drift_city(drifting: bool, shared: bool, hours: int = 8, seed: int = 0):
    """Six pressure sensors a minute apart for ``hours``; sensor 0 ramps by 0.15 MPa over 6 h from hour 1."""
    from cityvitals.watch.health import SensorHealthDetector

    det = SensorHealthDetector(agree_window=1800, confirm_after=600, drift_ref_n=60, drift_k=6.0, drift_min=0.3,
                               drift_slow_s=86400.0)  # as the runner has it
    det.set_neighbours({i: [j for j in range(6) if j != i] for i in range(6)})
    rng = np.random.default_rng(seed)
    flagged_at = None
    for k in range(hours * 60):
        t = 60 * k
        daily = 0.05 * np.sin(2 * np.pi * t / 86400)  # the city's pressure follows the clock
        x = 0.3 + daily + rng.normal(0, 0.0015, 6) + 0.02 * np.arange(6) / 6
        ramp = 0.15 * np.clip((t - 3600) / (6 * 3600), 0, 1)
        if drifting:
            x[0] -= ramp
        if shared:
            x -= ramp  # all six sink together: an event, not a fault
        det.update_many(np.arange(6), np.full(6, t), x)
        if flagged_at is None and "drift" in det.faults(0):
            flagged_at = t
    return det, flagged_at


def test_health_calls_a_first_day_drift_a_fault():
    det, at = _drift_city(drifting=True, shared=False)
    assert at is not None and 3600 < at < 7 * 3600, at  # before the ramp ends, on the first day
    assert "drift" in det.explain(1.0, series=0)


def test_health_does_not_call_a_shared_slow_change_drift():
    for seed in range(2):
        _det, at = _drift_city(drifting=False, shared=True, seed=seed)
        assert at is None
        _det, at = _drift_city(drifting=False, shared=False, seed=seed)
        assert at is None


def test_rolling_sum_matches_the_exact_hourly_sum():
    from cityvitals.watch.rolling import RollingSum

    rng = np.random.default_rng(3)
    n = 300
    t = np.arange(n) * 60
    rain = np.where(rng.uniform(size=n) < 0.5, rng.gamma(2.0, 0.4, n), 0.0)
    rs = RollingSum(window=3600, bin_s=300)
    got = rs.update_many(np.zeros(n, int), t, rain)
    exact = np.array([rain[max(0, i - 59) : i + 1].sum() for i in range(n)])
    err = np.abs(got - exact)  # the oldest 5-minute bin is prorated, so within about one reading
    assert err.max() < 3.0 and err.mean() < 0.6
    again = RollingSum.from_bytes(rs.to_bytes())
    assert again.update_one(0.0, ts=n * 60) == pytest.approx(rs.update_one(0.0, ts=n * 60))
