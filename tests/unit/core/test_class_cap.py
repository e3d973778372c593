"""Trigger, class-feedback and state records stay below Kafka's 1 MiB record limit whatever the
number and names of classes (issue 14, item 3): past the cap classes are counted as
`__other__`, and no label is lost from the counts."""

from __future__ import annotations

from services.core.agreement import MAX_CLASSES, ClassCap, feedback_classes
from services.core.feedback import FeedbackPolicy
from services.core.registry import OTHER_CLASS
from services.core.triggers import (
    MAX_MANIFEST_RANGES,
    LabelRecord,
    TriggerPolicy,
    TriggerState,
    trigger_id,
)
from services.label_sink.outputs import feedback_event, trigger_event
from services.streaming.events import encode_class_feedback, encode_event, encode_retrain_trigger

LIMIT = 1024 * 1024  # the topics' record limit (Apache Kafka's default max.message.bytes ~1 MiB)


def feedback_bytes(model: str, state: TriggerState) -> int:
    """The class-feedback record the sink publishes for `state` (as app.publish_feedback)."""
    classes = feedback_classes(state.all_time, state.since_trigger(), FeedbackPolicy())
    event = feedback_event(model, state.clock,  # type: ignore[arg-type]
                           {name: vars(stats) for name, stats in classes.items()})
    return len(encode_class_feedback(event))


def fed(names: list[str], runs: int = 0) -> TriggerState:
    state = TriggerState()
    for i, name in enumerate(names):
        # every other label alone in its run of offsets (up to `runs` runs), then contiguous
        offset = 2 * i if i < runs else 2 * runs + i
        state.record(LabelRecord(f"l{i}", 0, 2**62 + offset, 1.0 + i, (name,),
                                 ((name, i % 2 == 0),), (name,)))
    return state


def sizes(state: TriggerState) -> tuple[int, int, int]:
    decision = state.should_trigger(TriggerPolicy(min_labels=1))
    assert decision is not None
    tid = trigger_id("m", "al.labels.v1", decision.ranges)
    trigger = len(encode_retrain_trigger(trigger_event(tid, "m", "al.labels.v1", decision)))
    return trigger, feedback_bytes("m", state), len(encode_event(state.snapshot()))


def test_fifty_thousand_classes_fold_into_other_and_every_label_is_counted() -> None:
    state = fed([f"class-{i:05d}" for i in range(50_000)])
    names = state.names.names()
    assert len(names) == MAX_CLASSES and names[-1] == OTHER_CLASS
    assert sum(state.pending.labels.values()) == 50_000 == sum(state.all_time.labels.values())
    assert state.pending.labels[OTHER_CLASS] == 50_000 - (MAX_CLASSES - 1)
    assert set(state.pending.labels) <= set(names) and set(state.watched) <= set(names)
    assert max(sizes(state)) < LIMIT
    assert TriggerState.from_snapshot(state.snapshot()) == state


def test_worst_case_records_stay_below_the_limit() -> None:
    """Class names of 256 control characters (6 bytes each in JSON) and a full manifest of
    offsets near 2**62: the byte budget of the names keeps every record below 1 MiB."""
    names = [chr(1 + i % 30) * 255 + chr(0x4E00 + i) for i in range(10_000)]
    state = fed(names, runs=MAX_MANIFEST_RANGES)
    assert state.n_runs >= MAX_MANIFEST_RANGES
    trigger, feedback, row = sizes(state)
    assert trigger < LIMIT and feedback < LIMIT and row < LIMIT, (trigger, feedback, row)


def test_the_cap_depends_only_on_the_order_names_came() -> None:
    cap = ClassCap(max_classes=3)
    assert [cap.name(n) for n in ("a", "b", "c", "a", "d")] == ["a", "b", OTHER_CLASS, "a",
                                                                OTHER_CLASS]
    assert ClassCap(max_classes=3, names=cap.names()) == cap
    assert [cap.kept(n) for n in ("a", "d", "e")] == ["a", OTHER_CLASS, OTHER_CLASS]
    assert cap.names() == ["a", "b", OTHER_CLASS]  # kept() admits nothing
