"""The hand-written decoder as it was before issue 19 item 1 declared it in services/contracts
(services/streaming/control_events.py at 464ace8), kept only so bench/decoders.py can measure
the declared decoders beside it and tests/contract/test_declared_decoders.py can prove they
judge every input alike. Not used by any service.

The label sink's outputs: retrain triggers (for the training pipeline) and class feedback (for
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
MAX_CHANGES = 1000
MASTERY_STATES = frozenset({"learning", "mastered", "reopened"})


class TriggerRule(StrEnum):
    """Which retrain rule fired (retrain-trigger `rule`)."""

    LABEL_COUNT = "label_count"
    CLASS_COVERAGE = "class_coverage"
    LABEL_AGE = "label_age"
    DISAGREEMENT = "disagreement"
    MANIFEST_FULL = "manifest_full"
    DRIFT = "drift"


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
    # Optional (docs/mastery.md): class -> state and the last changes, as plain JSON values.
    mastery: Mapping[str, Any] | None = None
    stopping: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in TRIGGER_REQUIRED}
        ranges = [_as_dict(r) for r in self.manifest.ranges]
        out.update(counts=dict(self.counts), rule=str(self.rule))
        out["manifest"] = {"topic": self.manifest.topic, "ranges": ranges}
        if self.mastery is not None:
            out["mastery"] = {"classes": dict(self.mastery["classes"]),
                              "changes": list(self.mastery["changes"])}
        if self.stopping is not None:
            out["stopping"] = {**self.stopping, "versions": list(self.stopping["versions"])}
        return out


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class ControlEstimate:
    """Control-arm estimates of one class (schemas/class-feedback.schema.json `control`)."""

    model_version: str
    labels: int
    accuracy: Interval | None
    agreement: Interval | None


@dataclass(frozen=True, slots=True)
class ClassStats:
    labels_total: int
    labels_since_trigger: int
    agreement: float | None
    weight: float
    # Optional (docs/mastery.md): mastery state, when it last changed, control-arm estimates.
    state: str | None = None
    state_changed_at: float | None = None
    control: ControlEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in CLASS_STATS_REQUIRED}
        if self.state is not None:
            out["state"] = self.state
        if self.state_changed_at is not None:
            out["state_changed_at"] = self.state_changed_at
        if self.control is not None:
            c = self.control
            out["control"] = {"model_version": c.model_version, "labels": c.labels,
                              "accuracy": None if c.accuracy is None else _as_dict(c.accuracy),
                              "agreement": None if c.agreement is None else _as_dict(c.agreement)}
        return out


class FeedbackKind(StrEnum):
    """What a class-feedback record is (`kind`; absent = feedback)."""

    FEEDBACK = "feedback"
    DRIFT = "drift"
    STABILITY = "stability"


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
class StabilityNotice:
    """The scorer's stability record (`stability`): on one input partition's probes, how many
    predicted classes `model_version` changed against `previous_version`."""

    model_version: str
    previous_version: str
    partition: int
    probes: int
    changed: int

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)


@dataclass(frozen=True, slots=True)
class ClassFeedback:
    schema_version: int
    model_id: str
    updated_at: float
    classes: Mapping[str, ClassStats]
    kind: FeedbackKind = FeedbackKind.FEEDBACK
    drift: DriftNotice | None = None
    stability: StabilityNotice | None = None

    def to_dict(self) -> dict[str, Any]:
        classes = {name: stats.to_dict() for name, stats in self.classes.items()}
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "model_id": self.model_id,
            "updated_at": self.updated_at,
            "classes": classes,
        }
        if self.kind is FeedbackKind.DRIFT and self.drift is not None:
            out.update(kind=str(self.kind), drift=self.drift.to_dict())
        if self.kind is FeedbackKind.STABILITY and self.stability is not None:
            out.update(kind=str(self.kind), stability=self.stability.to_dict())
        return out


def _as_dict(obj: Any) -> dict[str, Any]:
    """Fields of a flat slotted dataclass as a dict (dataclasses.asdict deep-copies; no need)."""
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def _fields(cls: type) -> frozenset[str]:
    return frozenset(cls.__dataclass_fields__)  # type: ignore[attr-defined]


TRIGGER_FIELDS = _fields(RetrainTrigger)
TRIGGER_REQUIRED = TRIGGER_FIELDS - {"mastery", "stopping"}
STOPPING_REQUIRED = frozenset({"stopped", "window", "min_gain", "versions"})
STOPPING_FIELDS = STOPPING_REQUIRED | {"stable"}
STABLE_FIELDS = frozenset({"stopped", "model_version", "probes", "changed", "share",
                           "partitions", "threshold", "min_probes"})
PLATEAU_REQUIRED = frozenset({"trigger_id", "model_version", "estimate", "labels"})
PLATEAU_FIELDS = PLATEAU_REQUIRED | {"low", "high"}
MASTERY_FIELDS = frozenset({"classes", "changes"})
CHANGE_FIELDS = frozenset({"seq", "class", "from", "to", "at", "model_version", "reason"})
MANIFEST_FIELDS = _fields(Manifest)
RANGE_FIELDS = _fields(OffsetRange)
FEEDBACK_FIELDS = _fields(ClassFeedback)
FEEDBACK_REQUIRED = FEEDBACK_FIELDS - {"kind", "drift", "stability"}
STABILITY_FIELDS = _fields(StabilityNotice)
DRIFT_FIELDS = (_fields(DriftNotice) - {"class_name"}) | {"class"}
CLASS_STATS_FIELDS = _fields(ClassStats)
CLASS_STATS_REQUIRED = CLASS_STATS_FIELDS - {"state", "state_changed_at", "control"}
CONTROL_FIELDS = _fields(ControlEstimate)
INTERVAL_FIELDS = _fields(Interval)


def decode_retrain_trigger(data: bytes) -> RetrainTrigger:
    """Decode and check one retrain trigger; raises `InvalidEvent` (only) for bad input."""
    obj = load_object(data, MAX_OUTPUT_EVENT_BYTES)
    check_version(obj, SCHEMA_VERSION)
    check_keys(obj, TRIGGER_FIELDS, tuple(sorted(TRIGGER_REQUIRED)), "")
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
        mastery=None if obj.get("mastery") is None else _mastery(obj["mastery"]),
        stopping=None if obj.get("stopping") is None else _stopping(obj["stopping"]),
    )


def _stopping(value: Any) -> Mapping[str, Any]:
    obj = mapping(value, "", "stopping")
    check_keys(obj, STOPPING_FIELDS, tuple(sorted(STOPPING_REQUIRED)), "stopping")
    if type(obj["stopped"]) is not bool:
        fail("stopping.stopped", ErrorCode.WRONG_TYPE,
             f"expected a boolean, got {show(obj['stopped'])}")
    versions = []
    for i, item in enumerate(array(obj["versions"], "stopping", "versions", 0, 1001)):
        where = f"stopping.versions[{i}]"
        if type(item) is not dict:
            fail(where, ErrorCode.WRONG_TYPE, f"expected an object, got {show(item)}")
        check_keys(item, PLATEAU_FIELDS, tuple(sorted(PLATEAU_REQUIRED)), where)
        versions.append({
            "trigger_id": text(item["trigger_id"], where, "trigger_id", MAX_ID_LENGTH),
            "model_version": text(item["model_version"], where, "model_version", MAX_ID_LENGTH),
            "estimate": optional_number(item["estimate"], where, "estimate", 0.0, 1.0),
            "labels": integer(item["labels"], where, "labels", 0, MAX_COUNT),
            "low": optional_number(item.get("low"), where, "low", 0.0, 1.0),
            "high": optional_number(item.get("high"), where, "high", 0.0, 1.0),
        })
    out = {
        "stopped": obj["stopped"],
        "window": integer(obj["window"], "stopping", "window", 0, 1000),
        "min_gain": number(obj["min_gain"], "stopping", "min_gain", 0.0, 1.0),
        "versions": tuple(versions),
    }
    if "stable" in obj:
        out["stable"] = _stable(mapping(obj["stable"], "stopping", "stable"), "stopping.stable")
    return MappingProxyType(out)


def _stable(obj: dict[str, Any], path: str) -> Mapping[str, Any]:
    """The stopping signal's stability branch (`stopping.stable`)."""
    check_keys(obj, STABLE_FIELDS, tuple(sorted(STABLE_FIELDS)), path)
    if type(obj["stopped"]) is not bool:
        fail(child(path, "stopped"), ErrorCode.WRONG_TYPE,
             f"expected a boolean, got {show(obj['stopped'])}")
    out = MappingProxyType({
        "stopped": obj["stopped"],
        "model_version": text(obj["model_version"], path, "model_version", MAX_ID_LENGTH),
        "probes": integer(obj["probes"], path, "probes", 0, MAX_COUNT),
        "changed": integer(obj["changed"], path, "changed", 0, MAX_COUNT),
        "share": number(obj["share"], path, "share", 0.0, 1.0),
        "partitions": integer(obj["partitions"], path, "partitions", 0, MAX_PARTITION + 1),
        "threshold": number(obj["threshold"], path, "threshold", 0.0, 1.0),
        "min_probes": integer(obj["min_probes"], path, "min_probes", 1, MAX_COUNT),
    })
    not_greater(obj, path, "changed", "probes")
    return out


