"""The hand-written input-event decoders as they were before issue 19
(services/streaming/input_events.py at 53de13a), kept only so bench/decoders.py can measure the
declared decoders beside them in one run. Not used by any service.

The two input events and their decoders: inference events (scorer hot path) and labels.

Contracts: schemas/inference-event.schema.json and schemas/label.schema.json. The decoders are
hand-written checks after `orjson.loads` (no jsonschema at runtime, for speed); the contract tests
prove they accept and reject exactly what the schemas do. Import from `services.streaming.events`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from types import MappingProxyType
from typing import Any

from services.streaming.event_fields import (
    MAX_ANNOTATIONS,
    MAX_EMBEDDING,
    MAX_EVENT_BYTES,
    MAX_ID_LENGTH,
    MAX_PREDICTIONS,
    MAX_SCORE_CELLS,
    MAX_TIMESTAMP,
    MAX_URI_LENGTH,
    MIN_SCORE_CLASSES,
    SCHEMA_VERSION,
    SUM_TOLERANCE,
    ErrorCode,
    array,
    check_free_form,
    check_keys,
    check_unique_keys,
    check_version,
    child,
    class_key,
    class_name,
    fail,
    flag,
    integer,
    load_object,
    mapping,
    number,
    optional_text,
    show,
    text,
)

_INF = math.inf
_NUMBER_TYPES = frozenset({float, int})  # exact types: bool, a subclass of int, is not a number
BBox = tuple[float, float, float, float]


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
    bbox: BBox | None = None
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


@dataclass(frozen=True, slots=True)
class Keypoint:
    """A named point of an object (COCO style); `visibility` 0 not labelled, 1 labelled but not
    visible, 2 visible."""

    name: str
    x: float
    y: float
    visibility: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "x": self.x, "y": self.y, "visibility": self.visibility}


MAX_KEYPOINTS = 64
KEYPOINT_FIELDS = frozenset({"name", "x", "y", "visibility"})


@dataclass(frozen=True, slots=True)
class Annotation:
    """One object (or the whole asset) as a human labelled it."""

    label: str
    instance_id: str | None = None
    bbox: BBox | None = None
    keypoints: tuple[Keypoint, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label}
        if self.instance_id is not None:
            out["instance_id"] = self.instance_id
        if self.bbox is not None:
            out["bbox"] = list(self.bbox)
        if self.keypoints is not None:
            out["keypoints"] = [k.to_dict() for k in self.keypoints]
        return out


@dataclass(frozen=True, slots=True)
class Label:
    """A decoded label; `labeled_at` in Unix epoch seconds. `request_id` is None for an audit
    label nobody requested (then `model_id` names the graded model)."""

    schema_version: int
    label_id: str
    request_id: str | None
    asset_id: str
    model_id: str | None
    annotations: tuple[Annotation, ...]
    annotator_id: str
    labeled_at: float

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": self.schema_version,
            "label_id": self.label_id,
            "asset_id": self.asset_id,
            "annotations": [a.to_dict() for a in self.annotations],
            "annotator_id": self.annotator_id,
            "labeled_at": self.labeled_at,
        }
        for name in ("request_id", "model_id"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


INFERENCE_FIELDS = frozenset(InferenceEvent.__dataclass_fields__)
INFERENCE_REQUIRED = (
    "schema_version", "event_id", "asset_id", "model_id", "model_version", "timestamp",
    "predictions",
)  # fmt: skip
PREDICTION_FIELDS = frozenset(Prediction.__dataclass_fields__)
LABEL_FIELDS = frozenset(Label.__dataclass_fields__)
LABEL_REQUIRED = (
    "schema_version", "label_id", "asset_id", "annotations", "annotator_id", "labeled_at",
)  # fmt: skip
ANNOTATION_FIELDS = frozenset(Annotation.__dataclass_fields__)
ANNOTATION_REQUIRED = ("label",)


def decode_inference_event(data: bytes) -> InferenceEvent:
    """Decode and check one inference event; raises `InvalidEvent` (only) for any bad input.
    A repeated key is checked last, on an event otherwise valid (`quote_count`)."""
    obj = load_object(data, MAX_EVENT_BYTES, unique_keys=False)
    event = read_inference_event(obj, ascii_only=data.isascii())
    check_unique_keys(data, obj, quote_count(obj))
    return event


_GET = dict.get


def quote_count(obj: dict[str, Any]) -> int:
    """Twice the keys and string values of a parsed inference event that `read_inference_event`
    accepted: the quote characters its JSON text holds when no key repeats and no string holds
    an escaped quote. Counted from the contract's structure in C-level passes (the numbers in
    distributions, boxes and embeddings are never visited); measured cheaper than re-encoding
    the event, whose cost is formatting those numbers."""
    preds = obj["predictions"]
    keys = len(obj) + sum(map(len, preds))
    strings = 4  # event_id, asset_id, model_id, model_version
    if type(obj.get("asset_uri")) is str:
        strings += 1
    if type(obj.get("sequence_id")) is str:
        strings += 1
    if len(preds) == 1:
        pred = preds[0]
        scores = pred.get("scores")
        keys += 0 if scores is None else len(scores)
        if len(pred) > 1:
            strings += [type(pred.get(k)) for k in ("label", "instance_id", "track_id")].count(str)
    else:
        keys += sum(map(len, filter(None, map(_GET, preds, repeat("scores")))))
        for name in ("label", "instance_id", "track_id"):
            strings += list(map(type, map(_GET, preds, repeat(name)))).count(str)
    metadata = obj.get("metadata")
    if metadata:
        kinds = list(map(type, metadata.values()))
        if kinds.count(dict) or kinds.count(list):
            keys += _free_form_keys_and_strings(metadata)
        else:  # flat, the usual metadata
            keys, strings = keys + len(metadata), strings + kinds.count(str)
    return 2 * (keys + strings)


def _free_form_keys_and_strings(value: dict[str, Any]) -> int:
    """Keys plus string values anywhere inside a free-form object (bounded: check_free_form)."""
    total = 0
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        items = node.values() if type(node) is dict else node
        if type(node) is dict:
            total += len(node)
        kinds = list(map(type, items))
        total += kinds.count(str)
        if kinds.count(dict) or kinds.count(list):
            stack.extend(x for x in items if type(x) is dict or type(x) is list)
    return total


def read_inference_event(obj: dict[str, Any], ascii_only: bool = False) -> InferenceEvent:
    """Check one inference event already parsed from at most MAX_EVENT_BYTES of JSON into an
    object (`decode_inference_event` = `load_object` + this); raises `InvalidEvent` (only).
    `ascii_only`: the JSON text was ASCII (bytes.isascii, a fast C pass), so every string's
    length is its UTF-8 size and class names need no byte count."""
    check_version(obj, SCHEMA_VERSION)
    check_keys(obj, INFERENCE_FIELDS, INFERENCE_REQUIRED, "")
    raw = array(obj["predictions"], "", "predictions", 1, MAX_PREDICTIONS)
    predictions = tuple([read_prediction(p, f"predictions[{i}]", ascii_only)
                         for i, p in enumerate(raw)])
    if len(predictions) > 1:
        _check_cells(predictions)
    metadata = obj.get("metadata")
    if metadata is not None:
        metadata = mapping(metadata, "", "metadata")
        if metadata:
            check_free_form(metadata, "", "metadata")
        metadata = MappingProxyType(metadata)
    return InferenceEvent(
        schema_version=SCHEMA_VERSION,
        event_id=text(obj["event_id"], "", "event_id", MAX_ID_LENGTH),
        asset_id=text(obj["asset_id"], "", "asset_id", MAX_ID_LENGTH),
        asset_uri=optional_text(obj.get("asset_uri"), "", "asset_uri", MAX_URI_LENGTH),
        model_id=text(obj["model_id"], "", "model_id", MAX_ID_LENGTH),
        model_version=text(obj["model_version"], "", "model_version", MAX_ID_LENGTH),
        timestamp=number(obj["timestamp"], "", "timestamp", 0.0, MAX_TIMESTAMP),
        predictions=predictions,
        metadata=metadata,
        sequence_id=optional_text(obj.get("sequence_id"), "", "sequence_id", MAX_ID_LENGTH),
        probe=flag(obj.get("probe"), "", "probe"),
    )


def _check_cells(predictions: tuple[Prediction, ...]) -> None:
    """predictions x distinct class names <= MAX_SCORE_CELLS (one event's share of the dense
    matrix a batch is laid out in). The distinct names are counted only when the sum of the
    predictions' class counts does not already prove the bound."""
    n = len(predictions)
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


