"""Statistical behaviour with fixed seeds: variable uncertainty holds its rate and re-adapts after
a shift; class-relative thresholds and class feedback send the budget to the weak class; the
default (reservoir) policy spends on the weak class and serves a new model version at once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from services.core import (
    BudgetPolicy,
    PredictionBatch,
    Selected,
    SelectorPolicy,
    SelectorState,
    ThresholdPolicy,
    WarmupPolicy,
    select,
)
from services.core.drift import DriftPolicy
from tests.unit.core.synth import batches, top1_events

SHARE = 0.02
# Class caps of 3 / classes (the default before issue 15; now 1.5): with two classes the default
# cap holds a class to 75% of the lane, and these tests study the arms that move the budget
# between classes, not the cap (test_budget.py covers it).
BUDGET = BudgetPolicy(share=SHARE, share_burst=5.0, labels_per_hour=1e9, burst=1e6,
                      exploration_share=0.0, class_cap_factor=3.0)


def _threshold(**kw: object) -> SelectorPolicy:
    """A policy of the threshold mode (the arm most tests here study)."""
    return SelectorPolicy(mode="threshold", **kw)  # type: ignore[arg-type]


def _run(policy: SelectorPolicy, bs: list[PredictionBatch], seed: int = 0
         ) -> tuple[SelectorState, list[Selected]]:
    state = SelectorState.create(policy, seed)
    return state, [s for b in bs for s in select(state, b).selected]


def _shift_stream() -> list[PredictionBatch]:
    """60k top-1 predictions of one class: confidence ~ Beta(2, 2), then ~ Beta(20, 2)."""
    rng = np.random.default_rng(21)
    conf = np.r_[rng.beta(2, 2, 30_000), rng.beta(20, 2, 30_000)]
    return batches(top1_events(["x"] * conf.shape[0], conf), 500)


def test_variable_uncertainty_hits_target_rate_and_readapts_after_shift() -> None:
    # Drift detection would (rightly) see this shift and boost the class's sub-budget; this
    # test studies the threshold alone (drift: test_drift.py).
    policy = _threshold(budget=BUDGET, thresholds=ThresholdPolicy(class_relative_q=0.0),
                            warmup=WarmupPolicy(rate=0.0), exploration_rate=0.0,
                            drift=DriftPolicy(enabled=False))
    bs = _shift_stream()
    state = SelectorState.create(policy, 1)
    per_batch, thresholds = [], []
    for b in bs:
        per_batch.append(len(select(state, b)))
        thresholds.append(state.thresholds()[("m", "v1")])
    n = np.array(per_batch)
    stationary = n[10:60].sum() / (50 * 500)          # before the shift (after warm-up)
    readapted = n[70:120].sum() / (50 * 500)          # 10 batches after the shift
    assert abs(stationary - SHARE) <= 0.1 * SHARE
    assert abs(readapted - SHARE) <= 0.1 * SHARE
    # the threshold followed the confidence distribution down
    assert np.mean(thresholds[40:60]) > 0.3 > 0.15 > np.mean(thresholds[100:120])


def test_fixed_threshold_starves_after_the_same_shift() -> None:
    """The control for the test above: a threshold tuned before the shift stops spending."""
    policy = _threshold(budget=BUDGET, warmup=WarmupPolicy(rate=0.0), exploration_rate=0.0,
                            thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.45,
                                                       class_relative_q=0.0),
                            drift=DriftPolicy(enabled=False))  # (its boost would spend again)
    state = SelectorState.create(policy, 1)
    n = np.array([len(select(state, b)) for b in _shift_stream()])
    assert n[70:120].sum() / (50 * 500) < 0.2 * SHARE


def test_selected_are_more_uncertain_than_the_stream() -> None:
    policy = _threshold(budget=BUDGET, thresholds=ThresholdPolicy(class_relative_q=0.0),
                            warmup=WarmupPolicy(rate=0.0), exploration_rate=0.0)
    bs = _shift_stream()[:60]
    _, picks = _run(policy, bs)
    stream_mean = np.mean(np.concatenate([1 - b.top_conf for b in bs]))
    assert np.mean([s.score for s in picks]) > stream_mean + 0.1


def _two_class_stream(seed: int, shoulder: tuple[float, float], ball: tuple[float, float],
                      n: int = 40_000) -> list[PredictionBatch]:
    rng = np.random.default_rng(seed)
    is_ball = rng.random(n) < 0.5
    conf = np.where(is_ball, rng.beta(*ball, n), rng.beta(*shoulder, n))
    labels = np.where(is_ball, "ball", "shoulder").tolist()
    return batches(top1_events(labels, conf), 1000)


def _share(picks: list[Selected], cls: str, strategies: set[str]) -> float:
    chosen = [s for s in picks if s.strategy in strategies]
    assert len(chosen) > 100
    return sum(s.class_name == cls for s in chosen) / len(chosen)


def test_class_relative_spends_on_the_low_confidence_class() -> None:
    """Shoulders (confidence ~0.6) vs ball (~0.98), equally frequent: the per-class bottom-q rule
    scaled by each class's difficulty spends the budget on shoulders."""
    bs = _two_class_stream(5, shoulder=(3, 2), ball=(50, 1))
    policy = _threshold(budget=BUDGET, warmup=WarmupPolicy(rate=0.0), exploration_rate=0.0,
                            thresholds=ThresholdPolicy(mode="off", class_relative_q=0.05))
    state, picks = _run(policy, bs)
    assert _share(picks, "shoulder", {"class_relative"}) > 0.9
    for s in picks:  # reported threshold: the class's confidence quantile it fell below
        if s.strategy == "class_relative":
            assert s.threshold is not None and 0.0 < s.threshold <= 1.0


