"""The label sink's outputs: retrain triggers (for the training pipeline) and class feedback (for
the scorer).

Contracts: schemas/retrain-trigger.schema.json and schemas/class-feedback.schema.json. The label
sink builds them as dicts (or via `to_dict()`) and writes them with `events.encode_event`; the
decoders are for consumers and agree with the schemas (tests/contract). Import from
`services.streaming.events`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from services.streaming.event_fields import (
    MAX_COUNT,
    MAX_ID_LENGTH,
    MAX_OFFSET,
    MAX_OUTPUT_EVENT_BYTES,
    MAX_PARTITION,
    MAX_TIMESTAMP,
    MAX_TOPIC_LENGTH,
    SCHEMA_VERSION,
    ErrorCode,
    array,
    check_keys,
    check_version,
    child,
    class_key,
    class_name,
    fail,
    integer,
    load_object,
    mapping,
    not_greater,
    number,
    optional_number,
    show,
    text,
)

MAX_DETAIL_LENGTH = 1024
MAX_RANGES = 100_000


class TriggerRule(StrEnum):
    """Which retrain rule fired (retrain-trigger `rule`)."""

    LABEL_COUNT = "label_count"
    CLASS_COVERAGE = "class_coverage"
    LABEL_AGE = "label_age"
    DISAGREEMENT = "disagreement"
    MANIFEST_FULL = "manifest_full"


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Half-open offset range [start_offset, end_offset) of one partition: every offset in it
    is a label record the trigger counted (a manifest may hold several per partition)."""

    partition: int
    start_offset: int
    end_offset: int


@dataclass(frozen=True, slots=True)
class Manifest:
    topic: str
    ranges: tuple[OffsetRange, ...]


@dataclass(frozen=True, slots=True)
class RetrainTrigger:
    schema_version: int
    trigger_id: str
    model_id: str
    rule: TriggerRule
    detail: str
    counts: Mapping[str, int]
    total: int
    triggered_at: float
    manifest: Manifest

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in TRIGGER_FIELDS}
        ranges = [_as_dict(r) for r in self.manifest.ranges]
        out.update(counts=dict(self.counts), rule=str(self.rule))
        out["manifest"] = {"topic": self.manifest.topic, "ranges": ranges}
        return out


@dataclass(frozen=True, slots=True)
class ClassStats:
    labels_total: int
    labels_since_trigger: int
    agreement: float | None
    weight: float


class FeedbackKind(StrEnum):
    """What a class-feedback record is (`kind`; absent = feedback)."""

    FEEDBACK = "feedback"
    DRIFT = "drift"


@dataclass(frozen=True, slots=True)
class DriftNotice:
    """The scorer's drift record (`drift`): one class's confidence distribution shifted."""

    class_name: str  # "class" on the wire
    model_version: str
    partition: int
    distance: float
    critical: float
    recent_count: int
    reference_count: int
    detected_at: float
    boost: float
    boost_until: float

    def to_dict(self) -> dict[str, Any]:
        out = _as_dict(self)
        out["class"] = out.pop("class_name")
        return out


@dataclass(frozen=True, slots=True)
class ClassFeedback:
    schema_version: int
    model_id: str
    updated_at: float
    classes: Mapping[str, ClassStats]
    kind: FeedbackKind = FeedbackKind.FEEDBACK
    drift: DriftNotice | None = None

    def to_dict(self) -> dict[str, Any]:
        classes = {name: _as_dict(stats) for name, stats in self.classes.items()}
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "model_id": self.model_id,
            "updated_at": self.updated_at,
            "classes": classes,
        }
        if self.kind is FeedbackKind.DRIFT and self.drift is not None:
            out.update(kind=str(self.kind), drift=self.drift.to_dict())
        return out


