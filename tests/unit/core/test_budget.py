"""The budget is never exceeded, for any arrival pattern: bursts, gaps, out-of-order times."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from services.core.budget import LANES, BudgetState, TokenBucket
from services.core.stats import ConfidenceStatsPolicy
from tests.unit.core.synth import Event, Pred

BUDGET = BudgetPolicy(share=0.05, share_burst=3.0, labels_per_hour=360.0, burst=4.0,
                      exploration_share=0.25)
GREEDY = SelectorPolicy(
    budget=BUDGET, exploration_rate=0.5, warmup=WarmupPolicy(rate=0.5, quota=20),
    stats=ConfidenceStatsPolicy(min_count=5),
    thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.0, class_relative_q=0.3),
    reservoir=ReservoirPolicy(control_size=3, window_seconds=5.0, window_assets=40))

segments = st.lists(st.tuples(st.integers(1, 120),                       # events
                              st.sampled_from([0.0, 0.01, 0.5, 3.0, 60.0]),  # gap before
                              st.floats(0.0, 5.0),                        # spread in time
                              st.booleans()),                              # shuffled times
                    min_size=1, max_size=12)


def _events(seed: int, segs: list[tuple[int, float, float, bool]], mode: str) -> list[list[Event]]:
    rng = np.random.default_rng(seed)
    t, out, k = 1_000_000.0, [], 0
    for n, gap, spread, shuffle in segs:
        t += gap
        times = t + np.sort(rng.random(n)) * spread
        if shuffle:
            rng.shuffle(times)
        conf = rng.random(n)
        labels = rng.choice(["a", "b", "c"], n)
        batch = []
        for i in range(n):
            pred = Pred(label=str(labels[i]), confidence=float(conf[i])) if mode == "top1" else \
                Pred(scores={str(labels[i]): float(conf[i]) / 2 + 0.5, "z": 0.5 - conf[i] / 2})
            batch.append(Event(f"e{k}", f"a{k % 50}", "m", "v1", float(times[i]), (pred,)))
            k += 1
        out.append(batch)
        t = float(times.max()) if n else t
    return out


def _caps(policy: SelectorPolicy) -> tuple[float, float]:
    lanes = [policy.budget.lane(n) for n in ("exploit", "explore")]
    return sum(c for _, c, _, _ in lanes), sum(c for _, _, _, c in lanes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), segs=segments, mode=st.sampled_from(["top1", "dist"]),
       reservoir=st.booleans())
def test_budget_never_exceeded_for_any_arrival_pattern(seed: int, segs: list, mode: str,
                                                       reservoir: bool) -> None:
    policy = GREEDY if not reservoir else SelectorPolicy(**{**vars(GREEDY), "mode": "reservoir"})
    state = SelectorState.create(policy, seed)
    count_cap, time_cap = _caps(policy)
    rate = policy.budget.labels_per_hour / 3600.0
    picks, assets, marks = [0], [0], []
    stream = _events(seed, segs, mode)
    first = stream[0][0].timestamp  # the first watermark; buckets are full there
    for evs in stream:
        sel = select(state, PredictionBatch.from_events(evs, [e.event_id for e in evs]))
        picks.append(picks[-1] + len(sel))
        assets.append(assets[-1] + len(evs))
        marks.append(state.watermark)
    for i in range(len(marks)):
        for j in range(i, len(marks)):
            spent = picks[j + 1] - picks[i]
            assert spent <= count_cap + policy.budget.share * (assets[j + 1] - assets[i]) + 1e-9
            lo = marks[i - 1] if i else first
            assert spent <= time_cap + rate * (marks[j] - lo) + 1e-9


def test_a_burst_at_one_instant_gets_at_most_the_time_capacity() -> None:
    evs = [Event(f"e{i}", f"a{i}", "m", "v1", 5000.0, (Pred(label="a", confidence=0.1),))
           for i in range(5000)]
    policy = SelectorPolicy(**{**vars(GREEDY), "budget": BudgetPolicy(
        share=1.0, share_burst=1000.0, labels_per_hour=3600.0, burst=7.0,
        exploration_share=0.25)})
    state = SelectorState.create(policy, 0)
    total = sum(len(select(state, PredictionBatch.from_events(evs[i:i + 500])))
                for i in range(0, 5000, 500))
    assert 1 <= total <= _caps(policy)[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 50.0), min_size=1, max_size=200), st.floats(0.01, 3.0),
       st.floats(1.0, 10.0))
def test_token_bucket_interval_bound(gaps: list[float], rate: float, cap: float) -> None:
    coords = np.cumsum(gaps)
    bucket = TokenBucket(cap, 0.0)
    spent = []
    for c in coords:
        while bucket.level_at(float(c), rate, cap) >= 1.0:
            bucket.spend(float(c), rate, cap)
            spent.append(float(c))
    s = np.array(spent)
    for i in range(len(s)):
        j = np.arange(i, len(s))
        assert np.all(j - i + 1 <= cap + rate * (s[j] - s[i]) + 1e-9)
    first = int(np.searchsorted(coords, 0.0))
    assert bucket.first_index(coords, first, rate, cap) >= 0


def test_open_from_answers_as_available_at_each_coordinate() -> None:
    """The vectorised answers (`open_from`, kept by the batch view) equal the scalar query,
    for buckets drawn down and partly refilled, NaN and infinite coordinates included; a
    phased lane is left to the scalar query."""
    rng = np.random.default_rng(3)
    checked = 0
    for trial in range(200):
        policy = BudgetPolicy(share=float(rng.choice([0.0, 0.02, 0.5])),
                              labels_per_hour=float(rng.choice([0.0, 1000.0, 36000.0])),
                              burst=float(rng.choice([1.0, 3.0, 50.0])))
        state = BudgetState(policy)
        lane = LANES[trial % 2]
        n_seen = np.sort(rng.uniform(0, 400, 64))
        wm = np.sort(rng.uniform(0, 30, 64))
        for _ in range(int(rng.integers(0, 60))):
            i = int(rng.integers(64))
            if state.available(policy, lane, float(n_seen[i]), float(wm[i])):
                state.spend(policy, lane, float(n_seen[i]), float(wm[i]),
                            float(rng.integers(1, 3)))
        if trial % 7 == 0:
            wm[-3:] = [np.inf, np.nan, -np.inf]
        got = state.open_from(policy, lane, n_seen, wm)
        if got is None:  # a phased lane
            assert not isinstance(state.time[lane], TokenBucket)
            continue
        assert got == [state.available(policy, lane, float(a), float(b))
                       for a, b in zip(n_seen, wm, strict=True)]
        checked += 1
    assert checked > 80
    phased = BudgetPolicy(burst=50.0).scaled(1 / 64, slot=3)
    assert BudgetState(phased).open_from(phased, "explore", n_seen, wm) is None
