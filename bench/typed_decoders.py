"""The inference-event contract declared for two typed decoding libraries, msgspec and pydantic
v2, to measure them against the hand decoder (bench/decoders.py). Not used by the services.

Each declares the schema's fields and what the library can say by itself: types, required and
unknown fields, string lengths, number bounds, list lengths, a `Literal[1]` version. What neither
can declare runs after decoding, in `post_checks` (shared, so both pay the same): scores XOR
label (+ confidence), scores summing to 1, the byte limit of the payload. Deliberately left out
(as a decoder built on these libraries would need them, and would pay for them, too): class
names in UTF-8 bytes, metadata depth and size, the score-cell bound, duplicate keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pydantic
from msgspec import Meta

from services.streaming.event_fields import MAX_EVENT_BYTES, SUM_TOLERANCE

# -- msgspec -----------------------------------------------------------------------------------

Id = Annotated[str, Meta(min_length=1, max_length=256)]
Uri = Annotated[str, Meta(min_length=1, max_length=2048)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Extent = Annotated[float, Meta(ge=0.0)]


class MsgPrediction(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    scores: Annotated[dict[Id, Probability], Meta(min_length=2)] | None = None
    label: Id | None = None
    confidence: Probability | None = None
    instance_id: Id | None = None
    track_id: Id | None = None
    bbox: tuple[float, float, Extent, Extent] | None = None
    embedding: Annotated[list[float], Meta(min_length=1, max_length=4096)] | None = None


class MsgInferenceEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    schema_version: Literal[1]
    event_id: Id
    asset_id: Id
    model_id: Id
    model_version: Id
    timestamp: Annotated[float, Meta(ge=0.0, le=1e10)]
    predictions: Annotated[list[MsgPrediction], Meta(min_length=1, max_length=1000)]
    asset_uri: Uri | None = None
    metadata: dict[str, Any] | None = None


_MSG_DECODER = msgspec.json.Decoder(MsgInferenceEvent)
_MSG_BATCH_DECODER = msgspec.json.Decoder(list[MsgInferenceEvent])


def msgspec_decode(data: bytes) -> MsgInferenceEvent:
    """One event; raises msgspec.ValidationError / DecodeError or ValueError (post-checks)."""
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError("$: payload too large")
    event = _MSG_DECODER.decode(data)
    post_checks(event.predictions)
    return event


def msgspec_decode_batch(values: list[bytes]) -> list[MsgInferenceEvent]:
    """A batch as one JSON array (one call into msgspec), then the post-checks per event. Any
    invalid event fails the whole batch: the caller would retry one by one."""
    events = _MSG_BATCH_DECODER.decode(b"[" + b",".join(values) + b"]")
    for event in events:
        post_checks(event.predictions)
    return events


# -- pydantic v2 -------------------------------------------------------------------------------

PId = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=256)]
PProbability = Annotated[float, pydantic.Field(ge=0.0, le=1.0)]
# strict: no str -> number coercion; allow_inf_nan off: pydantic's JSON parser otherwise takes
# NaN / Infinity tokens (not JSON) and numbers past a double (1e999) as floats.
_STRICT = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class PydPrediction(pydantic.BaseModel):
    model_config = _STRICT
    scores: Annotated[dict[PId, PProbability], pydantic.Field(min_length=2)] | None = None
    label: PId | None = None
    confidence: PProbability | None = None
    instance_id: PId | None = None
    track_id: PId | None = None
    bbox: tuple[float, float, Annotated[float, pydantic.Field(ge=0.0)],
                Annotated[float, pydantic.Field(ge=0.0)]] | None = None
    embedding: Annotated[list[float], pydantic.Field(min_length=1, max_length=4096)] | None = None


class PydInferenceEvent(pydantic.BaseModel):
    model_config = _STRICT
    schema_version: Literal[1]
    event_id: PId
    asset_id: PId
    model_id: PId
    model_version: PId
    timestamp: Annotated[float, pydantic.Field(ge=0.0, le=1e10)]
    predictions: Annotated[list[PydPrediction], pydantic.Field(min_length=1, max_length=1000)]
    asset_uri: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=2048)] | None = (
        None)
    metadata: dict[str, Any] | None = None


def pydantic_decode(data: bytes) -> PydInferenceEvent:
    """One event; raises pydantic.ValidationError or ValueError (post-checks)."""
    if len(data) > MAX_EVENT_BYTES:
        raise ValueError("$: payload too large")
    event = PydInferenceEvent.model_validate_json(data)
    post_checks(event.predictions)
    return event


# -- what neither library declares ----------------------------------------------------------------

def post_checks(predictions: Any) -> None:
    """Scores XOR label, label needs confidence, scores sum to 1: ValueError naming the path."""
    for i, p in enumerate(predictions):
        if p.scores is not None:
            if p.label is not None or p.confidence is not None:
                raise ValueError(f"predictions[{i}]: scores and label/confidence both given")
            if abs(sum(p.scores.values()) - 1.0) > SUM_TOLERANCE:
                raise ValueError(f"predictions[{i}].scores: do not sum to 1")
        elif p.label is None:
            raise ValueError(f"predictions[{i}]: neither scores nor label")
        elif p.confidence is None:
            raise ValueError(f"predictions[{i}]: label without confidence")
