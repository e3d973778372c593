"""Event contracts in code: decoded event types, decoders, the deterministic encoder and the
dead-letter record. The schemas in schemas/*.schema.json are the contract; tests/contract proves
these decoders accept and reject exactly what the schemas do, and that the limits below equal the
schemas' values.

Bad input is data: every `decode_*` raises `InvalidEvent` and nothing else for any bytes. Its
`reason` names the field path (`predictions[0].scores.cat: 1.3 outside [0, 1]`), `field` is that
path (`$` for the whole payload) and `code` is an `ErrorCode` (metric label). The shell sends the
original bytes to the topic's `.dlq` as `encode_dead_letter(...)` and moves on.

Every event is declared once in `services/contracts` (its schema, decoder and encoder come from
that declaration); `input_events` runs the declared input decoders (the scorer's and label sink's
hot path), `annotation_requests` and `control_events` the output events' (retrain triggers,
class feedback), and `event_fields` holds the error type, limits and checked field readers they
all share. This module adds the producing side: the typed events' encoders
(`encode_annotation_request`, `encode_retrain_trigger`, `encode_class_feedback`), `encode_event`
for plain dicts, and `encode_dead_letter` (the one dead-letter builder,
`services.contracts.dead_letter`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson

from services.contracts.dead_letter import (
    MAX_REASON_LENGTH,
    encode_dead_letter,
)
from services.streaming.annotation_requests import (
    AnnotationRequest,
    RequestTier,
    SelectionReason,
    Source,
    decode_annotation_request,
    encode_annotation_request,
)
from services.streaming.control_events import (
    ClassFeedback,
    ClassStats,
    DriftNotice,
    FeedbackKind,
    Manifest,
    OffsetRange,
    RetrainTrigger,
    StabilityNotice,
    TriggerRule,
    decode_class_feedback,
    decode_retrain_trigger,
    encode_class_feedback,
    encode_retrain_trigger,
)
from services.streaming.event_fields import (
    MAX_ANNOTATIONS,
    MAX_EMBEDDING,
    MAX_EVENT_BYTES,
    MAX_ID_LENGTH,
    MAX_OUTPUT_EVENT_BYTES,
    MAX_PREDICTIONS,
    MAX_TIMESTAMP,
    MAX_URI_LENGTH,
    MIN_SCORE_CLASSES,
    ROOT,
    SCHEMA_VERSION,
    SUM_TOLERANCE,
    ErrorCode,
    InvalidEvent,
    format_path,
)
from services.streaming.input_events import (
    Annotation,
    InferenceEvent,
    Label,
    Prediction,
    decode_inference_event,
    decode_label,
)

__all__ = [
    "MAX_ANNOTATIONS",
    "MAX_EMBEDDING",
    "MAX_EVENT_BYTES",
    "MAX_ID_LENGTH",
    "MAX_OUTPUT_EVENT_BYTES",
    "MAX_PREDICTIONS",
    "MAX_REASON_LENGTH",
    "MAX_TIMESTAMP",
    "MAX_URI_LENGTH",
    "MIN_SCORE_CLASSES",
    "ROOT",
    "SCHEMA_VERSION",
    "SUM_TOLERANCE",
    "Annotation",
    "AnnotationRequest",
    "ClassFeedback",
    "ClassStats",
    "DriftNotice",
    "StabilityNotice",
    "FeedbackKind",
    "ErrorCode",
    "InferenceEvent",
    "InvalidEvent",
    "Label",
    "Manifest",
    "OffsetRange",
    "Prediction",
    "RetrainTrigger",
    "RequestTier",
    "SelectionReason",
    "Source",
    "TriggerRule",
    "encode_dead_letter",
    "decode_annotation_request",
    "decode_class_feedback",
    "decode_inference_event",
    "decode_label",
    "decode_retrain_trigger",
    "encode_annotation_request",
    "encode_class_feedback",
    "encode_event",
    "encode_retrain_trigger",
    "format_path",
    "redact_dead_letter",
    "redacted_key",
]

# A dataclass goes to `_plain` (which refuses it) rather than being written by orjson under its
# attribute names, which are not the contract's (`class_name` for `class`, nulls for absent).
_ENCODE_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_event(obj: Mapping[str, Any]) -> bytes:
    """Deterministic UTF-8 JSON for an event dict: keys sorted at every level, no whitespace,
    floats in shortest round-trip form. Equal dicts give identical bytes whatever their key order,
    so a crash replay reproduces byte-identical output.

    Pass plain JSON values (decoded events: `event.to_dict()`); read-only mappings are accepted.
    A typed event (a dataclass) is refused with TypeError, anywhere in `obj`: its bytes come
    from its declaration (`services.contracts`, e.g. `ANNOTATION_REQUEST.encode`). orjson
    writes NaN and infinities as null, so callers must keep numbers finite (the decoders
    reject the resulting nulls). Raises TypeError for values JSON cannot hold (a bug)."""
    return orjson.dumps(obj, default=_plain, option=_ENCODE_OPTIONS)


def _plain(value: Any) -> Any:
    if isinstance(value, MappingProxyType):
        return dict(value)
    if dataclasses.is_dataclass(value):
        raise TypeError(f"{type(value).__name__} is a typed object: encode it through its "
                        "declaration (services.contracts), not encode_event")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def redact_dead_letter(letter: bytes) -> bytes:
    """A dead letter (as `encode_event` wrote it) without the payload, key or values it
    carried, for streams whose records may hold personal data: the original's and the key's
    SHA-256 (hex) and sizes stay, so a record can still be matched against its source and its
    size judged; the reason keeps the field path and drops the detail (which may quote a
    value). Pure and deterministic: the same letter always redacts to the same bytes."""
    record = orjson.loads(letter)
    original = base64.b64decode(record["original_b64"])
    key = record["key_b64"]
    field = record["reason"].split(": ", 1)[0]
    record.update(
        original_b64="", redacted=True, original_size=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        reason=f"{field}: {record['code']} (detail redacted)",
        key_b64=None,
        key_sha256=None if key is None else hashlib.sha256(base64.b64decode(key)).hexdigest(),
    )
    return encode_event(record)


def redacted_key(key: bytes | None) -> bytes | None:
    """The Kafka key of a redacted dead letter: the SHA-256 (hex) of the original key."""
    return None if key is None else hashlib.sha256(key).hexdigest().encode()
