"""Batch invariance: decisions and state are a function of (policy, seed, event sequence) only.

For any event sequence E and any split E = E1 + ... + Ek (single events, empty batches, cuts inside
windows and refresh segments), selecting batch by batch yields the same selected items (everything
but the batch-relative `asset_index`, in the same concatenated order) and the same final snapshot
as selecting E in one batch; a JSON snapshot/restore anywhere in the split changes nothing. This is
what lets a crash replay (other batch boundaries) and the in-process benchmark agree with the
Kafka scorer.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core import (
    BudgetPolicy,
    ConfidenceStatsPolicy,
    DedupePolicy,
    PredictionBatch,
    ReservoirPolicy,
    SelectorPolicy,
    SelectorState,
    ThresholdPolicy,
    WarmupPolicy,
    select,
)
from tests.unit.core.synth import mixed_events

ACTIVE = SelectorPolicy(
    mode="threshold",
    measure="entropy", aggregation="topk", top_k=2,
    budget=BudgetPolicy(share=0.2, share_burst=6.0, labels_per_hour=20_000.0, burst=6.0,
                        exploration_share=0.3, class_cap_factor=1.5),
    thresholds=ThresholdPolicy(randomization=0.3, class_relative_q=0.2, step=0.05),
    stats=ConfidenceStatsPolicy(min_count=8, bucket_seconds=20.0, buckets=4),
    warmup=WarmupPolicy(rate=0.3, quota=15, rare_share=0.05),
    exploration_rate=0.08,
    reservoir=ReservoirPolicy(control_size=3, window_seconds=30.0, window_assets=0),
    dedupe=DedupePolicy(ttl_seconds=200.0, generations=4),
    refresh_every=37,
)
POLICIES = {
    "default": SelectorPolicy(),
    "reservoir": replace(ACTIVE, mode="reservoir", aggregation="mean", measure="margin",
                         reservoir=ReservoirPolicy(per_class=3, top_k=4, control_size=2,
                                                   window_seconds=25.0, window_assets=90)),
    "active": ACTIVE,
    "fixed_lru": replace(ACTIVE, max_model_versions=2, max_models=2, max_classes=4,
                         thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.3,
                                                    class_relative_q=0.1)),
    # one model slot for two interleaved models: books are evicted and recreated mid-batch
    "model_churn": replace(ACTIVE, max_models=1, max_classes=4),
    # the default mode under the same churn: versions are offered to the reservoirs from their
    # first asset, while the books they would join may not exist yet
    "reservoir_churn": replace(SelectorPolicy(), max_model_versions=2, max_models=1,
                               max_classes=4, refresh_every=37),
    # the powered flush whose power follows the windows' uncertainty level (carried across
    # windows and snapshots, summed exactly whatever the batches)
    "adaptive_power": replace(SelectorPolicy(), measure="margin",
                              reservoir=ReservoirPolicy(power=4.0, adaptive=2.0)),
    # confusion novelty: per-model pair counts in stream order, across windows, snapshots and
    # the interleaved models of one batch (novelty.py)
    "novelty": replace(SelectorPolicy(), reservoir=ReservoirPolicy(novelty=1.0)),
    # its gate: a function of the counts before each asset, so as invariant as they are
    "novelty_gate": replace(SelectorPolicy(), reservoir=ReservoirPolicy(novelty=1.0,
                                                                        novelty_gate=20)),
}
FEEDBACK = {"c0": 0.3, "c1": 0.95, "ball": 0.99, "shoulder": 0.4}


def _state(name: str, seed: int) -> SelectorState:
    state = SelectorState.create(POLICIES[name], seed)
    if name != "default":
        state.apply_feedback("det", FEEDBACK, {k: 50 for k in FEEDBACK})
    return state


def _rows(sel: list) -> list[list[object]]:
    out = []
    for s in sel:
        row = s.to_json()
        row[1] = None  # asset_index is batch-relative
        out.append(row)
    return out


def _run(name: str, seed: int, events: list, cuts: list[int], restore_at: int | None = None
         ) -> tuple[list[list[object]], str]:
    """Select `events` cut at `cuts` (sorted positions, repeats = empty batches)."""
    state = _state(name, seed)
    picks: list[object] = []
    bounds = [0, *cuts, len(events)]
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        if k == restore_at:
            data = json.loads(json.dumps(state.snapshot(), allow_nan=False))
            state = SelectorState.from_snapshot(data, POLICIES[name])
        chunk = events[lo:hi]
        batch = PredictionBatch.from_events(chunk, [e.event_id for e in chunk])
        picks += select(state, batch).selected
    return _rows(picks), json.dumps(state.snapshot(), sort_keys=True)


def _check(name: str, seed: int, n: int, cuts: list[int], restore_at: int | None) -> None:
    events = mixed_events(seed, n)
    whole_rows, whole_snap = _run(name, seed, events, [])
    rows, snap = _run(name, seed, events, cuts, restore_at)
    assert len(rows) == len(whole_rows)
    for i, (a, b) in enumerate(zip(rows, whole_rows, strict=True)):
        assert a == b, (i, a, b)
    assert snap == whole_snap


split = st.integers(0, 2**32 - 1).flatmap(lambda seed: st.tuples(
    st.just(seed), st.integers(200, 900)).flatmap(lambda sn: st.tuples(
        st.just(sn[0]), st.just(sn[1]),
        st.lists(st.integers(0, sn[1]), max_size=25).map(sorted),
        st.none() | st.integers(0, 25))))


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=split)
def test_random_splits_match_one_batch(name: str, case: tuple) -> None:
    seed, n, cuts, restore_at = case
    _check(name, seed, n, cuts, restore_at)


@pytest.mark.parametrize("name", POLICIES)
def test_one_event_at_a_time_matches_one_batch(name: str) -> None:
    n = 700
    _check(name, 5, n, list(range(1, n)), 350)


@pytest.mark.parametrize("name", POLICIES)
def test_fixed_size_batches_with_restores_match_one_batch(name: str) -> None:
    n = 3000
    for size, restore in ((1000, 1), (250, 3), (37, 20)):
        _check(name, 11 + size, n, list(range(size, n, size)), restore)


def test_streams_exercise_every_strategy() -> None:
    """The invariance tests above are only as strong as the decisions they compare."""
    seen: dict[str, set[str]] = {}
    for name in POLICIES:
        rows, _ = _run(name, 3, mixed_events(3, 3000), [])
        seen[name] = {str(r[4]) for r in rows}
    assert {"variable_uncertainty", "class_relative", "warmup", "exploration",
            "random_control"} <= seen["active"]
    assert {"reservoir", "random_control", "exploration"} <= seen["reservoir"]
    assert "warmup" not in seen["reservoir"]  # the reservoir mode needs no warm-up
    assert {"fixed", "warmup"} <= seen["fixed_lru"]
    assert {"warmup", "exploration", "random_control"} <= seen["model_churn"]
    assert {"reservoir", "exploration", "random_control"} <= seen["default"]
    assert {"reservoir", "exploration", "random_control"} <= seen["reservoir_churn"]
    assert {"reservoir", "exploration", "random_control"} <= seen["novelty"]
    assert {"reservoir", "exploration", "random_control"} <= seen["novelty_gate"]


def test_mixed_events_have_the_advertised_shape() -> None:
    events = mixed_events(1, 2000)
    times = np.array([e.timestamp for e in events])
    assert (np.diff(times) < 0).any() and np.diff(times).max() > 30.0
    assert len({e.asset_id for e in events}) < len(events)
    assert len({(e.model_id, e.model_version) for e in events}) >= 4
