"""Reservoir samplers: uniform inclusion k/n (chi-square), weighted inclusion as A-Res theory
predicts, batch-split invariance of the law, and snapshot/restore mid-stream."""

from __future__ import annotations

import itertools
import json

import numpy as np
from scipy import stats

from services.core.codec import decode_rng, encode_rng
from services.core.reservoir import WeightedReservoirState
from services.core.uniform_reservoir import UniformReservoirState


def _uniform_trial(rng: np.random.Generator, n: int, k: int, splits: list[int]) -> list[int]:
    res = UniformReservoirState(k)
    start = 0
    for m in splits:
        base = start
        res.offer(m, rng, lambda j, b=base: (b + j).tolist())
        start += m
    assert start == n
    payload, seen = res.drain()
    assert seen == n and len(payload) == min(k, n)
    return payload


def _splits(rng: np.random.Generator, n: int) -> list[int]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=5, replace=False))
    return np.diff(np.r_[0, cuts, n]).tolist()


def test_uniform_inclusion_is_k_over_n_chi_square() -> None:
    rng = np.random.default_rng(123)
    n, k, trials = 40, 4, 3000
    counts = np.zeros(n)
    for _ in range(trials):
        for item in _uniform_trial(rng, n, k, _splits(rng, n)):
            counts[item] += 1
    expected = np.full(n, trials * k / n)
    assert counts.sum() == trials * k
    assert stats.chisquare(counts, expected).pvalue > 0.001


def test_uniform_holds_everything_while_not_full() -> None:
    rng = np.random.default_rng(0)
    assert sorted(_uniform_trial(rng, 3, 5, [1, 2])) == [0, 1, 2]


def _weighted_trial(rng: np.random.Generator, w: np.ndarray, k: int) -> list[int]:
    res = WeightedReservoirState(k)
    group = np.zeros(w.shape[0], dtype=np.uint64)
    for lo in range(0, w.shape[0], 3):
        sl = slice(lo, lo + 3)
        res.offer(w[sl], group[sl], w[sl], rng.standard_exponential(w[sl].shape[0]),
                  lambda j, b=lo: (b + j).tolist())
    return [p for _, p in res.drain()]


def test_weighted_size_one_inclusion_is_w_over_sum_w() -> None:
    rng = np.random.default_rng(7)
    w = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.9])
    trials = 6000
    counts = np.bincount([_weighted_trial(rng, w, 1)[0] for _ in range(trials)], minlength=6)
    assert stats.chisquare(counts, trials * w / w.sum()).pvalue > 0.001


def _successive_sampling_inclusion(w: np.ndarray, k: int) -> np.ndarray:
    """Exact inclusion probabilities of weighted sampling without replacement (A-Res's law)."""
    p = np.zeros(w.shape[0])
    for order in itertools.permutations(range(w.shape[0]), k):
        prob, left = 1.0, w.sum()
        for i in order:
            prob *= w[i] / left
            left -= w[i]
        p[list(order)] += prob
    return p


