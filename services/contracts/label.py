"""The label event, declared once: its typed form (`Label`, `Annotation`, `Keypoint`) and its
fields and limits (`LABEL`). schemas/label.schema.json is generated from `LABEL`, and
`LABEL.decode` is the label sink's decoder (`services.streaming.events.decode_label`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.contracts.inference import (
    BBOX,
    CLASS_NAME,
    EPOCH_SECONDS,
    ID,
    OPTIONAL_ID,
    VERSION,
    BBoxValue,
)
from services.contracts.typed import compiled_init
from services.contracts.vocabulary import (
    Array,
    Event,
    Field,
    Integer,
    Number,
    Record,
    Shared,
)
from services.streaming.event_fields import MAX_ANNOTATIONS, MAX_EVENT_BYTES, MAX_ID_LENGTH

MAX_KEYPOINTS = 64


@compiled_init
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


@compiled_init
@dataclass(frozen=True, slots=True)
class Annotation:
    """One object (or the whole asset) as a human labelled it."""

    label: str
    instance_id: str | None = None
    bbox: BBoxValue | None = None
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


@compiled_init
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


OWNER = "label"
_IDS = f"1-{MAX_ID_LENGTH} characters"

KEYPOINT = Shared("keypoint", Record((
    Field("name", CLASS_NAME, f"The point's name ({_IDS})."),
    Field("x", Number(), "Horizontal position."),
    Field("y", Number(), "Vertical position."),
    Field("visibility", Integer(0, 2), "0 not labelled, 1 labelled but not visible, 2 visible."),
), cls=Keypoint), OWNER,
    "One named point: its position and COCO visibility (0 not labelled, 1 labelled but "
    "occluded, 2 visible).")
ANNOTATION_RECORD = Record((
    Field("label", CLASS_NAME, f"The class the human assigned; {_IDS}, same vocabulary as the "
          "model's classes."),
    Field("instance_id", OPTIONAL_ID, "The object within the asset, matching a prediction's "
          f"instance_id when the label answers a request ({_IDS}); absent or null for "
          "whole-asset labels.", required=False),
    Field("bbox", BBOX, "Box [x, y, width, height] the human drew, same coordinates as the "
          "inference event; absent or null for whole-asset labels.", required=False),
    Field("keypoints", Array(KEYPOINT, 0, MAX_KEYPOINTS, nullable=True),
          "Named points of the object (COCO style: e.g. left_shoulder, right_hip), same "
          f"coordinates as the box, at most {MAX_KEYPOINTS}; absent or null when none.",
          required=False),
), cls=Annotation)
ANNOTATION = Shared("annotation", ANNOTATION_RECORD, OWNER,
                    "One object (or the whole asset) as the human labelled it.")

LABEL = Event(
    name=OWNER,
    title="Label",
    description=(
        "A finished human annotation of one asset, produced by the annotation tool to "
        "al.labels.v1 and keyed by asset_id. Either answers an annotation request "
        "(`request_id` set) or is an audit label with no request (then `model_id` says which "
        "model it grades). Beyond what JSON Schema can say: the UTF-8 JSON payload is at most "
        "`x-max-bytes` bytes. Definitions are shared with the inference-event schema."),
    max_bytes=MAX_EVENT_BYTES,
    record=Record((
        VERSION,
        Field("label_id", ID, f"Unique id of this label (e.g. a UUID); {_IDS}. A producer "
              "retry re-sends the same label_id."),
        Field("request_id", OPTIONAL_ID, f"The annotation request this label answers ({_IDS}); "
              "absent or null for an audit label nobody requested.", required=False),
        Field("asset_id", ID, f"The labelled asset, same id as in the inference event; {_IDS}. "
              "Also the Kafka key."),
        Field("model_id", OPTIONAL_ID, f"The model whose classes this label grades ({_IDS}); "
              "absent or null when it can be taken from the request. Required in practice for "
              "audit labels.", required=False),
        Field("annotations", Array(ANNOTATION, 1, MAX_ANNOTATIONS),
              "What the human saw: one entry per object (or exactly one for whole-asset "
              f"classification); 1-{MAX_ANNOTATIONS} entries. An asset with no object of "
              "interest is labelled with an explicit class (e.g. `background`), never an empty "
              "list."),
        Field("annotator_id", ID, f"Who labelled it (person or labelling team/vendor id); "
              f"{_IDS}."),
        Field("labeled_at", EPOCH_SECONDS, "When the label was finished, Unix epoch SECONDS "
              "(fractions allowed), in [0, 1e10]."),
    ), cls=Label),
    defs=(ANNOTATION, KEYPOINT),
)

LABEL_FIELDS = LABEL.record.names
LABEL_REQUIRED = LABEL.record.required
ANNOTATION_FIELDS = ANNOTATION_RECORD.names
ANNOTATION_REQUIRED = ANNOTATION_RECORD.required
KEYPOINT_FIELDS = KEYPOINT.kind.names  # type: ignore[attr-defined]
