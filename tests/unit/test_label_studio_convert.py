"""Requests as Label Studio tasks, annotations as labels (services/label_studio/tasks.py,
labels.py, frames.py): pure conversions, no Label Studio, no Kafka."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.label_studio.frames import frame_of
from services.label_studio.labels import BadAnnotation, Skip, label_id, to_label
from services.label_studio.tasks import ConfigError, LabelConfig, to_task
from services.streaming.events import ErrorCode, decode_annotation_request, decode_label
from tests.integration.label_sink_support import request

PARSED = {
    "class": {"type": "Choices", "to_name": ["image"], "labels": ["cat", "dog"],
              "inputs": [{"type": "Image", "value": "image"}]},
    "box": {"type": "RectangleLabels", "to_name": ["image"], "labels": ["cat", "dog"],
            "inputs": [{"type": "Image", "value": "image"}]},
}
CONFIG = LabelConfig.from_parsed(PARSED)


def _request(**changes: Any) -> Any:
    raw = orjson.loads(request("r-1", "pets", "dog", at=1000.0, asset_id="a-1"))
    raw.update(changes)
    return decode_annotation_request(orjson.dumps(raw))


def test_the_config_names_the_controls_and_the_data_key() -> None:
    assert CONFIG.data_keys == ("image",)
    assert (CONFIG.choices.name, CONFIG.choices.to_name) == ("class", "image")  # type: ignore
    assert CONFIG.rectangles.name == "box"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="no Choices or RectangleLabels"):
        LabelConfig.from_parsed({"t": {"type": "TextArea", "inputs": [{"value": "text"}]}})
    with pytest.raises(ConfigError, match="request_id"):
        LabelConfig.from_parsed({"c": {**PARSED["class"],
                                       "inputs": [{"type": "Text", "value": "request_id"}]}})


def test_a_request_becomes_a_task_with_its_prelabels_and_priority_as_score() -> None:
    boxed = {"label": "cat", "confidence": 0.8, "bbox": [10, 20, 30, 40], "instance_id": "o7"}
    req = _request(asset_uri="s3://b/a-1.jpg", priority=0.75,
                   predictions=[{"scores": {"cat": 0.3, "dog": 0.7}}, boxed])
    task = to_task(req, CONFIG, "active-stream", frame=(200, 100))
    data = task["data"]
    assert (data["image"], data["request_id"], data["asset_id"], data["priority"]) == (
        "s3://b/a-1.jpg", "r-1", "a-1", 0.75)
    assert data["reason"] == "threshold 0.50 (dog)"
    (prediction,) = task["predictions"]
    assert (prediction["model_version"], prediction["score"]) == ("active-stream", 0.25)
    choice, region = prediction["result"]
    assert (choice["from_name"], choice["value"], choice["score"]) == (
        "class", {"choices": ["dog"]}, 0.7)
    assert region["id"] == "o7" and region["value"]["rectanglelabels"] == ["cat"]
    assert [region["value"][k] for k in ("x", "y", "width", "height")] == [5, 20, 15, 40]
    assert (region["original_width"], region["original_height"]) == (200, 100)


def test_without_a_frame_size_boxes_are_left_out_and_a_missing_uri_is_empty() -> None:
    req = _request(predictions=[{"label": "cat", "confidence": 0.8, "bbox": [1, 2, 3, 4]}])
    task = to_task(req, CONFIG, "m")
    assert task["data"]["image"] == "" and "predictions" not in task
    assert "predictions" not in to_task(req, CONFIG, "m", frame=(0, 0))


TASK = {"id": 5, "data": {"request_id": "r-1", "asset_id": "a-1", "model_id": "pets",
                          "frame_width": 200, "frame_height": 100}}


def _annotation(result: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    return {"id": 9, "updated_at": "2026-12-06T18:58:22.479036Z", "completed_by": 3,
            "was_cancelled": False, "result": result, **changes}


def test_choices_and_regions_become_the_labels_annotations() -> None:
    result = [{"type": "choices", "value": {"choices": ["dog"]}},
              {"id": "o7", "type": "rectanglelabels", "original_width": 400,
               "original_height": 200, "value": {"x": 10, "y": 50, "width": 25, "height": 10,
                                                 "rectanglelabels": ["cat"]}},
              {"id": "r2", "type": "rectanglelabels",  # no size recorded: the task's frame
               "value": {"x": 50, "y": 0, "width": 10, "height": 10,
                         "rectanglelabels": ["dog"]}},
              {"type": "textarea", "value": {"text": ["ignored"]}}]
    label = decode_label(to_label(1, _annotation(result), TASK))
    assert (label.request_id, label.asset_id, label.model_id) == ("r-1", "a-1", "pets")
    assert label.annotator_id == "label-studio-user-3"
    assert label.labeled_at == pytest.approx(1796583502.479036)
    whole, box, other = label.annotations
    assert (whole.label, whole.bbox, whole.instance_id) == ("dog", None, None)
    assert (box.label, box.instance_id, box.bbox) == ("cat", "o7", (40.0, 100.0, 100.0, 20.0))
    assert (other.instance_id, other.bbox) == ("r2", (100.0, 0.0, 20.0, 10.0))
    assert label.label_id == label_id(1, 9, "2026-12-06T18:58:22.479036Z")


def test_label_ids_are_per_annotation_version() -> None:
    a = label_id(1, 9, "2026-12-06T18:58:22Z")
    assert a == label_id(1, 9, "2026-12-06T18:58:22Z")
    assert len({a, label_id(1, 9, "2026-12-06T18:59:00Z"), label_id(2, 9, "2026-12-06T18:58:22Z"),
                label_id(1, 10, "2026-12-06T18:58:22Z")}) == 4


def test_what_is_not_a_label_says_why() -> None:
    choice = [{"type": "choices", "value": {"choices": ["dog"]}}]
    with pytest.raises(Skip) as skip:
        to_label(1, _annotation(choice, was_cancelled=True), TASK)
    assert skip.value.outcome == "cancelled"
    with pytest.raises(Skip) as skip:
        to_label(1, _annotation(choice), {"id": 5, "data": {"image": "x"}})
    assert skip.value.outcome == "foreign"
    with pytest.raises(Skip) as skip:
        to_label(1, _annotation([]), TASK)
    assert skip.value.outcome == "empty"
    empty = decode_label(to_label(1, _annotation([]), TASK, empty_class="background"))
    assert [a.label for a in empty.annotations] == ["background"]
    audit = decode_label(to_label(1, _annotation(choice),
                                  {"id": 6, "data": {"asset_id": "a-2", "model_id": "pets"}}))
    assert (audit.request_id, audit.model_id) == (None, "pets")


@pytest.mark.parametrize("annotation,task,code", [
    ("x", TASK, ErrorCode.WRONG_TYPE),
    (_annotation([]), {"id": 5, "data": "x"}, ErrorCode.WRONG_TYPE),
    ({"updated_at": "2026-12-06T18:58:22Z", "result": []}, TASK, ErrorCode.MISSING_FIELD),
    (_annotation([], id=True), TASK, ErrorCode.MISSING_FIELD),
    (_annotation("nope"), TASK, ErrorCode.WRONG_TYPE),  # type: ignore[arg-type]
    (_annotation([{"type": "choices", "value": {"choices": [1]}}]), TASK, ErrorCode.WRONG_TYPE),
    (_annotation([], updated_at="yesterday"), TASK, ErrorCode.WRONG_TYPE),
    (_annotation([{"type": "choices", "value": {"choices": ["x" * 300]}}]), TASK,
     ErrorCode.OUT_OF_RANGE),  # the label sink's decoder refuses the label
])
def test_malformed_annotations_are_bad_with_a_reason_code(annotation: Any, task: Any,
                                                          code: ErrorCode) -> None:
    with pytest.raises(BadAnnotation) as bad:
        to_label(1, annotation, task)
    assert bad.value.code == code


@pytest.mark.parametrize("metadata,frame", [
    ({"width": 640, "height": 480}, (640, 480)),
    ({"frame_width": 1920.0, "frame_height": 1080}, (1920, 1080)),
    ({"image_width": 10, "image_height": 0}, None),
    ({"width": True, "height": 5}, None),
    ({"w": 1}, None),
    (None, None),
])
def test_frame_sizes_come_from_the_events_metadata(metadata: Any, frame: Any) -> None:
    assert frame_of(metadata) == frame