def _state(value: Any, path: str, key: str) -> str:
    if type(value) is not str:
        fail(child(path, key), ErrorCode.WRONG_TYPE, f"expected a string, got {show(value)}")
    if value not in MASTERY_STATES:
        fail(child(path, key), ErrorCode.OUT_OF_RANGE,
             f"{show(value)} is not one of {sorted(MASTERY_STATES)}")
    return value


def _mastery(value: Any) -> Mapping[str, Any]:
    obj = mapping(value, "", "mastery")
    check_keys(obj, MASTERY_FIELDS, ("changes", "classes"), "mastery")
    classes = {}
    for name, state in mapping(obj["classes"], "mastery", "classes").items():
        class_key(name, "mastery.classes", MAX_ID_LENGTH)
        classes[name] = _state(state, "mastery.classes", name)
    changes = []
    for i, item in enumerate(array(obj["changes"], "mastery", "changes", 0, MAX_CHANGES)):
        where = f"mastery.changes[{i}]"
        if type(item) is not dict:
            fail(where, ErrorCode.WRONG_TYPE, f"expected an object, got {show(item)}")
        check_keys(item, CHANGE_FIELDS, tuple(sorted(CHANGE_FIELDS)), where)
        changes.append({
            "seq": integer(item["seq"], where, "seq", 1, MAX_COUNT),
            "class": class_name(item["class"], where, "class"),
            "from": _state(item["from"], where, "from"),
            "to": _state(item["to"], where, "to"),
            "at": number(item["at"], where, "at", 0.0, MAX_TIMESTAMP),
            "model_version": text(item["model_version"], where, "model_version", MAX_ID_LENGTH),
            "reason": text(item["reason"], where, "reason", MAX_DETAIL_LENGTH),
        })
    return MappingProxyType({"classes": MappingProxyType(classes), "changes": tuple(changes)})


