"""The generic check suite (river-style `checks`), run over every sampler and budget
configuration of the selector: inputs are not mutated, seeded runs repeat exactly, a snapshot taken
mid-stream and restored continues identically, and the target rate holds over 100k events.

Each configuration switches on one sampler or one budget limit and states the selection count it
must reach over the 100k-event stream (Dirichlet(0.3) 10-class predictions, 100 events/s).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pytest

from services.core import (
    BudgetPolicy,
    PredictionBatch,
    ReservoirPolicy,
    SelectorPolicy,
    SelectorState,
    ThresholdPolicy,
    WarmupPolicy,
    select,
)
from services.core.stats import ConfidenceStatsPolicy
from tests.unit.core.synth import batches, dirichlet_events

N_EVENTS = 100_000
BATCH = 1_000
UNLIMITED_TIME = {"labels_per_hour": 1e9, "burst": 1e6}
OFF = ThresholdPolicy(mode="off", class_relative_q=0.0)


def _budget(**kw: float) -> BudgetPolicy:
    return BudgetPolicy(**{"share": 0.02, "share_burst": 20.0, "exploration_share": 0.0,
                           **UNLIMITED_TIME, **kw})


def _policy(**kw: object) -> SelectorPolicy:
    base = {"mode": "threshold", "budget": _budget(), "warmup": WarmupPolicy(rate=0.0),
            "exploration_rate": 0.0,
            "reservoir": ReservoirPolicy(control_size=0, window_assets=BATCH)}
    return SelectorPolicy(**{**base, **kw})


@dataclass(frozen=True)
class Config:
    """One sampler/budget under test, the strategy it selects with, and its expected count."""

    policy: SelectorPolicy
    strategy: str | None
    expected: Callable[[list[PredictionBatch]], float]


def _after_ready(n: float) -> Callable[[list[PredictionBatch]], float]:
    """n per asset after the first batch (the version becomes ready at the first stats refresh,
    policy.refresh_every = 500 assets, then warms no more; one batch's worth is a safe margin)."""
    return lambda bs: n * (N_EVENTS - BATCH)


def _fixed_expected(tau: float) -> Callable[[list[PredictionBatch]], float]:
    def count(bs: list[PredictionBatch]) -> float:
        lc = [(1 - b.top_conf) * 10 / 9 for b in bs[1:]]
        return float(sum(int((x >= tau).sum()) for x in lc))
    return count


CONFIGS: dict[str, Config] = {
    "variable_uncertainty": Config(
        _policy(thresholds=ThresholdPolicy(class_relative_q=0.0)), "variable_uncertainty",
        _after_ready(0.02)),
    "variable_uncertainty_randomised": Config(
        _policy(thresholds=ThresholdPolicy(class_relative_q=0.0, randomization=1.0)),
        "variable_uncertainty", _after_ready(0.02)),
    "fixed": Config(
        _policy(thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.8,
                                           class_relative_q=0.0), budget=_budget(share=1.0),
                measure="least_confidence"),  # the expected count is least confidence's
        "fixed", _fixed_expected(0.8)),
    "class_relative": Config(
        _policy(thresholds=ThresholdPolicy(mode="off", class_relative_q=0.05),
                budget=_budget(share=1.0, class_cap_factor=10.0)),
        "class_relative", _after_ready(0.05)),
    "weighted_reservoir": Config(
        _policy(mode="reservoir", thresholds=OFF), "reservoir", _after_ready(0.02)),
    "uniform_reservoir_control": Config(
        _policy(thresholds=OFF, budget=_budget(exploration_share=0.5),
                reservoir=ReservoirPolicy(control_size=5, window_assets=BATCH)),
        "random_control", lambda bs: 5.0 * (N_EVENTS // BATCH - 1)),
    "exploration": Config(
        _policy(thresholds=OFF, budget=_budget(exploration_share=0.5), exploration_rate=None),
        "exploration", lambda bs: 0.8 * 0.5 * 0.02 * N_EVENTS),
    "warmup": Config(
        _policy(thresholds=OFF, budget=_budget(share=1.0), stats=ConfidenceStatsPolicy(
            min_count=10**9), warmup=WarmupPolicy(rate=0.1, quota=10**9)),
        "warmup", lambda bs: 0.1 * N_EVENTS),
    "share_budget": Config(
        _policy(thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.0,
                                           class_relative_q=0.0), budget=_budget(share=0.01)),
        None, lambda bs: 20.0 + 0.01 * (N_EVENTS - BATCH)),
    "time_budget": Config(
        _policy(thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.0,
                                           class_relative_q=0.0),
                budget=_budget(share=1.0, labels_per_hour=3600.0, burst=10.0)),
        None, lambda bs: 10.0 + (N_EVENTS - BATCH) / 100.0),
    # One partition of 8 sharing a burst of 4: its time lanes hold under one token (phased).
    "phased_time_budget": Config(
        _policy(thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.0,
                                           class_relative_q=0.0),
                budget=_budget(share=1.0, labels_per_hour=3600.0, burst=4.0)).scaled(1 / 8, 5),
        None, lambda bs: (N_EVENTS - BATCH) / 100.0 / 8),
    "class_budget": Config(
        _policy(thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.0,
                                           class_relative_q=0.0),
                budget=_budget(share=0.1, class_cap_factor=0.5)),
        None, lambda bs: 0.1 * 0.5 * (N_EVENTS - BATCH)),
}


