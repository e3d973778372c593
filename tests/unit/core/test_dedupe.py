"""Dedupe: never the same asset twice per model version within its guarantee, bounded memory."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core import (
    BudgetPolicy,
    DedupePolicy,
    PredictionBatch,
    ReservoirPolicy,
    SelectorPolicy,
    SelectorState,
    ThresholdPolicy,
    WarmupPolicy,
    select,
)
from services.core.dedupe import DedupeState
from services.core.eventtime import watermarks
from tests.unit.core.synth import Event, Pred

TTL = 100.0
EVERYTHING = SelectorPolicy(
    budget=BudgetPolicy(share=1.0, share_burst=1e6, labels_per_hour=1e9, burst=1e6,
                        exploration_share=0.2),
    thresholds=ThresholdPolicy(mode="fixed", fixed_threshold=0.0, class_relative_q=0.0),
    warmup=WarmupPolicy(rate=1.0, quota=10**6), exploration_rate=0.5,
    reservoir=ReservoirPolicy(control_size=4, window_seconds=7.0),
    dedupe=DedupePolicy(ttl_seconds=TTL, generations=4))

batches_st = st.lists(
    st.tuples(st.lists(st.tuples(st.integers(0, 15), st.sampled_from(["v1", "v2"])),
                       min_size=1, max_size=40),
              st.floats(0.0, 60.0)),
    min_size=1, max_size=15)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches_st, st.booleans())
def test_never_selects_an_asset_twice_within_the_guarantee(spec: list, reservoir: bool) -> None:
    policy = EVERYTHING if not reservoir else SelectorPolicy(**{**vars(EVERYTHING),
                                                               "mode": "reservoir"})
    state = SelectorState.create(policy, 0)
    last: dict[tuple[str, str], float] = {}
    t = 1_000_000.0
    for items, gap in spec:
        t += gap
        evs = [Event(f"e{t}-{i}", f"a{a}", "m", v, t + i * 0.01,
                     (Pred(label="x", confidence=0.5),)) for i, (a, v) in enumerate(items)]
        start = state.watermark
        wms = watermarks(np.array([e.timestamp for e in evs]), state.last_time, start)
        sel = select(state, PredictionBatch.from_events(evs, [e.asset_id for e in evs]))
        end = state.watermark
        keys = [(s.ref, s.model_version) for s in sel.selected]
        assert len(keys) == len(set(keys))  # never twice in one batch
        for s, key in zip(sel.selected, keys, strict=True):
            # The guarantee is about the watermarks where each was granted: an immediate pick
            # at its own asset, a window's pick at its flush, somewhere in this batch (after
            # its asset, if that is in this batch).
            at = s.asset_index
            deferred = s.strategy in ("reservoir", "random_control")
            latest = float(wms[at]) if at >= 0 and not deferred else end
            assert key not in last or latest >= last[key] + TTL, key
            last[key] = float(wms[at]) if at >= 0 else start
    assert last, "the greedy policy selected nothing"


def test_forgets_after_ttl_and_never_before() -> None:
    policy = DedupePolicy(ttl_seconds=40.0, generations=4)
    d = DedupeState()
    d.advance(policy, 1005.0)
    d.add(policy, np.array([7, 9], dtype=np.uint64))
    for wm in (1010.0, 1030.0, 1044.9):
        d.advance(policy, wm)
        assert d.contains(np.array([7, 9, 8], dtype=np.uint64)).tolist() == [True, True, False]
    d.advance(policy, 1060.0)
    assert not d.contains(np.array([7], dtype=np.uint64))[0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2**64 - 1), max_size=30), min_size=1, max_size=30),
       st.integers(5, 60))
def test_memory_is_bounded_and_latest_keys_are_kept(groups: list, cap: int) -> None:
    policy = DedupePolicy(ttl_seconds=10.0, generations=2, max_entries=cap)
    d = DedupeState()
    for step, keys in enumerate(groups):
        d.advance(policy, 1000.0 + step * 5.0)
        d.add(policy, np.array(keys, dtype=np.uint64))
        assert len(d) <= cap
        assert np.all(np.diff(d.keys.astype(np.float64)) >= 0)
    if len(set(groups[-1])) <= cap:
        assert d.contains(np.array(groups[-1], dtype=np.uint64)).all()


class _OneArray:
    """The dedupe memory as one sorted array (no recent buffer): the reference `DedupeState`
    must answer like, however its keys are split between its two arrays."""

    def __init__(self) -> None:
        self.held: dict[int, int] = {}  # key -> generation
        self.generation = -(2**62)

    def advance(self, policy: DedupePolicy, watermark: float) -> None:
        gen = int(np.floor(watermark / policy.generation_seconds))
        if gen > self.generation:
            self.generation = gen
            self.held = {k: g for k, g in self.held.items() if g >= gen - policy.generations}

    def add(self, policy: DedupePolicy, keys: list[int]) -> None:
        for key in keys:
            self.held[key] = self.generation
        while len(self.held) > policy.max_entries:
            oldest = min(self.held.values())
            if oldest == self.generation:
                self.held = dict(sorted(self.held.items())[: policy.max_entries])
                break
            self.held = {k: g for k, g in self.held.items() if g > oldest}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.lists(st.integers(0, 60), max_size=6)),
                min_size=1, max_size=40),
       st.integers(1, 5), st.integers(3, 40))
def test_keys_held_apart_answer_as_one_sorted_array(steps: list, merge_at: int, cap: int) -> None:
    """Keys wait in the small `recent` array until `merge_at` of them are there: membership,
    size, generations refreshed by a repeat, expiry, the cap and the snapshot must not show it."""
    policy = DedupePolicy(ttl_seconds=8.0, generations=2, max_entries=cap)
    d, ref = DedupeState(), _OneArray()
    d.merge_at = merge_at
    wm = 1000.0
    for advance, keys in steps:
        wm += advance
        d.advance(policy, wm)
        ref.advance(policy, wm)
        d.add(policy, np.array(keys, dtype=np.uint64))
        ref.add(policy, keys)
        probe = np.arange(61, dtype=np.uint64)
        assert d.contains(probe).tolist() == [k in ref.held for k in range(61)]
        assert len(d) == len(ref.held)
        snap = DedupeState.from_snapshot(d.snapshot())
        assert snap.keys.tolist() == sorted(ref.held)
        assert snap.gens.tolist() == [ref.held[k] for k in sorted(ref.held)]


def test_a_key_added_at_the_cap_does_not_copy_the_whole_memory() -> None:
    """One key at a time goes to the small array: the big one is only rebuilt every `merge_at`
    keys (it used to be copied by every add, ~170 us a key at 240k keys)."""
    policy = DedupePolicy()
    d = DedupeState()
    d.advance(policy, 0.0)
    d.add(policy, np.arange(0, 200_000, 2, dtype=np.uint64))
    big = d.keys
    for key in range(1, 2 * (d.merge_at - 1), 2):
        d.add(policy, np.array([key], dtype=np.uint64))
    assert d.keys is big  # not rebuilt yet
    d.add(policy, np.array([10**9], dtype=np.uint64))
    assert d.keys is not big and len(d) == 100_000 + d.merge_at
    assert d.contains(np.array([1, 3, 10**9, 5], dtype=np.uint64)).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=60), st.integers(1, 6),
       st.integers(3, 25))
def test_one_key_at_a_time_is_the_same_as_arrays_of_one(steps: list, merge_at: int,
                                                        cap: int) -> None:
    """`add_one` / `holds` (the window flushes' path) against `add` / `contains`."""
    policy = DedupePolicy(ttl_seconds=8.0, generations=2, max_entries=cap)
    a, b = DedupeState(), DedupeState()
    a.merge_at = b.merge_at = merge_at
    wm = 1000.0
    for advance, key in steps:
        wm += 1.5 if advance else 0.0
        a.advance(policy, wm)
        b.advance(policy, wm)
        assert a.holds(key) == bool(b.contains(np.array([key], dtype=np.uint64))[0])
        a.add_one(policy, key)
        b.add(policy, np.array([key], dtype=np.uint64))
        assert a.snapshot() == b.snapshot()
    assert a.holds(2**64 - 1) is False
