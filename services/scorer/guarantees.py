"""The one place where `at_least_once` and `exactly_once` differ: how a unit of output is opened,
made durable and committed with its offsets. One of the two is chosen at start (`guarantee`);
the order of a unit (output -> durable -> offsets) is `Commits`' (commits.py), the same for both.

- at_least_once: a plain idempotent producer; a unit is durable after a flush, and its offsets
  are committed by the consumer after that. A crash in between replays identical output.
- exactly_once: a transactional producer; the unit is one transaction holding the output, the
  checkpoint and the offsets, committed with the group's metadata so a fenced zombie's aborts.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from services.scorer.errors import FENCED_CODES, Fenced, authorization, raise_if_replaced
from services.scorer.hold import Hold
from services.scorer.metrics import ScorerMetrics
from services.scorer.outbox import Outbox
from services.streaming import connection
from services.streaming.settings import ScorerSettings

log = logging.getLogger(__name__)

MAX_COMMITS_IN_FLIGHT = 1
"""at_least_once commits sent and not yet answered before the next one waits (`AtLeastOnce`).
So at most MAX_COMMITS_IN_FLIGHT + 1 batches are ever past the durable commit, which the
feedback hold relies on (restore.py)."""
TRANSACTION_TIMEOUT_MS = 10_000
"""How long a transaction may stay open before the broker aborts it. An instance that froze or
died inside one blocks every read_committed reader of the partitions it wrote to until then; a
scorer's transaction lasts one batch (milliseconds), so 10 s instead of librdkafka's 60 s."""


class Guarantee:
    """What a processing guarantee does at each step of a unit; see the module doc."""

    def __init__(self, outbox: Outbox, consumer: Consumer, metrics: ScorerMetrics, hold: Hold,
                 settings: ScorerSettings, errors: connection.Errors) -> None:
        self.outbox = outbox
        self.consumer = consumer
        self.metrics = metrics
        self.hold = hold
        self.settings = settings
        self.errors = errors

    def start(self) -> None:
        """Before the first unit."""

    def begin(self) -> None:
        """Open a unit."""

    def stage(self, what: str) -> None:
        """Make what was sent so far durable before what names it is sent (a checkpoint's
        chunks before its head)."""

    def commit(self, offsets: list[TopicPartition], wait: bool) -> None:
        """Close the unit: its output durable, then `offsets` committed. Raises DeliveryFailed
        when the broker refused output, Fenced when the group refused a transaction."""
        raise NotImplementedError

    def abort(self) -> None:
        """Give up the open unit, if any (best effort)."""

    def after_refusal(self) -> None:
        """The broker refused output: the open unit is given up; ready the producer again."""
        self.abort()

    def marker_producer(self) -> Producer:
        """A producer that may write outside any unit (checkpoints.load_latest's markers)."""
        return self.outbox.producer

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The answer to a consumer's commit (served by consume): nothing to do unless it
        failed. A commit the group refuses (a zombie's, one racing a rebalance) or that fails is
        only noted: the next commit of a partition still held covers it, and the new owner of
        one taken away replays it, byte for byte."""
        if err is None:
            return
        if err.code() in FENCED_CODES:
            refused_commit(self.metrics, err.str(), "may be replayed by its partitions' next owner")
            return
        if authorization(err):
            self.hold.denied(f"not authorized to READ group {self.settings.group_id}, so "
                             f"offsets cannot be committed ({err.str()})")
        log.warning("committing offsets failed (%s); the next commit covers them", err.str())
        self.metrics.commit_failures.inc()


class AtLeastOnce(Guarantee):
    _in_flight = 0

    def stage(self, what: str) -> None:
        self.outbox.flush(f"{what} not delivered within 60 s")  # as for every flush: 60 s
        self.outbox.check(f"{what} not written")

    def commit(self, offsets: list[TopicPartition], wait: bool) -> None:
        """The commit is sent without waiting for its answer unless `wait` (a hand-over) or an
        earlier one is still unanswered: the output it covers is durable already, commits of a
        partition reach the coordinator in order, and waiting ~1-6 ms per batch on Apache Kafka
        would cost a third of the scorer's time and block the loop through a rebalance."""
        self.outbox.flush("output not delivered within 60 s; not committing offsets")
        self.outbox.check("not committing offsets")
        if not offsets:
            return
        if not wait and self._in_flight < MAX_COMMITS_IN_FLIGHT:
            self._in_flight += 1
            self.consumer.commit(offsets=offsets, asynchronous=True)
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.on_commit(exc.args[0], offsets)
        self._in_flight = 0  # answered in order: every earlier one is answered too

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        super().on_commit(err, partitions)


class ExactlyOnce(Guarantee):
    _open = False
    _plain: Producer | None = None

    def start(self) -> None:
        self.outbox.producer.init_transactions(30)

    def begin(self) -> None:
        self.outbox.producer.begin_transaction()
        self._open = True

    def commit(self, offsets: list[TopicPartition], wait: bool) -> None:
        """Commit the open transaction with `offsets` and the group's metadata, so a zombie
        (a member the group has fenced) cannot commit it. On failure the transaction is
        aborted first: left open, it would hide every later record of its partitions from
        read_committed readers until the broker times it out."""
        producer = self.outbox.producer
        try:
            if offsets:
                meta = self.consumer.consumer_group_metadata()
                producer.send_offsets_to_transaction(offsets, meta, 30)
            producer.commit_transaction(60)
            self._open = False
        except KafkaException as exc:
            raise_if_replaced(exc.args[0], self.errors)
            self.abort()
            self.outbox.check("the transaction is aborted")
            if exc.args[0].code() in FENCED_CODES:
                raise Fenced(exc.args[0].str(), [tp.partition for tp in offsets]) from None
            raise
        self.outbox.check("after the transaction")

    def abort(self) -> None:
        """Best effort: a fenced producer cannot, and its successor's init_transactions has
        aborted it already."""
        if not self._open:
            return
        self._open = False
        try:
            self.outbox.producer.abort_transaction(30)
        except KafkaException as exc:
            log.warning("could not abort the open transaction: %s", exc.args[0].str())

    def after_refusal(self) -> None:
        """A new transactional producer under the same transactional.id. After a refused record
        librdkafka's transactional producer can stay out of step with the broker (seen:
        OUT_OF_ORDER_SEQUENCE_NUMBER on the next commit, after the record size limit was
        raised); init_transactions starts a new epoch with fresh sequence numbers."""
        self.abort()
        self.outbox.renew()
        self.outbox.producer.init_transactions(30)

    def marker_producer(self) -> Producer:
        """Markers cannot be written inside a transaction: a plain producer of their own."""
        if self._plain is None:
            self._plain = Producer(self.settings.kafka.client(
                {"allow.auto.create.topics": False}, role="producer"))
        return self._plain


def guarantee(settings: ScorerSettings) -> tuple[type[Guarantee], dict[str, Any]]:
    """The guarantee `settings` ask for, and what it adds to the producer's configuration."""
    if settings.processing_guarantee != "exactly_once":
        return AtLeastOnce, {}
    extra: dict[str, Any] = {"transactional.id": f"{settings.group_id}-{settings.instance_id}"}
    if "transaction.timeout.ms" not in settings.kafka.client_config:
        extra["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
    return ExactlyOnce, extra


def refused_commit(metrics: ScorerMetrics, reason: str, consequence: str) -> None:
    log.warning("the group refused this instance's commit (%s): the batch's output %s",
                reason, consequence)
    metrics.fenced.inc()
