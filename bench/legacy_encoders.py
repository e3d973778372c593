"""The services' output dicts as they were hand-built before issue 19 item 1 declared the events
(the scorer's `build_request` at 55c4eb0^, the dead-letter dict at a511f2e^), kept only so
bench/encoders.py can measure the declared encoders beside them in one process. Not used by any
service. The retrain trigger's and class feedback's hand `to_dict` live in
bench/legacy_control_events.py."""

from __future__ import annotations

import base64
from typing import Any

from services.core import Selected
from services.scorer.builders import request_id
from services.streaming.event_fields import SCHEMA_VERSION
from services.streaming.events import InferenceEvent


def _unit(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def build_request_dict(event: InferenceEvent, sel: Selected, topic: str, partition: int,
                       offset: int, tier: tuple[str, int, float] | None = None) -> dict[str, Any]:
    """The annotation request as the scorer built it by hand (no track, no instances: the
    benchmark's default policy sets neither)."""
    assert sel.track is None and sel.targets is None
    request = {
        "schema_version": SCHEMA_VERSION,
        "request_id": request_id(event.asset_id, event.model_id, event.model_version),
        "asset_id": event.asset_id,
        "event_id": event.event_id,
        "model_id": event.model_id,
        "model_version": event.model_version,
        "event_timestamp": event.timestamp,
        "reason": {
            "strategy": sel.strategy,
            "score": _unit(sel.score),
            "class": sel.class_name,
            "threshold": None if sel.threshold is None else _unit(sel.threshold),
            "instances": list(sel.driving_predictions),
            "inclusion_probability": sel.inclusion_probability,
        },
        "priority": _unit(sel.priority),
        "predictions": [p.to_dict() for p in event.predictions],
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }
    if event.asset_uri is not None:
        request["asset_uri"] = event.asset_uri
    if tier is not None:
        request["tier"] = {"name": tier[0], "annotators": tier[1], "cost": tier[2]}
    return request


def dead_letter_dict(original: bytes | None, *, topic: str, partition: int, offset: int,
                     reason: str, code: str, service: str, service_version: str,
                     failed_at: float, key: bytes | None = None) -> dict[str, Any]:
    """The dead letter as every service built it by hand (the reason assumed short enough)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "original_b64": base64.b64encode(original or b"").decode("ascii"),
        "key_b64": None if key is None else base64.b64encode(key).decode("ascii"),
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "reason": reason,
        "code": str(code),
        "service": service,
        "service_version": service_version,
        "failed_at": failed_at,
    }
