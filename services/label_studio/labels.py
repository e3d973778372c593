"""A Label Studio annotation as a label event (pure: no I/O, no clock).

- `label_id` is derived from the project, the annotation id and its `updated_at`: the same
  annotation version always gives the same id (a replayed webhook, or the reconciliation pass
  finding what a webhook brought already, is one label to the label sink, which dedupes by
  label_id), and an edited annotation is a new label.
- Choices become whole-asset annotations; RectangleLabels regions become annotations with a box
  in the asset's own coordinates (percent x the `original_width`/`original_height` Label Studio
  records, or the frame size in the task's data) and the region id as `instance_id` (a pre-label
  kept by the annotator keeps the prediction's instance id). Other result types are ignored;
  rotation is not carried (the contract's boxes are axis-aligned).
- The task's data gives `request_id`, `asset_id` and `model_id`: a task the bridge created
  answers its request; a task with `asset_id` and `model_id` but no request is an audit label.
- The label is checked with the label sink's own decoder before it is produced.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from services.streaming.events import (
    SCHEMA_VERSION,
    ErrorCode,
    InvalidEvent,
    decode_label,
    encode_event,
)


class Skip(Exception):
    """Not a label, and nothing wrong: `outcome` says why (cancelled, empty, foreign)."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


class BadAnnotation(ValueError):
    """The annotation or task is not what Label Studio sends: a reason `code` (ErrorCode) and
    the detail, for a dead letter."""

    def __init__(self, detail: str, code: ErrorCode = ErrorCode.WRONG_TYPE) -> None:
        super().__init__(detail)
        self.code = code


def label_id(project_id: int, annotation_id: int, updated_at: str) -> str:
    digest = hashlib.sha256(f"{project_id}|{annotation_id}|{updated_at}".encode()).hexdigest()
    return f"ls-{project_id}-{annotation_id}-{digest[:16]}"


def epoch(iso: str) -> float:
    """Label Studio's ISO-8601 time (`2026-12-06T18:58:22.479036Z`) as epoch seconds."""
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        raise BadAnnotation(f"updated_at {iso!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise BadAnnotation(f"updated_at {iso!r} has no time zone")
    return moment.timestamp()


def to_label(project_id: int, annotation: Any, task: Any, empty_class: str = "") -> bytes:
    """The encoded label event for `annotation` of `task`. Raises Skip or BadAnnotation."""
    if not isinstance(annotation, dict) or not isinstance(task, dict):
        raise BadAnnotation("annotation and task must be objects")
    data = task.get("data")
    if not isinstance(data, dict):
        raise BadAnnotation("task.data must be an object")
    ann_id, updated_at = annotation.get("id"), annotation.get("updated_at")
    if (not isinstance(ann_id, int) or type(ann_id) is bool or type(task.get("id")) is not int
            or not isinstance(updated_at, str)):
        raise BadAnnotation("annotation and task need integer ids, the annotation an updated_at",
                            ErrorCode.MISSING_FIELD)
    labeled_at = epoch(updated_at)
    if annotation.get("was_cancelled"):
        raise Skip("cancelled", f"annotation {ann_id} was skipped by the annotator")
    asset_id, request_id, model_id = (data.get(k) for k in ("asset_id", "request_id",
                                                              "model_id"))
    if not isinstance(asset_id, str) or not (isinstance(request_id, str)
                                             or isinstance(model_id, str)):
        raise Skip("foreign", f"task {task.get('id')} has no asset_id and request/model: not "
                              f"an active-stream task")
    annotations = _annotations(annotation.get("result"), data)
    if not annotations and empty_class:
        annotations = [{"label": empty_class}]
    if not annotations:
        raise Skip("empty", f"annotation {ann_id} has no class")
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "label_id": label_id(project_id, ann_id, updated_at),
        "asset_id": asset_id, "annotations": annotations,
        "annotator_id": f"label-studio-user-{annotation.get('completed_by')}",
        "labeled_at": labeled_at,
    }
    if isinstance(request_id, str):
        event["request_id"] = request_id
    if isinstance(model_id, str):
        event["model_id"] = model_id
    encoded = encode_event(event)
    try:
        decode_label(encoded)
    except InvalidEvent as exc:
        raise BadAnnotation(f"the label would break the contract: {exc.reason}",
                            exc.code) from None
    return encoded


def _annotations(result: Any, data: dict[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(result, list):
        raise BadAnnotation("annotation.result must be a list")
    out: list[dict[str, Any]] = []
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise BadAnnotation("each result item must be an object with a value object")
        kind, value = item.get("type"), item["value"]
        if kind == "choices":
            out.extend({"label": str(c)} for c in _strings(value.get("choices")))
        elif kind == "rectanglelabels":
            out.extend(_regions(item, value, data))
    return out


def _regions(item: dict[str, Any], value: dict[str, Any],
             data: dict[str, Any]) -> list[dict[str, Any]]:
    names = _strings(value.get("rectanglelabels"))
    width = item.get("original_width") or data.get("frame_width")
    height = item.get("original_height") or data.get("frame_height")
    box = None
    numbers = [value.get(k) for k in ("x", "y", "width", "height")]
    if all(type(n) in (int, float) for n in numbers) and _positive(width) and _positive(height):
        x, y, w, h = (float(n) for n in numbers)  # type: ignore[arg-type]  # checked above
        sx, sy = float(width or 0) / 100.0, float(height or 0) / 100.0
        box = [x * sx, y * sy, w * sx, h * sy]
    out = []
    for name in names:
        entry: dict[str, Any] = {"label": name}
        if isinstance(item.get("id"), str) and item["id"]:
            entry["instance_id"] = item["id"]
        if box is not None:
            entry["bbox"] = box
        out.append(entry)
    return out


def _positive(value: Any) -> bool:
    return type(value) in (int, float) and value > 0


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadAnnotation("choices and labels must be lists of strings")
    return value
