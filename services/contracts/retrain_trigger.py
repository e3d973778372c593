"""The retrain trigger, declared once: its typed form (`RetrainTrigger`, `Manifest`,
`OffsetRange`, `TriggerRule`) and its fields and limits (`RETRAIN_TRIGGER`; `mastery` and
`stopping` decoded into plain dicts). schemas/retrain-trigger.schema.json is generated from it;
`RETRAIN_TRIGGER.decode` is the decoder (`services.streaming.events.decode_retrain_trigger`) and
`RETRAIN_TRIGGER.encode` the encoder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.contracts.class_feedback import MASTERY_STATE
from services.contracts.inference import CLASS_NAME, EPOCH_SECONDS, ID, PROBABILITY, VERSION
from services.contracts.typed import compiled_init
from services.contracts.vocabulary import (
    Array,
    Bool,
    Choice,
    ClassMap,
    Event,
    Field,
    Integer,
    Number,
    Record,
    Shared,
    Text,
)
from services.streaming.event_fields import (
    MAX_COUNT,
    MAX_OFFSET,
    MAX_OUTPUT_EVENT_BYTES,
    MAX_PARTITION,
    MAX_TOPIC_LENGTH,
)

MAX_DETAIL_LENGTH = 1024
MAX_RANGES = 100_000
MAX_CHANGES = 1000
MAX_WINDOW = 1000


class TriggerRule(StrEnum):
    """Which retrain rule fired (retrain-trigger `rule`)."""

    LABEL_COUNT = "label_count"
    CLASS_COVERAGE = "class_coverage"
    LABEL_AGE = "label_age"
    DISAGREEMENT = "disagreement"
    MANIFEST_FULL = "manifest_full"
    DRIFT = "drift"


@compiled_init
@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Half-open offset range [start_offset, end_offset) of one partition: every offset in it
    is a label record the trigger counted (a manifest may hold several per partition)."""

    partition: int
    start_offset: int
    end_offset: int


@compiled_init
@dataclass(frozen=True, slots=True)
class Manifest:
    topic: str
    ranges: tuple[OffsetRange, ...]


