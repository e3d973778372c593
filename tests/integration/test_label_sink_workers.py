"""The label sink with 2 workers on Apache Kafka (issue 12, items 3(f) and 3(g)).

(g) One of two workers SIGKILLed mid-stream: the survivor takes its partitions, and the counts,
    the human-model agreement and every trigger's manifest are exact.
(f) The partitioning rule: requests written by librdkafka through the loop's producer settings,
    labels by a plain Java-compatible producer (aiokafka's default partitioner): each label meets
    its request on the worker that owns their partition, so every label joins.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import threading
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import decode_class_feedback, decode_retrain_trigger
from services.streaming.partitioning import murmur2_partition
from services.streaming.settings import KafkaSettings
from services.streaming.topics import TopicSpec, create_topics
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import (
    Scenario,
    SinkProcess,
    assert_manifests_exact,
    committed_and_ends,
    create_sink_topics,
    scenario,
)

pytestmark = pytest.mark.timeout(300)

MODELS = ("m-a", "m-b")


class TwoWorkers:
    """Two sink workers of one app id under a private topic prefix."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        self.bootstrap = bootstrap
        self.prefix = f"lsw-{uuid.uuid4().hex[:8]}."
        self.app_id = f"label-sink-{self.prefix}"
        create_sink_topics(bootstrap, self.prefix)
        self.labels = self.prefix + topics.LABELS
        self.requests = self.prefix + topics.ANNOTATION_REQUESTS
        self.workers = [SinkProcess(bootstrap, self.app_id, self.prefix, **options).start()
                        for _ in range(2)]

    def wait_ready(self) -> None:
        for worker in self.workers:
            worker.wait_ready(90)
        # The second join rebalanced the first: both ready again means both own partitions.
        for worker in self.workers:
            worker.wait_ready(90)

    def alive(self) -> list[SinkProcess]:
        return [w for w in self.workers if w.alive()]

    def total(self, name: str) -> float:
        return sum(metric(w.metrics(), name) for w in self.alive())

    def wait_requests_stored(self, n: int) -> None:
        changelog = f"{self.app_id}-requests-changelog"
        wait_for(lambda: sum(true_end_offsets({"bootstrap.servers": self.bootstrap}, changelog,
                                              range(4)).values()) == n, 60,
                 "requests not stored")

    def latest_feedback(self, model: str) -> Any:
        mine = [decode_class_feedback(m.value())
                for m in read_all(self.bootstrap, self.prefix + topics.CLASS_FEEDBACK)]
        mine = [f for f in mine if f.model_id == model]
        return mine[-1] if mine else None

    def wait_all_counted(self, model: str, n: int) -> Any:
        def complete() -> Any:
            fb = self.latest_feedback(model)
            ok = fb and sum(s.labels_total for s in fb.classes.values()) == n
            return fb if ok else None

        try:
            return wait_for(complete, 90, "")
        except AssertionError:
            fb = self.latest_feedback(model)
            have = sum(s.labels_total for s in fb.classes.values()) if fb else 0
            stats = [{k: v for k, v in w.metrics().items()
                      if k[0].startswith(("label_sink_label_records", "label_sink_out_of_order",
                                          "label_sink_committed", "label_sink_duplicate"))}
                     for w in self.alive()]
            for w in self.alive():  # mode's workers print every task's stack on SIGUSR1
                assert w.proc is not None
                w.proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            raise AssertionError(f"{model}: {have} of {n} counted; {stats}") from None

    def stop(self) -> list[int | None]:
        return [w.stop() for w in self.workers]


def assert_exact(loop: TwoWorkers, sc: Scenario, per_model: int, n: int) -> None:
    """Counts, agreement, manifests and dead letters are what the scenario says."""
    feedback = {model: loop.wait_all_counted(model, per_model) for model in MODELS}
    triggers = [decode_retrain_trigger(m.value())
                for m in read_all(loop.bootstrap, loop.prefix + topics.RETRAIN_TRIGGERS)]
    for model, fb in feedback.items():
        assert {c: s.labels_total for c, s in fb.classes.items()} == sc.truth.counts(model)
        assert {c: s.agreement for c, s in fb.classes.items()} == pytest.approx(
            sc.truth.agreement(model))
        assert len({t.trigger_id for t in triggers if t.model_id == model}) == per_model // n
        assert_manifests_exact(loop.bootstrap, loop.labels, triggers, sc.truth, model, n)

    def dead() -> set[str]:
        letters = [orjson.loads(m.value())
                   for m in read_all(loop.bootstrap, topics.dlq(loop.labels))]
        return {orjson.loads(base64.b64decode(r["original_b64"]))["label_id"] for r in letters}

    # Orphans wait for their requests until the requests partition is read to its end
    # (early.py), then are dead-lettered.
    wait_for(lambda: dead() == sc.truth.orphans, 60, "orphans not dead-lettered")


