"""The hand-written decoder as it was before issue 19 item 1 declared it in services/contracts
(services/streaming/annotation_requests.py at 464ace8), kept only so bench/decoders.py can
measure the declared decoders beside it and tests/contract/test_declared_decoders.py can prove
they judge every input alike. Not used by any service.

The annotation request: the scorer's output, the annotation tool's input.

Contract: schemas/annotation-request.schema.json. The scorer builds requests as dicts (or via
`AnnotationRequest.to_dict()`) and writes them with `events.encode_event`; the decoder is for
consumers and agrees with the schema (tests/contract). Import from `services.streaming.events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.legacy_request_annotate import read_annotate
from services.streaming.event_fields import (
    MAX_ID_LENGTH,
    MAX_OFFSET,
    MAX_OUTPUT_EVENT_BYTES,
    MAX_PARTITION,
    MAX_PREDICTIONS,
    MAX_TIMESTAMP,
    MAX_TOPIC_LENGTH,
    MAX_URI_LENGTH,
    SCHEMA_VERSION,
    ErrorCode,
    array,
    check_keys,
    check_version,
    child,
    fail,
    integer,
    load_object,
    mapping,
    number,
    optional_number,
    optional_text,
    show,
    text,
)
from services.streaming.input_events import Prediction, read_prediction

MAX_STRATEGY_LENGTH = 64
TIER_NAMES: tuple[str, ...] = ("review", "annotate", "consensus", "expert")
"""The labeling tiers (services/core/tiers.py TIERS; equal, checked by a unit test)."""
MAX_ANNOTATORS = 9
MAX_COST = 1e9


@dataclass(frozen=True, slots=True)
class Source:
    """Kafka coordinates of a consumed record."""

    topic: str
    partition: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class SelectionReason:
    """Why the scorer selected an asset. `class_name` is the JSON field `class`."""

    strategy: str
    score: float
    class_name: str | None
    threshold: float | None
    instances: tuple[int | str, ...]
    inclusion_probability: float | None
    track: Mapping[str, Any] | None = None  # track instability that drove it (core/tracks.py)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "strategy": self.strategy,
            "score": self.score,
            "class": self.class_name,
            "threshold": self.threshold,
            "instances": list(self.instances),
            "inclusion_probability": self.inclusion_probability,
        }
        if self.track is not None:
            out["track"] = dict(self.track)
        return out


@dataclass(frozen=True, slots=True)
class RequestTier:
    """Which labeling tier a request is routed to (optional field `tier`; absent when the scorer
    runs without a tier policy). `annotators`: independent labels wanted (k for consensus, else
    1); `cost`: cost units the whole request spends; `escalated_from`: for an `expert` request the
    label sink raised, the consensus request it referees, else None."""

    name: str
    annotators: int
    cost: float
    escalated_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "annotators": self.annotators,
                               "cost": self.cost}
        if self.escalated_from is not None:
            out["escalated_from"] = self.escalated_from
        return out


@dataclass(frozen=True, slots=True)
class AnnotationRequest:
    schema_version: int
    request_id: str
    asset_id: str
    asset_uri: str | None
    event_id: str
    model_id: str
    model_version: str
    event_timestamp: float
    reason: SelectionReason
    priority: float
    predictions: tuple[Prediction, ...]
    source: Source
    tier: RequestTier | None = None
    annotate: Mapping[str, Any] | None = None  # instance-level request (request_annotate.py)

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in REQUEST_FIELDS
               if name not in ("tier", "annotate")}
        out.update(reason=self.reason.to_dict(), source=self.source.to_dict())
        out["predictions"] = [p.to_dict() for p in self.predictions]
        if self.tier is not None:  # absent, not null: untiered requests keep their old bytes
            out["tier"] = self.tier.to_dict()
        if self.annotate is not None:  # likewise: requests without it keep their bytes
            out["annotate"] = dict(self.annotate)
        return out


def _fields(cls: type) -> frozenset[str]:
    return frozenset(cls.__dataclass_fields__)  # type: ignore[attr-defined]


REQUEST_FIELDS = _fields(AnnotationRequest)
REASON_FIELDS = (_fields(SelectionReason) - {"class_name"}) | {"class"}
_OPTIONAL_REASON_FIELDS = frozenset({"track"})
TRACK_SIGNALS = frozenset({"class_flip", "confidence_collapse", "identity_switch", "crossing"})
_TRACK_FIELDS = frozenset({"track_id", "other_track_id", "score", "signals", "frames"})
SOURCE_FIELDS = _fields(Source)
TIER_FIELDS = _fields(RequestTier)
_OPTIONAL_REQUEST_FIELDS = frozenset({"asset_uri", "tier", "annotate"})


def decode_annotation_request(data: bytes) -> AnnotationRequest:
    """Decode and check one annotation request; raises `InvalidEvent` (only) for bad input."""
    obj = load_object(data, MAX_OUTPUT_EVENT_BYTES)
    check_version(obj, SCHEMA_VERSION)
    check_keys(obj, REQUEST_FIELDS, tuple(sorted(REQUEST_FIELDS - _OPTIONAL_REQUEST_FIELDS)), "")
    raw = array(obj["predictions"], "", "predictions", 1, MAX_PREDICTIONS)
    return AnnotationRequest(
        schema_version=SCHEMA_VERSION,
        request_id=text(obj["request_id"], "", "request_id", MAX_ID_LENGTH),
        asset_id=text(obj["asset_id"], "", "asset_id", MAX_ID_LENGTH),
        asset_uri=optional_text(obj.get("asset_uri"), "", "asset_uri", MAX_URI_LENGTH),
        event_id=text(obj["event_id"], "", "event_id", MAX_ID_LENGTH),
        model_id=text(obj["model_id"], "", "model_id", MAX_ID_LENGTH),
        model_version=text(obj["model_version"], "", "model_version", MAX_ID_LENGTH),
        event_timestamp=number(obj["event_timestamp"], "", "event_timestamp", 0, MAX_TIMESTAMP),
        reason=_reason(mapping(obj["reason"], "", "reason"), "reason"),
        priority=number(obj["priority"], "", "priority", 0.0, 1.0),
        predictions=tuple(read_prediction(p, f"predictions[{i}]") for i, p in enumerate(raw)),
        source=_source(mapping(obj["source"], "", "source"), "source"),
        tier=None if obj.get("tier") is None else _tier(mapping(obj["tier"], "", "tier"), "tier"),
        annotate=read_annotate(obj.get("annotate"), ""),
    )


def _tier(obj: dict[str, Any], path: str) -> RequestTier:
    check_keys(obj, TIER_FIELDS, ("name", "annotators", "cost"), path)
    name = obj["name"]
    where = child(path, "name")
    if type(name) is not str:
        fail(where, ErrorCode.WRONG_TYPE, f"expected a string, got {show(name)}")
    if name not in TIER_NAMES:
        fail(where, ErrorCode.OUT_OF_RANGE, f"{show(name)} is not one of {list(TIER_NAMES)}")
    return RequestTier(
        name=name,
        annotators=integer(obj["annotators"], path, "annotators", 1, MAX_ANNOTATORS),
        cost=number(obj["cost"], path, "cost", 0.0, MAX_COST),
        escalated_from=optional_text(obj.get("escalated_from"), path, "escalated_from",
                                     MAX_ID_LENGTH),
    )


def _reason(obj: dict[str, Any], path: str) -> SelectionReason:
    check_keys(obj, REASON_FIELDS, tuple(sorted(REASON_FIELDS - _OPTIONAL_REASON_FIELDS)), path)
    raw = array(obj["instances"], path, "instances", 0, MAX_PREDICTIONS)
    where = child(path, "instances")
    instances = tuple(
        text(i, where, n, MAX_ID_LENGTH)
        if type(i) is str
        else integer(i, where, n, 0, MAX_PREDICTIONS - 1)
        for n, i in enumerate(raw)
    )
    inclusion = obj["inclusion_probability"]
    if inclusion is not None:
        inclusion = number(inclusion, path, "inclusion_probability", 0.0, 1.0, low_open=True)
    return SelectionReason(
        strategy=text(obj["strategy"], path, "strategy", MAX_STRATEGY_LENGTH),
        score=number(obj["score"], path, "score", 0.0, 1.0),
        class_name=optional_text(obj["class"], path, "class", MAX_ID_LENGTH),
        threshold=optional_number(obj["threshold"], path, "threshold", 0.0, 1.0),
        instances=instances,
        inclusion_probability=inclusion,
        track=_track(obj.get("track"), path),
    )


def _track(raw: Any, parent: str) -> dict[str, Any] | None:
    """The optional `reason.track` object (schemas/annotation-request.schema.json)."""
    if raw is None:
        return None
    obj = mapping(raw, parent, "track")
    path = child(parent, "track")
    check_keys(obj, _TRACK_FIELDS, ("frames", "score", "signals", "track_id"), path)
    signals = array(obj["signals"], path, "signals", 0, len(TRACK_SIGNALS))
    for n, name in enumerate(signals):
        if name not in TRACK_SIGNALS:
            fail(child(child(path, "signals"), n), ErrorCode.OUT_OF_RANGE,
                 f"unknown signal {show(name)}")
    frames = array(obj["frames"], path, "frames", 1, MAX_PREDICTIONS)
    out: dict[str, Any] = {
        "track_id": text(obj["track_id"], path, "track_id", MAX_ID_LENGTH),
        "score": number(obj["score"], path, "score", 0.0, 1.0),
        "signals": list(signals),
        "frames": [text(f, child(path, "frames"), n, MAX_ID_LENGTH) for n, f in enumerate(frames)],
    }
    other = optional_text(obj.get("other_track_id"), path, "other_track_id", MAX_ID_LENGTH)
    if other is not None:
        out["other_track_id"] = other
    return out


def _source(obj: dict[str, Any], path: str) -> Source:
    check_keys(obj, SOURCE_FIELDS, ("topic", "partition", "offset"), path)
    return Source(
        topic=text(obj["topic"], path, "topic", MAX_TOPIC_LENGTH),
        partition=integer(obj["partition"], path, "partition", 0, MAX_PARTITION),
        offset=integer(obj["offset"], path, "offset", 0, MAX_OFFSET),
    )
