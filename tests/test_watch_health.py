"""Sensor health as the runner configures it: spikes, drift with few neighbours, a pinned sensor, a wrong unit.

Each case is a small seeded city of one kind, a point a minute; each checks the fault is
named and that the healthy (or really changing) counterpart is not.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from cityvitals.watch.health import SensorHealthDetector
from cityvitals.watch.runner import HEALTH, drift_references, nearest_neighbours


def _flags_over_run(det: SensorHealthDetector, x: np.ndarray) -> list[set[str]]:
    from cityvitals.watch.health import FLAGS

    seen: list[set[str]] = [set() for _ in range(x.shape[1])]
    ids = np.arange(x.shape[1])
    for k in range(x.shape[0]):
        det.update_many(ids, np.full(ids.size, 60 * k), x[k])
        fl = det.take_flags()
        for i in np.flatnonzero(fl):
            seen[i] |= {name for name, bit in FLAGS.items() if fl[i] & bit}
    return seen


def test_one_implausible_spike_is_a_fault_a_small_glitch_and_a_shower_are_not():
    rng = np.random.default_rng(1)
    n = 240
    x = np.column_stack([45 + rng.normal(0, 0.3, n),       # transformer temperature: one jump of +44 degC
                         45 + rng.normal(0, 0.3, n),       # the same, a glitch of 3 degC (10 sd, 7% of its level)
                         np.zeros(n)])                     # a rain gauge: dry, then one wet minute
    x[120, 0] += 44.0
    x[120, 1] += 3.0
    x[150, 2] = 2.4
    det = SensorHealthDetector(valid_range=(-40, 250), **HEALTH)
    det.set_range([2], 0.0, 300.0)
    seen = _flags_over_run(det, x)
    assert "spike" in seen[0]
    assert "spike" not in seen[1] and "spike" not in seen[2]


def test_a_spike_most_neighbours_share_is_an_event():
    rng = np.random.default_rng(2)
    n = 200
    x = 0.3 + rng.normal(0, 0.0015, (n, 5))
    x[100] += 0.2  # all five jump and come back together (a pressure transient)
    det = SensorHealthDetector(valid_range=(0, 2.5), **HEALTH)
    det.set_neighbours({i: [j for j in range(5) if j != i] for i in range(5)})
    assert not any("spike" in s for s in _flags_over_run(det, x))
    x[150, 0] += 0.2  # one alone: a fault
    det = SensorHealthDetector(valid_range=(0, 2.5), **HEALTH)
    det.set_neighbours({i: [j for j in range(5) if j != i] for i in range(5)})
    seen = _flags_over_run(det, x)
    assert "spike" in seen[0] and not any("spike" in s for s in seen[1:])


def _far_city(drifting: bool, hours: int = 8, seed: int = 0) -> list[set[str]]:
    """Sensor 0 has no near neighbour, only far references (1..5) of its kind; from hour 1 it may ramp -0.2 over 4 h."""
    rng = np.random.default_rng(seed)
    n = hours * 60
    t = np.arange(n) * 60
    daily = 0.05 * np.sin(2 * np.pi * t / 86400)
    x = 0.3 + daily[:, None] + rng.normal(0, 0.0015, (n, 6)) + 0.03 * np.arange(6) / 6
    if drifting:
        x[:, 0] -= 0.2 * np.clip((t - 3600) / (4 * 3600), 0, 1)
    det = SensorHealthDetector(valid_range=(0, 2.5), **HEALTH)
    near = {i: [j for j in range(1, 6) if j != i] for i in range(1, 6)}
    det.set_neighbours(near, references={0: [1, 2, 3, 4, 5]})
    return _flags_over_run(det, x)


def test_drift_of_a_sensor_without_near_neighbours_is_seen_against_far_references():
    for seed in range(3):
        seen = _far_city(drifting=True, seed=seed)
        assert "drift" in seen[0], seed
        assert not any("drift" in s for s in seen[1:])
        assert not any("drift" in s for s in _far_city(drifting=False, seed=seed))


def test_far_references_only_judge_drift_not_jumps():
    rng = np.random.default_rng(5)
    x = 0.3 + rng.normal(0, 0.0015, (120, 6))
    x[60:, 0] += 0.1  # a step at the lone sensor: no near neighbour to disagree with, so no verdict
    det = SensorHealthDetector(valid_range=(0, 2.5), **HEALTH)
    det.set_neighbours({}, references={0: [1, 2, 3, 4, 5]})
    seen = _flags_over_run(det, x)
    assert "disagree" not in seen[0] and int(det.nnear[0]) == 0


def test_drift_references_for_sensors_with_fewer_than_two_neighbours():
    sensors = pl.DataFrame({
        "id": ["a", "b", "c", "d", "e", "t"],
        "kind": ["water_pressure"] * 5 + ["temperature"],
        "lon": [121.40, 121.401, 121.402, 121.52, 121.60, 121.40],
        "lat": [31.20, 31.2005, 31.2001, 31.25, 31.30, 31.20],
    })
    near = nearest_neighbours(sensors)
    refs = drift_references(sensors, near)
    assert set(near["a"]) == {"b", "c"} and "d" not in near
    assert refs["d"][0] == "e" and set(refs["d"]) == {"a", "b", "c", "e"}  # nearest first, any distance
    assert "a" not in refs  # two near neighbours are enough
    assert all(r != "t" for rs in refs.values() for r in rs)  # same kind only


def test_pinned_at_the_ceiling_alone_is_stuck_but_with_the_neighbours_a_state():
    rng = np.random.default_rng(3)
    n = 200
    x = 85 + rng.normal(0, 0.4, (n, 4))
    x[60:, 0] = 100.0  # saturated humidity at one sensor only
    det = SensorHealthDetector(valid_range=(0, 100), **HEALTH)
    det.set_neighbours({i: [j for j in range(4) if j != i] for i in range(4)})
    seen = _flags_over_run(det, x)
    assert "flat" in seen[0]
    x[60:, :] = 100.0  # fog over the whole district: all at the ceiling
    det = SensorHealthDetector(valid_range=(0, 100), **HEALTH)
    det.set_neighbours({i: [j for j in range(4) if j != i] for i in range(4)})
    assert not any("flat" in s for s in _flags_over_run(det, x))


def test_wrong_unit_on_a_light_wind_and_a_late_slip_to_zero():
    rng = np.random.default_rng(4)
    n = 200
    wind = 2.0 + rng.normal(0, 0.15, n)
    wind[100:] *= 3.6  # m/s read as km/h: noisy, so the ratio of two points is not exactly 3.6
    pm = 50 + rng.normal(0, 2, n)
    pm[30:] = 0.0  # pm10 reported in mg/m3 from its 31st point, rounded to whole units: 0
    seen = _flags_over_run(SensorHealthDetector(valid_range=(0, 60), **HEALTH), np.column_stack([np.round(wind, 1)]))
    assert "unit" in seen[0]
    seen = _flags_over_run(SensorHealthDetector(valid_range=(0, 2000), **HEALTH), np.column_stack([pm]))
    assert "flat" in seen[0]


def test_drift_judged_every_five_minutes_still_finds_the_ramp():
    rng = np.random.default_rng(6)
    n = 8 * 60
    t = np.arange(n) * 60
    x = 0.3 + 0.05 * np.sin(2 * np.pi * t / 86400)[:, None] + rng.normal(0, 0.0015, (n, 6)) + 0.03 * np.arange(6) / 6
    x[:, 0] -= 0.2 * np.clip((t - 3600) / (4 * 3600), 0, 1)
    det = SensorHealthDetector(valid_range=(0, 2.5), **{**HEALTH, "drift_every_s": 300})
    det.set_neighbours({i: [j for j in range(6) if j != i] for i in range(6)})
    seen = _flags_over_run(det, x)
    assert "drift" in seen[0] and not any("drift" in s for s in seen[1:])


def _slow_road(slip_at: int, n: int = 90, seed: int = 7) -> np.ndarray:
    """Five traffic-speed sensors near 40 km/h (step sd about 2); sensor 0 reports mph from ``slip_at``."""
    rng = np.random.default_rng(seed)
    x = 40 + 3 * np.arange(5)[None, :] / 5 + rng.normal(0, 1.5, (n, 5))
    x[slip_at:, 0] /= 1.609344  # a 38% drop: about six of its step deviations, a full jump or just under
    return x


def test_a_unit_slip_under_a_full_jump_is_found_where_the_kind_has_that_unit_and_only_there():
    nb = {i: [j for j in range(5) if j != i] for i in range(5)}
    for seed in range(3):
        det = SensorHealthDetector(valid_range=(0, 250), **{**HEALTH, "jump_z": 12.0})  # the slip is half a jump here
        det.set_neighbours(nb)
        det.set_units(range(5), [3.6, 1.609344])  # traffic speed: m/s and mph accepted
        seen = _flags_over_run(det, _slow_road(60, seed=seed))
        assert "unit" in seen[0], seed
        assert not any(s & {"unit", "disagree"} for s in seen[1:])
        # a kind with no such unit (crowd density accepts persons/100 m2 only): no half-jump candidate
        det = SensorHealthDetector(valid_range=(0, 250), **{**HEALTH, "jump_z": 12.0})
        det.set_neighbours(nb)
        det.set_units(range(5), [0.01])
        assert "unit" not in _flags_over_run(det, _slow_road(60, seed=seed))[0]


def test_the_drift_spread_holds_still_while_a_jump_awaits_its_verdict():
    """A young series (fast learning) whose unit slips: the slip must not widen its own yardstick.

    Before, ten minutes of the slip had widened the spread fivefold by the verdict, and the
    slip no longer looked displaced from the neighbours (mph on a traffic-speed sensor).
    """
    x = _slow_road(45, n=80, seed=3)
    x[45:, 0] = x[45:, 0] * 1.609344 / 3.6  # km/h read as m/s instead of mph: a full jump
    det = SensorHealthDetector(valid_range=(0, 250), **HEALTH)
    det.set_neighbours({i: [j for j in range(5) if j != i] for i in range(5)})
    sds, seen = [], set()
    ids = np.arange(5)
    for k in range(x.shape[0]):
        det.update_many(ids, np.full(5, 60 * k), x[k])
        if det.pending[0]:
            sds.append(float(det.off_sd[0]))
        if det.take_flags()[0] & 128:
            seen.add("unit")
    assert len(sds) >= 5 and max(sds) == min(sds)
    assert seen == {"unit"}


def test_a_rain_gauge_back_at_zero_after_its_first_drop_is_no_disagreement():
    n = 120
    x = np.zeros((n, 3))
    x[70, 0] = 0.1  # the first drop of the day at one gauge, straight back to 0
    det = SensorHealthDetector(valid_range=(0, 300), **HEALTH)
    det.set_neighbours({0: [1, 2], 1: [0, 2], 2: [0, 1]})
    assert not any(s & {"disagree", "unit"} for s in _flags_over_run(det, x))


def test_drift_references_only_for_kinds_sharing_one_regime():
    from cityvitals.watch.runner import DRIFT_REF_KINDS

    sensors = pl.DataFrame({
        "id": ["p1", "p2", "p3", "c1", "c2", "c3"],
        "kind": ["pm25"] * 3 + ["crowd_density"] * 3,
        "lon": [121.40, 121.50, 121.60] * 2,
        "lat": [31.20, 31.25, 31.30] * 2,
    })
    near = nearest_neighbours(sensors)
    refs = drift_references(sensors, near, kinds=DRIFT_REF_KINDS)
    assert set(refs) == {"p1", "p2", "p3"}  # an isolated crowd sensor's rush is its own: no far reference
    assert set(drift_references(sensors, near)) == {"p1", "p2", "p3", "c1", "c2", "c3"}


def test_drift_against_far_references_is_seen_when_the_sensor_rises_severalfold():
    """An upward drift to 3.5x the references: the offset is not capped below the bar (it was at +0.72)."""
    rng = np.random.default_rng(8)
    n = 8 * 60
    t = np.arange(n) * 60
    x = 30 * (1 + 0.1 * rng.normal(0, 1, (n, 6))) * (1 + 0.2 * np.arange(6) / 6)
    x[:, 0] *= 1 + 2.5 * np.clip((t - 7200) / (4 * 3600), 0, 1)
    det = SensorHealthDetector(valid_range=(0, 2000), **HEALTH)
    det.set_neighbours({i: [j for j in range(1, 6) if j != i] for i in range(1, 6)}, references={0: [1, 2, 3, 4, 5]})
    seen = _flags_over_run(det, x)
    assert "drift" in seen[0] and not any("drift" in s for s in seen[1:])


def test_a_checkpoint_from_before_the_kind_bits_loads():
    import io

    det = SensorHealthDetector(valid_range=(0, 250), **HEALTH)
    det.set_neighbours({0: [1], 1: [0]})
    det.set_units([0, 1], [3.6])
    det.update_many([0, 1], [0, 0], [40.0, 41.0])
    data = dict(np.load(io.BytesIO(det.to_bytes()), allow_pickle=False))
    del data["f_kbits"]
    buf = io.BytesIO()
    np.savez(buf, **data)
    old = SensorHealthDetector.from_bytes(buf.getvalue())
    assert int(old.kbits[0]) == 0 and float(old.last[1]) == 41.0 and int(old.nnear[0]) == 1


def test_a_light_gusty_wind_read_in_kmh_with_one_neighbour_is_a_unit_fault():
    """Held-out seed 9: 1.4 m/s of gusty wind (step sd a third of its level or more) slips to km/h
    with one near neighbour. The unit candidate is seen, but the offset to the neighbour, floored
    by three step deviations, moved by under six of its spreads (1 of these 4 seeds was called);
    the ratio moved by the factor while the neighbour's did not."""
    found = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        n = 200
        x = np.clip(1.4 + rng.normal(0, 0.2, (n, 2)) + np.array([0.0, 0.15]), 0.1, None)
        x[150, 0] = x[149, 0]  # the first reading in km/h is of the same wind: the candidate is seen
        x[150:, 0] *= 3.6
        det = SensorHealthDetector(valid_range=(0, 60), **HEALTH)
        det.set_neighbours({0: [1], 1: [0]})
        det.set_units(range(2), [3.6])
        det.set_shared(range(2), True)
        seen = _flags_over_run(det, np.round(x, 1))
        found += "unit" in seen[0]
        assert not seen[1] & {"unit", "disagree", "drift"}, seed
    assert found == 4
