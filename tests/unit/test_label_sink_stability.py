"""The stopping signal's stability branch in the label sink's mastery shell: the scorer's
stability records (kind stability on class feedback) become labels-by-model rows, fold per
(model, input partition) into the trigger's `stopping.stable`, and can drop the model to the
exploration share."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from services.core.feedback import FeedbackPolicy
from services.core.mastery import MasteryPolicy
from services.core.stability import StabilityPolicy, StabilityRecord
from services.label_sink.mastery import STABLE, Mastery, drift_row, stability_row
from services.label_sink.metrics import LabelSinkMetrics
from services.scorer.builders import build_stability_record
from services.streaming.control_events import decode_retrain_trigger
from services.streaming.events import decode_class_feedback, encode_event

POLICY = MasteryPolicy(stop_triggers=2, stability=StabilityPolicy(threshold=0.05, min_probes=100))


def shell(drop: bool = False) -> tuple[Mastery, CollectorRegistry]:
    registry = CollectorRegistry()
    return Mastery({}, POLICY, FeedbackPolicy(), LabelSinkMetrics(registry),
                   stop_to_exploration=drop), registry


def row(partition: int, version: str, previous: str, probes: int, changed: int
        ) -> dict[str, Any]:
    """The row the sink forwards for the scorer's record (built by the scorer's own code)."""
    out = build_stability_record("m", StabilityRecord(version, previous, probes, changed),
                                 partition, 1000.0)
    found = stability_row(decode_class_feedback(out.value))
    assert found is not None
    return found


def trigger(stopping: dict[str, Any]) -> dict[str, Any]:
    event = {"schema_version": 1, "trigger_id": "t", "model_id": "m", "rule": "label_count",
             "detail": "x", "counts": {"cat": 1}, "total": 1, "triggered_at": 1.0,
             "manifest": {"topic": "al.labels.v1",
                          "ranges": [{"partition": 0, "start_offset": 0, "end_offset": 1}]},
             "stopping": stopping}
    decoded = decode_retrain_trigger(encode_event(event))  # under the contract
    assert decoded.to_dict() == event
    return event


def test_rows_are_made_of_stability_records_only() -> None:
    r = row(3, "v2", "v1", 120, 2)
    assert r == {"m": "m", STABLE: ["v2\x1fv1\x1f3", 3, "v2", "v1", 120, 2]}
    scorer_record = build_stability_record("m", StabilityRecord("v2", "v1", 120, 2), 3, 5.0)
    assert drift_row(decode_class_feedback(scorer_record.value)) is None
    own = {"schema_version": 1, "model_id": "m", "updated_at": 1.0, "classes": {}}
    assert stability_row(decode_class_feedback(encode_event(own))) is None


def test_the_newest_versions_partitions_are_summed_into_the_trigger() -> None:
    m, registry = shell()
    assert m.at_trigger("m", "t0") is None  # no control label, no record: no field
    assert m.stability("m", row(0, "v2", "v1", 60, 1))
    stopping = m.at_trigger("m", "t1")
    assert stopping is not None
    assert stopping["stable"] == {"stopped": False, "model_version": "v2", "probes": 60,
                                  "changed": 1, "share": 1 / 60, "partitions": 1,
                                  "threshold": 0.05, "min_probes": 100}  # too few probes yet
    assert stopping["stopped"] is False and stopping["versions"] == []
    assert m.stability("m", row(1, "v1", "v0", 500, 400))  # an older comparison: left out
    assert m.at_trigger("m", "t2")["stable"]["probes"] == 60  # type: ignore[index]
    assert m.stability("m", row(1, "v2", "v1", 60, 2))
    stopping = m.at_trigger("m", "t3")
    assert stopping is not None and stopping["stopped"] is True
    assert stopping["stable"]["probes"] == 120 and stopping["stable"]["changed"] == 3
    assert stopping["stable"]["partitions"] == 2
    trigger(stopping)
    assert registry.get_sample_value("label_sink_stopping_signal", {"model_id": "m"}) == 1.0
    assert registry.get_sample_value("label_sink_probe_changed_ratio",
                                     {"model_id": "m"}) == 3 / 120
    # A new version that changes many predictions lowers the signal again.
    assert m.stability("m", row(0, "v3", "v2", 200, 50))
    stopping = m.at_trigger("m", "t4")
    assert stopping is not None and stopping["stopped"] is False
    assert stopping["stable"]["model_version"] == "v3"


def test_a_repeat_changes_nothing_and_a_replay_gives_the_same_bytes() -> None:
    m, registry = shell()
    records = [row(0, "v2", "v1", 150, 1), row(0, "v3", "v2", 150, 30)]
    for r in records:
        m.stability("m", r)
    written = m.table["m"]
    assert not m.stability("m", records[0])  # a re-forwarded older record: no regression
    assert m.table["m"] is written
    assert registry.get_sample_value("label_sink_stability_records_total",
                                     {"outcome": "kept"}) == 1.0
    first = m.at_trigger("m", "t1")
    again, _ = shell()
    again.table["m"] = m.table["m"]  # the changelog's row, as a restarted worker reads it
    assert encode_event(again.at_trigger("m", "t1") or {}) == encode_event(first or {})
    assert first is not None and first["stable"]["model_version"] == "v3"


def test_the_drop_to_exploration_applies_to_the_stability_branch() -> None:
    classes = {c: {"labels_total": 5, "labels_since_trigger": 0, "agreement": 0.5,
                   "weight": 2.0 if c == "cat" else 1.0} for c in ("cat", "dog")}
    for drop in (False, True):
        m, _ = shell(drop)
        m.stability("m", row(0, "v2", "v1", 300, 1))
        weights = {c: s["weight"] for c, s in m.feedback_classes("m", classes).items()}
        mastered = FeedbackPolicy().mastered_weight
        assert weights == ({"cat": mastered, "dog": mastered} if drop
                           else {"cat": 2.0, "dog": 1.0})
        m.stability("m", row(0, "v3", "v2", 300, 100))  # not stable any more: weights back
        weights = {c: s["weight"] for c, s in m.feedback_classes("m", classes).items()}
        assert weights == {"cat": 2.0, "dog": 1.0}
