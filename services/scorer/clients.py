"""The scorer's Kafka clients: their configuration, and the first questions asked of the cluster
(is it there, do the topics exist)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from services.scorer.errors import ScorerUnavailable, authorization
from services.streaming import connection, topics
from services.streaming.settings import ScorerSettings

GROUP_DEFAULTS = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1000}
"""Group settings unless configured (docs/scorer.md, "Running on a cluster"; bench/takeover.py):
- a static member that stops for good (scale-in, a lost node) holds its partitions until its
  session expires (static members do not leave on close): 10 s instead of librdkafka's 45 s.
  Heartbeats come from librdkafka's own thread, so a busy Python loop does not miss them.
- a member learns of a rebalance at its next heartbeat: 3 s made a scale-out take ~4.5 s on
  Apache Kafka, 1 s ~2.5 s.
The assignor stays librdkafka's eager default: with cooperative-sticky and static members, a
rolling restart left two partitions with no owner in 1 of 3 runs (measured on Kafka 4.1.1,
librdkafka 2.16); the scorer assigns incrementally if a user chooses it all the same."""


def consumer_config(settings: ScorerSettings, errors: connection.Errors,
                    on_commit: Callable[[KafkaError | None, list[TopicPartition]], None]
                    ) -> dict[str, Any]:
    """The group consumer's configuration: read_committed, offsets committed by the scorer."""
    config: dict[str, Any] = {
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "on_commit": on_commit,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "allow.auto.create.topics": False,
    }
    if settings.static_membership:
        config["group.instance.id"] = settings.instance_id
    for key, value in GROUP_DEFAULTS.items():
        if key not in settings.kafka.client_config:
            config[key] = value
    config["error_cb"] = errors
    config["logger"] = errors.logger("librdkafka.scorer")
    return settings.kafka.client(role="consumer", overrides=config)


def producer_config(settings: ScorerSettings, errors: connection.Errors,
                    extra: dict[str, Any]) -> dict[str, Any]:
    """The output producer's configuration, plus what the processing guarantee adds (`extra`)."""
    config: dict[str, Any] = {
        "allow.auto.create.topics": False,
        "enable.idempotence": True,
        "linger.ms": 5,
        # Dead letters of large bad records are ~4/3 of the original; checkpoints hold the
        # dedupe memory (topics.py).
        "message.max.bytes": max(topics.DLQ_MAX_MESSAGE_BYTES, topics.STATE_MAX_MESSAGE_BYTES),
        "error_cb": errors,
        **extra,
    }
    return settings.kafka.client(config, role="producer")


def wait_for(consumer: Consumer, settings: ScorerSettings, errors: connection.Errors,
             timeout_s: float = 30.0) -> None:
    """Wait until the cluster answers; ScorerUnavailable with one line saying why not (a
    refused password or CA is known within a second or two: no point waiting it out)."""
    deadline = time.monotonic() + timeout_s
    config = settings.kafka.client(role="consumer")
    while True:
        try:
            consumer.list_topics(timeout=2.0)
            return
        except KafkaException:
            consumer.poll(0.1)  # serves error_cb (nothing is assigned yet)
        if errors.settled is not None:
            raise ScorerUnavailable(connection.explain(errors.settled, config))
        consumer.poll(0.1)  # serves the log lines of the failed attempt too
        if time.monotonic() > deadline:
            raise ScorerUnavailable(connection.explain(errors.last, config))


def partition_count(consumer: Consumer, topic: str) -> int:
    """The partitions of `topic`; ScorerUnavailable when it is missing or not ours to see."""
    meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
    if meta is not None and meta.error is not None and authorization(meta.error):
        raise ScorerUnavailable(
            f"not authorized to DESCRIBE topic {topic} ({meta.error.str()}): grant the "
            "scorer's ACLs (`active-stream acls scorer --principal User:...`)")
    if meta is None or meta.error is not None or not meta.partitions:
        raise ScorerUnavailable(
            f"topic {topic} does not exist: run `active-stream topics create`")
    return len(meta.partitions)