def decode_label(data: bytes) -> Label:
    """Decode and check one label; raises `InvalidEvent` (only) for any bad input."""
    obj = load_object(data, MAX_EVENT_BYTES)
    check_version(obj, SCHEMA_VERSION)
    check_keys(obj, LABEL_FIELDS, LABEL_REQUIRED, "")
    raw = array(obj["annotations"], "", "annotations", 1, MAX_ANNOTATIONS)
    return Label(
        schema_version=SCHEMA_VERSION,
        label_id=text(obj["label_id"], "", "label_id", MAX_ID_LENGTH),
        request_id=optional_text(obj.get("request_id"), "", "request_id", MAX_ID_LENGTH),
        asset_id=text(obj["asset_id"], "", "asset_id", MAX_ID_LENGTH),
        model_id=optional_text(obj.get("model_id"), "", "model_id", MAX_ID_LENGTH),
        annotations=tuple([_annotation(a, f"annotations[{i}]") for i, a in enumerate(raw)]),
        annotator_id=text(obj["annotator_id"], "", "annotator_id", MAX_ID_LENGTH),
        labeled_at=number(obj["labeled_at"], "", "labeled_at", 0.0, MAX_TIMESTAMP),
    )


def read_prediction(raw: Any, path: str, ascii_only: bool = False) -> Prediction:
    """Check one parsed prediction object found at `path` (shared with annotation requests);
    `ascii_only` as for `read_inference_event`."""
    if type(raw) is not dict:
        fail(path, ErrorCode.WRONG_TYPE, f"expected an object, got {show(raw)}")
    check_keys(raw, PREDICTION_FIELDS, (), path)
    has_label, has_confidence = "label" in raw, "confidence" in raw
    if has_label != has_confidence:
        missing = "confidence" if has_label else "label"
        fail(child(path, missing), ErrorCode.MISSING_FIELD, "label and confidence go together")
    if ("scores" in raw) == has_label:
        code = ErrorCode.CONFLICT if has_label else ErrorCode.MISSING_FIELD
        fail(path, code, "needs exactly one of `scores` or `label` + `confidence`")
    if has_label:
        scores = None
        label = class_name(raw["label"], path, "label")
        confidence = number(raw["confidence"], path, "confidence", 0.0, 1.0)
    else:
        scores, label, confidence = _scores(raw["scores"], path + ".scores", ascii_only), None, \
            None
    if len(raw) == 1:  # fast path: a bare distribution has no optional fields to read
        return Prediction(scores=scores)
    return Prediction(
        scores=scores,
        label=label,
        confidence=confidence,
        instance_id=optional_text(raw.get("instance_id"), path, "instance_id", MAX_ID_LENGTH),
        track_id=optional_text(raw.get("track_id"), path, "track_id", MAX_ID_LENGTH),
        bbox=_bbox(raw.get("bbox"), path),
        embedding=_embedding(raw.get("embedding"), path),
    )


