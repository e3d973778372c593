"""The annotation request, declared once: its typed form (`AnnotationRequest`, `SelectionReason`,
`RequestTier`, `Source`) and its fields and limits (`ANNOTATION_REQUEST`, with the `reason.track`
and `annotate` parts decoded into plain dicts). schemas/annotation-request.schema.json is
generated from it; `ANNOTATION_REQUEST.decode` is the decoder
(`services.streaming.events.decode_annotation_request`) and `ANNOTATION_REQUEST.encode` the
encoder (deterministic bytes, an optional field left out when it holds None)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.contracts.inference import (
    BBOX,
    CLASS_NAME,
    EPOCH_SECONDS,
    ID,
    OPTIONAL_ID,
    OPTIONAL_URI,
    PREDICTION,
    Prediction,
)
from services.contracts.typed import compiled_init
from services.contracts.vocabulary import (
    Array,
    Choice,
    Event,
    Field,
    IdOrIndex,
    Integer,
    Number,
    Record,
    Shared,
    Text,
    Version,
)
from services.streaming.event_fields import (
    MAX_ID_LENGTH,
    MAX_OFFSET,
    MAX_OUTPUT_EVENT_BYTES,
    MAX_PARTITION,
    MAX_PREDICTIONS,
    MAX_TOPIC_LENGTH,
    MAX_URI_LENGTH,
    SCHEMA_VERSION,
)

MAX_STRATEGY_LENGTH = 64
TIER_NAMES: tuple[str, ...] = ("review", "annotate", "consensus", "expert")
"""The labeling tiers (services/core/tiers.py TIERS; equal, checked by a unit test)."""
MAX_ANNOTATORS = 9
MAX_COST = 1e9
TRACK_SIGNALS: tuple[str, ...] = ("class_flip", "confidence_collapse", "identity_switch",
                                  "crossing")


@compiled_init
@dataclass(frozen=True, slots=True)
class Source:
    """Kafka coordinates of a consumed record."""

    topic: str
    partition: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return SOURCE.kind.to_json(self)  # type: ignore[no-any-return]


@compiled_init
@dataclass(frozen=True, slots=True)
class SelectionReason:
    """Why the scorer selected an asset. `class_name` is the JSON field `class`. `track`: the
    track instability that drove it (core/tracks.py), its JSON object as a plain dict."""

    strategy: str
    score: float
    class_name: str | None
    threshold: float | None
    instances: tuple[int | str, ...]
    inclusion_probability: float | None
    track: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return REASON.kind.to_json(self)  # type: ignore[no-any-return]


@compiled_init
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
        return TIER.kind.to_json(self)  # type: ignore[no-any-return]


@compiled_init
@dataclass(frozen=True, slots=True)
class AnnotationRequest:
    """A decoded (or to-be-encoded) annotation request. `annotate`: the instance-level request
    (core/instances.py), its JSON object as a plain dict."""

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
    annotate: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON object (what `ANNOTATION_REQUEST.encode` writes)."""
        return ANNOTATION_REQUEST.to_json(self)


OWNER = "annotation-request"
_IDS = f"1-{MAX_ID_LENGTH} characters"
_INDEX = Integer(0, MAX_PREDICTIONS - 1)

TIER = Shared("tier", Record((
    Field("name", Choice(TIER_NAMES, listed=TIER_NAMES), "`review` (confirm or correct the "
          "pre-label), `annotate` (full annotation), `consensus` (`annotators` independent "
          "annotations, decided by agreement) or `expert` (a referee after a consensus "
          "disagreed)."),
    Field("annotators", Integer(1, MAX_ANNOTATORS), "Independent labels wanted: k for "
          f"consensus, else 1; in [1, {MAX_ANNOTATORS}]."),
    Field("cost", Number(0.0, MAX_COST), "Cost units the whole request spends (all its labels), "
          "in [0, 1e9]."),
    Field("escalated_from", OPTIONAL_ID, "For an `expert` request: the request_id of the "
          f"consensus request it referees ({_IDS}); absent or null otherwise.", required=False),
), cls=RequestTier, nullable=True), OWNER,
    "Which kind of human work the request asks for, and its cost; null means no tier, like "
    "absent.")

