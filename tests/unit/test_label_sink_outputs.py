"""The label sink's outputs are built as typed objects and encoded through their declarations
(services/contracts), and the bytes are those the hand-built dicts gave before (issue 19 item 1):
a retrain trigger with its mastery and stopping parts, a class-feedback record with mastery and
control-arm fields, and an expert request escalated from a stored consensus request."""

from __future__ import annotations

import orjson

from services.core.tiers import TierPolicy
from services.core.triggers import Decision, OffsetSpan
from services.label_sink.consensus import expert_request, expert_request_id
from services.label_sink.outputs import feedback_event, trigger_event
from services.streaming.events import (
    decode_annotation_request,
    decode_class_feedback,
    decode_retrain_trigger,
    encode_annotation_request,
    encode_class_feedback,
    encode_event,
    encode_retrain_trigger,
)

DECISION = Decision(rule="label_count", detail="x" * 1500, counts={"cat": 3, "dog": 1}, total=3,
                    triggered_at=1717243260.25,
                    ranges=(OffsetSpan(0, 4, 9), OffsetSpan(2, 0, 1)))
MASTERY = {"classes": {"cat": "mastered", "dog": "learning"},
           "changes": [{"seq": 1, "class": "cat", "from": "learning", "to": "mastered",
                        "at": 1717243000.0, "model_version": "v2", "reason": "low bound 0.93"}]}
STOPPING = {"stopped": False, "window": 2, "min_gain": 0.01,
            "versions": [{"trigger_id": "t1", "model_version": "v1", "estimate": None,
                          "labels": 0, "low": None, "high": None},
                         {"trigger_id": "t2", "model_version": "v2", "estimate": 0.9,
                          "labels": 40, "low": 0.8, "high": 0.95}],
            "stable": {"stopped": False, "model_version": "v2", "probes": 300, "changed": 30,
                       "share": 0.1, "partitions": 2, "threshold": 0.02, "min_probes": 100}}


def old_trigger(mastery: dict | None, stopping: dict | None) -> dict:
    """The trigger as the sink hand-built it before (outputs.trigger_event + app.py)."""
    out = {"schema_version": 1, "trigger_id": "tid", "model_id": "m", "rule": DECISION.rule,
           "detail": DECISION.detail[:1024], "counts": dict(DECISION.counts),
           "total": DECISION.total, "triggered_at": DECISION.triggered_at,
           "manifest": {"topic": "al.labels.v1", "ranges": [
               {"partition": r.partition, "start_offset": r.start_offset,
                "end_offset": r.end_offset} for r in DECISION.ranges]}}
    if stopping is not None:
        out["stopping"] = stopping
    if mastery is not None:
        out["mastery"] = mastery
    return out


def test_retrain_triggers_keep_their_bytes() -> None:
    for mastery, stopping in ((None, None), (MASTERY, None), (MASTERY, STOPPING)):
        trigger = trigger_event("tid", "m", "al.labels.v1", DECISION, mastery=mastery,
                                stopping=stopping)
        written = encode_retrain_trigger(trigger)
        assert written == encode_event(old_trigger(mastery, stopping))
        assert decode_retrain_trigger(written).to_dict() == orjson.loads(written)


def test_class_feedback_keeps_its_bytes() -> None:
    classes = {
        "cat": {"labels_total": 9, "labels_since_trigger": 2, "agreement": 0.5, "weight": 0.01,
                "state": "mastered", "state_changed_at": 1717243000.0,
                "control": {"model_version": "v2", "labels": 30,
                            "accuracy": {"estimate": 1.0, "low": 0.9, "high": 1.0},
                            "agreement": None}},
        "dog": {"labels_total": 1, "labels_since_trigger": 1, "agreement": None, "weight": 2.0},
    }
    written = encode_class_feedback(feedback_event("m", 1717243260.5, classes))
    assert written == encode_event({"schema_version": 1, "model_id": "m",
                                    "updated_at": 1717243260.5, "classes": classes})
    assert decode_class_feedback(written).classes["cat"].control is not None


def test_an_expert_request_is_the_consensus_request_with_its_own_id_and_tier() -> None:
    consensus = {
        "schema_version": 1, "request_id": "r1", "asset_id": "a1", "asset_uri": "s3://b/a1",
        "event_id": "e1", "model_id": "m", "model_version": "v1",
        "event_timestamp": 1717243260.0,
        "reason": {"strategy": "fixed", "score": 0.7, "class": "cat", "threshold": 0.6,
                   "instances": [0], "inclusion_probability": None},
        "priority": 0.4, "predictions": [{"label": "cat", "confidence": 0.3}],
        "source": {"topic": "al.inference-events.v1", "partition": 1, "offset": 7},
        "tier": {"name": "consensus", "annotators": 3, "cost": 6.0}}
    row = {"r": decode_annotation_request(encode_event(consensus)).to_dict()}
    policy = TierPolicy()
    written = encode_annotation_request(expert_request(row, "r1", policy))
    old = {**consensus, "request_id": expert_request_id("r1"), "priority": policy.expert_priority,
           "tier": {"name": "expert", "annotators": 1, "cost": policy.request_cost("expert"),
                    "escalated_from": "r1"}}
    assert written == encode_event(old)
