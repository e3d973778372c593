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


def test_a_pointer_to_a_chunked_checkpoint_reads_its_chunks_through_the_scan(
        broker: EmbeddedBroker, unique_topic: str) -> None:
    """A checkpoint too large for one record is chunks plus a head; a commit points at the
    head only, so the locator must fall back to reading the topic, whose values carry the
    chunks (services/scorer/checkpoint_format.py, checkpoint_records)."""
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient

    from services.scorer.checkpoint_format import (
        CHECKPOINT_CHUNK_BYTES,
        checkpoint_records,
        chunk_key,
    )
    from services.scorer.checkpoint_store import CheckpointLocator, pointer
    from services.streaming.topics import STATE_MAX_MESSAGE_BYTES, TopicSpec, create_topics

    create_topics(AdminClient({"bootstrap.servers": broker.bootstrap}), [TopicSpec(
        unique_topic, 1, {"max.message.bytes": str(STATE_MAX_MESSAGE_BYTES)})])
    producer = Producer({"bootstrap.servers": broker.bootstrap,
                         "message.max.bytes": STATE_MAX_MESSAGE_BYTES})
    key = b"group/input/0"
    payload = b"x" * (2 * CHECKPOINT_CHUNK_BYTES + 10)  # three chunks
    groups, slot = checkpoint_records(key, payload, None)
    delivered: dict[bytes, int] = {}
    for group in groups:
        for out in group:
            producer.produce(unique_topic, out.value, out.key, partition=0,
                             on_delivery=lambda err, msg: delivered.__setitem__(msg.key(),
                                                                                msg.offset()))
        producer.flush(30)
    config = {"bootstrap.servers": broker.bootstrap, "message.max.bytes": 8 * 1024 * 1024}
    locator = CheckpointLocator(config, unique_topic, lambda p: key, lambda: producer)
    found = locator.locate([TopicPartition("input", 0, 100,
                                           metadata=pointer(0, delivered[key]))])
    assert found.scanned and found.raw[0] == groups[-1][0].value
    assert found.latest is not None
    assert [found.latest[chunk_key(key, slot or "", i)] for i in range(3)] == [
        out.value for out in groups[0]]
    assert found.pointers[0] == pointer(0, delivered[key])
