"""The fast paths of a full, ordered round (slices, strided slot columns) give the same bytes
as the general gather path: the same points in a shuffled order must leave every detector
with identical scores and state."""

import numpy as np

from cityvitals.bench.watch import _data, _detectors
from cityvitals.watch.base import dense


def test_dense_only_for_the_full_ordered_range():
    assert dense(np.arange(5)) == slice(0, 5)
    for idx in ([0, 1, 3], [1, 2, 3], [0, 2, 1, 3], [0, 0, 1]):
        assert isinstance(dense(np.array(idx)), np.ndarray)


def test_full_ordered_rounds_match_shuffled_rounds_bit_for_bit():
    n, steps = 400, 260
    t, x = _data(n, steps, 3)
    rng = np.random.default_rng(0)
    x[rng.random(x.shape) < 0.01] = np.nan            # gaps: the masked path
    x[120:150, 5:9] = 7.0                               # stuck sensors
    x[200, 20:25] *= 6                                  # spikes
    x[180:, 40:50] *= 3.6                               # a unit slip
    x[150:, 60:70] += np.linspace(0, 40, steps - 150)[:, None]  # drifts
    x[210:, 100:160] += 25                              # an event many share
    ordered, shuffled = _detectors(n), _detectors(n)
    sid = np.arange(n)
    for k in range(steps):
        p = rng.permutation(n)
        ts = np.full(n, t[k])
        for name in ordered:
            a = ordered[name].update_many(sid, ts, x[k])
            b = shuffled[name].update_many(p, ts, x[k][p])
            assert np.array_equal(a[p], b), (name, k)
    for name in ordered:
        assert ordered[name].to_bytes() == shuffled[name].to_bytes(), name
