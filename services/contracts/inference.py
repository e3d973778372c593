"""The inference event, declared once: its typed form (`InferenceEvent`, `Prediction`), its fields
and limits (`INFERENCE`), and the definitions the other events share (`ID`, `CLASS_NAME`, ...).
schemas/inference-event.schema.json is generated from `INFERENCE`; the decoder
(`services.streaming.input_events`) and the scorer's batch decoder read their checks from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.contracts.typed import compiled_init
from services.contracts.vocabulary import (
    Array,
    BBox,
    ClassName,
    Distribution,
    Event,
    Field,
    Flag,
    FreeForm,
    Number,
    Record,
    Shared,
    Text,
    Version,
)
from services.streaming.event_fields import (
    MAX_CLASS_BYTES,
    MAX_EMBEDDING,
    MAX_EVENT_BYTES,
    MAX_ID_LENGTH,
    MAX_METADATA_DEPTH,
    MAX_METADATA_NODES,
    MAX_PREDICTIONS,
    MAX_SCORE_CELLS,
    MAX_TIMESTAMP,
    MAX_URI_LENGTH,
    MIN_SCORE_CLASSES,
    SCHEMA_VERSION,
    SUM_TOLERANCE,
    ErrorCode,
    fail,
)

BBoxValue = tuple[float, float, float, float]


@compiled_init
@dataclass(frozen=True, slots=True)
class Prediction:
    """One object's (or the whole asset's) prediction: EITHER `scores` (class -> probability,
    >= 2 classes, sums to 1 within SUM_TOLERANCE) OR `label` + `confidence` in [0, 1].
    Unset optional fields are None; `bbox` is (x, y, width, height)."""

    scores: Mapping[str, float] | None = None
    label: str | None = None
    confidence: float | None = None
    instance_id: str | None = None
    track_id: str | None = None
    bbox: BBoxValue | None = None
    embedding: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON shape (unset fields omitted)."""
        out: dict[str, Any] = {}
        if self.scores is not None:
            out["scores"] = dict(self.scores)
        for name in ("label", "confidence", "instance_id", "track_id", "bbox", "embedding"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


@compiled_init
@dataclass(frozen=True, slots=True)
class InferenceEvent:
    """A decoded inference event; `timestamp` is event time in Unix epoch seconds."""

    schema_version: int
    event_id: str
    asset_id: str
    asset_uri: str | None
    model_id: str
    model_version: str
    timestamp: float
    predictions: tuple[Prediction, ...]
    metadata: Mapping[str, Any] | None
    sequence_id: str | None = None  # a camera, a clip: the redundancy gates' sequence key
    # A probe (docs/mastery.md, "Prediction-stability branch"): the model service re-scores a
    # fixed sample with each new version; never selected, never in stats, budgets or drift.
    probe: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "asset_id": self.asset_id,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "timestamp": self.timestamp,
            "predictions": [p.to_dict() for p in self.predictions],
        }
        if self.asset_uri is not None:
            out["asset_uri"] = self.asset_uri
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        if self.sequence_id is not None:
            out["sequence_id"] = self.sequence_id
        if self.probe:
            out["probe"] = True
        return out


def check_cells(predictions: tuple[Prediction, ...]) -> None:
    """predictions x distinct class names <= MAX_SCORE_CELLS (one event's share of the dense
    matrix a batch is laid out in). The distinct names are counted only when the sum of the
    predictions' class counts does not already prove the bound."""
    n = len(predictions)
    if n < 2:
        return
    total = sum(len(p.scores) if p.scores is not None else 1 for p in predictions)
    if n * total <= MAX_SCORE_CELLS:
        return
    names: set[str] = set()
    for p in predictions:
        names.update(p.scores if p.scores is not None else (p.label,))  # type: ignore[arg-type]
    if n * len(names) > MAX_SCORE_CELLS:
        fail("predictions", ErrorCode.OUT_OF_RANGE,
             f"{n} predictions x {len(names)} distinct classes = {n * len(names)} cells, "
             f"limit {MAX_SCORE_CELLS}")


OWNER = "inference-event"
_IDS = f"1-{MAX_ID_LENGTH} characters"
_MAX_TIME = f"{MAX_TIMESTAMP:g}".replace("e+", "e")  # 1e10

# -- the definitions every event shares (the other schemas $ref them by this event's $id) ------
ID = Shared("id", Text(MAX_ID_LENGTH), OWNER,
            f"An identifier: non-empty string of at most {MAX_ID_LENGTH} characters.")
OPTIONAL_ID = Shared("optional_id", Text(MAX_ID_LENGTH, nullable=True), OWNER,
                     f"An identifier ({_IDS}), or null when not applicable.")
OPTIONAL_URI = Shared("optional_uri", Text(MAX_URI_LENGTH, nullable=True), OWNER,
                      f"A URI of 1-{MAX_URI_LENGTH} characters, or null.")
