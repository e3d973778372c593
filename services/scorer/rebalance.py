"""The group hands partitions to this instance and takes them back: each assigned partition's
object (assigned.py) is made on assign and restored, checkpointed on a clean revoke, dropped on
revoke, loss or a halt; a partition whose state cannot be restored waits, paused, and is tried
again; partitions whose in-memory state is past what the broker holds are rewound."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.scorer.assigned import AssignedPartition, Assignment
from services.scorer.commits import Commits
from services.scorer.errors import DeliveryFailed, Fenced, reason
from services.scorer.guarantees import refused_commit
from services.scorer.metrics import ScorerMetrics
from services.scorer.restore import Restorer
from services.streaming.checkpoints import CheckpointReadTimeout

log = logging.getLogger(__name__)

RESTORE_RETRY_S = 5.0
"""How long a partition whose state could not be restored waits before the next attempt."""


class Rebalance:
    """The consumer's rebalance callbacks (served by consume, in the loop's thread) and the
    loop's rewinds. `failed()`: the loop failed, so nothing may be checkpointed or committed;
    `beat()`: a long restore is progress, not a stuck loop."""

    def __init__(self, consumer: Consumer, topic: str, assignment: Assignment,
                 restorer: Restorer, commits: Commits, metrics: ScorerMetrics,
                 cooperative: bool, failed: Callable[[], bool], beat: Callable[[], None]
                 ) -> None:
        self.consumer = consumer
        self.topic = topic
        self.assignment = assignment
        self.restorer = restorer
        self.commits = commits
        self.metrics = metrics
        self.cooperative = cooperative
        self.failed = failed
        self.beat = beat
        self.assigned_once = False
        self._retry_at = 0.0
        # For the loop's two-call consume (batching.py): a count of drops, and the count at
        # each partition's last drop (one entry per partition ever held: bounded by the topic).
        self._drops = 0
        self._dropped_at: dict[int, int] = {}

    def mark(self) -> int:
        """A point to ask `dropped_since` about. Query."""
        return self._drops

    def dropped_since(self, mark: int) -> set[int]:
        """The partitions dropped (revoked, lost, rewound) after `mark`. Query."""
        if self._drops == mark:
            return set()
        return {p for p, at in self._dropped_at.items() if at > mark}

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.assignment.setdefault(tp.partition, AssignedPartition(self.topic, tp.partition))
        try:
            resume = self.restorer.restore(partitions)
        except (CheckpointReadTimeout, KafkaException) as exc:
            # Never a crash loop: take the partitions, hold them paused, not ready, and retry.
            log.error("partitions %s: cannot restore their state (%s); they stay paused and "
                      "the scorer not ready until a retry succeeds", sorted(
                          tp.partition for tp in partitions), reason(exc))
            self._wait(partitions)
            self._assign(consumer, partitions)
            consumer.pause(partitions)
        else:
            self._assign(consumer, resume)
        self.beat()
        self.assigned_once = True
        self._count()

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take `partitions` in an assignment callback: added to what this member holds under a
        cooperative protocol, the whole assignment under an eager one."""
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _wait(self, partitions: list[TopicPartition]) -> None:
        """`partitions` could not be restored: no scorer, retried in RESTORE_RETRY_S."""
        for tp in partitions:
            part = self.assignment.setdefault(tp.partition,
                                              AssignedPartition(self.topic, tp.partition))
            part.scorer, part.waiting = None, tp
        self._retry_at = time.monotonic() + RESTORE_RETRY_S

    def retry_restores(self) -> None:
        """Retry the restore of the paused partitions (see `on_assign`), every few seconds."""
        waiting = [part.waiting for part in self.assignment.waiting() if part.waiting]
        if not waiting or time.monotonic() < self._retry_at:
            return
        try:
            resume = self.restorer.restore(waiting)
        except (CheckpointReadTimeout, KafkaException) as exc:
            log.error("partitions %s: restore failed again (%s); retrying in %.0f s",
                      sorted(tp.partition for tp in waiting), reason(exc), RESTORE_RETRY_S)
            self._wait(waiting)
            return
        for tp in resume:
            self.consumer.seek(tp)
        self.consumer.resume(waiting)
        self._count()
        log.info("partitions %s restored after a retry", sorted(tp.partition for tp in waiting))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [self.assignment[tp.partition] for tp in partitions
                if tp.partition in self.assignment]
        live = [part for part in mine if part.scorer is not None]
        if live and not self.failed():
            self.hand_over(live)
        self.drop([part.partition for part in mine])

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a clean revoke: another member may own them already, so
        writing their state now could overwrite newer state. Drop them."""
        self.drop([tp.partition for tp in partitions])

    def hand_over(self, parts: list[AssignedPartition]) -> None:
        """The final checkpoint and commit of partitions this instance lets go (revoke,
        shutdown). When the group has fenced this instance already, the new owner restores
        from what was durable before: nothing to do but say so."""
        numbers = [part.partition for part in parts]
        try:
            self.commits.checkpoint(parts, final=True)  # commits the offsets too
        except DeliveryFailed as exc:
            log.error("partitions %s: their final checkpoint was refused (%s); their next owner "
                      "restores from the last durable one", numbers, exc)
        except Fenced as exc:
            log.warning("partitions %s: the group refused the hand-over (%s); their next owner "
                        "restores from the last durable checkpoint", numbers, exc)

    def drop(self, partitions: list[int]) -> None:
        """Forget these partitions' objects, their offsets not committed yet, and their
        gauges."""
        self._drops += 1
        for p in partitions:
            self._dropped_at[p] = self._drops
        self.commits.forget(partitions)
        for p in partitions:
            self.assignment.pop(p, None)
            for gauge in (self.metrics.lag, self.metrics.progress):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(p))
        self._count()

    def rewind(self, fenced: Fenced, quiet: bool = False) -> None:
        """After an aborted unit: forget the state of the partitions it covered (ahead of what is
        committed) and restore those still assigned from their checkpoints and committed
        offsets. The group's rebalance, served by the next consume, then revokes or keeps them
        as it decides."""
        if not quiet:
            refused_commit(self.metrics, str(fenced), "was aborted; restoring its partitions")
        ahead = [p for p in fenced.partitions
                 if p in self.assignment and self.assignment[p].scorer is not None]
        assigned = {tp.partition: tp for tp in self.consumer.assignment()
                    if tp.topic == self.topic}
        self.drop(ahead)
        again = [assigned[p] for p in ahead if p in assigned]
        if not again:
            return
        try:
            resume = self.restorer.restore(again)
        except (CheckpointReadTimeout, KafkaException) as exc:
            log.error("partitions %s: cannot restore their state (%s); paused until a retry "
                      "succeeds", sorted(tp.partition for tp in again), reason(exc))
            self._wait(again)
            self.consumer.pause(again)
            return
        finally:
            self._count()
        for tp in resume:
            self.consumer.seek(tp)

    def rewind_all(self) -> None:
        """Restore every restored partition from its checkpoint and committed offset."""
        self.rewind(Fenced("", [part.partition for part in self.assignment.restored()]),
                    quiet=True)

    def _count(self) -> None:
        self.metrics.partitions.set(len(self.assignment.restored()))


def cooperative(config: dict[str, Any]) -> bool:
    """Whether the group hands out partitions incrementally: KIP-848's `consumer` protocol, or
    the classic protocol with the cooperative-sticky assignor (librdkafka's Python binding does
    not expose rd_kafka_rebalance_protocol, so it is read off the configuration)."""
    return (str(config.get("group.protocol", "classic")).lower() == "consumer"
            or "cooperative" in str(config.get("partition.assignment.strategy", "")).lower())
