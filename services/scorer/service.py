"""The scorer service: a thin Kafka shell around `PartitionScorer` (and so `services/core`).

The loop, per consumed batch: group the records by partition -> each assigned partition's
`PartitionScorer.process` -> the dead-letter ceiling -> one unit of `Commits` (the requests and
dead letters, made durable, then the offsets: a flush and a commit under at_least_once, one
transaction under exactly_once) -> metrics. Every N events / T seconds, on revoke and on shutdown
each partition's state is checkpointed, by `Commits` too, with the offset it reflects.

Where each idea lives: the assigned partitions' state (assigned.py), made and dropped by the
group's rebalances (rebalance.py), restored from checkpoints (restore.py); the write order
(commits.py) and the one place the two guarantees differ (guarantees.py); holding when the broker
refuses (hold.py); class feedback (feedback.py); metrics (observe.py). See docs/scorer.md for
the guarantees and their limits.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry

from services import service_version
from services.core import SelectorPolicy
from services.scorer.assigned import Assignment
from services.scorer.batching import batch_consumer
from services.scorer.checkpoint_store import CheckpointLocator
from services.scorer.clients import consumer_config, partition_count, producer_config, wait_for
from services.scorer.commits import Commits
from services.scorer.errors import (
    DeliveryFailed,
    Fenced,
    InstanceReplaced,
    ScorerUnavailable,
    SessionLost,
    raise_if_replaced,
    without_eof,
)
from services.scorer.feedback import FeedbackBook, FeedbackReader
from services.scorer.guarantees import guarantee
from services.scorer.heap import freeze_startup, thaw
from services.scorer.hold import HOLD_S, Hold, records_of
from services.scorer.metrics import ScorerMetrics
from services.scorer.observe import Observer
from services.scorer.outbox import Outbox
from services.scorer.outputs import batch_outputs
from services.scorer.partition import Record
from services.scorer.readback import ReadBack
from services.scorer.rebalance import Rebalance, cooperative
from services.scorer.restore import Restorer
from services.scorer.stream_checks import Ceilings, PartitionCount, by_partition
from services.streaming import connection, topics
from services.streaming.ops import OpsAccess, OpsServer
from services.streaming.settings import ScorerSettings

__all__ = ["DeliveryFailed", "InstanceReplaced", "Scorer", "ScorerUnavailable", "SessionLost"]

log = logging.getLogger(__name__)


class Scorer:
    """One scorer instance in the consumer group `settings.group_id`.

    `run()` blocks until `stop()` (or SIGTERM via the CLI), then checkpoints, commits and leaves
    the group. Not thread-safe except `stop()` and the ops endpoints.
    """

    def __init__(self, settings: ScorerSettings, *, policy: SelectorPolicy | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = ScorerMetrics(self.registry)
        self.version = service_version()
        self.topic = settings.input_topic
        self.partitions = Assignment()
        self.hold = Hold(self.metrics)
        self._stop = threading.Event()
        # Set when the loop fails: the state may be ahead of the output the broker holds, so
        # nothing may be checkpointed or committed from then on (a restart replays instead).
        self._failed = False
        self._exit_code = 0
        self._heartbeat = time.monotonic()
        self._errors = connection.Errors()
        client = settings.kafka.client
        config = consumer_config(settings, self._errors, self._on_commit)
        self.consumer = Consumer(config)
        wait_for(self.consumer, settings, self._errors)  # one line if the cluster cannot be had
        kind, extra = guarantee(settings)
        self.outbox = Outbox(producer_config(settings, self._errors, extra), self.metrics,
                             settings.state_topic)
        self.guarantee = kind(self.outbox, self.consumer, self.metrics, self.hold, settings,
                              self._errors)
        self.commits = Commits(self.outbox, self.guarantee, settings, self.metrics,
                               self._state_key, on_checkpoint=lambda: self.observer.classes())
        self.feedback = FeedbackReader(client({"group.id": settings.group_id + "-feedback"},
                                              role="consumer"),
                                       settings.feedback_topic, self.version)
        self.feedback_book = FeedbackBook(self.feedback, self.metrics, settings.class_feedback)
        self.partition_count = PartitionCount(self.consumer, self.topic, self.metrics,
                                              stop=self._stop_with)
        tiers = settings.tier_settings()
        for topic in (settings.state_topic, settings.requests_topic, topics.dlq(self.topic),
                      topics.dlq(settings.feedback_topic),
                      *sorted(set(tiers.topics.values()) if tiers else ())):
            partition_count(self.consumer, topic)
        self.readback = ReadBack(self.topic, Consumer(client(
            {"group.id": settings.group_id + "-fetch", "enable.auto.commit": False},
            role="consumer")), self.metrics)
        # Every group.id the scorer's clients use starts with its group's name: one prefixed
        # ACL covers them (`active-stream acls`).
        self.locator = CheckpointLocator(client(role="consumer"), settings.state_topic,
                                         self._state_key, self.guarantee.marker_producer,
                                         group=settings.group_id + "-restore")
        self.restorer = Restorer(settings, policy or settings.selector_policy(), self.consumer,
                                 self.locator, self.readback, self.feedback_book, self.metrics,
                                 self.partitions, self.partition_count.count, self.version,
                                 self._stop_with)
        self.rebalance = Rebalance(self.consumer, self.topic, self.partitions, self.restorer,
                                   self.commits, self.metrics, cooperative(config),
                                   failed=lambda: self._failed, beat=self._beat)
        self._consume = batch_consumer(self.consumer, self.rebalance, settings.batch_size,
                                       settings.batch_timeout_s, settings.batch_linger_s)
        self.observer = Observer(self.metrics, self.consumer, self.topic, self.partitions)
        self.ceilings = Ceilings(self.metrics)
        self.ops = OpsServer(self.registry, settings.metrics_host, settings.metrics_port,
                             health=self.health, ready=self.ready,
                             access=OpsAccess.of(settings))

    # -- ops ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._heartbeat
        # The loop wakes at least every batch_timeout_s; a minute of silence means it is stuck.
        return (stalled < 60.0), f"loop last ran {stalled:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        if not self.rebalance.assigned_once:
            return False, "waiting for the group to assign partitions"
        if self.hold.reason is not None:
            return False, f"holding, retrying every {HOLD_S:.0f} s: {self.hold.reason}"
        waiting = sorted(part.partition for part in self.partitions.waiting())
        if waiting:
            return False, (f"partitions {waiting} not restored yet: their state topic could "
                           "not be read (retrying)")
        return True, f"ready: {len(self.partitions.restored())} partitions"

    def stop(self) -> None:
        """Ask `run()` to finish its batch, checkpoint, commit and leave. Thread-safe."""
        self._stop.set()

    def _stop_with(self, code: int) -> None:
        """Stop, and have `run()` return exit code `code` (3, 4: a restart fixes it)."""
        self._exit_code = code
        self.stop()

    def _beat(self) -> None:
        self._heartbeat = time.monotonic()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns 0, 3 when the input topic's partition count changed
        (stream_checks.py), or 4 when its log went backwards under on_offset_regression=stop.
        Raises DeadLetterCeilingExceeded on a bad stream."""
        self.ops.start()
        self.guarantee.start()
        self.consumer.subscribe([self.topic], on_assign=self.rebalance.on_assign,
                                on_revoke=self.rebalance.on_revoke,
                                on_lost=self.rebalance.on_lost)
        freeze_startup()  # out of every full collection's walk (heap.py)
        try:
            while not self._stop.is_set():
                self._beat()
                messages = self._consume()
                try:
                    self._step(messages)
                except Fenced as exc:
                    self.rebalance.rewind(exc)
                except DeliveryFailed as exc:
                    self._hold(str(exc))
        except KafkaException as exc:
            self._failed = True
            if exc.args and isinstance(exc.args[0], KafkaError):
                raise_if_replaced(exc.args[0], self._errors)  # a fenced instance says so
            raise
        except BaseException:
            self._failed = True
            raise
        finally:
            self._shutdown()
        return self._exit_code

    def _step(self, messages: list[Message]) -> None:
        """One turn of the loop around one consumed batch (possibly empty)."""
        messages = records_of(messages, self.hold, self._errors, self.settings.group_id)
        self.commits.settle()
        self.commits.flush_resets(self.partitions.restored())
        if self.hold.resume_due():
            self.consumer.resume(self._restored_tps())
        due = self.feedback_book.apply(self.partitions.values())
        if due:
            self.commits.checkpoint(due)
        if messages or self.feedback.dead_letters:
            self._process(messages)
        else:  # idle: a partition nobody consumes from yet is noticed here
            self.partition_count.changed(())
        if len(messages) < self.settings.batch_size:
            self._advance_idle()
        self.commits.checkpoint_due(self.partitions.restored())
        self.rebalance.retry_restores()

    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        # Per-message work stays in C (map over the Message methods): at ~1 us an event, a
        # Python loop building a Record per message would cost as much as the Kafka client.
        if any(map(Message.error, messages)):
            messages = without_eof(messages)
        consumed = by_partition(messages)
        if self.partition_count.changed(consumed):
            return  # nothing of this batch is processed under the old share of the budget
        self.restorer.check_regressions(consumed)
        self.commits.flush_resets(self.partitions.restored())
        live = self.partitions.live()
        results = {p: live[p].process_columns(
                       cast(list[int], list(map(Message.offset, msgs))),  # records have offsets
                       list(map(Message.value, msgs)), functools.partial(_record, msgs))
                   for p, msgs in consumed.items() if p in live}
        for p in self.ceilings.exceeded(results):
            self.consumer.pause([TopicPartition(self.topic, p)])
            self.rebalance.drop([p])
        self.ceilings.check_any_left(self.partitions)
        self.commits.output(batch_outputs(results, self.settings, self.feedback, self.metrics),
                            [self.partitions[p] for p in results])
        if results:
            self.hold.accepted()
        self.observer.batch(results, sum(map(len, consumed.values())),
                            time.perf_counter() - started)
        self._regressions(self.observer.state())

    def _advance_idle(self) -> None:
        """Move partitions past offsets that hold no records for this reader (transaction
        markers, aborted records): the consumer's position is past them, the last record + 1
        is not. Without it, a partition written by a transactional producer would show a lag
        of at least 1 forever, to our metric and to every tool that reads the group's offsets.
        Commits the moved partitions."""
        live = self.partitions.live()
        if not live:
            return
        positions = self.consumer.position([TopicPartition(self.topic, p) for p in live])
        # Never past the partition's end: after the consumer was sent back to the start of a
        # recreated topic, its position can still read the old log's (restore.py).
        moved = [tp for tp in positions if tp.partition in live
                 and live[tp.partition].next_offset < tp.offset
                 <= self.consumer.get_watermark_offsets(tp, cached=True)[1]]
        if moved:
            for tp in moved:
                live[tp.partition].next_offset = tp.offset
            self.commits.offsets([self.partitions[tp.partition] for tp in moved])
        # An idle or stuck partition's lag must not freeze at its old value.
        self._regressions(self.observer.lag())

    def _regressions(self, idle: list[int]) -> None:
        """Check the partitions whose log the lag gauge found behind their next offset."""
        if idle:
            self.restorer.check_regressions({p: [] for p in idle})

    def _hold(self, reason: str) -> None:
        """The broker refused output: nothing of it is committed. Give up the open unit,
        rewind every partition to its last checkpoint (their in-memory state is past what the
        broker holds), pause them, say why (not ready), and try again in a few seconds: a
        restored ACL, a recreated topic, a raised size limit lets the scorer resume by itself,
        and the replay produces exactly the output that was refused."""
        self.hold.refused(reason)
        self.guarantee.after_refusal()
        self.outbox.forget_refusals()
        self.rebalance.rewind_all()
        self.consumer.pause(self._restored_tps())

    def _restored_tps(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, part.partition) for part in self.partitions.restored()]

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        self.guarantee.on_commit(err, partitions)

    def _state_key(self, partition: int) -> bytes:
        return f"{self.settings.group_id}/{self.topic}/{partition}".encode()

    def _shutdown(self) -> None:
        try:
            if self._failed:
                log.error("stopping after an error: no checkpoint or commit; a restart replays "
                          "from the last checkpoint")
                self.guarantee.abort()
            elif self.partitions.restored():
                self.rebalance.hand_over(self.partitions.restored())
                # Handed over: the revoke that closing the consumer triggers has nothing to do.
                self.rebalance.drop(list(self.partitions))
        finally:
            thaw()
            self.consumer.close()
            self.readback.close()
            self.feedback.close()
            if not self._failed:
                # After a failure there is nothing left worth delivering (the transaction is
                # aborted; at_least_once output past the last commit is replayed), and a fenced
                # producer's reports break its delivery callback (seen: a SystemError).
                self.outbox.producer.flush(30)
            self.ops.stop()
            self._errors.detach("librdkafka.scorer")


def _record(messages: list[Message], i: int) -> Record:
    msg = messages[i]
    return Record(int(msg.offset() or 0), msg.key(), msg.value(), msg.timestamp()[1] / 1000.0)