def _scores(raw: Any, path: str, ascii_only: bool = False) -> Mapping[str, float]:
    if type(raw) is not dict:
        fail(path, ErrorCode.WRONG_TYPE, f"expected class -> probability, got {show(raw)}")
    if len(raw) < MIN_SCORE_CLASSES:
        code = ErrorCode.EMPTY if not raw else ErrorCode.OUT_OF_RANGE
        fail(path, code, f"{len(raw)} class(es), a distribution needs {MIN_SCORE_CLASSES} or more")
    has_ints = False
    for name, p in raw.items():  # measured faster than C-level passes (set/min/max) up to 1000
        kind = type(p)
        if kind is float and 0.0 <= p <= 1.0 and 0 < len(name) <= MAX_ID_LENGTH:
            continue
        if kind is int and 0 <= p <= 1 and 0 < len(name) <= MAX_ID_LENGTH:
            has_ints = True
            continue
        class_key(name, path, MAX_ID_LENGTH)
        number(p, path, name, 0.0, 1.0)
    if not ascii_only:  # a name's UTF-8 size, counted once for the whole distribution
        for name in raw:
            if not name.isascii():
                class_key(name, path, MAX_ID_LENGTH)
    checked = {name: float(p) for name, p in raw.items()} if has_ints else raw
    total = math.fsum(checked.values())  # exact, like the contract tests' x-sum-to validator
    if abs(total - 1.0) > SUM_TOLERANCE:
        detail = f"probabilities sum to {total:.6g}, not 1 within {SUM_TOLERANCE:g}"
        fail(path, ErrorCode.NOT_NORMALISED, detail)
    return MappingProxyType(checked)