def _as_dict(obj: Any) -> dict[str, Any]:
    """Fields of a flat slotted dataclass as a dict (dataclasses.asdict deep-copies; no need)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def _fields(cls: type) -> frozenset[str]:
    return frozenset(cls.__dataclass_fields__)  # type: ignore[attr-defined]


TRIGGER_FIELDS = _fields(RetrainTrigger)
MANIFEST_FIELDS = _fields(Manifest)
RANGE_FIELDS = _fields(OffsetRange)
FEEDBACK_FIELDS = _fields(ClassFeedback)
FEEDBACK_REQUIRED = FEEDBACK_FIELDS - {"kind", "drift"}
DRIFT_FIELDS = (_fields(DriftNotice) - {"class_name"}) | {"class"}
CLASS_STATS_FIELDS = _fields(ClassStats)


def decode_retrain_trigger(data: bytes) -> RetrainTrigger:
    """Decode and check one retrain trigger; raises `InvalidEvent` (only) for bad input."""
    obj = load_object(data, MAX_OUTPUT_EVENT_BYTES)
    check_version(obj, SCHEMA_VERSION)
    check_keys(obj, TRIGGER_FIELDS, tuple(sorted(TRIGGER_FIELDS)), "")
    rule = obj["rule"]
    if type(rule) is not str:
        fail("rule", ErrorCode.WRONG_TYPE, f"expected a string, got {show(rule)}")
    if rule not in _RULES:
        fail("rule", ErrorCode.OUT_OF_RANGE, f"{show(rule)} is not one of {sorted(_RULES)}")
    counts = mapping(obj["counts"], "", "counts")
    for name, count in counts.items():
        class_key(name, "counts", MAX_ID_LENGTH)
        integer(count, "counts", name, 0, MAX_COUNT)
    return RetrainTrigger(
        schema_version=SCHEMA_VERSION,
        trigger_id=text(obj["trigger_id"], "", "trigger_id", MAX_ID_LENGTH),
        model_id=text(obj["model_id"], "", "model_id", MAX_ID_LENGTH),
        rule=TriggerRule(rule),
        detail=text(obj["detail"], "", "detail", MAX_DETAIL_LENGTH),
        counts=MappingProxyType({name: int(count) for name, count in counts.items()}),
        total=integer(obj["total"], "", "total", 0, MAX_COUNT),
        triggered_at=number(obj["triggered_at"], "", "triggered_at", 0.0, MAX_TIMESTAMP),
        manifest=_manifest(mapping(obj["manifest"], "", "manifest"), "manifest"),
    )


_RULES = frozenset(rule.value for rule in TriggerRule)


def _manifest(obj: dict[str, Any], path: str) -> Manifest:
    check_keys(obj, MANIFEST_FIELDS, ("topic", "ranges"), path)
    raw = array(obj["ranges"], path, "ranges", 1, MAX_RANGES)
    ranges = []
    for i, item in enumerate(raw):
        where = f"{child(path, 'ranges')}[{i}]"
        if type(item) is not dict:
            fail(where, ErrorCode.WRONG_TYPE, f"expected an object, got {show(item)}")
        check_keys(item, RANGE_FIELDS, ("partition", "start_offset", "end_offset"), where)
        partition = integer(item["partition"], where, "partition", 0, MAX_PARTITION)
        start = integer(item["start_offset"], where, "start_offset", 0, MAX_OFFSET)
        end = integer(item["end_offset"], where, "end_offset", 0, MAX_OFFSET)
        not_greater(item, where, "start_offset", "end_offset")
        ranges.append(OffsetRange(partition, start, end))
    return Manifest(topic=text(obj["topic"], path, "topic", MAX_TOPIC_LENGTH), ranges=tuple(ranges))


def decode_class_feedback(data: bytes) -> ClassFeedback:
    """Decode and check one class-feedback record; raises `InvalidEvent` (only) for bad input."""
    obj = load_object(data, MAX_OUTPUT_EVENT_BYTES)
    check_version(obj, SCHEMA_VERSION)
    check_keys(obj, FEEDBACK_FIELDS, tuple(sorted(FEEDBACK_REQUIRED)), "")
    kind, drift = _kind(obj), None
    if kind is FeedbackKind.DRIFT:
        drift = _drift(mapping(obj["drift"], "", "drift"), "drift")
    classes = {}
    for name, raw in mapping(obj["classes"], "", "classes").items():
        class_key(name, "classes", MAX_ID_LENGTH)
        where = child("classes", name)
        stats = mapping(raw, "classes", name)
        check_keys(stats, CLASS_STATS_FIELDS, tuple(sorted(CLASS_STATS_FIELDS)), where)
        classes[name] = ClassStats(
            labels_total=integer(stats["labels_total"], where, "labels_total", 0, MAX_COUNT),
            labels_since_trigger=integer(
                stats["labels_since_trigger"], where, "labels_since_trigger", 0, MAX_COUNT
            ),
            agreement=optional_number(stats["agreement"], where, "agreement", 0.0, 1.0),
            weight=number(stats["weight"], where, "weight", 0.0, float("inf"), low_open=True),
        )
        not_greater(stats, where, "labels_since_trigger", "labels_total")
    return ClassFeedback(
        schema_version=SCHEMA_VERSION,
        model_id=text(obj["model_id"], "", "model_id", MAX_ID_LENGTH),
        updated_at=number(obj["updated_at"], "", "updated_at", 0.0, MAX_TIMESTAMP),
        classes=MappingProxyType(classes),
        kind=kind,
        drift=drift,
    )


_KINDS = frozenset(k.value for k in FeedbackKind)


def _kind(obj: dict[str, Any]) -> FeedbackKind:
    """The record's kind (absent: feedback); `drift` present exactly when it is drift."""
    kind = obj.get("kind", FeedbackKind.FEEDBACK.value)
    if type(kind) is not str:
        fail("kind", ErrorCode.WRONG_TYPE, f"expected a string, got {show(kind)}")
    if kind not in _KINDS:
        fail("kind", ErrorCode.OUT_OF_RANGE, f"{show(kind)} is not one of {sorted(_KINDS)}")
    if kind == FeedbackKind.DRIFT and "drift" not in obj:
        fail("drift", ErrorCode.MISSING_FIELD, "required field is missing")
    if kind != FeedbackKind.DRIFT and "drift" in obj:  # `drift` belongs to kind drift only
        if "kind" not in obj:
            fail("kind", ErrorCode.MISSING_FIELD, "required with `drift`")
        fail("kind", ErrorCode.OUT_OF_RANGE, f"{show(kind)} with `drift`: must be drift")
    return FeedbackKind(kind)


def _drift(obj: dict[str, Any], path: str) -> DriftNotice:
    check_keys(obj, DRIFT_FIELDS, tuple(sorted(DRIFT_FIELDS)), path)

    def num(key: str, low: float, high: float) -> float:
        return number(obj[key], path, key, low, high)

    def count(key: str) -> int:
        return integer(obj[key], path, key, 0, MAX_COUNT)

    return DriftNotice(
        class_name=class_name(obj["class"], path, "class"),
        model_version=text(obj["model_version"], path, "model_version", MAX_ID_LENGTH),
        partition=integer(obj["partition"], path, "partition", 0, MAX_PARTITION),
        distance=num("distance", 0.0, 1.0), critical=num("critical", 0.0, 1000.0),
        recent_count=count("recent_count"), reference_count=count("reference_count"),
        detected_at=num("detected_at", 0.0, MAX_TIMESTAMP), boost=num("boost", 1.0, 10.0),
        boost_until=num("boost_until", 0.0, 2 * MAX_TIMESTAMP))