def test_threshold_policy_spends_little_exploit_budget_on_the_ball() -> None:
    """Half the stream is ball; variable uncertainty's threshold settles where about half the
    budget-available arrivals are uncertain, so a few low-confidence balls still get through."""
    bs = _two_class_stream(6, shoulder=(3, 2), ball=(50, 1))
    _, picks = _run(_threshold(budget=replace(BUDGET, exploration_share=0.1)), bs)
    assert _share(picks, "shoulder", {"variable_uncertainty", "class_relative"}) > 0.88


def test_default_policy_spends_its_exploit_budget_on_the_weak_class() -> None:
    """The default (reservoir) policy ranks each window by uncertainty: shoulders win."""
    bs = _two_class_stream(6, shoulder=(3, 2), ball=(50, 1))
    _, picks = _run(SelectorPolicy(budget=replace(BUDGET, exploration_share=0.1)), bs)
    assert _share(picks, "shoulder", {"reservoir"}) > 0.95
    assert len(picks) <= SHARE * 40_000 + BUDGET.share_burst


def test_default_policy_serves_a_new_version_from_its_first_window() -> None:
    """No warm-up in the reservoir mode: a retrained version's first window already grants its
    most uncertain assets, although its stats are far from ready."""
    policy = SelectorPolicy(budget=replace(BUDGET, share=0.1, share_burst=5.0))
    rng = np.random.default_rng(3)
    state = SelectorState.create(policy, 0)
    for version in ("v1", "v2"):
        conf = rng.beta(3, 2, 200)
        evs = top1_events(["x"] * 200, conf, model=("m", version))
        picks = [s for b in batches(evs, 25) for s in select(state, b).selected]
        assert not state.versions[("m", version)].ready
        assert picks and {s.strategy for s in picks} == {"reservoir"}
        assert all(s.model_version == version for s in picks)
        first_window = [s for s in picks if s.event_time < evs[50].timestamp]
        assert first_window
        # each window's grants are its most uncertain assets (weighted draw, so near the top)
        assert np.mean([s.score for s in picks]) > np.mean(1 - conf) + 0.1