CLASS_NAME = Shared(
    "class_name", ClassName(MAX_ID_LENGTH, MAX_CLASS_BYTES), OWNER,
    f"A class (label) name: non-empty string of at most {MAX_ID_LENGTH} characters and at most "
    f"{MAX_CLASS_BYTES} UTF-8 bytes (x-max-utf8-bytes; services keep class names in bounded "
    "state), case-sensitive.")
EPOCH_SECONDS = Shared(
    "epoch_seconds", Number(0.0, MAX_TIMESTAMP), OWNER,
    f"A point in time as Unix epoch seconds (fractions allowed), in [0, {_MAX_TIME}] "
    f"({_MAX_TIME} s is in the year 2286; a millisecond timestamp of today is ~1.7e12 and "
    "is rejected).")
PROBABILITY = Shared("probability", Number(0.0, 1.0), OWNER, "A probability in [0, 1].")
BBOX = Shared(
    "bbox", BBox(item_descriptions=("x of the top-left corner.", "y of the top-left corner.",
                                    "Width, >= 0.", "Height, >= 0.")), OWNER,
    "Axis-aligned box [x, y, width, height] in the producer's image coordinates (pixels or "
    "normalised, consistent per model); x, y may be negative (box partly outside the image); "
    "width and height >= 0. Null (or absent) when the prediction is about the whole asset.")
SCORES = Shared(
    "scores", Distribution(CLASS_NAME, PROBABILITY, MIN_SCORE_CLASSES, 1.0, SUM_TOLERANCE), OWNER,
    f"Full class distribution: class name -> probability in [0, 1]; at least "
    f"{MIN_SCORE_CLASSES} classes (a one-class distribution carries no uncertainty); the "
    f"probabilities sum to 1 within an absolute tolerance of {SUM_TOLERANCE:g} (x-sum-to).")
PREDICTION_RECORD = Record(
    (
        Field("scores", SCORES, f"Full distribution class -> probability in [0, 1], >= "
              f"{MIN_SCORE_CLASSES} classes, summing to 1 within {SUM_TOLERANCE:g} (excludes "
              "`label`/`confidence`).", required=False),
        Field("label", CLASS_NAME, "Top-1 class of a top-1 prediction (requires `confidence`, "
              "excludes `scores`).", required=False),
        Field("confidence", PROBABILITY, "Probability in [0, 1] the model gives its top-1 "
              "`label`.", required=False),
        Field("instance_id", OPTIONAL_ID, f"Id of this object within the asset ({_IDS}), absent "
              "or null for whole-asset classification.", required=False),
        Field("track_id", OPTIONAL_ID, f"Id of the track this object belongs to across frames "
              f"({_IDS}), absent or null when not tracked.", required=False),
        Field("bbox", BBOX, "Box [x, y, width, height] of the object, absent or null for "
              "whole-asset classification.", required=False),
        Field("embedding", Array(Number(), 1, MAX_EMBEDDING, nullable=True),
              f"Feature vector of the object (for diversity sampling), 1-{MAX_EMBEDDING} numbers, "
              "unitless; absent or null when not sent.", required=False),
    ),
    cls=Prediction, together=("label", "confidence"), one_of=("scores", "label"))
PREDICTION = Shared(
    "prediction", PREDICTION_RECORD, OWNER,
    "The model's output for one object/instance: EITHER a full distribution `scores` OR a "
    "top-1 `label` + `confidence`, never both kinds and never neither.")

VERSION = Field("schema_version", Version(SCHEMA_VERSION),
                f"Version of this contract; always {SCHEMA_VERSION} for this schema. A consumer "
                "rejects versions it does not know.")
"""`schema_version`, the first field of every event."""

