"""The class-feedback record, declared once: its typed form (`ClassFeedback`, `ClassStats`,
`ControlEstimate`, `Interval`, and the scorer's `DriftNotice` / `StabilityNotice` payloads) and
its fields and limits (`CLASS_FEEDBACK`). schemas/class-feedback.schema.json is generated from
it; `CLASS_FEEDBACK.decode` is the decoder (`services.streaming.events.decode_class_feedback`)
and `CLASS_FEEDBACK.encode` the encoder.

`kind` says what a record is (`Variants`): the label sink's view (`feedback`, the default and
never written), or the scorer's `drift` or `stability` record, whose payload field is required
with that kind and allowed with no other. `DriftNotice` is the one wire form of a drift: the
core's `DriftEvent` (services/core) maps to it field by field, see `DriftNotice`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.contracts.inference import (
    CLASS_NAME,
    EPOCH_SECONDS,
    ID,
    PROBABILITY,
    VERSION,
)
from services.contracts.typed import compiled_init
from services.contracts.vocabulary import (
    Choice,
    ClassMap,
    Event,
    Field,
    Integer,
    Number,
    Record,
    Shared,
    Variants,
)
from services.streaming.event_fields import (
    MAX_COUNT,
    MAX_ID_LENGTH,
    MAX_OUTPUT_EVENT_BYTES,
    MAX_PARTITION,
    MAX_TIMESTAMP,
)

MASTERY_STATES = frozenset({"learning", "mastered", "reopened"})
_STATES = ("learning", "mastered", "reopened")


class FeedbackKind(StrEnum):
    """What a class-feedback record is (`kind`; absent = feedback)."""

    FEEDBACK = "feedback"
    DRIFT = "drift"
    STABILITY = "stability"


@compiled_init
@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    low: float
    high: float


@compiled_init
@dataclass(frozen=True, slots=True)
class ControlEstimate:
    """Control-arm estimates of one class (schemas/class-feedback.schema.json `control`)."""

    model_version: str
    labels: int
    accuracy: Interval | None
    agreement: Interval | None


@compiled_init
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
        return CLASS_STATS.kind.to_json(self)  # type: ignore[no-any-return]


@compiled_init
@dataclass(frozen=True, slots=True)
class DriftNotice:
    """The scorer's drift record (`drift`): one class's confidence distribution shifted.

    The one wire form of a drift. The core's `services.core.drift.DriftEvent` maps to it as the
    scorer's `build_drift_record` does: class_name, model_version, recent_count,
    reference_count, detected_at and boost as they are; `partition` is the input partition
    (the core's event does not know it); `distance` clamped to [0, 1], `critical` to at most
    1000 and `boost_until` to at most 2e10 (the contract's bounds); its model_id becomes the
    record's `model_id` and its detected_at the record's `updated_at`."""

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
        return DRIFT.kind.to_json(self)  # type: ignore[no-any-return]


@compiled_init
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
        return STABILITY.kind.to_json(self)  # type: ignore[no-any-return]


@compiled_init
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
        """The contract's JSON object (what `CLASS_FEEDBACK.encode` writes)."""
        return CLASS_FEEDBACK.to_json(self)


OWNER = "class-feedback"
_COUNT = Integer(0, MAX_COUNT)
_PARTITION = Integer(0, MAX_PARTITION)

MASTERY_STATE = Shared("mastery_state", Choice(_STATES), OWNER, "A class's mastery state.")

DRIFT = Shared("drift", Record((
    Field("class", CLASS_NAME, "The drifting class.", attr="class_name"),
    Field("model_version", ID, "The model version whose confidences shifted."),
    Field("partition", _PARTITION, "Input partition whose scorer saw it, integer in "
          "[0, 2^31-1]."),
    Field("distance", Number(0.0, 1.0), "KS distance between the recent and the reference "
          "windows, in [0, 1]."),
    Field("critical", Number(0.0, 1000.0), "The critical distance it exceeded (it depends on "
          "alpha and the window sizes), in [0, 1000]."),
    Field("recent_count", _COUNT, "Confidences in the recent window, integer in [0, 2^63-1]."),
    Field("reference_count", _COUNT, "Confidences in the reference window, integer in "
          "[0, 2^63-1]."),
    Field("detected_at", EPOCH_SECONDS, "Event time (the partition's watermark) of the "
          "detection, Unix epoch seconds in [0, 1e10]."),
    Field("boost", Number(1.0, 10.0), "Weight multiplier the scorer gives the class while it "
          "drifts, in [1, 10] (1: reported only)."),
    Field("boost_until", Number(0.0, 2 * MAX_TIMESTAMP), "Event time the boost runs to unless "
          "the class drifts again, Unix epoch seconds in [0, 2e10]."),
), cls=DriftNotice, required_order=(
    "boost", "boost_until", "class", "critical", "detected_at", "distance", "model_version",
    "partition", "recent_count", "reference_count")), OWNER,
    "A class whose confidence distribution shifted: a two-window Kolmogorov-Smirnov test on the "
    "scorer's rolling histograms (docs/drift.md).")

STABILITY = Shared("stability", Record((
    Field("model_version", ID, "The new model version."),
    Field("previous_version", ID, "The version it was compared with: the one before it in the "
          "partition's probes."),
    Field("partition", _PARTITION, "Input partition whose scorer compared them, integer in "
          "[0, 2^31-1]."),
    Field("probes", Integer(1, MAX_COUNT), "Probe assets both versions scored, integer in "
          "[1, 2^63-1]."),
    Field("changed", _COUNT, "Of those, the probes whose predicted class changed, integer in "
          "[0, 2^63-1]."),
), cls=StabilityNotice, less_or_equal=("changed", "probes"),
    required_order=("changed", "model_version", "partition", "previous_version", "probes")),
    OWNER,
    "One model version's comparison with the version before it on the probes of one input "
    "partition: the stopping signal's prediction-stability branch (docs/mastery.md). "
    "changed <= probes (x-less-or-equal).")

INTERVAL = Shared("interval", Record((
    Field("estimate", PROBABILITY, "The point estimate, in [0, 1]."),
    Field("low", PROBABILITY, "Lower bound of the interval, in [0, 1]."),
    Field("high", PROBABILITY, "Upper bound of the interval, in [0, 1]."),
), cls=Interval, nullable=True, required_order=("estimate", "high", "low")), OWNER,
    "An estimated rate and its confidence interval, each in [0, 1]; null before any.")

CONTROL = Shared("control", Record((
    Field("model_version", ID, "The model version the estimates are about (the newest seen in "
          "a control-arm label); 1-256 characters."),
    Field("labels", _COUNT, "Control-arm annotations of this (human) class counted for that "
          "version, integer in [0, 2^63-1]."),
    Field("accuracy", INTERVAL, "Share of the stream's annotations of this class the model got "
          "right (its recall), with its interval; null before any."),
    Field("agreement", INTERVAL, "Share of the stream's predictions of this class the humans "
          "confirmed (its precision), with its interval; null before any."),
), cls=ControlEstimate, nullable=True,
    required_order=("accuracy", "agreement", "labels", "model_version")), OWNER,
    "Control-arm estimates of one class: Hajek ratios with Wilson intervals at the effective "
    "sample size (docs/mastery.md); null before any.")

CLASS_STATS = Shared("class_stats", Record((
    Field("labels_total", _COUNT, "Annotations with this class ever received, integer in "
          "[0, 2^63-1]."),
    Field("labels_since_trigger", _COUNT, "Annotations with this class since the model's last "
          "retrain trigger, integer in [0, labels_total]."),
    Field("agreement", Number(0.0, 1.0, nullable=True), "Share in [0, 1] of recent human "
          "annotations of this class on which the model's prediction agreed with the human; "
          "null until there is an answered request to compare."),
    Field("weight", Number(0.0, exclusive_minimum=True), "Budget multiplier for this class in "
          "the scorer's selection, > 0 (1 = neutral, > 1 = spend more on this class)."),
    Field("state", Choice(_STATES, nullable=True), "Mastery of this class, judged on the random "
          "control arm's labels (docs/mastery.md): `learning`, `mastered` (the scorer then "
          "gives it only the exploration share: its `weight` is the small mastered weight) or "
          "`reopened`; absent or null before the class's first control-arm label.",
          required=False),
    Field("state_changed_at", Number(0.0, MAX_TIMESTAMP, nullable=True), "Event time "
          "(`labeled_at`) of the label that last changed `state`, Unix epoch seconds in "
          "[0, 1e10]; absent or null while the class never changed state.", required=False),
    Field("control", CONTROL, "Estimates on the whole stream from control-arm labels only "
          "(weighted by 1/inclusion probability), for the model's newest version; absent or "
          "null before any.", required=False),
), cls=ClassStats, less_or_equal=("labels_since_trigger", "labels_total"),
    required_order=("agreement", "labels_since_trigger", "labels_total", "weight")), OWNER,
    "What the humans said about one class. labels_since_trigger <= labels_total "
    "(x-less-or-equal).")

_KINDS = tuple(k.value for k in FeedbackKind)

CLASS_FEEDBACK = Event(
    name=OWNER,
    title="Class feedback",
    description=(
        "The label sink's per-class view of one model, produced to the compacted topic "
        "al.class-feedback.v1 keyed by model_id (the latest record per model is the current "
        "view). The scorer uses `weight` to spend more budget on classes the model is still "
        "bad at. Beyond what JSON Schema can say: the UTF-8 JSON payload is at most "
        "`x-max-bytes` bytes, and per class labels_since_trigger <= labels_total "
        "(x-less-or-equal). A record with kind `drift` is the scorer's: one class's "
        "confidence distribution shifted (see `drift`); it is keyed by `drift`, model_id, "
        "class and input partition joined by U+001F, so compaction keeps the sink's view at "
        "`model_id`, and its `classes` is empty. A record with kind `stability` is the "
        "scorer's too: how many of one input partition's probes (a fixed sample the model "
        "service re-scores with each model version) a new version predicted another class for "
        "(see `stability`); it is keyed by `stability`, model_id and input partition joined by "
        "U+001F, and its `classes` is empty."),
    max_bytes=MAX_OUTPUT_EVENT_BYTES,
    record=Record((
        VERSION,
        Field("model_id", ID, "The model this feedback is about; also the Kafka key. "
              f"1-{MAX_ID_LENGTH} characters."),
        Field("updated_at", EPOCH_SECONDS, "Event time of the newest label reflected here (its "
              "`labeled_at`), Unix epoch seconds in [0, 1e10]."),
        Field("classes", ClassMap(CLASS_NAME, CLASS_STATS), "Class name -> statistics, for "
              "every class the sink has seen labels for. Classes not listed get weight 1."),
        Field("kind", Choice(_KINDS, convert=FeedbackKind, absent=FeedbackKind.FEEDBACK),
              "What this record is: `feedback` (the label sink's view; the default when "
              "absent) or `drift` (the scorer saw one class's confidence distribution shift; "
              "`drift` is then required, and only then allowed) or `stability` (the scorer "
              "compared a new model version's predictions on its probes with the previous "
              "version's; `stability` is then required, and only then allowed).",
              required=False),
        Field("drift", DRIFT, "Present exactly when kind is drift.", required=False),
        Field("stability", STABILITY, "Present exactly when kind is stability.",
              required=False),
    ), cls=ClassFeedback,
        variants=Variants("kind", FeedbackKind.FEEDBACK.value, ("drift", "stability"), _KINDS),
        required_order=("classes", "model_id", "schema_version", "updated_at"),
        check_first=("kind", "drift", "stability", "classes")),
    defs=(DRIFT, STABILITY, CLASS_STATS, CONTROL, INTERVAL, MASTERY_STATE),
)

FEEDBACK_FIELDS = CLASS_FEEDBACK.record.names
FEEDBACK_REQUIRED = frozenset(CLASS_FEEDBACK.record.required)
DRIFT_FIELDS = DRIFT.kind.names  # type: ignore[attr-defined]
STABILITY_FIELDS = STABILITY.kind.names  # type: ignore[attr-defined]
CLASS_STATS_FIELDS = CLASS_STATS.kind.names  # type: ignore[attr-defined]
CLASS_STATS_REQUIRED = frozenset(CLASS_STATS.kind.required)  # type: ignore[attr-defined]
CONTROL_FIELDS = CONTROL.kind.names  # type: ignore[attr-defined]
INTERVAL_FIELDS = INTERVAL.kind.names  # type: ignore[attr-defined]
