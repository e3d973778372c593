"""The retrain trigger policy: thresholds, cooldown, manifests, determinism, rebuild-from-set."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.triggers import (
    Fired,
    LabelRecord,
    OffsetSpan,
    TriggerPolicy,
    TriggerState,
    trigger_id,
)


def rec(i: int, cls: str = "cat", *, at: float | None = None, partition: int = 0,
        offset: int | None = None, agreed: bool | None = None,
        predicted: tuple[str, ...] = ()) -> LabelRecord:
    return LabelRecord(
        label_id=f"l{i}", partition=partition, offset=i if offset is None else offset,
        labeled_at=float(i) if at is None else at, classes=(cls,),
        outcomes=() if agreed is None else ((cls, agreed),), predicted=predicted)


def feed(state: TriggerState, policy: TriggerPolicy, records: list[LabelRecord]) -> list:
    fired = []
    for r in records:
        state.record(r)
        decision = state.should_trigger(policy)
        if decision:
            fired.append(decision)
            state.fire(decision)
    return fired


def test_label_count_fires_exactly_at_n_and_resets() -> None:
    state, policy = TriggerState(), TriggerPolicy(min_labels=3)
    fired = feed(state, policy, [rec(i) for i in range(7)])
    assert [(d.rule, d.total, d.triggered_at) for d in fired] == [("label_count", 3, 2.0),
                                                                   ("label_count", 3, 5.0)]
    assert fired[1].ranges == (OffsetSpan(0, 3, 6),)
    assert state.total == 1 and state.batch == 2


def test_class_coverage_needs_every_predicted_class() -> None:
    policy = TriggerPolicy(min_labels=100, min_labels_per_class=2)
    state = TriggerState()
    records = [rec(0, "cat", predicted=("cat", "dog")), rec(1, "cat"), rec(2, "dog")]
    assert feed(state, policy, records) == []
    fired = feed(state, policy, [rec(3, "dog")])
    assert [(d.rule, d.total, d.counts) for d in fired] == [("class_coverage", 4,
                                                              {"cat": 2, "dog": 2})]


def test_label_age_is_event_time_and_strict() -> None:
    policy = TriggerPolicy(min_labels=100, max_label_age_s=10)
    state = TriggerState()
    assert feed(state, policy, [rec(0, at=100.0), rec(1, at=110.0)]) == []
    fired = feed(state, policy, [rec(2, at=110.5)])
    assert [(d.rule, d.triggered_at) for d in fired] == [("label_age", 110.5)]


def test_disagreement_needs_k_labels_and_rate_above_d() -> None:
    policy = TriggerPolicy(min_labels=100, max_disagreement=0.5, min_disagreement_labels=4)
    state = TriggerState()
    assert feed(state, policy, [rec(0, agreed=False), rec(1, agreed=False),
                                rec(2, agreed=True), rec(3, agreed=False)]) != []
    state = TriggerState()
    half = [rec(i, agreed=i % 2 == 0) for i in range(4)]  # rate 0.5 is not > 0.5
    assert feed(state, policy, half) == []


def test_cooldown_holds_back_the_next_trigger() -> None:
    policy = TriggerPolicy(min_labels=2, cooldown_s=10)
    state = TriggerState()
    fired = feed(state, policy, [rec(i, at=float(i)) for i in range(8)] + [rec(8, at=11.0)])
    assert [d.triggered_at for d in fired] == [1.0, 11.0]
    assert fired[1].total == 7


def test_trigger_id_is_deterministic_and_manifest_sensitive() -> None:
    spans = (OffsetSpan(0, 0, 3), OffsetSpan(1, 2, 5))
    assert trigger_id("m", "t", spans) == trigger_id("m", "t", list(spans))
    assert trigger_id("m", "t", spans) != trigger_id("m", "t", spans[:1])
    assert trigger_id("m", "t", spans) != trigger_id("m2", "t", spans)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TriggerPolicy(min_labels=0)
    with pytest.raises(ValueError):
        TriggerPolicy(max_disagreement=1.0)


records_strategy = st.lists(
    st.tuples(st.sampled_from(["cat", "dog"]), st.integers(0, 2), st.booleans(),
              st.floats(0, 1000)),
    min_size=1, max_size=80)


@settings(max_examples=60, deadline=None)
@given(records_strategy, st.integers(1, 12), st.randoms(use_true_random=False))
def test_rebuild_from_any_order_of_the_persisted_set_equals_the_live_state(
    raw: list, n: int, shuffler
) -> None:
    """What the sink relies on after a crash: state = f(set of persisted rows)."""
    policy = TriggerPolicy(min_labels=n, max_disagreement=0.9, min_disagreement_labels=3)
    live, rows, offsets = TriggerState(), [], {0: 0, 1: 0, 2: 0}
    for i, (cls, part, agreed, at) in enumerate(raw):
        r = rec(i, cls, at=at, partition=part, offset=offsets[part], agreed=agreed)
        offsets[part] += 1
        r = LabelRecord(**{**r.__dict__, "batch": live.batch})
        live.record(r)
        decision = live.should_trigger(policy)
        fired = None
        if decision:
            fired = Fired(trigger_id("m", "t", decision.ranges), decision.rule,
                          decision.triggered_at)
            live.fire(decision)
        rows.append(LabelRecord(**{**r.__dict__, "fired": fired}))
    shuffler.shuffle(rows)
    rebuilt = TriggerState.from_records(rows)
    assert (rebuilt.batch, rebuilt.total, rebuilt.runs, rebuilt.last_triggered_at) == (
        live.batch, live.total, live.runs, live.last_triggered_at)
    assert rebuilt.pending == live.pending and rebuilt.all_time == live.all_time
    assert rebuilt.should_trigger(policy) == live.should_trigger(policy)


@given(records_strategy, st.integers(1, 12))
def test_batches_partition_the_labels_and_ranges_cover_them(raw: list, n: int) -> None:
    state, policy = TriggerState(), TriggerPolicy(min_labels=n)
    records = [rec(i, c, partition=p, offset=i) for i, (c, p, _, _) in enumerate(raw)]
    fired = feed(state, policy, records)
    assert sum(d.total for d in fired) + state.total == len(records)
    assert all(d.total == n for d in fired)
    assert sum(sum(d.counts.values()) for d in fired) == n * len(fired)


def test_a_consensus_vote_is_in_the_manifest_but_never_counted() -> None:
    state, policy = TriggerState(), TriggerPolicy(min_labels=2)
    votes = [LabelRecord(label_id=f"v{i}", partition=0, offset=i, labeled_at=float(i),
                         classes=("cat",), outcomes=(("cat", False),), vote=True)
             for i in range(3)]
    assert feed(state, policy, votes) == []  # k labels of one request are not k labels
    assert state.total == 0 and state.all_time.labels == {} and state.pending.compared == {}
    (fired,) = feed(state, policy, [rec(3), rec(4)])
    assert fired.total == 2 and fired.counts == {"cat": 2}
    assert fired.ranges == (OffsetSpan(0, 0, 5),)  # the votes' offsets ride along


def test_label_count_in_instances_counts_annotations() -> None:
    """`cost: instances` (issue 16): min_labels counts annotated instances, so labels of
    two, three, zero and four instances fire at 9 on the fourth; in `assets` they are 4 labels.
    The state (and its snapshot) is the same in both units; a label without annotations
    counts no instance."""
    frames = [("shoulder", "hip"), ("shoulder", "hip", "hip"), (), ("hip",) * 4]
    records = [LabelRecord(label_id=f"l{i}", partition=0, offset=i, labeled_at=float(i),
                           classes=c) for i, c in enumerate(frames)]
    inst = TriggerPolicy(min_labels=9, cost="instances")
    state = TriggerState()
    fired = feed(state, inst, records)
    assert len(fired) == 1 and fired[0].total == 4 and fired[0].rule == "label_count"
    assert "9 new instances" in fired[0].detail
    assert dict(fired[0].counts) == {"hip": 7, "shoulder": 2}
    assert feed(TriggerState(), TriggerPolicy(min_labels=9), records) == []
    early = TriggerState()
    assert feed(early, TriggerPolicy(min_labels=4, cost="instances"), records[:1]) == []
    assert early.units(TriggerPolicy(cost="instances")) == 2 and early.total == 1
    a, b = TriggerState(), TriggerState()
    feed(a, TriggerPolicy(min_labels=100), records)
    feed(b, TriggerPolicy(min_labels=100, cost="instances"), records)
    assert a.snapshot() == b.snapshot()
    with pytest.raises(ValueError):
        TriggerPolicy(cost="boxes")