def _interval(value: Any, path: str, key: str) -> Interval | None:
    if value is None:
        return None
    where = child(path, key)
    obj = mapping(value, path, key)
    check_keys(obj, INTERVAL_FIELDS, ("estimate", "high", "low"), where)
    return Interval(*(number(obj[k], where, k, 0.0, 1.0) for k in ("estimate", "low", "high")))


def _control(value: Any, path: str) -> ControlEstimate | None:
    if value is None:
        return None
    where = child(path, "control")
    obj = mapping(value, path, "control")
    check_keys(obj, CONTROL_FIELDS, tuple(sorted(CONTROL_FIELDS)), where)
    return ControlEstimate(
        model_version=text(obj["model_version"], where, "model_version", MAX_ID_LENGTH),
        labels=integer(obj["labels"], where, "labels", 0, MAX_COUNT),
        accuracy=_interval(obj["accuracy"], where, "accuracy"),
        agreement=_interval(obj["agreement"], where, "agreement"),
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
    kind, drift, stability = _kind(obj), None, None
    if kind is FeedbackKind.DRIFT:
        drift = _drift(mapping(obj["drift"], "", "drift"), "drift")
    if kind is FeedbackKind.STABILITY:
        stability = _stability(mapping(obj["stability"], "", "stability"), "stability")
    classes = {}
    for name, raw in mapping(obj["classes"], "", "classes").items():
        class_key(name, "classes", MAX_ID_LENGTH)
        where = child("classes", name)
        stats = mapping(raw, "classes", name)
        check_keys(stats, CLASS_STATS_FIELDS, tuple(sorted(CLASS_STATS_REQUIRED)), where)
        state = stats.get("state")
        classes[name] = ClassStats(
            labels_total=integer(stats["labels_total"], where, "labels_total", 0, MAX_COUNT),
            labels_since_trigger=integer(
                stats["labels_since_trigger"], where, "labels_since_trigger", 0, MAX_COUNT
            ),
            agreement=optional_number(stats["agreement"], where, "agreement", 0.0, 1.0),
            weight=number(stats["weight"], where, "weight", 0.0, float("inf"), low_open=True),
            state=None if state is None else _state(state, where, "state"),
            state_changed_at=optional_number(stats.get("state_changed_at"), where,
                                             "state_changed_at", 0.0, MAX_TIMESTAMP),
            control=_control(stats.get("control"), where),
        )
        not_greater(stats, where, "labels_since_trigger", "labels_total")
    return ClassFeedback(
        schema_version=SCHEMA_VERSION,
        model_id=text(obj["model_id"], "", "model_id", MAX_ID_LENGTH),
        updated_at=number(obj["updated_at"], "", "updated_at", 0.0, MAX_TIMESTAMP),
        classes=MappingProxyType(classes),
        kind=kind,
        drift=drift,
        stability=stability,
    )


_KINDS = frozenset(k.value for k in FeedbackKind)


def _kind(obj: dict[str, Any]) -> FeedbackKind:
    """The record's kind (absent: feedback); its payload field (`drift`, `stability`) present
    exactly when it is of that kind."""
    kind = obj.get("kind", FeedbackKind.FEEDBACK.value)
    if type(kind) is not str:
        fail("kind", ErrorCode.WRONG_TYPE, f"expected a string, got {show(kind)}")
    if kind not in _KINDS:
        fail("kind", ErrorCode.OUT_OF_RANGE, f"{show(kind)} is not one of {sorted(_KINDS)}")
    for own in (FeedbackKind.DRIFT, FeedbackKind.STABILITY):
        field_name = own.value  # each kind's payload field is named after it
        if kind == own and field_name not in obj:
            fail(field_name, ErrorCode.MISSING_FIELD, "required field is missing")
        if kind != own and field_name in obj:  # the payload belongs to its kind only
            if "kind" not in obj:
                fail("kind", ErrorCode.MISSING_FIELD, f"required with `{field_name}`")
            fail("kind", ErrorCode.OUT_OF_RANGE,
                 f"{show(kind)} with `{field_name}`: must be {field_name}")
    return FeedbackKind(kind)


def _stability(obj: dict[str, Any], path: str) -> StabilityNotice:
    check_keys(obj, STABILITY_FIELDS, tuple(sorted(STABILITY_FIELDS)), path)
    notice = StabilityNotice(
        model_version=text(obj["model_version"], path, "model_version", MAX_ID_LENGTH),
        previous_version=text(obj["previous_version"], path, "previous_version",
                              MAX_ID_LENGTH),
        partition=integer(obj["partition"], path, "partition", 0, MAX_PARTITION),
        probes=integer(obj["probes"], path, "probes", 1, MAX_COUNT),
        changed=integer(obj["changed"], path, "changed", 0, MAX_COUNT))
    not_greater(obj, path, "changed", "probes")
    return notice


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
