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
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from services.scorer.errors import (
    FENCED_CODES,
    Fenced,
    SessionLost,
    authorization,
    id_fenced,
    raise_if_replaced,
)
from services.scorer.hold import Hold
from services.scorer.metrics import ScorerMetrics
from services.scorer.outbox import Outbox, Unit
from services.streaming import connection
from services.streaming.settings import ScorerSettings

log = logging.getLogger(__name__)

MAX_UNITS_OUTSTANDING = 3
"""at_least_once units (batches) whose offsets are not known to be committed -- their output not
acknowledged yet, or their commit sent and not answered -- before the loop waits for all of them
(`AtLeastOnce`). So at most MAX_UNITS_OUTSTANDING + 1 batches are ever past the durable commit,
which the feedback hold relies on (restore.py)."""
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

    def settle(self) -> None:
        """Between units (every turn of the loop): complete what can be completed without
        waiting."""

    def forget(self, partitions: list[int]) -> None:
        """These partitions are no longer this instance's: commit nothing more of them."""

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
    """A unit's offsets are committed once its output is acknowledged, without stopping the loop
    for it: the loop goes on to the next batch while the broker answers, and `settle` (every
    turn of the loop, and every later unit) commits the units whose output has landed, in the
    order they were made. Waiting for the acknowledgement of each batch's requests (~1-6 ms on
    Apache Kafka) and then for the commit's answer cost the scorer about a third of its time.
    Output is still durable before the offsets that cover it are committed: a unit is committed
    only when every record it sent is acknowledged and none was refused (`Outbox.check`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Units closed and not committed yet, oldest first: their records, their offsets.
        self._pending: list[tuple[Unit | None, list[TopicPartition]]] = []
        # Units per asynchronous commit sent and not answered yet, oldest first.
        self._in_flight: list[int] = []

    def begin(self) -> None:
        self.outbox.unit = Unit(self.outbox)

    def stage(self, what: str) -> None:
        self.outbox.flush(f"{what} not delivered within 60 s")  # as for every flush: 60 s
        self.outbox.check(f"{what} not written")

    def commit(self, offsets: list[TopicPartition], wait: bool) -> None:
        """Close the open unit with `offsets`. With `wait` (a checkpoint's, a hand-over's) or
        when more than MAX_UNITS_OUTSTANDING units are outstanding, wait until every unit's
        output is acknowledged and commit them all, answered before this returns; otherwise
        commit what has landed (`settle`). Raises DeliveryFailed when the broker refused any
        record not yet checked: then nothing past it is committed."""
        unit, self.outbox.unit = self.outbox.unit, None
        self._pending.append((unit, offsets))
        outstanding = len(self._pending) + sum(self._in_flight)
        self.settle(wait=wait or outstanding > MAX_UNITS_OUTSTANDING)

    def settle(self, wait: bool = False) -> None:
        """Commit, in order, the closed units whose output the broker has acknowledged; with
        `wait`, first wait for all of it and for the commit's answer."""
        if wait:
            self.outbox.flush("output not delivered within 60 s; not committing offsets")
        else:
            self.outbox.producer.poll(0)  # serves the delivery reports
        self.outbox.check("not committing offsets")
        done = 0
        for unit, _ in self._pending:
            if unit is not None and unit.waiting > 0:
                break
            done += 1
        if not done:
            return
        landed, self._pending = self._pending[:done], self._pending[done:]
        merged: dict[int, TopicPartition] = {}
        for _, offsets in landed:  # a later unit's offset (and checkpoint pointer) wins
            merged.update((tp.partition, tp) for tp in offsets)
        latest = list(merged.values())
        if not latest:
            return
        if not wait:
            self._in_flight.append(done)
            self.consumer.commit(offsets=latest, asynchronous=True)
            return
        try:
            self.consumer.commit(offsets=latest, asynchronous=False)
        except KafkaException as exc:
            self.on_commit(exc.args[0], latest)
        self._in_flight.clear()  # answered in order: every earlier one is answered too

    def forget(self, partitions: list[int]) -> None:
        gone = set(partitions)
        dropped = sum(any(tp.partition in gone for tp in offsets) for _, offsets in self._pending)
        self._pending = [(unit, [tp for tp in offsets if tp.partition not in gone])
                         for unit, offsets in self._pending]
        if dropped:
            # A lost assignment (a session that timed out while this instance was stopped, a
            # zombie) served before the batch in hand was acknowledged: its offsets are never
            # sent, so the group cannot be asked to commit them; the next owner replays them.
            log.warning("partitions %s left this instance with %d batches' offsets not committed "
                        "yet: they are not committed (their next owner replays those batches)",
                        sorted(gone), dropped)

    def abort(self) -> None:
        """Nothing pending is committed (its batches are replayed)."""
        self.outbox.unit = None
        self._pending.clear()

    def on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if self._in_flight:
            self._in_flight.pop(0)
        super().on_commit(err, partitions)


class ExactlyOnce(Guarantee):
    _open = False
    _plain: Producer | None = None
    _began = 0.0  # self.clock() when the open transaction began
    clock = staticmethod(time.monotonic)

    def start(self) -> None:
        self.outbox.producer.init_transactions(30)

    def begin(self) -> None:
        self.outbox.producer.begin_transaction()
        self._open = True
        self._began = self.clock()

    def _raise_if_expired(self, err: KafkaError) -> None:
        """A transaction that stayed open past transaction.timeout.ms is one the broker aborts
        on its own, bumping the producer's epoch: ending it then fails, and the failure is this
        instance's own, not a successor's. Seen on Apache Kafka 4.1 with a scorer frozen
        (SIGSTOP) inside a transaction and resumed:
        - past its session too (~20 s), ending the transaction was fenced (`_FENCED`), the same
          error a newer instance under the same transactional.id causes, and the consumer's
          session-timeout notice came a millisecond later, too late for `raise_if_replaced`;
        - within its session (5 s, timeout 2 s), adding the offsets timed out (`_TIMED_OUT`,
          the freeze counted against the request), which crashed the scorer.
        Either way the scorer rejoins with a new Scorer (SessionLost): a new producer under the
        same transactional.id, restored from the checkpoints, replays what was not committed."""
        if not (id_fenced(err) or err.retriable() or err.txn_requires_abort()
                or err.code() == KafkaError._TIMED_OUT):
            return
        open_s = self.clock() - self._began
        limit = transaction_timeout_ms(self.settings) / 1000.0
        if open_s >= limit:
            raise SessionLost(
                f"this instance's transaction stayed open {open_s:.1f} s, past "
                f"transaction.timeout.ms ({limit:g} s), so the broker aborted it; ending it "
                f"failed with {err.str()}")

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
            self._raise_if_expired(exc.args[0])
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


def transaction_timeout_ms(settings: ScorerSettings) -> int:
    """The transaction.timeout.ms the transactional producer runs with: the user's, else ours."""
    return int(str(settings.kafka.client_config.get(
        "transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)))


def guarantee(settings: ScorerSettings) -> tuple[type[Guarantee], dict[str, Any]]:
    """The guarantee `settings` ask for, and what it adds to the producer's configuration."""
    if settings.processing_guarantee != "exactly_once":
        return AtLeastOnce, {}
    return ExactlyOnce, {"transactional.id": f"{settings.group_id}-{settings.instance_id}",
                         "transaction.timeout.ms": transaction_timeout_ms(settings)}


def refused_commit(metrics: ScorerMetrics, reason: str, consequence: str) -> None:
    log.warning("the group refused this instance's commit (%s): the batch's output %s",
                reason, consequence)
    metrics.fenced.inc()
