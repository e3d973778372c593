"""On the broker: a producer built from the settings puts each keyed record in the partition the
Java client (and aiokafka, faust) would, so a request and the label answering it meet."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from services.streaming.partitioning import murmur2_partition
from services.streaming.settings import KafkaSettings
from services.streaming.topics import TopicSpec, create_topics
from tests.conftest import Broker
from tests.integration.kafka_support import read_all

pytestmark = pytest.mark.broker


def test_keyed_records_land_where_murmur2_says(broker: Broker) -> None:
    topic = f"test.partitioning.{uuid.uuid4().hex[:8]}"
    create_topics(AdminClient({"bootstrap.servers": broker.bootstrap}), [TopicSpec(topic, 7)])
    kafka = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap})
    producer = Producer(kafka.client({"allow.auto.create.topics": False}, role="producer"))
    keys = [f"asset-{i}".encode() for i in range(300)]
    for key in keys:
        producer.produce(topic, b"v", key)
    assert producer.flush(15) == 0
    placed = {m.key(): m.partition() for m in read_all(broker.bootstrap, topic)}
    assert placed == {key: murmur2_partition(key, 7) for key in keys}
    assert len(set(placed.values())) == 7
