"""What the label sink asks the cluster before it starts: its topics (names under the prefix, and
that the inputs exist and are co-partitioned), which broker it runs on, and whether a topic is in
the broker's metadata yet. Blocking calls through our own librdkafka admin client."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from services.streaming import topics
from services.streaming.settings import LabelSinkSettings


class SinkUnavailable(RuntimeError):
    """The sink cannot start (topics missing, partition counts differ); the message says why."""


@dataclass(frozen=True)
class SinkTopics:
    labels: str
    requests: str
    triggers: str
    feedback: str

    @classmethod
    def with_prefix(cls, prefix: str) -> SinkTopics:
        return cls(prefix + topics.LABELS, prefix + topics.ANNOTATION_REQUESTS,
                   prefix + topics.RETRAIN_TRIGGERS, prefix + topics.CLASS_FEEDBACK)


def partition_counts(settings: LabelSinkSettings, names: SinkTopics) -> int:
    """Partitions of the label topic; raises SinkUnavailable when the inputs are missing or not
    co-partitioned (the join needs equal partition counts)."""
    admin = AdminClient(settings.kafka.client(role="admin"))
    meta = admin.list_topics(timeout=15.0).topics
    counts = {}
    for name in (names.labels, names.requests):
        if name not in meta or meta[name].error is not None:
            raise SinkUnavailable(f"topic {name} does not exist: run `active-stream topics create`")
        counts[name] = len(meta[name].partitions)
    if len(set(counts.values())) != 1:
        raise SinkUnavailable(f"labels and requests must have equal partition counts: {counts}")
    return counts[names.labels]


def metadata_lists(settings: LabelSinkSettings) -> Callable[[str], bool]:
    """A blocking check: does the broker's metadata list this topic with all its partitions led?"""
    admin = AdminClient(settings.kafka.client(role="admin"))

    def visible(topic: str) -> bool:
        # A short timeout: the caller polls again; a broker that does not answer at all is
        # reported by the caller's own deadline.
        try:
            meta = admin.list_topics(topic, timeout=5.0).topics.get(topic)
        except KafkaException:  # broker down or restarting (_TRANSPORT): not visible yet
            return False
        return bool(meta is not None and meta.error is None and meta.partitions and all(
            p.leader >= 0 for p in meta.partitions.values()))

    return visible


def is_tansu(settings: LabelSinkSettings) -> bool:
    """True when the cluster is the embedded Tansu broker (its cluster id says so)."""
    admin = AdminClient(settings.kafka.client(role="admin"))
    cluster = admin.describe_cluster(request_timeout=15).result(timeout=20)
    return str(cluster.cluster_id or "").startswith("tansu")
