"""The hand-written decoder as it was before issue 19 item 1 declared it in services/contracts
(services/streaming/request_annotate.py at 464ace8), kept only so bench/decoders.py can measure
the declared decoders beside it and tests/contract/test_declared_decoders.py can prove they
judge every input alike. Not used by any service.

Decoding the optional `annotate` object of an annotation request (issue 16): the instances
to annotate, the budget units the request spent and the frames around a suspected switch.
Contract: `$defs/annotate` of schemas/annotation-request.schema.json."""

from __future__ import annotations

import math
from typing import Any

from services.streaming.event_fields import (
    MAX_ID_LENGTH,
    MAX_PREDICTIONS,
    array,
    check_keys,
    child,
    class_name,
    integer,
    mapping,
    number,
    text,
)

ANNOTATE_FIELDS = frozenset({"instances", "cost", "frames"})
INSTANCE_FIELDS = frozenset({"position", "label", "confidence", "instance_id", "track_id",
                             "bbox"})


def read_annotate(raw: Any, parent: str) -> dict[str, Any] | None:
    """The checked `annotate` object (None when absent or null); raises InvalidEvent."""
    if raw is None:
        return None
    obj = mapping(raw, parent, "annotate")
    path = child(parent, "annotate")
    check_keys(obj, ANNOTATE_FIELDS, ("cost", "instances"), path)
    items = array(obj["instances"], path, "instances", 1, MAX_PREDICTIONS)
    where = child(path, "instances")
    out: dict[str, Any] = {
        "instances": [_instance(mapping(item, where, n), child(where, n))
                      for n, item in enumerate(items)],
        "cost": integer(obj["cost"], path, "cost", 1, MAX_PREDICTIONS),
    }
    if obj.get("frames") is not None:
        frames = array(obj["frames"], path, "frames", 1, MAX_PREDICTIONS)
        out["frames"] = [text(f, child(path, "frames"), n, MAX_ID_LENGTH)
                         for n, f in enumerate(frames)]
    return out


def _instance(obj: dict[str, Any], path: str) -> dict[str, Any]:
    check_keys(obj, INSTANCE_FIELDS, ("confidence", "label", "position"), path)
    out: dict[str, Any] = {
        "position": integer(obj["position"], path, "position", 0, MAX_PREDICTIONS - 1),
        "label": class_name(obj["label"], path, "label"),
        "confidence": number(obj["confidence"], path, "confidence", 0.0, 1.0),
    }
    for key in ("instance_id", "track_id"):
        if obj.get(key) is not None:
            out[key] = text(obj[key], path, key, MAX_ID_LENGTH)
    if obj.get("bbox") is not None:
        box = array(obj["bbox"], path, "bbox", 4, 4)
        where = child(path, "bbox")
        out["bbox"] = [number(box[0], where, 0, -math.inf, math.inf),
                       number(box[1], where, 1, -math.inf, math.inf),
                       number(box[2], where, 2, 0.0, math.inf),
                       number(box[3], where, 3, 0.0, math.inf)]
    return out
