"""Helpers shared by the service integration tests: a service as a real subprocess (so SIGKILL is
real), topic readers and writers, and a metrics scraper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

# The service subprocess and the metrics scraper are the closed loop's (re-exported here).
from services.evaluation.processes import ServiceProcess as ServiceProcess
from services.evaluation.processes import http_get as http_get
from services.evaluation.processes import metric as metric
from services.evaluation.processes import scrape as scrape
from services.streaming.partitioning import KEYED_PARTITIONER


def wait_for(predicate: Callable[[], Any], timeout_s: float, message: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(message)


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    # Keys hashed as every writer of the loop hashes them (services/streaming/partitioning.py).
    producer = Producer({"bootstrap.servers": bootstrap, "allow.auto.create.topics": False,
                         "linger.ms": 5, "partitioner": KEYED_PARTITIONER})
    for key, value in records:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(15) == 0


def read_all(bootstrap: str, topic: str, *, committed_only: bool = True) -> list[Any]:
    """Every record of `topic` from the beginning to its true end (partition EOF), as a
    `read_committed` reader sees them (`committed_only=False`: `read_uncommitted`, so records
    of open and aborted transactions too)."""
    isolation = "read_committed" if committed_only else "read_uncommitted"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True, "isolation.level": isolation})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    remaining, out = set(meta.partitions), []
    # Generous: a small topic reads in well under a second; a loaded 2-core CI box is slower.
    deadline = time.monotonic() + 60
    while remaining and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
                continue
            raise AssertionError(msg.error())
        out.append(msg)
    consumer.close()
    if remaining:  # a partial read would pass for the topic's content: say so instead
        raise AssertionError(f"{topic}: partitions {sorted(remaining)} not read to their end "
                             "in 60 s")
    return out