def test_two_workers_one_sigkilled_mid_stream_count_exactly(kafka: ApacheKafka) -> None:
    per_model, n = 120, 20
    loop = TwoWorkers(kafka.bootstrap, trigger_min_labels=n)
    sc = scenario(12, loop.prefix, MODELS, per_model)
    started = time.monotonic()
    try:
        loop.wait_ready()
        produce(kafka.bootstrap, loop.requests, sc.requests)
        loop.wait_requests_stored(len(sc.requests))

        def feed() -> None:
            for i in range(0, len(sc.labels), 12):
                produce(kafka.bootstrap, loop.labels, sc.labels[i:i + 12])
                time.sleep(0.3)

        feeder = threading.Thread(target=feed)
        feeder.start()
        wait_for(lambda: loop.total("label_sink_label_records_total") >= 60, 60,
                 "no progress before the SIGKILL")
        # Kill the worker that has counted more: its models' state must move to the other.
        counted = [metric(w.metrics(), "label_sink_label_records_total") for w in loop.workers]
        victim = loop.workers[counted.index(max(counted))]
        victim.kill()
        feeder.join()
        assert_exact(loop, sc, per_model, n)
        (survivor,) = loop.alive()
        by_model = f"{loop.app_id}-labels-by-model"
    finally:
        codes = loop.stop()
    assert codes.count(0) == 1, codes  # the survivor stops cleanly
    committed, ends = committed_and_ends(kafka.bootstrap, loop.app_id,
                                         {loop.labels: 4, loop.requests: 4, by_model: 4})
    behind = {tp: (committed[tp], end) for tp, end in ends.items()
              if committed[tp] != end and not (end == 0 and committed[tp] is None)}
    assert behind == {}, f"(committed, end) after the survivor's graceful stop: {behind}"
    print(f"\n2 workers, one SIGKILLed after {max(counted):.0f} counted: exact in "
          f"{time.monotonic() - started:.1f}s")


async def _produce_java_compatible(bootstrap: str, topic: str,
                                   records: list[tuple[bytes, bytes]]) -> None:
    """Labels from a plain producer: aiokafka's default partitioner is the Java client's
    (murmur2 of the key), as most annotation tools and their Kafka clients use."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def test_labels_from_a_java_compatible_producer_join_requests_from_librdkafka(
        kafka: ApacheKafka) -> None:
    per_model, n = 100, 1_000_000  # no triggers: this test is about the join
    loop = TwoWorkers(kafka.bootstrap, trigger_min_labels=n)
    sc = scenario(6, loop.prefix, MODELS, per_model, duplicate_share=0.0, orphans=0)
    settings = KafkaSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap})
    try:
        loop.wait_ready()
        producer = Producer(settings.client({"allow.auto.create.topics": False},
                                            role="producer"))
        for key, value in sc.requests:
            producer.produce(loop.requests, value, key)
        assert producer.flush(15) == 0
        loop.wait_requests_stored(len(sc.requests))
        asyncio.run(_produce_java_compatible(kafka.bootstrap, loop.labels, sc.labels))
        for model in MODELS:
            loop.wait_all_counted(model, per_model)
        joined = loop.total("label_sink_joined_labels_total")
        orphans = loop.total("label_sink_unattributed_labels_total")
    finally:
        codes = loop.stop()
    assert codes == [0, 0]
    assert (joined, orphans) == (len(sc.labels), 0)
    placed = {m.key(): m.partition() for m in read_all(kafka.bootstrap, loop.requests)}
    assert placed == {k: murmur2_partition(k, 4) for k, _ in sc.requests}


def test_librdkafkas_default_partitioner_would_break_the_join(kafka: ApacheKafka) -> None:
    """Control for the test above: librdkafka's own default (CRC32) puts many of the same keys
    elsewhere than murmur2, so labels would miss their requests on 2 workers."""
    topic = f"test.crc32.{uuid.uuid4().hex[:8]}"
    create_topics(AdminClient({"bootstrap.servers": kafka.bootstrap}), [TopicSpec(topic, 4)])
    keys = [k for k, _ in scenario(6, "x", MODELS, 100).requests]
    producer = Producer({"bootstrap.servers": kafka.bootstrap})  # partitioner left default
    for key in keys:
        producer.produce(topic, b"r", key)
    assert producer.flush(15) == 0
    placed = {m.key(): m.partition() for m in read_all(kafka.bootstrap, topic)}
    moved = sum(placed[k] != murmur2_partition(k, 4) for k in keys)
    assert moved > len(keys) // 2