def test_feedback_weights_move_budget_to_the_weak_class() -> None:
    bs = _two_class_stream(8, shoulder=(4, 2), ball=(4, 2))  # same confidence for both
    policy = _threshold(budget=BUDGET, warmup=WarmupPolicy(rate=0.0), exploration_rate=0.0)
    exploit = {"variable_uncertainty", "class_relative"}
    _, before = _run(policy, bs)
    assert 0.4 < _share(before, "shoulder", exploit) < 0.6
    state = SelectorState.create(policy, 0)
    state.apply_feedback("m", {"shoulder": 0.5, "ball": 0.98}, {"shoulder": 300, "ball": 300})
    w = state.class_weights("m")
    assert w["shoulder"] > 1.5 and 0.0 < w["ball"] < 0.5
    after = [s for b in bs for s in select(state, b).selected]
    assert _share(after, "shoulder", exploit) > 0.75
    assert any(s.class_name == "ball" for s in after)  # mastered, yet never zero


def test_cold_start_warms_up_each_new_version_at_random() -> None:
    policy = _threshold(budget=replace(BUDGET, share=0.5, share_burst=50.0),
                            warmup=WarmupPolicy(rate=0.2, quota=30))
    rng = np.random.default_rng(2)
    conf = rng.beta(3, 2, 3000)
    state = SelectorState.create(policy, 0)
    for version in ("v1", "v2"):
        evs = top1_events(["x"] * 3000, conf, model=("m", version))
        picks = [s for b in batches(evs, 250) for s in select(state, b).selected]
        warm = [s for s in picks if s.strategy == "warmup"]
        assert len(warm) == 30 and all(s.inclusion_probability == 0.2 for s in warm)
        assert all(s.model_version == version for s in picks)
        first_exploit = min(i for i, s in enumerate(picks) if s.strategy != "warmup")
        assert picks[first_exploit].event_time >= warm[0].event_time
        assert state.versions[("m", version)].ready


def test_class_stats_report_for_metrics() -> None:
    bs = _two_class_stream(5, shoulder=(3, 2), ball=(50, 1), n=5000)
    state, _ = _run(SelectorPolicy(), bs)
    stats = state.class_stats("m", "v1")
    assert set(stats) == {"ball", "shoulder"}
    assert stats["ball"]["mean"] > 0.9 > 0.7 > stats["shoulder"]["mean"]
    assert stats["ball"]["ready"] and stats["shoulder"]["threshold"] is not None
    assert state.class_stats("m", "nope") == {}


def test_powered_flush_samples_a_flat_window_nearly_uniformly() -> None:
    """A weak model (every asset's uncertainty between 0.88 and 0.98): the flush's weighted draw
    (`ReservoirPolicy.power` 4: weight = uncertainty ** 4) spreads its grants over the window,
    where the strict top (`power` None) always takes the same few most uncertain ones."""
    rng = np.random.default_rng(8)
    conf = rng.uniform(0.02, 0.12, 20_000)
    bs = batches(top1_events(["x"] * conf.shape[0], conf), 500)
    budget = replace(BUDGET, share=0.1, share_burst=5.0)

    def in_window_top(policy: SelectorPolicy) -> float:
        picks = [s for s in _run(policy, bs)[1] if s.strategy == "reservoir"]
        assert len(picks) > 1000
        top = 0
        for s in picks:
            i = int(s.ref[1:])
            window = 1 - conf[i - i % 50: i - i % 50 + 50]
            top += (1 - conf[i]) >= np.sort(window)[-5]
        return top / len(picks)

    # reservoirs that hold a whole window (one class here; 16 a class by default), so the
    # strict flush is exactly the window's top
    whole = replace(SelectorPolicy().reservoir, per_class=64)
    powered = SelectorPolicy(budget=budget, reservoir=replace(whole, power=4.0))
    assert in_window_top(powered) < 0.3
    strict = replace(whole, power=None)
    assert in_window_top(SelectorPolicy(budget=budget, reservoir=strict)) > 0.95
