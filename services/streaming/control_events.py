"""The label sink's outputs: retrain triggers (for the training pipeline) and class feedback (for
the scorer; the scorer's drift and stability records travel on the same topic).

Declared once in services/contracts (`services.contracts.retrain_trigger`,
`services.contracts.class_feedback`): their schemas, decoders and encoders come from those
declarations. A producer builds the typed object and writes `encode_retrain_trigger` /
`encode_class_feedback` of it. This module keeps the names other code imports. Import from
`services.streaming.events`.
"""

from __future__ import annotations

from services.contracts.class_feedback import (
    CLASS_FEEDBACK,
    CLASS_STATS_FIELDS,
    CLASS_STATS_REQUIRED,
    CONTROL_FIELDS,
    DRIFT_FIELDS,
    FEEDBACK_FIELDS,
    FEEDBACK_REQUIRED,
    INTERVAL_FIELDS,
    MASTERY_STATES,
    STABILITY_FIELDS,
    ClassFeedback,
    ClassStats,
    ControlEstimate,
    DriftNotice,
    FeedbackKind,
    Interval,
    StabilityNotice,
)
from services.contracts.retrain_trigger import (
    CHANGE_FIELDS,
    MANIFEST_FIELDS,
    MASTERY_FIELDS,
    MAX_CHANGES,
    MAX_DETAIL_LENGTH,
    MAX_RANGES,
    PLATEAU_FIELDS,
    PLATEAU_REQUIRED,
    RANGE_FIELDS,
    RETRAIN_TRIGGER,
    STABLE_FIELDS,
    STOPPING_FIELDS,
    STOPPING_REQUIRED,
    TRIGGER_FIELDS,
    TRIGGER_REQUIRED,
    Manifest,
    OffsetRange,
    RetrainTrigger,
    TriggerRule,
)

__all__ = [
    "CHANGE_FIELDS", "CLASS_FEEDBACK", "CLASS_STATS_FIELDS", "CLASS_STATS_REQUIRED",
    "CONTROL_FIELDS", "DRIFT_FIELDS", "FEEDBACK_FIELDS", "FEEDBACK_REQUIRED", "INTERVAL_FIELDS",
    "MANIFEST_FIELDS", "MASTERY_FIELDS", "MASTERY_STATES", "MAX_CHANGES", "MAX_DETAIL_LENGTH",
    "MAX_RANGES", "PLATEAU_FIELDS", "PLATEAU_REQUIRED", "RANGE_FIELDS", "RETRAIN_TRIGGER",
    "STABILITY_FIELDS", "STABLE_FIELDS", "STOPPING_FIELDS", "STOPPING_REQUIRED",
    "TRIGGER_FIELDS", "TRIGGER_REQUIRED", "ClassFeedback", "ClassStats", "ControlEstimate",
    "DriftNotice", "FeedbackKind", "Interval", "Manifest", "OffsetRange", "RetrainTrigger",
    "StabilityNotice", "TriggerRule", "decode_class_feedback", "decode_retrain_trigger",
    "encode_class_feedback", "encode_retrain_trigger",
]


def decode_retrain_trigger(data: bytes) -> RetrainTrigger:
    """Decode and check one retrain trigger; raises `InvalidEvent` (only) for bad input."""
    return RETRAIN_TRIGGER.decode(data)  # type: ignore[no-any-return]


def decode_class_feedback(data: bytes) -> ClassFeedback:
    """Decode and check one class-feedback record; raises `InvalidEvent` (only) for bad input."""
    return CLASS_FEEDBACK.decode(data)  # type: ignore[no-any-return]


def encode_retrain_trigger(trigger: RetrainTrigger) -> bytes:
    """The trigger's bytes: deterministic JSON (`Event.encode`)."""
    return RETRAIN_TRIGGER.encode(trigger)


def encode_class_feedback(feedback: ClassFeedback) -> bytes:
    """The record's bytes: deterministic JSON (`Event.encode`); a `feedback` kind is not
    written (absent means feedback)."""
    return CLASS_FEEDBACK.encode(feedback)