@compiled_init
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
    # Optional (docs/mastery.md): class -> state and the last changes, and the stopping signal,
    # as plain JSON objects (`MASTERY`, `STOPPING` say what they hold).
    mastery: Mapping[str, Any] | None = None
    stopping: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object (what `RETRAIN_TRIGGER.encode` writes)."""
        return RETRAIN_TRIGGER.to_json(self)


OWNER = "retrain-trigger"
_COUNT = Integer(0, MAX_COUNT)
_OFFSET = Integer(0, MAX_OFFSET)

RANGE = Shared("range", Record((
    Field("partition", Integer(0, MAX_PARTITION), "Partition number, >= 0."),
    Field("start_offset", _OFFSET, "First offset included, >= 0."),
    Field("end_offset", _OFFSET, "First offset NOT included (exclusive end), >= start_offset."),
), cls=OffsetRange, less_or_equal=("start_offset", "end_offset")), OWNER,
    "Half-open offset range [start_offset, end_offset) of one partition: start_offset is "
    "included, end_offset is excluded (it is the next offset to read), start_offset <= "
    "end_offset.")

MANIFEST = Shared("manifest", Record((
    Field("topic", Text(MAX_TOPIC_LENGTH), "The label topic, e.g. al.labels.v1; "
          f"1-{MAX_TOPIC_LENGTH} characters."),
    Field("ranges", Array(RANGE, 1, MAX_RANGES), "Sorted by partition then offset, disjoint "
          "and not adjacent; a partition has several ranges where records the trigger did not "
          "count (other models' labels, duplicates, invalid labels, labels of another trigger) "
          "sit between its labels; partitions without new labels are omitted; "
          f"1-{MAX_RANGES} entries (the label sink writes at most 8,000)."),
), cls=Manifest, check_first=("ranges",)), OWNER,
    "Exactly which label records this trigger counted, so a trainer can fetch them from Kafka: "
    "every offset inside a range is one of them and every one of them is inside a range; no "
    "offset is in the manifests of two triggers of a model; the labels read there number "
    "`total` and hold `counts` annotations per class.")

CHANGE = Shared("change", Record((
    Field("seq", Integer(1, MAX_COUNT), "Number of this change among the model's changes (1, 2, "
          "...), integer in [1, 2^63-1]."),
    Field("class", CLASS_NAME, "The class.", attr="class_name"),
    Field("from", MASTERY_STATE, "The state before.", attr="from_"),
    Field("to", MASTERY_STATE, "The state after."),
    Field("at", EPOCH_SECONDS, "Event time of the label (or drift record) that caused it, Unix "
          "epoch seconds in [0, 1e10]."),
    Field("model_version", ID, "The model version whose labels were the evidence; 1-256 "
          "characters."),
    Field("reason", Text(MAX_DETAIL_LENGTH), "Which bound moved, in words; "
          f"1-{MAX_DETAIL_LENGTH} characters."),
), plain=True, required_order=("at", "class", "from", "model_version", "reason", "seq", "to")),
    OWNER, "One change of a class's mastery state.")

MASTERY = Shared("mastery", Record((
    Field("classes", ClassMap(CLASS_NAME, MASTERY_STATE), "Class name -> state."),
    Field("changes", Array(CHANGE, 0, MAX_CHANGES), "The model's last changes of state (at most "
          f"{MAX_CHANGES}), oldest first; `seq` numbers them, so a reader dedupes across "
          "triggers."),
), plain=True, nullable=True, required_order=("changes", "classes")), OWNER,
    "Every judged class's state and the model's last changes of state; null like absent.")

PLATEAU = Shared("plateau", Record((
    Field("trigger_id", ID, "The trigger it was recorded at; 1-256 characters."),
    Field("model_version", ID, "The model version; 1-256 characters."),
    Field("estimate", Number(0.0, 1.0, nullable=True), "Hajek estimate of its accuracy over all "
          "classes, in [0, 1]; null without control labels."),
    Field("labels", _COUNT, "Control-arm annotations it rests on, integer in [0, 2^63-1]."),
    Field("low", Number(0.0, 1.0, nullable=True), "Lower bound of the estimate's Wilson "
          "interval at the sink's MASTERY_CONFIDENCE, in [0, 1]; null or absent without control "
          "labels (absent from sinks before it was added).", required=False),
    Field("high", Number(0.0, 1.0, nullable=True), "Upper bound of that interval, in [0, 1]; "
          "null or absent without control labels.", required=False),
), plain=True, keep_absent=True,
    required_order=("estimate", "labels", "model_version", "trigger_id")), OWNER,
    "One model version's overall control-arm accuracy at its latest trigger (an absent `low` "
    "or `high` decodes as null).")

STABLE = Shared("stable", Record((
    Field("stopped", Bool(), "True when at least `min_probes` probes were compared and `share` "
          "is below `threshold`."),
    Field("model_version", ID, "The newest model version compared; 1-256 characters."),
    Field("probes", _COUNT, "Probes compared, integer in [0, 2^63-1]."),
    Field("changed", _COUNT, "Of those, probes whose predicted class changed, integer in "
          "[0, 2^63-1]."),
    Field("share", PROBABILITY, "changed / probes (1 without probes), in [0, 1]."),
    Field("partitions", Integer(0, MAX_PARTITION + 1), "Input partitions whose records were "
          "summed, integer in [0, 2^31]."),
    Field("threshold", PROBABILITY, "The sink's MASTERY_STABLE_THRESHOLD, in [0, 1]."),
    Field("min_probes", Integer(1, MAX_COUNT), "The sink's MASTERY_STABLE_MIN_PROBES, integer "
          "in [1, 2^63-1]."),
), plain=True, less_or_equal=("changed", "probes"), required_order=(
    "changed", "min_probes", "model_version", "partitions", "probes", "share", "stopped",
    "threshold")), OWNER,
    "The stopping signal's prediction-stability branch: the scorer's latest stability record "
    "per input partition, summed over the partitions that compared the newest model version "
    "with the one before it (docs/mastery.md). changed <= probes (x-less-or-equal).")

STOPPING = Shared("stopping", Record((
    Field("stopped", Bool(), "True when the signal is raised: by either branch."),
    Field("window", Integer(0, MAX_WINDOW), "Model versions in a row without gain that raise it "
          f"(0 = the signal is off), integer in [0, {MAX_WINDOW}]."),
    Field("min_gain", PROBABILITY, "Least accuracy gain that counts, in [0, 1]."),
    Field("versions", Array(PLATEAU, 0, MAX_WINDOW + 1), "The last window + 1 model versions' "
          "overall control-arm accuracy at their latest trigger, oldest first; "
          f"0-{MAX_WINDOW + 1} entries."),
    Field("stable", STABLE, "The stability branch, once the scorer published a stability "
          "record for the model; absent before.", required=False),
), plain=True, nullable=True, check_first=("stopped", "versions"),
    required_order=("min_gain", "stopped", "versions", "window")), OWNER,
    "Stopping signal: raised when none of the last `window` model versions beat the "
    "control-arm accuracy of the version before them by `min_gain` (the control-arm branch), "
    "or when the newest version changed the predicted class of too few probes (the stability "
    "branch, `stable`); null like absent.")

RETRAIN_TRIGGER = Event(
    name=OWNER,
    title="Retrain trigger",
    description=(
        "The label sink's signal that a model should be retrained, produced to "
        "al.retrain-triggers.v1 and keyed by model_id. Carries a manifest of exactly which "
        "label records to train on. Beyond what JSON Schema can say: the UTF-8 JSON payload is "
        "at most `x-max-bytes` bytes, and in every manifest range start_offset <= end_offset "
        "(x-less-or-equal)."),
    max_bytes=MAX_OUTPUT_EVENT_BYTES,
    record=Record((
        VERSION,
        Field("trigger_id", ID, "Deterministic id: the same model and manifest always give the "
              "same trigger_id, so a trainer can ignore a replayed trigger; 1-256 characters."),
        Field("model_id", ID, "Model to retrain; 1-256 characters."),
        Field("rule", Choice(tuple(r.value for r in TriggerRule), convert=TriggerRule),
              "Which trigger rule fired: `label_count` (enough new labels), `class_coverage` "
              "(enough labels for every watched class), `label_age` (oldest unused label too "
              "old), `disagreement` (human-model agreement dropped), `manifest_full` (the "
              "manifest reached its 8,000 ranges: a trigger's size stays bounded whatever the "
              "other rules and the cooldown say), `drift` (the scorer reported a drift of a "
              "mastered class's confidences and the class was reopened: the labels since the "
              "previous trigger, at least one, go to training at once; docs/mastery.md)."),
        Field("detail", Text(MAX_DETAIL_LENGTH), "Human-readable explanation of the rule's "
              "decision with the numbers it compared, for logs and dashboards; "
              f"1-{MAX_DETAIL_LENGTH} characters. Not for machines."),
        Field("counts", ClassMap(CLASS_NAME, _COUNT), "Per class: number of annotations with "
              "that class among the labels in the manifest (since the previous trigger); class "
              "name -> integer in [0, 2^63-1]."),
        Field("total", _COUNT, "Number of label records in the manifest (since the previous "
              "trigger), integer in [0, 2^63-1]. A label with several annotations counts once "
              "here and once per annotation in `counts`."),
        Field("triggered_at", EPOCH_SECONDS, "Event time of the decision: the `labeled_at` of "
              "the label that made the rule fire, Unix epoch seconds in [0, 1e10] (not "
              "wall-clock, so a replay is byte-identical)."),
        Field("manifest", MANIFEST, "The label topic and the half-open offset ranges "
              "[start_offset, end_offset) holding exactly the label records this trigger "
              "counted."),
        Field("mastery", MASTERY, "Mastery of the model's classes when the trigger fired "
              "(docs/mastery.md); absent or null before the model's first control-arm label.",
              required=False),
        Field("stopping", STOPPING, "The stopping signal when the trigger fired "
              "(docs/mastery.md): whether labels have stopped paying, judged on the "
              "control-arm accuracy of the last model versions and on how many probes the "
              "newest version changed; absent or null before the model's first control-arm "
              "label or stability record.", required=False),
    ), cls=RetrainTrigger, check_first=("rule", "counts"), required_order=(
        "counts", "detail", "manifest", "model_id", "rule", "schema_version", "total",
        "trigger_id", "triggered_at")),
    defs=(MANIFEST, RANGE, MASTERY, STOPPING, STABLE, PLATEAU, CHANGE),
)

TRIGGER_FIELDS = RETRAIN_TRIGGER.record.names
TRIGGER_REQUIRED = frozenset(RETRAIN_TRIGGER.record.required)
MANIFEST_FIELDS = MANIFEST.kind.names  # type: ignore[attr-defined]
RANGE_FIELDS = RANGE.kind.names  # type: ignore[attr-defined]
MASTERY_FIELDS = MASTERY.kind.names  # type: ignore[attr-defined]
CHANGE_FIELDS = CHANGE.kind.names  # type: ignore[attr-defined]
STOPPING_FIELDS = STOPPING.kind.names  # type: ignore[attr-defined]
STOPPING_REQUIRED = frozenset(STOPPING.kind.required)  # type: ignore[attr-defined]
STABLE_FIELDS = STABLE.kind.names  # type: ignore[attr-defined]
PLATEAU_FIELDS = PLATEAU.kind.names  # type: ignore[attr-defined]
PLATEAU_REQUIRED = frozenset(PLATEAU.kind.required)  # type: ignore[attr-defined]
