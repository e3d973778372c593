"""An annotation request as a Label Studio task (pure: no I/O, no clock).

The task's `data` holds the asset (its URI under the key the project's object tag reads, e.g.
`image`) and the bridge's own fields: `request_id` (how the bridge finds a task again: task ids are
reused after deletions), `asset_id`, `model_id`, `model_version`, `event_timestamp`, `priority` and
a one-line `reason`. The model's predictions become one Label Studio prediction (the pre-label):

- a whole-asset prediction becomes the Choices control's choice (its top class);
- a prediction with a box becomes a RectangleLabels region in Label Studio's percent
  coordinates when the frame size is known, its result id the prediction's `instance_id`, so an
  annotator who keeps the region keeps the id and the label names the instance;
- each result carries the model's probability of its class as `score`, and the prediction's
  `score` is 1 - priority: Label Studio's "Uncertainty sampling" serves the lowest score first,
  so the most wanted asset comes first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.streaming.events import AnnotationRequest, Prediction

OUR_FIELDS = ("request_id", "asset_id", "model_id", "model_version", "event_id",
              "event_timestamp", "priority", "reason", "frame_width", "frame_height")


class ConfigError(ValueError):
    """The project's labeling config cannot take the bridge's tasks; the message says why."""


@dataclass(frozen=True)
class Control:
    """A control tag of the labeling config: `name` (from_name), `to_name`, its label values."""

    name: str
    to_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabelConfig:
    """What the bridge needs of a project's labeling config (its `parsed_label_config`)."""

    data_keys: tuple[str, ...]
    choices: Control | None
    rectangles: Control | None

    @classmethod
    def from_parsed(cls, parsed: Mapping[str, Any]) -> LabelConfig:
        """Raises ConfigError when there is neither a Choices nor a RectangleLabels control, or
        an object tag reads a data key the bridge uses for its own fields."""
        controls: dict[str, Control] = {}
        keys: list[str] = []
        for name, tag in parsed.items():
            kind = str(tag.get("type", "")).lower()
            to_names = tag.get("to_name") or [""]
            if kind in ("choices", "rectanglelabels") and kind not in controls:
                controls[kind] = Control(name, to_names[0], tuple(tag.get("labels") or ()))
            for source in tag.get("inputs") or ():
                key = str(source.get("value", ""))
                if key and key not in keys:
                    keys.append(key)
        if not controls:
            raise ConfigError("the labeling config has no Choices or RectangleLabels control")
        clash = sorted(set(keys) & set(OUR_FIELDS))
        if clash:
            raise ConfigError(f"the labeling config reads task data {clash}, which the bridge "
                              f"uses for its own fields")
        return cls(tuple(keys), controls.get("choices"), controls.get("rectanglelabels"))


def top_class(prediction: Prediction) -> tuple[str, float]:
    """The predicted class and its probability."""
    if prediction.scores is not None:
        name = max(prediction.scores, key=prediction.scores.__getitem__)
        return name, float(prediction.scores[name])
    assert prediction.label is not None and prediction.confidence is not None
    return prediction.label, prediction.confidence


def reason_text(request: AnnotationRequest) -> str:
    """One line for a person: why the scorer picked this asset."""
    r = request.reason
    text = f"{r.strategy} {r.score:.2f}"
    if r.class_name is not None:
        text += f" ({r.class_name})"
    return text


def to_task(request: AnnotationRequest, config: LabelConfig, model_version: str,
            frame: tuple[int, int] | None = None) -> dict[str, Any]:
    """The task to import for `request`. `frame` = (width, height) of the asset in the units of
    the predictions' boxes, when known."""
    data: dict[str, Any] = {key: request.asset_uri or "" for key in config.data_keys}
    data.update(request_id=request.request_id, asset_id=request.asset_id,
                model_id=request.model_id, model_version=request.model_version,
                event_id=request.event_id, event_timestamp=request.event_timestamp,
                priority=request.priority, reason=reason_text(request))
    if frame is not None:
        data.update(frame_width=frame[0], frame_height=frame[1])
    results = prelabels(request.predictions, config, frame)
    task: dict[str, Any] = {"data": data}
    if results:
        task["predictions"] = [{"model_version": model_version,
                                "score": round(1.0 - request.priority, 6), "result": results}]
    return task


def prelabels(predictions: tuple[Prediction, ...], config: LabelConfig,
              frame: tuple[int, int] | None) -> list[dict[str, Any]]:
    """Label Studio result items for the predictions the config can show."""
    results: list[dict[str, Any]] = []
    choice_done = False
    for i, prediction in enumerate(predictions):
        name, probability = top_class(prediction)
        result_id = prediction.instance_id or f"p{i}"
        if prediction.bbox is None and config.choices is not None and not choice_done:
            choice_done = True  # one choice per asset: the first whole-asset prediction
            results.append(_result(config.choices, result_id, "choices",
                                   {"choices": [name]}, probability))
        elif (prediction.bbox is not None and config.rectangles is not None and frame
              and frame[0] > 0 and frame[1] > 0):
            x, y, w, h = prediction.bbox
            width, height = frame
            value = {"x": 100.0 * x / width, "y": 100.0 * y / height,
                     "width": 100.0 * w / width, "height": 100.0 * h / height,
                     "rotation": 0, "rectanglelabels": [name]}
            item = _result(config.rectangles, result_id, "rectanglelabels", value, probability)
            item.update(original_width=width, original_height=height, image_rotation=0)
            results.append(item)
    return results


def _result(control: Control, result_id: str, kind: str, value: dict[str, Any],
            score: float) -> dict[str, Any]:
    return {"id": result_id, "from_name": control.name, "to_name": control.to_name,
            "type": kind, "value": value, "score": round(score, 6)}
