"""The records one input partition's scoring emits, built as the typed contracts declare them
(services/contracts): an annotation request per selection, and the class-feedback records of
drift and of probe comparisons. Pure: their bytes depend on the events and selections only."""

from __future__ import annotations

import hashlib

from services.core import Selected
from services.core.drift import DriftEvent
from services.core.stability import StabilityRecord
from services.scorer.instances import annotate
from services.scorer.records import Output
from services.streaming.annotation_requests import (
    AnnotationRequest,
    RequestTier,
    SelectionReason,
    Source,
)
from services.streaming.control_events import encode_class_feedback
from services.streaming.events import (
    SCHEMA_VERSION,
    ClassFeedback,
    DriftNotice,
    FeedbackKind,
    InferenceEvent,
    StabilityNotice,
)


def request_id(asset_id: str, model_id: str, model_version: str) -> str:
    """Deterministic id: the same asset and model version always give the same request id."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (model_id, model_version, asset_id):
        digest.update(part.encode())
        digest.update(b"\x1f")
    return digest.hexdigest()


def build_request(event: InferenceEvent, sel: Selected, topic: str, partition: int,
                  offset: int, tier: tuple[str, int, float] | None = None) -> AnnotationRequest:
    """The annotation request (services/contracts/annotation_request.py) for one selection;
    `tier` (name, annotators, cost) sets the optional `tier` (absent when None), the selection's
    track (core/tracks.py) `reason.track`, its targets (core/instances.py) `annotate`."""
    return AnnotationRequest(
        schema_version=SCHEMA_VERSION,
        request_id=request_id(event.asset_id, event.model_id, event.model_version),
        asset_id=event.asset_id, asset_uri=event.asset_uri, event_id=event.event_id,
        model_id=event.model_id, model_version=event.model_version,
        event_timestamp=event.timestamp,
        reason=SelectionReason(
            strategy=sel.strategy, score=_unit(sel.score), class_name=sel.class_name,
            threshold=None if sel.threshold is None else _unit(sel.threshold),
            instances=tuple(sel.driving_predictions),
            inclusion_probability=sel.inclusion_probability,
            track=None if sel.track is None else dict(sel.track)),
        priority=_unit(sel.priority), predictions=event.predictions,
        source=Source(topic, partition, offset),
        tier=None if tier is None else RequestTier(tier[0], tier[1], tier[2]),
        annotate=None if sel.targets is None else annotate(event, sel))


def build_drift_record(event: DriftEvent, partition: int) -> Output:
    """The class-feedback record (kind drift) of one drift event of input `partition`, keyed
    by drift, model, class and partition (U+001F-joined): compaction keeps the latest per
    partition and class, and never replaces the label sink's record at key model_id."""
    notice = DriftNotice(
        class_name=event.class_name, model_version=event.model_version, partition=partition,
        distance=_unit(event.distance), critical=min(1000.0, event.critical),
        recent_count=event.recent_count, reference_count=event.reference_count,
        detected_at=event.detected_at, boost=event.boost,
        boost_until=min(event.boost_until, 2e10))
    record = ClassFeedback(SCHEMA_VERSION, event.model_id, event.detected_at, {},
                           FeedbackKind.DRIFT, notice)
    key = "\x1f".join(("drift", event.model_id, event.class_name, str(partition)))
    return Output(key.encode(), encode_class_feedback(record))


def build_stability_record(model_id: str, record: StabilityRecord, partition: int,
                           at: float) -> Output:
    """The class-feedback record (kind stability) of one completed probe comparison of input
    `partition`, at event time `at` (the probe that completed it), keyed by stability, model and
    partition (U+001F-joined): compaction keeps each partition's latest, never the sink's."""
    notice = StabilityNotice(record.model_version, record.previous_version, partition,
                             record.probes, record.changed)
    feedback = ClassFeedback(SCHEMA_VERSION, model_id, at, {}, FeedbackKind.STABILITY,
                             stability=notice)
    key = "\x1f".join(("stability", model_id, str(partition)))
    return Output(key.encode(), encode_class_feedback(feedback))


def _unit(x: float) -> float:
    """Clamp float round-off (1.0000000000000002) into the contract's [0, 1]."""
    return min(1.0, max(0.0, float(x)))