def test_weighted_inclusion_rises_with_weight_as_theory_predicts() -> None:
    rng = np.random.default_rng(11)
    w = np.array([0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    k, trials = 2, 5000
    counts = np.zeros(w.shape[0])
    for _ in range(trials):
        counts[_weighted_trial(rng, w, k)] += 1
    theory = _successive_sampling_inclusion(w, k)
    assert np.all(np.diff(theory) > 0) and np.all(np.diff(counts) > 0)
    sd = np.sqrt(trials * theory * (1 - theory))
    assert np.all(np.abs(counts - trials * theory) < 4 * sd)


def test_drain_by_key_is_a_weighted_sample_across_groups() -> None:
    """The flush of `ReservoirPolicy.power`: the first k entries drained by key, over items of
    different groups, are a weighted sample without replacement of all of them."""
    rng = np.random.default_rng(13)
    w = np.array([0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    k, trials = 2, 5000
    counts = np.zeros(w.shape[0])
    for _ in range(trials):
        res = WeightedReservoirState(1)
        res.offer(w, np.arange(6, dtype=np.uint64), 1.0 - w, rng.standard_exponential(6),
                  lambda j: j.tolist())
        counts[[p for _, p in res.drain(by_key=True)[:k]]] += 1
    theory = _successive_sampling_inclusion(w, k)
    sd = np.sqrt(trials * theory * (1 - theory))
    assert np.all(np.abs(counts - trials * theory) < 4 * sd)
    # by priority (here the reverse of the weights), the same entries always come first
    res = WeightedReservoirState(1)
    res.offer(w, np.arange(6, dtype=np.uint64), 1.0 - w, rng.standard_exponential(6),
              lambda j: j.tolist())
    assert [p for _, p in res.drain()] == [0, 1, 2, 3, 4, 5]


def test_weighted_keeps_size_per_group_and_orders_by_priority() -> None:
    rng = np.random.default_rng(3)
    res = WeightedReservoirState(2)
    groups = np.array([1, 1, 1, 2, 2, 3], dtype=np.uint64)
    pr = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.7])
    res.offer(pr, groups, pr, rng.standard_exponential(6), lambda j: j.tolist())
    assert len(res) == 5
    drained = res.drain()
    assert [p for p, _ in drained] == sorted((p for p, _ in drained), reverse=True)
    assert len(res) == 0


def test_snapshot_restore_midstream_is_identical() -> None:
    def run(split_at: int | None) -> tuple[list[object], list[object]]:
        rng = np.random.default_rng(99)
        w_res, u_res = WeightedReservoirState(3), UniformReservoirState(4)
        data_rng = np.random.default_rng(5)
        for step in range(20):
            if step == split_at:
                snap = json.loads(json.dumps({"w": w_res.snapshot(), "u": u_res.snapshot(),
                                              "rng": encode_rng(rng)}))
                w_res = WeightedReservoirState.from_snapshot(snap["w"])
                u_res = UniformReservoirState.from_snapshot(snap["u"])
                rng = decode_rng(snap["rng"])
            w = data_rng.random(17)
            g = data_rng.integers(0, 3, 17).astype(np.uint64)
            w_res.offer(w, g, w, rng.standard_exponential(17),
                        lambda j, s=step: [[s, int(x)] for x in j])
            u_res.offer(17, rng, lambda j, s=step: [[s, int(x)] for x in j])
        return [p for _, p in w_res.drain()], u_res.drain()[0]

    assert run(None) == run(9)


def test_adaptive_power_follows_the_uncertainty_level() -> None:
    """`ReservoirPolicy.power_at`: fixed power without `adaptive`; with it, adaptive x (1 - l) / l
    clipped to [MIN_POWER, power], and `power` before any window closed."""
    import pytest

    from services.core.reservoir import MIN_POWER, ReservoirPolicy

    assert ReservoirPolicy(power=4.0).power_at(0.9) == 4.0
    assert ReservoirPolicy(power=None).power_at(0.5) is None  # the strict top
    pol = ReservoirPolicy(power=4.0, adaptive=2.0)
    assert pol.power_at(None) == 4.0
    assert pol.power_at(0.2) == 4.0  # a sure model: capped at power, near the window's top
    assert pol.power_at(0.5) == pytest.approx(2.0)
    assert pol.power_at(0.75) == pytest.approx(2.0 / 3.0)
    assert pol.power_at(0.999) == MIN_POWER
    with pytest.raises(ValueError):
        ReservoirPolicy(power=None, adaptive=2.0)  # needs power, its upper bound
    with pytest.raises(ValueError):
        ReservoirPolicy(power=4.0, adaptive=0.0)


def test_level_is_a_smoothed_window_mean_kept_across_drains_and_snapshots() -> None:
    from services.core.reservoir import LEVEL_SMOOTHING

    state = WeightedReservoirState(4)
    assert state.level is None
    state.observe(np.array([0.2, 0.4]))
    state.observe(np.array([0.6]))
    state.drain()
    assert state.level == 0.4 and state.u_count == 0
    state.observe(np.array([0.8, 0.8]))
    restored = WeightedReservoirState.from_snapshot(json.loads(json.dumps(state.snapshot())))
    for s in (state, restored):
        s.drain()
        assert abs(s.level - (0.4 + LEVEL_SMOOTHING * 0.4)) < 1e-12
    state.drain()  # an empty window leaves the level as it was
    assert abs(state.level - (0.4 + LEVEL_SMOOTHING * 0.4)) < 1e-12


def test_uniform_over_scalar_draws_equals_over_the_generator() -> None:
    """The inlined draws (`_offer_exact`, over ScalarDraws) keep the payloads, the skip state
    and the generator position of the plain Generator path, for any size and offer pattern."""
    from services.core.scalar_draws import ScalarDraws

    for size in (1, 2, 3, 7, 40):
        ref_rng, my_rng = (np.random.Generator(np.random.PCG64(size)) for _ in range(2))
        ref_rng.integers(5), my_rng.integers(5)  # start with a buffered 32-bit half
        pattern = np.random.default_rng(size).integers(0, 120, 300).tolist()
        ref, mine = UniformReservoirState(size), UniformReservoirState(size)
        for k, m in enumerate(pattern):
            draws = ScalarDraws(my_rng)
            items = list(range(k * 1000, k * 1000 + m))
            ref.offer(m, ref_rng, items)
            mine.offer(m, draws, items)
            draws.close()
            assert mine.snapshot() == ref.snapshot()
            assert my_rng.bit_generator.state == ref_rng.bit_generator.state
            if k % 3 == 0:
                assert ref.drain() == mine.drain()
