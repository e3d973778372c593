"""Helpers for the label sink integration tests: topics under a private prefix, the sink as a real
subprocess, and event builders. Generic helpers live in kafka_support."""

from __future__ import annotations

import os
import random
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.streaming import topics
from services.streaming.events import decode_label, encode_event
from services.streaming.topics import TopicSpec, create_topics
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import ServiceProcess, read_all


def create_sink_topics(bootstrap: str, prefix: str, partitions: int = 4) -> None:
    data = [topics.LABELS, topics.ANNOTATION_REQUESTS]
    control = [topics.RETRAIN_TRIGGERS, topics.CLASS_FEEDBACK]
    specs = [TopicSpec(prefix + t, partitions) for t in data]
    specs += [TopicSpec(prefix + t, 1) for t in control]
    specs += [TopicSpec(topics.dlq(prefix + t), 1) for t in data]
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), specs)


class SinkProcess(ServiceProcess):
    """`active-stream label-sink` with a private app id, topic prefix and metrics port, and its
    own static instance id unless `instance_id` is given (the default, the host name, is one
    for every process here: two workers of one app id would fence each other)."""

    def __init__(self, bootstrap: str, app_id: str, prefix: str, **options: Any) -> None:
        options.setdefault("instance_id", f"w-{uuid.uuid4().hex[:8]}")
        # Labels answering no request are dead-lettered a few seconds after the requests
        # partition is read, not after the default 30-s grace (early.py).
        options.setdefault("early_label_grace_s", 2)
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


CLASSES = ("cat", "dog", "bird")


@dataclass
class Truth:
    """What the sink must end up with for one scenario."""

    model_of: dict[str, str]  # label id -> model (valid labels only)
    classes: dict[str, str]  # label id -> the human's class
    agreed: dict[str, bool]  # label id -> the model's top-1 equals the human's class
    orphans: set[str]  # label ids answering no request: dead-lettered, never counted

    def counts(self, model: str) -> Counter[str]:
        return Counter(c for lid, c in self.classes.items() if self.model_of[lid] == model)

    def agreement(self, model: str) -> dict[str, float]:
        out = {}
        for name in CLASSES:
            mine = [lid for lid, c in self.classes.items()
                    if c == name and self.model_of[lid] == model]
            if mine:
                out[name] = sum(self.agreed[lid] for lid in mine) / len(mine)
        return out


@dataclass
class Scenario:
    requests: list[tuple[bytes, bytes]]
    labels: list[tuple[bytes, bytes]]  # in the order to send: duplicates and orphans mixed in
    truth: Truth


def scenario(seed: int, tag: str, models: tuple[str, ...], per_model: int, *,
             duplicate_share: float = 0.05, orphans: int = 10) -> Scenario:
    """Requests for `per_model` assets of each model and one label per request (joined through
    its request_id: labels carry no model_id), plus byte-identical copies of a share of them
    (same key, same bytes) and labels answering unknown requests."""
    rng = random.Random(seed)
    requests, labels = [], []
    truth = Truth({}, {}, {}, set())
    for i in range(per_model * len(models)):
        model, asset = models[i % len(models)], f"a-{tag}-{i}"
        predicted, human = rng.choice(CLASSES), rng.choice(CLASSES)
        requests.append((asset.encode(), request(f"r-{tag}-{i}", model, predicted, at=100.0,
                                                 asset_id=asset, classes=CLASSES)))
        lid = f"l-{tag}-{i}"
        labels.append((asset.encode(), label(lid, [human], at=200.0 + i,
                                             request_id=f"r-{tag}-{i}", asset_id=asset)))
        truth.model_of[lid], truth.classes[lid] = model, human
        truth.agreed[lid] = predicted == human
    labels += rng.sample(labels, int(len(labels) * duplicate_share))
    for j in range(orphans):
        lid = f"o-{tag}-{j}"
        labels.append((f"o-{tag}-{j}".encode(),
                       label(lid, ["cat"], at=150.0, request_id=f"never-{tag}-{j}")))
        truth.orphans.add(lid)
    rng.shuffle(labels)
    return Scenario(requests, labels, truth)


def assert_manifests_exact(bootstrap: str, labels_topic: str, triggers: list[Any],
                           truth: Truth, model: str, n: int) -> set[str]:
    """Every trigger of `model` (deduplicated by trigger_id) names exactly the labels it
    counted: the records at its manifest's offsets are valid labels of `model`, as many as
    `total`, with exactly `counts`; no offset and no label is in two triggers' manifests.
    Returns the label ids the manifests name."""
    by_id = {t.trigger_id: t for t in triggers if t.model_id == model}
    records = {(m.partition(), m.offset()): m.value() for m in read_all(bootstrap, labels_topic)}
    offsets: set[tuple[int, int]] = set()
    named: set[str] = set()
    for trigger in by_id.values():
        assert trigger.manifest.topic == labels_topic
        assert trigger.total == n, trigger
        mine = [(r.partition, o) for r in trigger.manifest.ranges
                for o in range(r.start_offset, r.end_offset)]
        assert len(mine) == trigger.total, f"{trigger.trigger_id}: {len(mine)} offsets"
        assert not offsets & set(mine), f"{trigger.trigger_id} shares offsets with another"
        offsets |= set(mine)
        ids = [decode_label(records[key]).label_id for key in mine]
        assert len(set(ids)) == len(ids) and not named & set(ids), "a label named twice"
        named |= set(ids)
        assert all(truth.model_of.get(lid) == model for lid in ids), "another model's label"
        assert Counter(truth.classes[lid] for lid in ids) == trigger.counts
    return named


def committed_and_ends(bootstrap: str, group: str,
                       topics_partitions: dict[str, int]) -> tuple[dict, dict]:
    """({(topic, p): committed offset or None}, {(topic, p): end offset}) for the group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t, n in topics_partitions.items() for p in range(n)]
        committed = {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
                     for tp in consumer.committed(tps, timeout=15)}
    finally:
        consumer.close()
    ends = {}
    for topic, n in topics_partitions.items():
        for p, end in true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(n)).items():
            ends[(topic, p)] = end
    return committed, ends
