"""Agreement outcomes and class feedback: pure functions, no broker."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.agreement import ClassTally, feedback_classes, outcomes, top_class, top_classes
from services.core.feedback import FeedbackPolicy


@dataclass(frozen=True)
class P:
    scores: dict[str, float] | None = None
    label: str | None = None
    instance_id: str | None = None


@dataclass(frozen=True)
class A:
    label: str
    instance_id: str | None = None


def test_top_class_takes_argmax_and_breaks_ties_by_name() -> None:
    assert top_class(P(scores=MappingProxyType({"dog": 0.7, "cat": 0.3}))) == "dog"
    assert top_class(P(scores={"dog": 0.5, "cat": 0.5})) == "cat"
    assert top_class(P(label="bird")) == "bird"
    with pytest.raises(ValueError):
        top_class(P())


def test_outcomes_match_by_instance_then_single_then_any() -> None:
    predicted = top_classes([P(label="cat", instance_id="1"), P(label="dog", instance_id="2")])
    assert outcomes(predicted, [A("dog", "1"), A("dog", "2")]) == (("dog", False), ("dog", True))
    assert outcomes(predicted, [A("cat"), A("bird")]) == (("cat", True), ("bird", False))
    assert outcomes([(None, "cat")], [A("dog")]) == (("dog", False),)
    assert outcomes([], [A("dog")]) == ()


def test_feedback_weights_weak_classes_up_and_keeps_schema_invariants() -> None:
    tally = ClassTally()
    for _ in range(30):
        tally.add(["cat"], [("cat", True)])
        tally.add(["dog"], [("dog", False)])
    tally.add(["bird"], [])  # counted, never compared
    stats = feedback_classes(tally, {"cat": 5, "bird": 9}, FeedbackPolicy())
    assert stats["cat"].agreement == 1.0 and stats["dog"].agreement == 0.0
    assert stats["dog"].weight > 1.0 > stats["cat"].weight > 0
    assert stats["bird"].agreement is None and stats["bird"].weight == 1.0
    assert stats["bird"].labels_since_trigger == 1  # clipped to labels_total


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=60))
def test_tally_is_order_independent_and_in_range(events: list[tuple[str, bool]]) -> None:
    forward, backward = ClassTally(), ClassTally()
    for name, agreed in events:
        forward.add([name], [(name, agreed)])
    for name, agreed in reversed(events):
        backward.add([name], [(name, agreed)])
    assert forward == backward
    for name in forward.classes():
        share = forward.agreement(name)
        assert share is not None and 0.0 <= share <= 1.0
    stats = feedback_classes(forward, dict(forward.labels), FeedbackPolicy())
    assert all(s.weight > 0 and s.labels_since_trigger <= s.labels_total for s in stats.values())


def test_detections_match_by_instance_then_by_box_overlap() -> None:
    """Issue 16: agreement for detections is per object (instance id, else IoU >= 0.5), not
    "the class is somewhere on the asset"."""
    from types import SimpleNamespace as NS

    from services.core.agreement import outcomes, top_classes

    preds = [NS(scores=None, label="shoulder", confidence=0.6, instance_id=None,
                bbox=(0.0, 0.0, 10.0, 10.0)),
             NS(scores=None, label="hip", confidence=0.6, instance_id="p2",
                bbox=(50.0, 50.0, 10.0, 10.0))]
    predicted = top_classes(preds)
    assert predicted[0] == (None, "shoulder", [0.0, 0.0, 10.0, 10.0])
    humans = [NS(label="hip", instance_id=None, bbox=(1.0, 1.0, 10.0, 10.0)),  # on the shoulder
              NS(label="hip", instance_id="p2", bbox=None),  # by id
              NS(label="shoulder", instance_id=None, bbox=(200.0, 0.0, 5.0, 5.0))]  # missed
    assert outcomes(predicted, humans) == (("hip", False), ("hip", True), ("shoulder", False))
    # each predicted box answers one annotation: a second box on the same spot is a miss
    twice = [NS(label="shoulder", instance_id=None, bbox=(0.0, 0.0, 10.0, 10.0))] * 2
    assert outcomes(predicted, twice) == (("shoulder", True), ("shoulder", False))
    # old rows without boxes keep the asset-level rule
    assert outcomes([(None, "a"), (None, "b")], [NS(label="b", instance_id=None,
                                                      bbox=(0.0, 0.0, 1.0, 1.0))]) == \
        (("b", True),)
