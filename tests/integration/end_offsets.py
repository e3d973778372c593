"""The true end offset of a partition, on a broker whose ListOffsets(latest) may be wrong.

The embedded broker answers "latest offset" with the first offset of the last record batch + 1, so
after a multi-record batch it reports less than the real end (docs/brokers.md, "High watermark").
A fetch is not affected: fetching from (reported end - 1) returns the whole last batch, and the
consumer's end-of-partition event then says where the partition really ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


def true_end_offsets(
    client_config: Mapping[str, Any],
    topic: str,
    partitions: Iterable[int],
    *,
    timeout_s: float = 10.0,
) -> dict[int, int]:
    """{partition: offset after its last record} for `partitions` of `topic`.

    Never below the broker's reported end, and equal to it on a broker that reports it right
    (Apache Kafka, Redpanda), at the cost of one fetch per non-empty partition. Reads
    `read_uncommitted`: the answer is the log end, open transactions included. Joins no group
    and commits nothing. Blocks up to about `timeout_s`; raises TimeoutError naming the
    partitions whose end was not reached, KafkaException on a broker error.
    """
    consumer = Consumer({
        **client_config,
        "group.id": "active-stream-end-offsets",  # required by librdkafka; assign() never joins
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_uncommitted",
    })
    try:
        ends: dict[int, int] = {}
        starts = []
        for partition in partitions:
            watermarks = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s)
            if watermarks is None:
                raise TimeoutError(f"{topic}[{partition}]: no watermarks in {timeout_s}s")
            low, high = watermarks
            if high <= low:
                ends[partition] = high  # empty: nothing to fetch
            else:
                starts.append(TopicPartition(topic, partition, high - 1))
        if starts:
            ends.update(_read_to_eof(consumer, starts, timeout_s))
        return ends
    finally:
        consumer.close()


def _read_to_eof(
    consumer: Consumer, starts: list[TopicPartition], timeout_s: float
) -> dict[int, int]:
    consumer.assign(starts)
    pending = {tp.partition for tp in starts}
    ends: dict[int, int] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{starts[0].topic}: end of partitions {sorted(pending)} not reached "
                f"in {timeout_s}s")
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        err = msg.error()
        if err is None:
            continue  # a record of the last batch; the EOF event that follows carries the end
        if err.code() != KafkaError._PARTITION_EOF:
            raise KafkaException(err)
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None  # always set on an EOF event
        ends[partition] = offset
        pending.discard(partition)
    return ends