INFERENCE = Event(
    name=OWNER,
    title="Inference event",
    description=(
        "One model inference on one asset, produced by the customer's model to "
        "al.inference-events.v1 and keyed by asset_id. Carries one prediction per "
        "object/instance (exactly one for whole-asset classification). Beyond what JSON Schema "
        "can say: the UTF-8 JSON payload is at most `x-max-bytes` bytes; a `scores` "
        "distribution sums to `x-sum-to.value` within `x-sum-to.tolerance` (absolute); a class "
        "name is at most `x-max-utf8-bytes` UTF-8 bytes; `metadata` nests at most "
        "`x-max-depth` levels and holds at most `x-max-nodes` values; the predictions times the "
        "distinct class names they mention are at most `x-max-cells`; and no object repeats a "
        "key (a payload that does is rejected as `duplicate_key`: JSON leaves its meaning "
        "open). The definitions in `$defs` (ids, epoch seconds, bbox, prediction) are shared: "
        "the other schemas reference them by this `$id`."),
    max_bytes=MAX_EVENT_BYTES,
    record=Record((
        VERSION,
        Field("event_id", ID, f"Producer-assigned unique id of this inference (e.g. a UUID); "
              f"{_IDS}."),
        Field("asset_id", ID, "Stable id of the asset (image, document, clip) the model looked "
              f"at; also the Kafka key. {_IDS}."),
        Field("asset_uri", OPTIONAL_URI, "Where an annotator can fetch the asset (URL or "
              f"object-store URI), 1-{MAX_URI_LENGTH} characters; absent or null when unknown.",
              required=False),
        Field("model_id", ID, f"Name of the model (stable across versions); {_IDS}."),
        Field("model_version", ID, f"Version of the model that produced the predictions; "
              f"{_IDS}. A new version restarts warm-up and deduplication."),
        Field("sequence_id", OPTIONAL_ID, f"The sequence this asset belongs to (a camera, a "
              f"clip; {_IDS}), absent or null when none. A policy may cap the requests per "
              "sequence per stretch of event time.", required=False),
        Field("probe", Flag(), "True marks a probe: the model service re-scores a fixed sample "
              "of assets with each new model version so the scorer can measure how many "
              "predicted classes the version changed (the stopping signal's "
              "prediction-stability branch, docs/mastery.md). A probe is never selected for "
              "annotation and counts in no class statistics, budget or drift. Absent, null or "
              "false: an ordinary event.", required=False),
        Field("timestamp", EPOCH_SECONDS, "Event time: when the inference happened, Unix epoch "
              f"SECONDS (fractions allowed), in [0, {_MAX_TIME}]. The upper bound rejects "
              "milliseconds by mistake."),
        Field("predictions", Array(PREDICTION, 1, MAX_PREDICTIONS, max_cells=MAX_SCORE_CELLS,
                                   check=check_cells),
              f"One entry per detected object/instance, or exactly one for whole-asset "
              f"classification; 1-{MAX_PREDICTIONS} entries. The number of entries times the "
              "number of distinct class names over all of them (labels and `scores` keys) is at "
              f"most {MAX_SCORE_CELLS} (x-max-cells)."),
        Field("metadata", FreeForm(MAX_METADATA_DEPTH, MAX_METADATA_NODES),
              "Free-form producer data (a JSON object), passed through unchanged and never "
              "interpreted; absent or null when there is none. Bounded so that its parsed size "
              f"is bounded too: at most {MAX_METADATA_DEPTH} levels deep, counting the object "
              f"itself (x-max-depth), and at most {MAX_METADATA_NODES} values inside it, "
              "containers and scalars alike, keys not counted (x-max-nodes).", required=False),
    # Checked as the hand decoder did: predictions and metadata first, sequence_id and probe
    # last (an event bad in several fields is rejected for the same one as before).
    ), cls=InferenceEvent, check_first=("predictions", "metadata", "event_id", "asset_id",
                                        "asset_uri", "model_id", "model_version", "timestamp")),
    defs=(ID, OPTIONAL_ID, OPTIONAL_URI, CLASS_NAME, EPOCH_SECONDS, PROBABILITY, BBOX, SCORES,
          PREDICTION),
)

INFERENCE_FIELDS = INFERENCE.record.names
INFERENCE_REQUIRED = INFERENCE.record.required
PREDICTION_FIELDS = PREDICTION_RECORD.names


@dataclass(frozen=True)
class BatchLimits:
    """The limits the scorer's batch decoder checks in its vectorised fast path
    (services/streaming/inference_batch.py), read from the declaration rather than restated."""

    version: int
    max_bytes: int
    required: tuple[str, ...]
    max_id_length: int
    max_uri_length: int
    max_timestamp: float
    min_classes: int
    max_class_length: int
    max_class_bytes: int
    sum_tolerance: float
    max_metadata_nodes: int


def _batch_limits() -> BatchLimits:
    fields, distribution = INFERENCE.record, SCORES.kind
    assert isinstance(distribution, Distribution) and isinstance(ID.kind, Text)
    assert isinstance(OPTIONAL_URI.kind, Text) and isinstance(EPOCH_SECONDS.kind, Number)
    assert isinstance(CLASS_NAME.kind, ClassName)
    metadata, version = fields.field("metadata").kind, fields.field("schema_version").kind
    assert isinstance(metadata, FreeForm) and isinstance(version, Version)
    assert INFERENCE.max_bytes is not None
    return BatchLimits(
        version=version.value, max_bytes=INFERENCE.max_bytes, required=fields.required,
        max_id_length=ID.kind.max_length, max_uri_length=OPTIONAL_URI.kind.max_length,
        max_timestamp=EPOCH_SECONDS.kind.maximum, min_classes=distribution.min_classes,
        max_class_length=CLASS_NAME.kind.max_length,
        max_class_bytes=CLASS_NAME.kind.max_utf8_bytes, sum_tolerance=distribution.tolerance,
        max_metadata_nodes=metadata.max_nodes)


BATCH_LIMITS = _batch_limits()
