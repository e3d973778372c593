"""Building an assigned partition's scorer: from its latest checkpoint on assignment, afresh when
its log went backwards (the topic was recreated or truncated).

Crash safety comes from determinism, not from the broker: a partition restores its latest
checkpoint (state at offset o_c) and resumes at o_c; the records from o_c up to the group's
committed offset were processed before the crash, so they are replayed to rebuild the state
without producing anything, and everything after is produced exactly as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from services.core import SelectorPolicy, SelectorState
from services.core.stability import ProbeBooks, StabilityPolicy
from services.core.tiers import TierRouter
from services.scorer.assigned import AssignedPartition, Assignment
from services.scorer.batching import DRAIN_BATCHES
from services.scorer.checkpoint_format import Checkpoint, chunk_key, read_checkpoint
from services.scorer.checkpoint_store import CheckpointLocator, Located
from services.scorer.feedback import FeedbackBook
from services.scorer.guarantees import MAX_UNITS_OUTSTANDING
from services.scorer.metrics import ScorerMetrics
from services.scorer.partition import PartitionScorer, partition_seed
from services.scorer.readback import FETCH_TIMEOUT_S, ReadBack
from services.streaming.settings import ScorerSettings

log = logging.getLogger(__name__)


class Restorer:
    """Makes the scorers of `assignment`'s partitions. `stop(code)` stops the scorer (a log
    gone backwards under on_offset_regression=stop). Blocks on the cluster: `restore` raises
    CheckpointReadTimeout or KafkaException when the checkpoints cannot be read."""

    def __init__(self, settings: ScorerSettings, policy: SelectorPolicy, consumer: Consumer,
                 locator: CheckpointLocator, readback: ReadBack, feedback: FeedbackBook,
                 metrics: ScorerMetrics, assignment: Assignment, input_partitions: int,
                 version: str, stop: Callable[[int], None]) -> None:
        self.settings = settings
        self.policy = policy
        self.topic = settings.input_topic
        self.consumer = consumer
        self.locator = locator
        self.readback = readback
        self.feedback = feedback
        self.metrics = metrics
        self.assignment = assignment
        self.input_partitions = input_partitions
        self.version = version
        self.stop = stop
        self.tiers = settings.tier_settings()  # labeling tiers, None: off

    def restore(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Build each partition's scorer from its latest checkpoint; returns the partitions
        with the offsets to resume from."""
        started = time.monotonic()
        committed_tps = self.consumer.committed(partitions, 30)
        located = self.locator.locate(committed_tps)
        self._observe(located, time.monotonic() - started)
        committed = {tp.partition: tp.offset for tp in committed_tps}
        return [self._restore_one(tp, located, committed.get(tp.partition, -1))
                for tp in partitions]

    def _restore_one(self, tp: TopicPartition, located: Located, done: int) -> TopicPartition:
        p = tp.partition
        part = self.assignment.setdefault(p, AssignedPartition(self.topic, p))
        found = self._checkpoint(p, located)
        state = found.state if found else self._fresh_state(p)
        offset, final = (found.offset, found.final) if found else (None, False)
        part.chunk_slot = found.slot if found else None
        tiers, probes = (found.tiers, found.probes) if found else (None, None)
        restored = offset is not None
        low, high = self.consumer.get_watermark_offsets(tp, timeout=FETCH_TIMEOUT_S)
        was = max(done, offset or 0)
        if high < was and self.regressed(part, was, low, high):
            # The tiers' state and the probe books go with the old log's.
            state, offset, final, restored, done = self._fresh_state(p), low, False, False, -1
            tiers = probes = None
        if offset is None:
            # No usable checkpoint (e.g. a crash before the partition's first one): rebuild the
            # state from the partition's first record, replaying what the group already
            # committed without output. Starting a fresh state at the committed offset instead
            # would decide differently from an uninterrupted run.
            offset = 0
        # What a crashed owner may have processed, and output, past its commit without feedback
        # this state lacks: at most the batches past the durable commit (guarantees.py), each
        # of at most DRAIN_BATCHES x batch_size records (batching.py). None after a final
        # checkpoint, or when the partition was never committed nor checkpointed (a fresh start).
        in_flight = not final and (done >= 0 or restored)
        past = (MAX_UNITS_OUTSTANDING + 1) * DRAIN_BATCHES * self.settings.batch_size
        part.scorer = self._scorer(p, state, offset, tiers, probes,
                                   suppress_below=max(done, offset),
                                   feedback_from=max(done, offset) + past if in_flight else 0)
        part.waiting = None
        part.pointer = located.pointers.get(p) if restored else None
        self.feedback.owe_latest(part)
        part.checkpointed = (offset, time.monotonic())
        log.info("partition %d: resuming at offset %d (replaying to %d without output)",
                 p, offset, max(done, offset))
        return TopicPartition(self.topic, p, offset if offset > 0 else OFFSET_BEGINNING)

    def _checkpoint(self, p: int, located: Located) -> Checkpoint | None:
        """Partition p's checkpoint, None when there is none or it is unusable."""
        raw = located.raw.get(p)
        if raw is None:
            return None
        latest = located.latest
        key = self.locator.key_of(p)
        chunks = None if latest is None else (lambda slot, i: latest.get(chunk_key(key, slot, i)))
        found = read_checkpoint(raw, self._partition_policy(p), chunks)
        if found is None:
            log.warning("partition %d: checkpoint unreadable with this policy; rebuilding the "
                        "state from the partition's first record", p)
        return found

    def _scorer(self, p: int, state: SelectorState, offset: int,
                tiers: dict[str, Any] | None, probes: list[list[Any]] | None,
                suppress_below: int = 0, feedback_from: int = 0) -> PartitionScorer:
        return PartitionScorer(self.topic, p, state, offset, service_version=self.version,
                               fetch=self.readback.fetch_from(p),
                               suppress_below=suppress_below, feedback_from=feedback_from,
                               probes=self._probe_books(probes), **self._tier_router(p, tiers))

    # -- offsets that go backwards -------------------------------------------------------

    def check_regressions(self, by_partition: dict[int, list[Message]]) -> None:
        """Records below a partition's next offset are a redelivery (skipped, counted) while
        its log still reaches past what was processed, and a regression when the log now ends
        before it: the topic was recreated, or truncated. Checked against the broker's live
        watermarks, and only then: never on an ordinary batch."""
        for p, msgs in list(by_partition.items()):
            part = self.assignment.get(p)
            scorer = None if part is None else part.scorer
            if part is None or scorer is None or part.reset or (
                    msgs and cast(int, msgs[0].offset()) >= scorer.next_offset):
                continue
            was = max(scorer.next_offset, scorer.suppress_below)
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                            timeout=FETCH_TIMEOUT_S)
            if high >= was:
                below = sum(1 for m in msgs if cast(int, m.offset()) < scorer.next_offset)
                if below:
                    log.warning("partition %d: %d records delivered again below offset %d; "
                                "skipped (processed already)", p, below, scorer.next_offset)
                    self.metrics.redelivered.labels(str(p)).inc(below)
                continue
            if self.regressed(part, was, low, high):
                part.scorer = self._scorer(p, self._fresh_state(p), low, None, None)
                self.feedback.owe_latest(part)
                part.checkpointed = (low, time.monotonic())
            else:
                by_partition.pop(p, None)
                self.consumer.pause([TopicPartition(self.topic, p)])

    def regressed(self, part: AssignedPartition, was: int, low: int, high: int) -> bool:
        """Say loudly that the partition's log ([low, high)) ends before offset `was`, which
        this group processed; True when the policy is to reset its state (it is then
        checkpointed before anything of it is committed), False when the scorer stops."""
        p = part.partition
        self.metrics.offset_regressions.labels(str(p)).inc()
        why = (f"partition {p} of {self.topic}: its log now ends at offset {high}, before "
               f"offset {was} which this group processed (the topic was recreated or "
               f"truncated)")
        if self.settings.on_offset_regression == "stop":
            log.error("%s; stopping (exit 4): ACTIVE_STREAM_SCORER_ON_OFFSET_REGRESSION=stop. "
                      "Restart with =reset to rebuild its state from offset %d", why, low)
            self.stop(4)
            return False
        log.error("%s; its selection state is reset and rebuilt from offset %d, the start of "
                  "its log, as for a new partition", why, low)
        part.pointer = part.chunk_slot = None
        part.reset = True
        return True

    # -- a partition's share of the policy ---------------------------------------------

    def _partition_policy(self, partition: int) -> SelectorPolicy:
        """The selection policy of one input partition: its share of the group's budget, and
        the phase of its time budget (core/budget.py)."""
        partitions = max(1, self.input_partitions, partition + 1)
        return self.policy.for_partition(partition, partitions)

    def _fresh_state(self, p: int) -> SelectorState:
        return SelectorState.create(self._partition_policy(p),
                                    partition_seed(self.settings.seed, p))

    def _tier_router(self, p: int, snapshot: dict[str, Any] | None) -> dict[str, Any]:
        """PartitionScorer's tier arguments for partition p: a router restored from the
        snapshot its checkpoint held (fresh without one), its share of the cost budget; {}
        when tiers are off."""
        if self.tiers is None:
            return {}
        budget = self.tiers.cost_budget
        if budget is not None:
            budget = budget.scaled(1 / max(1, self.input_partitions, p + 1))
        return {"tiers": TierRouter.from_snapshot(self.tiers.policy, budget, snapshot),
                "tier_topics": self.tiers.topics}

    def _probe_books(self, snapshot: list[list[Any]] | None) -> ProbeBooks | None:
        """Probe books restored from the snapshot a checkpoint held (empty without one); None
        with ..._PROBE_MAX=0 (probes are then only kept out of selection)."""
        if not self.settings.probe_max:
            return None
        policy = StabilityPolicy(min_probes=min(100, self.settings.probe_max),
                                 max_probes=self.settings.probe_max)
        return ProbeBooks.from_snapshot(policy, snapshot)

    def _observe(self, located: Located, seconds: float) -> None:
        self.metrics.restore_records.inc(located.records_read)
        self.metrics.restore_seconds.observe(seconds)
        log.info("restore: %d state records read in %.2f s%s", located.records_read, seconds,
                 " (the whole state topic: some partitions had no checkpoint pointer)"
                 if located.scanned else "")