TRACK = Record((
    Field("track_id", ID, "The track whose frames drove the selection."),
    Field("score", Number(0.0, 1.0), "Instability score in [0, 1] (the largest signal)."),
    Field("signals", Array(Choice(TRACK_SIGNALS, unknown="signal"), 0, len(TRACK_SIGNALS)),
          "The signals that fired, at most one of each."),
    Field("frames", Array(ID, 1, MAX_PREDICTIONS), "Asset ids of the frames that drove it, "
          "oldest first, this asset last."),
    Field("other_track_id", OPTIONAL_ID, "The other track of a suspected identity switch or "
          "crossing; absent or null otherwise.", required=False),
), plain=True, nullable=True, required_order=("frames", "score", "signals", "track_id"),
    check_first=("signals", "frames"))

REASON = Shared("reason", Record((
    Field("strategy", Text(MAX_STRATEGY_LENGTH), "Selection rule that fired; the scorer writes "
          "one of `variable_uncertainty`, `fixed` (uncertainty thresholds), `class_relative` "
          "(bottom q of the class's recent confidence), `reservoir` (weighted top-k of a "
          "window), `random_control` (uniform control arm), `warmup`, `exploration`; "
          f"1-{MAX_STRATEGY_LENGTH} characters."),
    Field("score", Number(0.0, 1.0), "Uncertainty score that was compared, normalised to "
          "[0, 1] (1 = most uncertain)."),
    Field("class", Text(MAX_ID_LENGTH, nullable=True), "Class whose statistics/threshold/budget "
          f"drove the decision ({_IDS}), or null when no single class did (e.g. the random "
          "control arm).", attr="class_name"),
    Field("threshold", Number(0.0, 1.0, nullable=True), "The bar in force at decision time, "
          "in [0, 1], or null for strategies without one (reservoir, random arms): an "
          "uncertainty threshold (selected at or above it) for uncertainty strategies, a top-1 "
          "confidence threshold (selected below it) for `class_relative`."),
    Field("instances", Array(IdOrIndex(_INDEX, ID), 0, MAX_PREDICTIONS), "The predictions "
          "that drove the decision: index into `predictions` (integer >= 0) or instance_id "
          f"(string); 0-{MAX_PREDICTIONS} entries."),
    Field("inclusion_probability", Number(0.0, 1.0, exclusive_minimum=True, nullable=True),
          "Probability in (0, 1] with which this asset was included, known for the random "
          "control arm (unbiased estimates weight by its inverse); null when not known."),
    Field("track", TRACK, "Present when track instability drove the selection (the policy's "
          "`tracks`): the track, what fired (class_flip, confidence_collapse, identity_switch: "
          "a track starting where another ended, crossing: two tracks' boxes overlapping), the "
          "instability score in [0, 1], and the frames (asset ids, oldest first, this asset "
          "last; the other track's last frame for a switch or a crossing) that drove it. "
          "Absent or null otherwise.", required=False),
), cls=SelectionReason,
    required_order=("class", "inclusion_probability", "instances", "score", "strategy",
                    "threshold"),
    check_first=("instances", "inclusion_probability")), OWNER,
    "Why the asset was selected, as decided at selection time (auditable).")

SOURCE = Shared("source", Record((
    Field("topic", Text(MAX_TOPIC_LENGTH), f"Topic name, 1-{MAX_TOPIC_LENGTH} characters "
          "(Kafka's limit)."),
    Field("partition", Integer(0, MAX_PARTITION), "Partition number, >= 0."),
    Field("offset", Integer(0, MAX_OFFSET), "Offset of the record in the partition, >= 0."),
), cls=Source), OWNER, "Kafka coordinates of the inference event this request came from.")

INSTANCE = Shared("instance", Record((
    Field("position", _INDEX, "Index of the instance's prediction in `predictions`, in "
          f"[0, {MAX_PREDICTIONS - 1}]."),
    Field("label", CLASS_NAME, "The model's pre-label: its top-1 class for this instance."),
    Field("confidence", Number(0.0, 1.0), "The model's probability of `label`, in [0, 1]."),
    Field("instance_id", OPTIONAL_ID, "The prediction's instance_id, when it has one; absent "
          "or null otherwise.", required=False),
    Field("track_id", OPTIONAL_ID, "The prediction's track_id, when it has one; absent or null "
          "otherwise.", required=False),
    Field("bbox", BBOX, "The prediction's box (x, y, width, height), when it has one.",
          required=False),
), plain=True, required_order=("confidence", "label", "position")), OWNER,
    "One instance to annotate, with the model's pre-label.")

