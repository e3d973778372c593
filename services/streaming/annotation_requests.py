"""The annotation request: the scorer's output, the annotation tool's input.

Declared once in services/contracts (`services.contracts.annotation_request`): its schema
(schemas/annotation-request.schema.json), decoder and encoder come from that declaration. A
producer builds an `AnnotationRequest` and writes `ANNOTATION_REQUEST.encode(request)`. This
module keeps the names other code imports. Import from `services.streaming.events`.
"""

from __future__ import annotations

from services.contracts.annotation_request import (
    ANNOTATE_FIELDS,
    ANNOTATION_REQUEST,
    INSTANCE_FIELDS,
    MAX_ANNOTATORS,
    MAX_COST,
    MAX_STRATEGY_LENGTH,
    REASON_FIELDS,
    REQUEST_FIELDS,
    SOURCE_FIELDS,
    TIER_FIELDS,
    TIER_NAMES,
    TRACK_SIGNALS,
    AnnotationRequest,
    RequestTier,
    SelectionReason,
    Source,
)

__all__ = [
    "ANNOTATE_FIELDS", "ANNOTATION_REQUEST", "INSTANCE_FIELDS", "MAX_ANNOTATORS", "MAX_COST",
    "MAX_STRATEGY_LENGTH", "REASON_FIELDS", "REQUEST_FIELDS", "SOURCE_FIELDS", "TIER_FIELDS",
    "TIER_NAMES", "TRACK_SIGNALS", "AnnotationRequest", "RequestTier", "SelectionReason",
    "Source", "decode_annotation_request", "encode_annotation_request",
]


def decode_annotation_request(data: bytes) -> AnnotationRequest:
    """Decode and check one annotation request; raises `InvalidEvent` (only) for bad input."""
    return ANNOTATION_REQUEST.decode(data)  # type: ignore[no-any-return]


def encode_annotation_request(request: AnnotationRequest) -> bytes:
    """The request's bytes: deterministic JSON (`Event.encode`), optional fields holding None
    left out, so a replay writes identical bytes."""
    return ANNOTATION_REQUEST.encode(request)
