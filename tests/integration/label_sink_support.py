"""Helpers for the label sink integration tests: topics under a private prefix, the sink as a real
subprocess, and event builders. Generic helpers live in kafka_support."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from confluent_kafka.admin import AdminClient

from services.streaming import topics
from services.streaming.events import encode_event
from services.streaming.topics import TopicSpec, create_topics
from tests.integration.kafka_support import ServiceProcess


def create_sink_topics(bootstrap: str, prefix: str, partitions: int = 4) -> None:
    data = [topics.LABELS, topics.ANNOTATION_REQUESTS]
    control = [topics.RETRAIN_TRIGGERS, topics.CLASS_FEEDBACK]
    specs = [TopicSpec(prefix + t, partitions) for t in data]
    specs += [TopicSpec(prefix + t, 1) for t in control]
    specs += [TopicSpec(topics.dlq(prefix + t), 1) for t in data]
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), specs)


class SinkProcess(ServiceProcess):
    """`active-stream label-sink` with a private app id, topic prefix and metrics port."""

    def __init__(self, bootstrap: str, app_id: str, prefix: str, **options: Any) -> None:
        data_dir = tempfile.mkdtemp(prefix="label-sink-data-")
        env = dict(os.environ)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ACTIVE_STREAM_LABEL_SINK_APP_ID": app_id,
            "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
            "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": prefix,
            "ACTIVE_STREAM_LABEL_SINK_SESSION_TIMEOUT_S": "6",
            "ACTIVE_STREAM_LABEL_SINK_HEARTBEAT_INTERVAL_S": "1",
            "ACTIVE_STREAM_LABEL_SINK_FEEDBACK_INTERVAL_S": "0.5",
            "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": data_dir,
        })
        env.update({f"ACTIVE_STREAM_LABEL_SINK_{k.upper()}": str(v) for k, v in options.items()})
        super().__init__("label-sink", env, "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT")


def label(label_id: str, classes: list[str], *, at: float, request_id: str | None = None,
          model_id: str | None = None, asset_id: str | None = None) -> bytes:
    event: dict[str, Any] = {
        "schema_version": 1, "label_id": label_id, "asset_id": asset_id or f"asset-{label_id}",
        "annotations": [{"label": c} for c in classes], "annotator_id": "ann-1",
        "labeled_at": at,
    }
    if request_id is not None:
        event["request_id"] = request_id
    if model_id is not None:
        event["model_id"] = model_id
    return encode_event(event)


def request(request_id: str, model_id: str, predicted: str, *, at: float, asset_id: str,
            classes: tuple[str, ...] = ("cat", "dog")) -> bytes:
    """An annotation request whose single prediction puts 0.9 on `predicted`."""
    rest = [c for c in classes if c != predicted]
    scores = {predicted: 0.9, **{c: 0.1 / len(rest) for c in rest}}
    return encode_event({
        "schema_version": 1, "request_id": request_id, "asset_id": asset_id, "asset_uri": None,
        "event_id": f"ev-{request_id}", "model_id": model_id, "model_version": "v1",
        "event_timestamp": at,
        "reason": {"strategy": "threshold", "score": 0.5, "class": predicted, "threshold": 0.4,
                   "instances": [0], "inclusion_probability": None},
        "priority": 0.5, "predictions": [{"scores": scores}],
        "source": {"topic": "al.inference-events.v1", "partition": 0, "offset": 0},
    })