ANNOTATE = Shared("annotate", Record((
    Field("instances", Array(INSTANCE, 1, MAX_PREDICTIONS), "The instances to annotate, in "
          "prediction order: the uncertain ones, every one that drove the selection and every "
          f"one on an unstable track; 1-{MAX_PREDICTIONS} entries."),
    Field("cost", Integer(1, MAX_PREDICTIONS), "Budget units the request spent: 1 when the "
          "budget counts assets, else the instances it names; in [1, 1000]."),
    Field("frames", Array(ID, 1, MAX_PREDICTIONS, nullable=True), "When a suspected identity "
          "switch or crossing drove the selection: asset ids of the frames around it (the "
          "track's recent frames and the other track's last frame, oldest first, this asset "
          "last); absent or null otherwise.", required=False),
), plain=True, nullable=True, required_order=("cost", "instances")), OWNER,
    "What to annotate in the asset instead of the whole asset; null means the whole asset, "
    "like absent.")

ANNOTATION_REQUEST = Event(
    name=OWNER,
    title="Annotation request",
    description=(
        "The scorer's decision that an asset is worth a human label, produced to "
        "al.annotation-requests.v1 and keyed by asset_id. Deterministic: replaying the same "
        "input with the same state yields byte-identical requests. Beyond what JSON Schema can "
        "say: the UTF-8 JSON payload is at most `x-max-bytes` bytes, and every `scores` in "
        "`predictions` sums to 1 within tolerance (x-sum-to in the shared definition)."),
    max_bytes=MAX_OUTPUT_EVENT_BYTES,
    record=Record((
        Field("schema_version", Version(SCHEMA_VERSION), "Version of this contract; always "
              f"{SCHEMA_VERSION} for this schema."),
        Field("request_id", ID, "Deterministic id of the request: the same asset_id + model_id "
              "+ model_version always give the same request_id, so a replayed or duplicated "
              f"request is recognisable; {_IDS}."),
        Field("asset_id", ID, f"The asset to label, copied from the inference event; {_IDS}."),
        Field("asset_uri", OPTIONAL_URI, "Where to fetch the asset, copied from the inference "
              f"event (1-{MAX_URI_LENGTH} characters); absent or null when the event had none.",
              required=False),
        Field("event_id", ID, f"The inference event that led to this request; {_IDS}."),
        Field("model_id", ID, "Model whose prediction is questioned, copied from the inference "
              f"event; {_IDS}."),
        Field("model_version", ID, f"Model version, copied from the inference event; {_IDS}."),
        Field("event_timestamp", EPOCH_SECONDS, "The inference event's `timestamp` (event "
              "time), Unix epoch seconds in [0, 1e10]. The request carries no wall-clock time, "
              "so a replay is byte-identical."),
        Field("reason", REASON, "Why the asset was selected: strategy, score, class, "
              "threshold, instances, inclusion probability."),
        Field("priority", Number(0.0, 1.0), "How urgently to label, in [0, 1]; higher first. "
              "Comparable within one model_id."),
        Field("predictions", Array(PREDICTION, 1, MAX_PREDICTIONS), "The model's predictions, "
              "copied unchanged from the inference event (same shape), for pre-labelling; "
              f"1-{MAX_PREDICTIONS} entries."),
        Field("source", SOURCE, "Topic, partition and offset of the inference event, for audit "
              "and replay."),
        Field("tier", TIER, "The labeling tier this request is routed to (docs/tiers.md); "
              "absent when the scorer runs without a tier policy. An `expert` request is raised "
              "by the label sink when a consensus disagrees: its request_id is derived from the "
              "escalated request's, not from asset and model version.", required=False),
        Field("annotate", ANNOTATE, "Instance-level request (the policy's "
              "`instances.requests`; absent otherwise): the instances of the asset to annotate "
              "-- only the uncertain ones, with the model's pre-labels and boxes -- the budget "
              "units the request spent, and the frames around a suspected identity switch "
              "(docs/video.md).", required=False),
    ), cls=AnnotationRequest,
        required_order=("asset_id", "event_id", "event_timestamp", "model_id", "model_version",
                        "predictions", "priority", "reason", "request_id", "schema_version",
                        "source")),
    defs=(TIER, REASON, SOURCE, ANNOTATE, INSTANCE),
)

REQUEST_FIELDS = ANNOTATION_REQUEST.record.names
REASON_FIELDS = REASON.kind.names  # type: ignore[attr-defined]
SOURCE_FIELDS = SOURCE.kind.names  # type: ignore[attr-defined]
TIER_FIELDS = TIER.kind.names  # type: ignore[attr-defined]
ANNOTATE_FIELDS = ANNOTATE.kind.names  # type: ignore[attr-defined]
INSTANCE_FIELDS = INSTANCE.kind.names  # type: ignore[attr-defined]
