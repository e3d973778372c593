"""The optional `annotate` field of an annotation request: instance-level requests (issue 16).

With `policy.instances.requests` on, the selector names the instances of an asset to annotate
(services/core/instances.py); this turns them into the request's `annotate` object
(schemas/annotation-request.schema.json) from the event's own predictions.
"""

from __future__ import annotations

from typing import Any

from services.core import Selected
from services.streaming.events import InferenceEvent, Prediction


def annotate(event: InferenceEvent, sel: Selected) -> dict[str, Any]:
    """The optional `annotate` field: the instances to annotate (position in `predictions`,
    the model's pre-label: top-1 class and confidence, and the instance's id, track and box
    when the event has them), the budget units the request spent, and, when a suspected
    identity switch or crossing drove it, the frames around it (oldest first, this one last)."""
    out: dict[str, Any] = {"instances": [_instance(event.predictions[p], p)
                                         for p in sel.targets or ()],
                           "cost": sel.cost}
    track = sel.track
    if track is not None and {"identity_switch", "crossing"} & set(track["signals"]):
        out["frames"] = list(track["frames"])
    return out


def _instance(pred: Prediction, position: int) -> dict[str, Any]:
    scores = pred.scores
    if scores is not None:  # the first of the highest, in the event's class order
        label: str | None = max(scores, key=lambda c: scores[c])
        conf = float(scores[label])  # type: ignore[index]
    else:  # a top-1 prediction carries both (the decoder checked)
        label, conf = pred.label, float(pred.confidence or 0.0)
    out: dict[str, Any] = {"position": position, "label": label,
                           "confidence": min(1.0, max(0.0, conf))}  # float round-off
    for name in ("instance_id", "track_id"):
        value = getattr(pred, name)
        if value is not None:
            out[name] = value
    if pred.bbox is not None:
        out["bbox"] = list(pred.bbox)
    return out
