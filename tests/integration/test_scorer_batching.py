"""The scorer's batch wait on Apache Kafka (services/scorer/batching.py): a consume that waited
for a full batch held a burst's tail, or a slow stream's every record, for the whole batch
timeout; now the first record waits up to the timeout and the rest only up to the linger. The
timeout here is a minute, so a record that came back only at the timeout fails the test: what is
checked is which call returned it, not how fast."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from services.scorer.batching import batch_consumer
from services.streaming.apache_kafka import ApacheKafka

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

TIMEOUT_S = 60.0


class _NoRebalance:
    def mark(self) -> int:
        return 0

    def dropped_since(self, mark: int) -> set[int]:
        return set()


def test_a_burst_smaller_than_a_batch_comes_back_after_the_linger_not_the_timeout(
        kafka: ApacheKafka) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.batching"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": topic,
                         "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(2)])
        consumer.consume(1, 2.0)  # the assignment is fetching (nothing is there yet)

        def burst() -> None:
            time.sleep(1.0)  # the consume below is waiting by then
            for i in range(5):
                producer.produce(topic, f"v{i}".encode(), partition=i % 2)
            producer.flush(30)

        writer = threading.Thread(target=burst)
        writer.start()
        consume = batch_consumer(consumer, _NoRebalance(), 1000, TIMEOUT_S, 0.2)
        started = time.monotonic()
        got = consume()
        while len(got) < 5 and time.monotonic() - started < TIMEOUT_S / 2:
            got += consume()  # the burst may straddle two turns of the loop
        waited = time.monotonic() - started
        writer.join(30)
        assert sorted(m.value() for m in got) == [f"v{i}".encode() for i in range(5)]
        # A single consume(1000, TIMEOUT_S) returns these five only at the timeout.
        assert waited < TIMEOUT_S / 2, waited
    finally:
        consumer.close()
