"""The scorer's producer and what the broker said about each record it was given."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.scorer.errors import DeliveryFailed, authorization, raise_if_replaced
from services.scorer.metrics import ScorerMetrics
from services.scorer.partition import Output

_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
FLUSH_S = 60.0
"""How long a flush may wait for the broker's acknowledgements before the scorer stops: on a
healthy cluster a batch's output is acknowledged in milliseconds; a minute means it is gone."""


class Outbox:
    """One producer and its delivery reports: refusals (`check` raises DeliveryFailed), and where
    the state-topic records landed (`landed`, by key: their checkpoint pointers). Not
    thread-safe (the loop's thread; reports are served by its own flush and poll)."""

    def __init__(self, config: dict[str, Any], metrics: ScorerMetrics, state_topic: str) -> None:
        self.config = {**config, "on_delivery": self._on_delivery}
        self.metrics = metrics
        self.state_topic = state_topic
        self.producer = Producer(self.config)
        self._undelivered: list[tuple[str, KafkaError]] = []
        self.landed: dict[bytes, tuple[int, int]] = {}
        # The unit whose records `send` counts (guarantees.py, AtLeastOnce), if one is open.
        self.unit: Unit | None = None

    def send(self, topic: str, out: Output) -> None:
        """Produce one record; when librdkafka's bounded queue is full, wait for deliveries
        instead of dropping or growing a buffer of our own (the consumer is not polled meanwhile,
        so input pauses too)."""
        unit = self.unit
        while True:
            try:
                if unit is None:
                    self.producer.produce(topic, out.value, out.key)
                else:
                    self.producer.produce(topic, out.value, out.key, on_delivery=unit.delivered)
                    unit.waiting += 1
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused before sending (e.g. the topic is gone)
                self._on_delivery(exc.args[0], _Refused(topic))
                self.check("not committing offsets")

    def flush(self, failure: str) -> None:
        """Wait until everything sent is acknowledged (or refused: `check`); KafkaException
        (`failure`) past FLUSH_S."""
        if self.producer.flush(FLUSH_S) != 0:
            raise KafkaException(failure)

    def check(self, consequence: str) -> None:
        """Raise DeliveryFailed, saying `consequence`, when the broker refused records since the
        last check (InstanceReplaced when it refused them because a newer instance fenced this
        one)."""
        if not self._undelivered:
            return
        by_topic: dict[str, list[KafkaError]] = defaultdict(list)
        for topic, err in self._undelivered:
            raise_if_replaced(err)
            by_topic[topic].append(err)
        detail = "; ".join(
            f"{len(errs)} to {topic} ("
            + (f"not authorized to WRITE to topic {topic}: {errs[0].str()}"
               if authorization(errs[0]) else errs[0].str()) + ")"
            for topic, errs in by_topic.items())
        self._undelivered.clear()
        raise DeliveryFailed(f"the broker refused records: {detail}; {consequence}")

    def forget_refusals(self) -> None:
        self._undelivered.clear()

    def renew(self) -> None:
        """Drop what is queued and start a new producer with the same configuration."""
        self.producer.purge()
        self.producer.flush(0)
        self.producer = Producer(self.config)

    def _on_delivery(self, err: KafkaError | None, msg: Message | _Refused) -> None:
        """librdkafka's report of a record (served by flush/poll): a refusal, or where a
        checkpoint landed. Records purged by our own abort of a transaction are not refused:
        the abort is the point (their batch is rewound and decided again)."""
        if err is not None and err.code() in _PURGED:
            return
        if err is not None:
            topic = msg.topic() or "?"
            self._undelivered.append((topic, err))
            self.metrics.delivery_failures.labels(topic).inc()
        elif isinstance(msg, Message) and msg.topic() == self.state_topic:
            self.landed[msg.key() or b""] = (int(msg.partition() or 0), int(msg.offset() or 0))


class Unit:
    """The records of one unit of output that the broker has not answered yet (`waiting`):
    their delivery reports come here, then go on to the outbox as every report does."""

    __slots__ = ("outbox", "waiting")

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.waiting = 0

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        self.waiting -= 1
        self.outbox._on_delivery(err, msg)


class _Refused:
    """Stands in for the Message of a record that `produce()` refused outright."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic
