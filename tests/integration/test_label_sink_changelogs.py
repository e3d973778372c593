"""The label sink's changelog configuration on Apache Kafka (services/label_sink/changelogs.py):
`align` gives a changelog created before the configuration changed the current one, leaves
alone a topic that already has it and one that does not exist (faust creates that one)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from services.label_sink.changelogs import align, changelog_topics
from services.streaming.apache_kafka import ApacheKafka
from tests.integration.kafka_support import wait_for

pytestmark = pytest.mark.timeout(120)


def config_of(admin: AdminClient, topic: str) -> dict[str, str]:
    """The topic's configuration, {} while the broker does not know the topic yet."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource])[resource].result(30)
    except KafkaException:
        return {}
    return {k: e.value for k, e in entries.items()}


def test_align_sets_the_changelog_configuration_on_existing_topics_only(
        kafka: ApacheKafka) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    app_id = f"align-{uuid.uuid4().hex[:8]}"
    requests, labels, mastery, tiers = changelog_topics(app_id)
    old = {"cleanup.policy": "compact", "segment.bytes": str(4 * 2**20)}
    for topic in (requests, labels):
        admin.create_topics([NewTopic(topic, 2, 1, config=old)])[topic].result(30)
    # The broker answers for a topic a moment after its creation returns (measured: not in the
    # metadata at once); a few seconds is plenty on loopback.
    wait_for(lambda: config_of(admin, labels), 30, "the created topics never became visible")

    assert sorted(align(admin, changelog_topics(app_id))) == sorted([requests, labels])

    for topic in (requests, labels):
        config = config_of(admin, topic)
        # Kafka's defaults were 86400000 and 0.5: tombstones for a day, cleaned at half dirty.
        assert config["delete.retention.ms"] == "600000", topic
        assert config["min.cleanable.dirty.ratio"] == "0.1", topic
        assert config["segment.ms"] == "3600000", topic
        # Incremental: what the topic had and the sink does not set stays.
        assert config["cleanup.policy"] == "compact", topic
    listed = admin.list_topics(timeout=30).topics
    assert mastery not in listed and tiers not in listed  # left for faust to create
    assert align(admin, changelog_topics(app_id)) == []  # nothing differs any more
