"""Trigger manifests list exactly the labels each trigger counted (issue 23): runs of offsets,
never shared between triggers, bounded in number."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core import triggers
from services.core.triggers import LabelRecord, OffsetSpan, TriggerPolicy, TriggerState, _add_offset


def rec(i: int, partition: int, offset: int, cls: str = "cat", at: float = 0.0) -> LabelRecord:
    return LabelRecord(label_id=f"l{i}", partition=partition, offset=offset,
                       labeled_at=at or float(i), classes=(cls,))


def covered(spans: tuple[OffsetSpan, ...]) -> set[tuple[int, int]]:
    return {(s.partition, o) for s in spans for o in range(s.start_offset, s.end_offset)}


def test_add_offset_merges_neighbours_and_counts_runs() -> None:
    runs: list[list[int]] = []
    assert [_add_offset(runs, o) for o in (5, 7, 6, 9, 3, 4, 6)] == [1, 1, -1, 1, 1, -1, 0]
    assert runs == [[3, 8], [9, 10]]


@settings(max_examples=200, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 3), st.integers(0, 60)), min_size=1, max_size=120),
       st.randoms(use_true_random=False))
def test_ranges_are_exactly_the_counted_offsets_in_any_order(offsets: set, shuffler) -> None:
    order = sorted(offsets)
    shuffler.shuffle(order)
    state = TriggerState()
    for i, (p, o) in enumerate(order):
        state.record(rec(i, p, o))
    spans = state.ranges()
    assert covered(spans) == offsets
    assert state.n_runs == len(spans)
    keys = [(s.partition, s.start_offset) for s in spans]
    assert keys == sorted(keys)
    for a, b in zip(spans, spans[1:], strict=False):  # disjoint and not adjacent
        assert a.partition != b.partition or a.end_offset < b.start_offset


def test_interleaved_models_and_late_labels_give_exact_disjoint_manifests() -> None:
    """One label partition shared by two models, duplicates and invalid records between them,
    and labels counted late (re-read after a restart): each trigger's manifest holds exactly its
    labels; the old one-span-per-partition manifest held 4 records of other triggers here."""
    policy = TriggerPolicy(min_labels=3)
    state = TriggerState()
    # (offset, model): model "m" owns offsets 0, 2, 5, 6, 9, 10, 11 (1, 3, 4, 7, 8 are others').
    arrivals = [0, 2, 9, 5, 6, 10]  # 9 counted before 5 and 6 (late ones)
    fired = []
    for i, offset in enumerate(arrivals):
        state.record(rec(i, 0, offset))
        decision = state.should_trigger(policy)
        if decision is not None:
            fired.append(decision)
            state.fire(decision)
    assert [d.ranges for d in fired] == [
        (OffsetSpan(0, 0, 1), OffsetSpan(0, 2, 3), OffsetSpan(0, 9, 10)),
        (OffsetSpan(0, 5, 7), OffsetSpan(0, 10, 11)),
    ]
    seen = Counter(o for d in fired for o in covered(d.ranges))
    assert max(seen.values()) == 1
    assert all(len(covered(d.ranges)) == d.total for d in fired)


def test_a_full_manifest_fires_even_in_cooldown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triggers, "MAX_MANIFEST_RANGES", 3)
    policy = TriggerPolicy(min_labels=100, cooldown_s=1e9)
    state = TriggerState(last_triggered_at=0.0)
    for i, offset in enumerate((0, 2, 3)):  # two runs: [0, 1) and [2, 4)
        state.record(rec(i, 0, offset, at=1.0))
        assert state.should_trigger(policy) is None
    state.record(rec(3, 0, 6, at=1.0))
    decision = state.should_trigger(policy)
    assert decision is not None and decision.rule == "manifest_full" and decision.total == 4
    state.fire(decision)
    assert state.n_runs == 0 and state.ranges() == ()


def test_rebuild_keeps_the_runs_of_the_open_batch() -> None:
    live = TriggerState()
    records = [rec(i, i % 2, o) for i, o in enumerate((4, 1, 5, 2, 9, 3))]
    for r in records:
        live.record(r)
    rebuilt = TriggerState.from_records(reversed(records))
    assert (rebuilt.ranges(), rebuilt.n_runs) == (live.ranges(), live.n_runs)