@pytest.fixture(scope="module")
def stream() -> list[PredictionBatch]:
    return batches(dirichlet_events(np.random.default_rng(42), N_EVENTS), BATCH)


def _run(state: SelectorState, bs: list[PredictionBatch]) -> list[list[object]]:
    return [s.to_json() for b in bs for s in select(state, b).selected]


def _copy(b: PredictionBatch) -> dict[str, object]:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(b).items()}


@pytest.mark.parametrize("name", CONFIGS)
def test_inputs_not_mutated(name: str, stream: list[PredictionBatch]) -> None:
    before = [_copy(b) for b in stream[:5]]
    _run(SelectorState.create(CONFIGS[name].policy, 1), stream[:5])
    for b, saved in zip(stream[:5], before, strict=True):
        for k, v in saved.items():
            now = getattr(b, k)
            if isinstance(v, np.ndarray):
                assert np.array_equal(now, v) and now.dtype == v.dtype, k
            else:
                assert now == v, k


@pytest.mark.parametrize("name", CONFIGS)
def test_seeded_runs_repeat(name: str, stream: list[PredictionBatch]) -> None:
    policy = CONFIGS[name].policy
    first = _run(SelectorState.create(policy, 7), stream[:20])
    assert first, "the configuration selected nothing"
    assert first == _run(SelectorState.create(policy, 7), stream[:20])


@pytest.mark.parametrize("name", CONFIGS)
def test_snapshot_midstream_continues_identically(name: str, stream: list[PredictionBatch]
                                                  ) -> None:
    policy = CONFIGS[name].policy
    whole = _run(SelectorState.create(policy, 3), stream[:24])
    state = SelectorState.create(policy, 3)
    head = _run(state, stream[:11])
    data = json.loads(json.dumps(state.snapshot(), allow_nan=False))
    restored = SelectorState.from_snapshot(data, policy)
    assert json.dumps(restored.snapshot()) == json.dumps(state.snapshot())
    assert head + _run(restored, stream[11:24]) == whole


@pytest.mark.parametrize("name", CONFIGS)
def test_target_rate_over_100k_events(name: str, stream: list[PredictionBatch]) -> None:
    config = CONFIGS[name]
    state = SelectorState.create(config.policy, 11)
    picks = [s for b in stream for s in select(state, b).selected]
    counted = [s for s in picks if config.strategy is None or s.strategy == config.strategy]
    expected = config.expected(stream)
    assert abs(len(counted) - expected) <= 0.1 * expected, (len(counted), expected)
    assert len(picks) <= _hard_bound(config.policy)


def _hard_bound(policy: SelectorPolicy) -> float:
    """The budget guarantee over the stream (module budget.py), summed over lanes."""
    b = policy.budget
    lanes = [b.lane(name) for name in ("exploit", "explore")]
    by_count = sum(cap for _, cap, _, _ in lanes) + b.share * N_EVENTS
    # A phased lane (capacity under one token) can still hold one token at a time.
    by_time = sum(max(cap, 1.0) for _, _, _, cap in lanes) + \
        b.labels_per_hour * (N_EVENTS / 100.0) / 3600
    return min(by_count, by_time)


def test_class_budget_caps_each_class(stream: list[PredictionBatch]) -> None:
    policy = CONFIGS["class_budget"].policy
    state = SelectorState.create(policy, 5)
    picks = [s for b in stream for s in select(state, b).selected]
    per_class = np.unique([s.class_name for s in picks], return_counts=True)[1]
    rate, cap = 0.1 * 0.5 / 10, 20.0 * 0.5 / 10
    assert per_class.max() <= max(cap, 1.0) + rate * N_EVENTS
    assert len(per_class) == 10


def test_policy_scaled_divides_the_budget() -> None:
    policy = replace(SelectorPolicy(), budget=BudgetPolicy(labels_per_hour=1200.0, burst=40.0))
    part = policy.scaled(1 / 4)
    assert part.budget.labels_per_hour == 300.0 and part.budget.burst == 10.0
    assert part.budget.share == policy.budget.share
    assert part.warmup.quota == 25 and part.reservoir.control_size == 1
    tiny = policy.scaled(1 / 1000, slot=7).budget
    assert tiny.share_burst == 1.0  # counts stay floored at one label per partition
    assert tiny.burst == 40.0 / 1000 and tiny.phase == 0.007  # times are phased (budget.py)
