"""Human-model agreement per class, and the class feedback built from it.

Pure: no Kafka, no clock, no environment. The label sink joins a label to the annotation request it
answers and asks this module two things:

- `outcomes(predicted, annotations)`: for each human annotation, did the model's prediction agree?
- `ClassTally` + `feedback_classes`: per class, how many annotations, how often the model agreed,
  and the budget weight the scorer should give the class (weak classes > 1, mastered < 1).

A prediction is reduced to its top-1 class first (`top_classes`), so requests can be stored
compactly. Ties in a distribution go to the lexicographically smallest class, so the result never
depends on dict order.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.core.events import PredictionLike
from services.core.feedback import FeedbackPolicy, weights_from_agreement
from services.core.registry import OTHER_CLASS

# Per model, the label sink keeps at most this many class names (the last slot is OTHER_CLASS),
# and their names take at most MAX_CLASS_NAME_BYTES of JSON: a trigger's `counts`, a class
# feedback record and the model's state row then stay far below Kafka's 1 MiB record limit
# whatever the annotators send (50,000 distinct classes included). Same count as the scorer's
# default `max_classes`, so the scorer can weigh every class the sink reports.
MAX_CLASSES = 1024
MAX_CLASS_NAME_BYTES = 96 * 1024

Predicted = tuple[str | None, str] | tuple[str | None, str, list[float]]
"""One model prediction reduced to (instance_id or None, top-1 class[, bbox x, y, w, h]): the box
only when the prediction has one (detections)."""

MATCH_IOU = 0.5  # the usual detection-matching bar (COCO's AP50, PASCAL VOC)

Outcome = tuple[str, bool]
"""(human class, whether the model agreed with the human on that annotation)."""


class AnnotationLike(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def instance_id(self) -> str | None: ...


def top_class(prediction: PredictionLike) -> str:
    """The class the model predicted: argmax of `scores` (ties: smallest name), else `label`."""
    if prediction.scores:
        best = max(prediction.scores.values())
        return min(name for name, p in prediction.scores.items() if p == best)
    if prediction.label is None:
        raise ValueError("a prediction needs `scores` or `label`")
    return prediction.label


def top_classes(predictions: Iterable[PredictionLike]) -> tuple[Predicted, ...]:
    """Each prediction as (instance_id, top-1 class[, bbox]), in input order."""
    out: list[Predicted] = []
    for p in predictions:
        box = getattr(p, "bbox", None)
        out.append((p.instance_id, top_class(p)) if box is None else
                   (p.instance_id, top_class(p), [float(x) for x in box]))
    return tuple(out)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - ix * iy
    return ix * iy / union if union > 0 else 0.0


def outcomes(
    predicted: Sequence[Predicted], annotations: Sequence[AnnotationLike]
) -> tuple[Outcome, ...]:
    """Per annotation (in order): (human class, model agreed).

    Matching, most specific first: by `instance_id` when both sides carry the same id; for an
    annotation with a box, the unmatched predicted box of highest IoU >= MATCH_IOU (each
    prediction matched once, annotations in order), a box matching none being a miss (the
    model did not find that object: not agreed); one prediction and one annotation
    (whole-asset classification) are each other's match; otherwise the model agreed if any of
    its predictions on the asset has the human's class. With no predictions at all there is
    nothing to compare and the result is empty.
    """
    if not predicted:
        return ()
    by_instance = {p[0]: p[1] for p in predicted if p[0] is not None}
    asset_classes = {p[1] for p in predicted}
    boxes = [(k, p[2]) for k, p in enumerate(predicted) if len(p) > 2]
    used: set[int] = set()
    single = len(predicted) == 1 and len(annotations) == 1
    result = []
    for annotation in annotations:
        human = annotation.label
        box = getattr(annotation, "bbox", None)
        if annotation.instance_id is not None and annotation.instance_id in by_instance:
            agreed = by_instance[annotation.instance_id] == human
        elif box is not None and boxes:
            best, k_best = MATCH_IOU, -1
            for k, pbox in boxes:
                overlap = _iou(box, pbox)
                if k not in used and overlap >= best:
                    best, k_best = overlap, k
            agreed = k_best >= 0 and predicted[k_best][1] == human
            if k_best >= 0:
                used.add(k_best)
        elif single:
            agreed = predicted[0][1] == human
        else:
            agreed = human in asset_classes
        result.append((human, agreed))
    return tuple(result)


@dataclass
class ClassTally:
    """Per class: annotations counted, annotations compared with a prediction, and agreed ones.

    A command (`add`) and queries (`agreement`, `classes`); mergeable by adding counters, so a
    tally rebuilt from a set of labels in any order is the same.
    """

    labels: Counter[str] = field(default_factory=Counter)
    compared: Counter[str] = field(default_factory=Counter)
    agreed: Counter[str] = field(default_factory=Counter)

    def add(self, classes: Iterable[str], results: Iterable[Outcome]) -> None:
        """Count one label: `classes` = the human class of each annotation; `results` = the
        outcomes of those annotations that could be compared with a prediction."""
        self.labels.update(classes)
        for human, agreed in results:
            self.compared[human] += 1
            self.agreed[human] += int(agreed)

    def agreement(self, name: str) -> float | None:
        """Share in [0, 1] of compared annotations of `name` the model agreed with; None if none."""
        n = self.compared[name]
        return self.agreed[name] / n if n else None

    def disagreement(self, name: str) -> float | None:
        share = self.agreement(name)
        return None if share is None else 1.0 - share

    def classes(self) -> list[str]:
        """Every class with a counted or compared annotation, sorted."""
        return sorted(set(self.labels) | set(self.compared))


class ClassCap:
    """A model's class vocabulary, bounded: the first names seen keep their name, later ones
    become OTHER_CLASS once `max_classes` - 1 names or `max_bytes` of JSON-encoded names are
    kept. Deterministic: the mapping depends only on the order names were first seen.

    Command: `name` (admits a new name when there is room). Query: `names`."""

    def __init__(self, max_classes: int = MAX_CLASSES, max_bytes: int = MAX_CLASS_NAME_BYTES,
                 names: Iterable[str] = ()) -> None:
        if max_classes < 2 or max_bytes < 1:
            raise ValueError("max_classes >= 2 and max_bytes >= 1 are required")
        self.max_classes, self.max_bytes = max_classes, max_bytes
        self._names: dict[str, None] = {}
        self._bytes = 0
        for name in names:
            self._admit(name)

    def names(self) -> list[str]:
        """Every name kept, in the order first seen (OTHER_CLASS among them once used)."""
        return list(self._names)

    def kept(self, cls: str) -> str:
        """The name `cls` is counted under: itself if kept, else OTHER_CLASS. Query."""
        return cls if cls in self._names else OTHER_CLASS

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ClassCap) and self.names() == other.names()
                and (self.max_classes, self.max_bytes) == (other.max_classes, other.max_bytes))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def name(self, cls: str) -> str:
        """`cls` itself if kept or admitted now, else OTHER_CLASS."""
        if cls in self._names:
            return cls
        size = _json_bytes(cls)
        if (cls != OTHER_CLASS and len(self._names) < self.max_classes - 1
                and self._bytes + size <= self.max_bytes):
            self._admit(cls)
            return cls
        self._admit(OTHER_CLASS)
        return OTHER_CLASS

    def _admit(self, cls: str) -> None:
        if cls not in self._names:
            self._names[cls] = None
            self._bytes += _json_bytes(cls)


def _json_bytes(name: str) -> int:
    """Bytes of `name` as a JSON string (escapes included)."""
    return len(json.dumps(name, ensure_ascii=False).encode())


@dataclass(frozen=True)
class ClassFeedbackStats:
    """One class in a class-feedback event (schemas/class-feedback.schema.json `class_stats`)."""

    labels_total: int
    labels_since_trigger: int
    agreement: float | None
    weight: float


def feedback_classes(
    total: ClassTally, since_trigger: Mapping[str, int], policy: FeedbackPolicy
) -> dict[str, ClassFeedbackStats]:
    """Class feedback for every class in `total`.

    `agreement` is all-time (from `total`); `weight` comes from `weights_from_agreement`, which
    shrinks each class's agreement towards the policy's prior by its number of compared labels and
    scales by the mean error. Classes with nothing compared yet get weight 1 (neutral).
    Invariant kept for the schema: labels_since_trigger <= labels_total.
    """
    names = total.classes()
    rates = {c: a for c in names if (a := total.agreement(c)) is not None}
    weights = weights_from_agreement(policy, rates, {c: total.compared[c] for c in rates})
    return {
        c: ClassFeedbackStats(
            labels_total=total.labels[c],
            labels_since_trigger=min(int(since_trigger.get(c, 0)), total.labels[c]),
            agreement=rates.get(c),
            weight=weights.get(c, 1.0),
        )
        for c in names
    }
