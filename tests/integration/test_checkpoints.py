"""Reading a state topic to its true end, on the broker whose high watermark is wrong."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from services.streaming.checkpoints import CheckpointReadTimeout, load_latest
from services.streaming.embedded import EmbeddedBroker

pytestmark = pytest.mark.broker


def _topic(broker: EmbeddedBroker, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config={"cleanup.policy": "compact"})])[
        name].result(10)


def _producer(broker: EmbeddedBroker) -> Producer:
    # linger groups the writes into multi-record batches: the case the broker's HW gets wrong.
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50,
                     "allow.auto.create.topics": False})


def test_latest_value_per_key_across_partitions(broker: EmbeddedBroker, unique_topic: str) -> None:
    _topic(broker, unique_topic, 3)
    producer = _producer(broker)
    expected = {}
    for round_ in range(4):
        for i in range(30):
            key, value = f"k{i}".encode(), f"v{i}.{round_}".encode()
            producer.produce(unique_topic, value, key, partition=i % 3)
            expected[key] = value
    producer.produce(unique_topic, None, b"k7", partition=7 % 3)  # a tombstone deletes
    del expected[b"k7"]
    producer.flush(10)
    config = {"bootstrap.servers": broker.bootstrap}
    latest = load_latest(config, unique_topic, producer=producer)
    assert {key: record.value for key, record in latest.items()} == expected
    assert {key: record.partition for key, record in latest.items()} == {
        key: int(key[1:]) % 3 for key in expected}
    # Round 3 is each partition's fourth pass: key i is that partition's (3 * 10 + i // 3)-th.
    assert {key: record.offset for key, record in latest.items()} == {
        key: 30 + int(key[1:]) // 3 for key in expected}
    producer.produce(unique_topic, b"late", b"k1", partition=1)
    producer.flush(10)
    assert load_latest(config, unique_topic, producer=producer)[b"k1"].value == b"late"


def test_reads_past_the_misreported_high_watermark(
    tansu: EmbeddedBroker, unique_topic: str
) -> None:
    broker = tansu  # the broker whose high watermark is wrong
    _topic(broker, unique_topic, 1)
    producer = _producer(broker)
    for i in range(25):
        producer.produce(unique_topic, b"x%d" % i, b"k%d" % i, partition=0)
    producer.flush(10)
    got = load_latest({"bootstrap.servers": broker.bootstrap}, unique_topic, producer=producer)
    assert len(got) == 25


def test_unreadable_topic_times_out_with_a_reason(broker: EmbeddedBroker) -> None:
    producer = _producer(broker)
    config = {"bootstrap.servers": "127.0.0.1:1", "socket.connection.setup.timeout.ms": 1000}
    _topic(broker, "test.checkpoints.unreachable", 1)
    with pytest.raises(CheckpointReadTimeout, match="markers of partitions \\[0\\] not seen"):
        load_latest(config, "test.checkpoints.unreachable", producer=producer, timeout_s=2)
