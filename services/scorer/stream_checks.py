"""What the loop checks about the input stream itself, beside each event: the dead-letter ceiling
per partition (a bad deploy upstream stops loudly instead of filling the .dlq), and the input
topic's partition count (the budget is divided by it)."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection

from confluent_kafka import Consumer, KafkaException, Message

from services.scorer.assigned import Assignment
from services.scorer.clients import partition_count
from services.scorer.errors import ScorerUnavailable
from services.scorer.metrics import ScorerMetrics
from services.scorer.records import BatchResult
from services.streaming.ceiling import (
    DeadLetterCeiling,
    DeadLetterCeilingExceeded,
    DeadLetterWindow,
)

log = logging.getLogger(__name__)

PARTITIONS_CHECK_S = 30.0
"""How often (wall clock) the scorer re-reads its input topic's partition count: a metadata
round trip, cheap at this pace; a record of a new partition is noticed at once anyway."""


class Ceilings:
    """The dead-letter ceiling of each input partition. Its window outlives the partition's
    assignment (it judges the stream, not this instance's hold of it)."""

    def __init__(self, metrics: ScorerMetrics) -> None:
        self.metrics = metrics
        self._windows: dict[int, DeadLetterWindow] = {}
        self._halted: set[int] = set()  # partitions stopped at the ceiling

    def exceeded(self, results: dict[int, BatchResult]) -> list[int]:
        """Per partition, before the commit: a partition most of whose recent records were
        invalid is stopped -- its batch removed from `results` (neither produced nor
        committed), and returned for the caller to pause and let go of (no checkpoint, no
        commit: a restart or a rebalance resumes it from its last commit, and stops it again
        if it is still bad) -- while the other partitions carry on."""
        stopped = []
        for p in list(results):
            window = self._windows.setdefault(p, DeadLetterWindow(DeadLetterCeiling()))
            result = results[p]
            window.record_counts(result.valid, len(result.invalid_codes))
            try:
                window.check()
            except DeadLetterCeilingExceeded as exc:
                del results[p]
                log.error("partition %d stopped, not committing its batch: %s", p, exc)
                self.metrics.ceiling_trips.labels(str(p)).inc()
                self._halted.add(p)
                self._windows.pop(p, None)
                stopped.append(p)
        return stopped

    def check_any_left(self, assignment: Assignment) -> None:
        """When every partition of this instance is stopped, the scorer stops
        (DeadLetterCeilingExceeded): nothing is left to serve."""
        live = assignment.live()
        halted = {p for p in self._halted if p not in live}
        self.metrics.halted.set(len(halted))
        if halted and not live:
            raise DeadLetterCeilingExceeded(
                f"every partition of this instance stopped at the dead-letter ceiling "
                f"({', '.join(map(str, sorted(halted)))}): is the producer upstream sending the "
                "right schema? See the .dlq topic for reasons.")


class PartitionCount:
    """The input topic's partition count the budget was divided by at start (`count`), and
    whether it changed since. `stop(3)` stops the scorer with exit code 3."""

    def __init__(self, consumer: Consumer, topic: str, metrics: ScorerMetrics,
                 stop: Callable[[int], None]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.metrics = metrics
        self.stop = stop
        self.count = partition_count(consumer, topic)
        self._checked = time.monotonic()
        metrics.input_partitions.set(self.count)

    def changed(self, consumed: Collection[int]) -> bool:
        """True (and the scorer stops, exit code 3) when the input topic's partition count
        differs from the one the budget was divided by at start: each partition's share would
        be wrong, and a partition past the old count would have none. Checked at once when a
        record of such a partition arrives (`consumed`: the partitions of a batch), else every
        PARTITIONS_CHECK_S of wall clock (a metadata request). The stop is the graceful one
        (checkpoint, commit); a restart divides the budget anew."""
        now = time.monotonic()
        beyond = any(p >= self.count for p in consumed)
        if not beyond and now - self._checked < PARTITIONS_CHECK_S:
            return False
        self._checked = now
        try:
            count = partition_count(self.consumer, self.topic)
        except (KafkaException, ScorerUnavailable) as exc:  # not this check's to judge
            log.warning("could not read the partition count of %s: %s", self.topic, exc)
            return False
        self.metrics.input_partitions.set(count)
        if count == self.count:
            return False
        log.error("the input topic %s now has %d partitions, not %d: the labeling budget is "
                  "divided by the partition count, so the scorer stops (exit 3) to restart with "
                  "the new division", self.topic, count, self.count)
        self.metrics.partition_count_changes.inc()
        self.stop(3)
        return True


def by_partition(messages: list[Message]) -> dict[int, list[Message]]:
    """Records grouped by partition, each group in consumed (offset) order."""
    partitions = list(map(Message.partition, messages))
    if partitions and partitions.count(partitions[0]) == len(partitions):
        return {int(partitions[0] or 0): messages}  # the usual case: one fetch, one partition
    grouped: dict[int, list[Message]] = defaultdict(list)
    for partition, msg in zip(partitions, messages, strict=True):
        grouped[int(partition or 0)].append(msg)
    return grouped
