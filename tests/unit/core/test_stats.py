"""Rolling confidence stats: quantile error bound, event-time window, EWMA, readiness."""

from __future__ import annotations

import json

import numpy as np

from services.core.stats import ConfidenceStatsPolicy, ConfidenceStatsState

T0 = 1_000_000.0


def _state(**kw: float) -> ConfidenceStatsState:
    return ConfidenceStatsState(ConfidenceStatsPolicy(**{"min_count": 10, **kw}))  # type: ignore


def test_quantiles_within_one_bin_above_the_exact_sample_quantile() -> None:
    rng = np.random.default_rng(0)
    s = _state()
    conf = np.r_[rng.beta(2, 5, 4000), rng.beta(30, 2, 3000)]
    cls = np.r_[np.zeros(4000, int), np.ones(3000, int)]
    s.update(cls, conf, np.full(7000, T0), T0)
    for q in (0.01, 0.05, 0.25, 0.5, 0.9, 1.0):
        got = s.quantiles(np.array([q, q]))
        for c in (0, 1):
            x = np.sort(conf[cls == c])
            exact = x[int(np.ceil(q * x.shape[0])) - 1]
            assert exact <= got[c] + 1e-12 and got[c] - exact <= 1.0 / 1000 + 1e-12


def test_window_forgets_old_buckets_and_late_samples_skip_histograms() -> None:
    s = _state(bucket_seconds=10.0, buckets=3)
    s.update(np.zeros(50, int), np.full(50, 0.2), np.full(50, T0), T0)
    s.update(np.zeros(50, int), np.full(50, 0.9), np.full(50, T0 + 25), T0 + 25)
    assert s.window_count()[0] == 100
    assert s.quantiles(np.array([0.25]))[0] <= 0.201
    s.update(np.zeros(1, int), np.array([0.9]), np.array([T0 + 35]), T0 + 35)
    assert s.window_count()[0] == 51  # the T0 bucket left the 30 s window
    assert s.quantiles(np.array([0.25]))[0] > 0.89
    s.update(np.zeros(5, int), np.full(5, 0.1), np.full(5, T0), T0 + 35)  # too late for window
    assert s.window_count()[0] == 51 and s.count[0] == 106


def test_ewma_matches_the_sequential_definition() -> None:
    rng = np.random.default_rng(1)
    s = _state(ewma_alpha=0.1)
    cls = rng.integers(0, 3, 500)
    conf = rng.random(500)
    for lo in range(0, 500, 97):
        sl = slice(lo, lo + 97)
        s.update(cls[sl], conf[sl], np.full(conf[sl].shape, T0), T0)
    for c in range(3):
        x = conf[cls == c]
        m1, m2 = x[0], x[0] ** 2
        for v in x:
            m1, m2 = 0.9 * m1 + 0.1 * v, 0.9 * m2 + 0.1 * v * v
        assert np.isclose(s.mean()[c], m1) and np.isclose(s.variance()[c], max(m2 - m1 * m1, 0))


def test_not_ready_below_min_count() -> None:
    s = _state(min_count=20)
    s.update(np.r_[np.zeros(25, int), np.ones(5, int)], np.full(30, 0.5), np.full(30, T0), T0)
    assert s.ready().tolist() == [True, False]
    q = s.quantiles(np.array([0.5, 0.5]))
    assert not np.isnan(q[0]) and np.isnan(q[1])


def test_snapshot_round_trip_and_growth() -> None:
    s = _state()
    s.update(np.array([0, 3]), np.array([0.4, 0.6]), np.array([T0, T0]), T0)
    assert s.n_classes == 4
    data = json.loads(json.dumps(s.snapshot()))
    r = ConfidenceStatsState.from_snapshot(s.policy, data)
    assert json.dumps(r.snapshot()) == json.dumps(s.snapshot())
    assert r.hist.dtype == s.hist.dtype and np.array_equal(r.total, s.total)


def test_memory_does_not_grow_with_stream_length() -> None:
    s = _state(bucket_seconds=1.0, buckets=4)
    rng = np.random.default_rng(2)
    sizes = []
    for i in range(50):
        s.update(rng.integers(0, 5, 200), rng.random(200), np.full(200, T0 + i), T0 + i)
        sizes.append(s.hist.nbytes + s.total.nbytes)
    assert len(set(sizes[1:])) == 1
