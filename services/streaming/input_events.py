"""The two input events and their decoders: inference events (scorer hot path) and labels.

Declared once in services/contracts (`INFERENCE`, `LABEL`): the schemas in schemas/ are generated
from those declarations, and the decoders here run the checks the declarations build (no
jsonschema at runtime, for speed). What is left here is the inference event's duplicate-key check,
which counts quotes from the event's known structure. Import from `services.streaming.events`.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

from services.contracts.inference import (
    INFERENCE,
    INFERENCE_FIELDS,
    INFERENCE_REQUIRED,
    PREDICTION_FIELDS,
    PREDICTION_RECORD,
    InferenceEvent,
    Prediction,
)
from services.contracts.label import (
    ANNOTATION_FIELDS,
    ANNOTATION_REQUIRED,
    KEYPOINT_FIELDS,
    LABEL,
    LABEL_FIELDS,
    LABEL_REQUIRED,
    MAX_KEYPOINTS,
    Annotation,
    Keypoint,
    Label,
)
from services.streaming.event_fields import MAX_EVENT_BYTES, check_unique_keys, load_object

__all__ = [
    "ANNOTATION_FIELDS", "ANNOTATION_REQUIRED", "INFERENCE_FIELDS", "INFERENCE_REQUIRED",
    "KEYPOINT_FIELDS", "LABEL_FIELDS", "LABEL_REQUIRED", "MAX_KEYPOINTS", "PREDICTION_FIELDS",
    "Annotation", "InferenceEvent", "Keypoint", "Label", "Prediction", "decode_inference_event",
    "decode_label", "quote_count", "read_inference_event", "read_prediction",
]

BBox = tuple[float, float, float, float]
_READ_EVENT = {False: INFERENCE.reader(False), True: INFERENCE.reader(True)}
_READ_PREDICTION = {False: PREDICTION_RECORD.object_reader(False),
                    True: PREDICTION_RECORD.object_reader(True)}


def decode_inference_event(data: bytes) -> InferenceEvent:
    """Decode and check one inference event; raises `InvalidEvent` (only) for any bad input.
    A repeated key is checked last, on an event otherwise valid (`quote_count`)."""
    obj = load_object(data, MAX_EVENT_BYTES, unique_keys=False)
    event = read_inference_event(obj, ascii_only=data.isascii())
    check_unique_keys(data, obj, quote_count(obj))
    return event


def read_inference_event(obj: dict[str, Any], ascii_only: bool = False) -> InferenceEvent:
    """Check one inference event already parsed from at most MAX_EVENT_BYTES of JSON into an
    object (`decode_inference_event` = `load_object` + this); raises `InvalidEvent` (only).
    `ascii_only`: the JSON text was ASCII (bytes.isascii, a fast C pass), so every string's
    length is its UTF-8 size and class names need no byte count."""
    return _READ_EVENT[ascii_only](obj)  # type: ignore[no-any-return]


def read_prediction(raw: Any, path: str, ascii_only: bool = False) -> Prediction:
    """Check one parsed prediction object found at `path` (shared with annotation requests);
    `ascii_only` as for `read_inference_event`."""
    return _READ_PREDICTION[ascii_only](raw, path)  # type: ignore[no-any-return]


def decode_label(data: bytes) -> Label:
    """Decode and check one label; raises `InvalidEvent` (only) for any bad input."""
    return LABEL.decode(data)  # type: ignore[no-any-return]


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