def _bbox(raw: Any, path: str) -> BBox | None:
    if raw is None:
        return None
    if type(raw) is list and len(raw) == 4:  # fast path, no per-number calls
        x, y, w, h = raw
        if {type(x), type(y), type(w), type(h)} <= _NUMBER_TYPES and w >= 0 and h >= 0:
            return float(x), float(y), float(w), float(h)
    box = array(raw, path, "bbox", 4, 4)
    where = child(path, "bbox")
    x, y = number(box[0], where, 0, -_INF, _INF), number(box[1], where, 1, -_INF, _INF)
    return x, y, number(box[2], where, 2, 0.0, _INF), number(box[3], where, 3, 0.0, _INF)


def _embedding(raw: Any, path: str) -> tuple[float, ...] | None:
    if raw is None:
        return None
    values = array(raw, path, "embedding", 1, MAX_EMBEDDING)
    kinds = set(map(type, values))  # one C-level pass instead of a Python loop per number
    if kinds == {float}:
        return tuple(values)
    if not kinds <= {float, int}:
        where = child(path, "embedding")
        for i, value in enumerate(values):
            number(value, where, i, -_INF, _INF)
    return tuple(map(float, values))


def _annotation(raw: Any, path: str) -> Annotation:
    if type(raw) is not dict:
        fail(path, ErrorCode.WRONG_TYPE, f"expected an object, got {show(raw)}")
    check_keys(raw, ANNOTATION_FIELDS, ANNOTATION_REQUIRED, path)
    return Annotation(
        label=class_name(raw["label"], path, "label"),
        instance_id=optional_text(raw.get("instance_id"), path, "instance_id", MAX_ID_LENGTH),
        bbox=_bbox(raw.get("bbox"), path),
        keypoints=_keypoints(raw.get("keypoints"), path),
    )


def _keypoints(raw: Any, path: str) -> tuple[Keypoint, ...] | None:
    if raw is None:
        return None
    points = array(raw, path, "keypoints", 0, MAX_KEYPOINTS)
    out = []
    for n, point in enumerate(points):
        where = child(child(path, "keypoints"), n)
        if type(point) is not dict:
            fail(where, ErrorCode.WRONG_TYPE, f"expected an object, got {show(point)}")
        check_keys(point, KEYPOINT_FIELDS, ("name", "visibility", "x", "y"), where)
        out.append(Keypoint(class_name(point["name"], where, "name"),
                            number(point["x"], where, "x", -_INF, _INF),
                            number(point["y"], where, "y", -_INF, _INF),
                            integer(point["visibility"], where, "visibility", 0, 2)))
    return tuple(out)
