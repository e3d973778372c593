"""Latest-value-per-key reads of a (compacted) state topic, without trusting the high watermark.

A reader must know where "the end" is to stop reading. The embedded broker reports the high
watermark wrong (docs/brokers.md), so `load()` writes a marker record (a tombstone under a unique
key) to every partition and reads until it sees its own markers: everything written before the
call is then read, on any Kafka-protocol broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

MARKER_PREFIX = b"__marker__/"


class CheckpointReadTimeout(RuntimeError):
    """The state topic could not be read to its end within the timeout."""


class StateRecord(NamedTuple):
    """The latest value of a key and where it sits in the topic."""

    value: bytes
    partition: int
    offset: int


def is_marker(key: bytes | None) -> bool:
    return key is not None and key.startswith(MARKER_PREFIX)


def load_latest(
    client_config: Mapping[str, Any],
    topic: str,
    *,
    producer: Producer,
    timeout_s: float = 30.0,
    on_record: Callable[[], None] | None = None,
    group: str = "active-stream-checkpoint-reader",
) -> dict[bytes, StateRecord]:
    """Every live key of `topic` with its latest value and position (a None value deletes
    the key). Reads the whole topic: its cost is the topic's size, which compaction bounds on
    Apache Kafka (not on the embedded broker).

    Blocks until the whole topic up to this call has been read, or raises CheckpointReadTimeout.
    `producer` writes the markers (it may be the caller's transactional producer only outside a
    transaction; pass a plain one otherwise). Reads `read_committed`. `on_record` is called once
    per record read (markers included), to count what a read costs. `group` is only the
    group.id librdkafka requires (assign(), nothing joined or committed): an ACL names it.
    """
    token = MARKER_PREFIX + uuid.uuid4().hex.encode()
    partitions = _partitions(producer, topic, timeout_s)
    for partition in partitions:
        producer.produce(topic, None, token, partition=partition)
    if producer.flush(timeout_s) != 0:
        raise CheckpointReadTimeout(f"could not write read markers to {topic} in {timeout_s}s")
    return _read_until(client_config, topic, partitions, token, timeout_s, on_record, group)


def _partitions(producer: Producer, topic: str, timeout_s: float) -> list[int]:
    meta = producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaException(meta.error if meta is not None else f"no topic {topic}")
    return sorted(meta.partitions)


def _read_until(
    client_config: Mapping[str, Any], topic: str, partitions: list[int], token: bytes,
    timeout_s: float, on_record: Callable[[], None] | None = None,
    group: str = "active-stream-checkpoint-reader",
) -> dict[bytes, StateRecord]:
    consumer = Consumer({
        **client_config,
        "group.id": group,  # never commits: assign(), not subscribe()
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    latest: dict[bytes, StateRecord] = {}
    pending = set(partitions)
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while pending:
            if time.monotonic() > deadline:
                raise CheckpointReadTimeout(
                    f"{topic}: markers of partitions {sorted(pending)} not seen in {timeout_s}s")
            for msg in consumer.consume(1000, timeout=0.2):
                if msg.error():
                    raise KafkaException(msg.error())
                if on_record is not None:
                    on_record()
                key, value = msg.key(), msg.value()
                if key == token:
                    pending.discard(msg.partition())
                elif key is None or is_marker(key):
                    continue
                elif value is None:
                    latest.pop(key, None)
                else:
                    latest[key] = StateRecord(value, int(msg.partition() or 0),
                                              int(msg.offset() or 0))
    finally:
        consumer.close()
    return latest
