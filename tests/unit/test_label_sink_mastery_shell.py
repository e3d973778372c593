"""The label sink's mastery shell (services/label_sink/mastery.py) over a plain dict table."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.core.feedback import FeedbackPolicy
from services.core.mastery import MasteryPolicy
from services.label_sink.mastery import Mastery
from services.label_sink.metrics import LabelSinkMetrics
from services.streaming.control_events import decode_retrain_trigger
from services.streaming.events import encode_event


def shell(stop_to_exploration: bool) -> tuple[Mastery, CollectorRegistry]:
    registry = CollectorRegistry()
    policy = MasteryPolicy(master_at=0.8, min_labels=10, stop_triggers=1, stop_min_labels=20)
    return Mastery({}, policy, FeedbackPolicy(), LabelSinkMetrics(registry),
                   stop_to_exploration=stop_to_exploration), registry


def feed(m: Mastery, version: str, n: int, start: int) -> None:
    for i in range(start, start + n):
        name = "cat" if i % 2 else "dog"
        right = name == "cat" or i % 4 == 0  # cats always right, dogs half the time
        predicted = name if right else "owl"
        m.count("m", {"id": f"l{i}", "t": float(i),
                      "k": [version, 10.0, [[name, predicted, right]]]})


def classes() -> dict[str, dict]:
    return {c: {"labels_total": 50, "labels_since_trigger": 0, "agreement": 0.5, "weight": 1.0}
            for c in ("cat", "dog", "owl")}


def test_feedback_and_trigger_fields_and_the_drop_to_exploration_option() -> None:
    for drop in (False, True):
        m, registry = shell(drop)
        feed(m, "v1", 60, 0)
        first = m.at_trigger("m", "t1")
        assert first is not None and first["stopped"] is False
        feed(m, "v2", 60, 100)
        stopping = m.at_trigger("m", "t2")  # v2 no better than v1: stop
        assert stopping is not None and stopping["stopped"] is True
        assert [v["model_version"] for v in stopping["versions"]] == ["v1", "v2"]
        out = m.feedback_classes("m", classes())
        assert out["cat"]["state"] == "mastered" and out["dog"]["state"] == "learning"
        assert out["cat"]["control"]["accuracy"]["estimate"] == 1.0
        assert out["dog"]["control"]["labels"] == 30
        weights = {c: s["weight"] for c, s in out.items()}
        if drop:
            assert weights == dict.fromkeys(weights, 0.01)
        else:
            assert weights["cat"] == 0.01 and weights["dog"] > 1.0 and weights["owl"] > 1.0
        assert registry.get_sample_value("label_sink_stopping_signal", {"model_id": "m"}) == 1.0
        assert registry.get_sample_value(
            "label_sink_mastery_state", {"model_id": "m", "class": "cat",
                                         "state": "mastered"}) == 1.0
    # The trigger fields decode under the contract.
    trigger = {"schema_version": 1, "trigger_id": "t2", "model_id": "m", "rule": "label_count",
               "detail": "x", "counts": {"cat": 1}, "total": 1, "triggered_at": 1.0,
               "manifest": {"topic": "al.labels.v1",
                            "ranges": [{"partition": 0, "start_offset": 0, "end_offset": 1}]},
               "mastery": m.trigger_field("m"), "stopping": stopping}
    decoded = decode_retrain_trigger(encode_event(trigger))
    assert decoded.stopping is not None and decoded.stopping["stopped"] is True
    assert decoded.mastery is not None and decoded.mastery["classes"]["cat"] == "mastered"
    assert decoded.to_dict() == trigger


def test_drift_records_reopen_through_the_shell_and_other_feedback_is_passed_over() -> None:
    from services.label_sink.mastery import DRIFT, drift_row
    from services.streaming.events import decode_class_feedback

    m, registry = shell(False)
    feed(m, "v1", 60, 0)  # cats mastered
    drift = {"schema_version": 1, "model_id": "m", "updated_at": 500.0, "classes": {},
             "kind": "drift",
             "drift": {"class": "cat", "model_version": "v1", "partition": 2, "distance": 0.3,
                       "critical": 0.1, "recent_count": 300, "reference_count": 900,
                       "detected_at": 500.0, "boost": 2.0, "boost_until": 4100.0}}
    row = drift_row(decode_class_feedback(encode_event(drift)))
    assert row is not None and row["m"] == "m" and row[DRIFT][1:3] == ["cat", 500.0]
    own = {"schema_version": 1, "model_id": "m", "updated_at": 1.0,
           "classes": {"cat": {"labels_total": 1, "labels_since_trigger": 1, "agreement": 1.0,
                               "weight": 1.0}}}
    assert drift_row(decode_class_feedback(encode_event(own))) is None
    assert m.drift("other-model", row) is None  # no book: nothing mastered
    before = dict(m.table)
    change = m.drift("m", row)
    assert change is not None and change.new.value == "reopened" and "KS distance" in \
        change.reason
    assert m.table["m"] != before["m"]
    out = m.feedback_classes("m", classes())
    assert out["cat"]["state"] == "reopened" and out["cat"]["state_changed_at"] == 500.0
    assert out["cat"]["weight"] == 1.0  # its budget back
    written = m.table["m"]
    assert m.drift("m", row) is None and m.table["m"] is written  # a repeat writes nothing
    assert registry.get_sample_value("label_sink_drift_reports_total",
                                     {"outcome": "reopened"}) == 1.0
    assert registry.get_sample_value("label_sink_drift_reports_total",
                                     {"outcome": "kept"}) == 2.0
    assert registry.get_sample_value("label_sink_mastery_state", {
        "model_id": "m", "class": "cat", "state": "reopened"}) == 1.0


def test_control_unit_of_a_detection_request_row() -> None:
    """A detection request's row holds [instance, class, bbox] per prediction (tables.py): the
    control-arm join reads the first two instead of crashing the worker (issue 16 found it)."""
    from services.label_sink.mastery import control_unit
    from services.streaming.events import decode_label

    label = decode_label(encode_event({
        "schema_version": 1, "label_id": "l1", "asset_id": "f1", "annotator_id": "a",
        "labeled_at": 1.0, "annotations": [{"label": "hip", "instance_id": "o2",
                                            "bbox": [1.0, 1.0, 4.0, 4.0]}]}))
    row = {"k": ["v1", 0.25], "p": [["o1", "ball", [0.0, 0.0, 2.0, 2.0]],
                                   ["o2", "shoulder", [1.0, 1.0, 4.0, 4.0]]]}
    assert control_unit(row, label) == ["v1", 4.0, [["hip", "shoulder", False]]]
    classification = {"k": ["v1", 0.5], "p": [[0, "cat"]]}
    assert control_unit(classification, decode_label(encode_event({
        "schema_version": 1, "label_id": "l2", "asset_id": "a", "annotator_id": "a",
        "labeled_at": 1.0, "annotations": [{"label": "cat"}]}))) == ["v1", 2.0,
                                                                     [["cat", "cat", True]]]


def test_each_versions_trigger_entry_carries_its_interval() -> None:
    m, _ = shell(False)
    feed(m, "v1", 60, 0)
    stopping = m.at_trigger("m", "t1")
    assert stopping is not None
    [entry] = stopping["versions"]
    assert entry["low"] is not None and entry["high"] is not None
    assert 0.0 <= entry["low"] < entry["estimate"] < entry["high"] <= 1.0
    assert entry["labels"] == 60
    restored = m.book("m")
    assert restored is not None and restored.plateau[-1].low == entry["low"]
