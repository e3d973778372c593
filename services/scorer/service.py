"""The scorer service: a thin Kafka shell around `PartitionScorer` (and so `services/core`).

Per consumed batch: group records by partition -> `PartitionScorer.process` -> produce requests
and dead letters -> flush -> commit the offsets (at_least_once), or all of it in one Kafka
transaction with the offsets (exactly_once). Every N events / T seconds, on revoke and on shutdown
each partition's selector state is checkpointed to the state topic with the offset it reflects.

Crash safety comes from determinism, not from the broker: on assignment a partition restores its
latest checkpoint (state at offset o_c) and seeks to o_c; the records from o_c up to the group's
committed offset were already processed before the crash, so they are replayed to rebuild the
state without producing anything, and everything after is produced exactly as before (the same
requests, byte for byte). See docs/scorer.md for the guarantees and their limits.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from services import service_version
from services.core import SelectorPolicy, SelectorState
from services.core.stability import ProbeBooks, StabilityPolicy
from services.core.tiers import TierRouter
from services.scorer.checkpoint_store import CheckpointLocator, Located, pointer
from services.scorer.feedback import FeedbackReader
from services.scorer.metrics import ScorerMetrics
from services.scorer.partition import (
    BatchResult,
    DeferredPickUnreadable,
    Output,
    PartitionScorer,
    Record,
    checkpoint_records,
    chunk_key,
    partition_seed,
    read_checkpoint,
)
from services.streaming import connection, topics
from services.streaming.ceiling import (
    DeadLetterCeiling,
    DeadLetterCeilingExceeded,
    DeadLetterWindow,
)
from services.streaming.checkpoints import CheckpointReadTimeout
from services.streaming.events import redact_dead_letter, redacted_key
from services.streaming.ops import OpsAccess, OpsServer
from services.streaming.settings import ScorerSettings

log = logging.getLogger(__name__)

FETCH_ATTEMPTS = 3
FETCH_TIMEOUT_S = 10.0
"""Reading a reservoir pick's record back after a restore: tries, and the time each may take
(a metadata round trip, then a fetch; seconds on a healthy cluster). 3 x 10 s bounds the wait
near the 30 s a single try used to take before dropping the pick."""
_FETCH_RETRY_S = 0.5  # between look-ups of a try that fail at once (`_fetch_once`)
_UNREAD = object()

PARTITIONS_CHECK_S = 30.0
"""How often (wall clock) the scorer re-reads its input topic's partition count: a metadata
round trip, cheap at this pace; a record of a new partition is noticed at once anyway."""


class ScorerUnavailable(RuntimeError):
    """The scorer cannot start (e.g. its topics are missing); the message says what to do."""


class DeliveryFailed(RuntimeError):
    """The broker refused records the scorer produced (a topic deleted, an ACL, a record over
    the topic's size limit). `flush()` returning 0 does not mean delivered: a refused record
    leaves the queue with an error report. Nothing past the last durable output is committed;
    the loop holds (`_hold`): not ready, its partitions rewound to their last checkpoint and
    paused, and it tries again every few seconds until the broker accepts the output."""


class InstanceReplaced(RuntimeError):
    """Another process joined with this instance's id (its group.instance.id or transactional.id),
    so the group and the transaction coordinator now talk to it: this one must stop. That is
    the point when it is this instance's own restart; otherwise two instances share an id."""


class SessionLost(InstanceReplaced):
    """This instance's own rejoin fenced it: its group session timed out on its side (the
    coordinator was unreachable past session.timeout.ms, as while a broker restarts), librdkafka
    joined again under the same group.instance.id with a new member id, and the broker fenced
    the old one, which is fatal to the consumer. Nobody else has the id: a new consumer (a new
    Scorer, restoring from the checkpoints as a restart would) carries on (services/cli.py)."""


# How long after its own session timeout a fence is taken for a self-fence (SessionLost): the
# rejoin that causes it follows the timeout within a few seconds.
_SELF_FENCE_WINDOW_S = 60.0


class _Fenced(Exception):
    """exactly_once: the group refused a transaction's offsets (this member was frozen or cut
    off past its session, or a rebalance moved its generation on), so the transaction was
    aborted. `partitions` are those whose in-memory state had moved past what is now
    committed: the loop forgets that state and restores them from their checkpoints."""

    def __init__(self, reason: str, partitions: list[int]) -> None:
        super().__init__(reason)
        self.partitions = partitions


# Errors that mean this member's generation or membership is over: a zombie's commit.
_FENCED_CODES = frozenset({
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.FENCED_INSTANCE_ID,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError._FENCED, KafkaError.STALE_MEMBER_EPOCH,
    KafkaError.FENCED_MEMBER_EPOCH,
})
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT})
# at_least_once commits sent and not yet answered before the next one waits (`_finish`).
_MAX_COMMITS_IN_FLIGHT = 1
# Group settings unless configured (docs/scorer.md, "Running on a cluster"; bench/takeover.py):
# - a static member that stops for good (scale-in, a lost node) holds its partitions until its
#   session expires (static members do not leave on close): 10 s instead of librdkafka's 45 s.
#   Heartbeats come from librdkafka's own thread, so a busy Python loop does not miss them.
# - a member learns of a rebalance at its next heartbeat: 3 s made a scale-out take ~4.5 s on
#   Apache Kafka, 1 s ~2.5 s.
# The assignor stays librdkafka's eager default: with cooperative-sticky and static members, a
# rolling restart left two partitions with no owner in 1 of 3 runs (measured on Kafka 4.1.1,
# librdkafka 2.16); the scorer assigns incrementally if a user chooses it all the same.
_GROUP_DEFAULTS = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1000}
# How long the loop holds, paused, after the broker refused its output, before it tries again.
_HOLD_S = 5.0
# A refused read or commit (a missing ACL) counts as fixed after this long without another.
_DENIED_QUIET_S = 10.0
# How long a partition whose state could not be restored waits before the next attempt.
_RESTORE_RETRY_S = 5.0
# How long a transaction may stay open before the broker aborts it. An instance that froze or
# died inside one blocks every read_committed reader of the partitions it wrote to until then;
# a scorer's transaction lasts one batch (milliseconds), so 10 s instead of librdkafka's 60 s.
_TRANSACTION_TIMEOUT_MS = 10_000


class Scorer:
    """One scorer instance in the consumer group `settings.group_id`.

    `run()` blocks until `stop()` (or SIGTERM via the CLI), then checkpoints, commits and leaves
    the group. Not thread-safe except `stop()` and the ops endpoints.
    """

    def __init__(self, settings: ScorerSettings, *, policy: SelectorPolicy | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.policy = policy or settings.selector_policy()
        self.registry = registry or CollectorRegistry()
        self.metrics = ScorerMetrics(self.registry)
        self.version = service_version()
        self.topic = settings.input_topic
        self.eos = settings.processing_guarantee == "exactly_once"
        self.partitions: dict[int, PartitionScorer] = {}
        self._last_checkpoint: dict[int, tuple[int, float]] = {}
        # Per partition, the commit metadata that points at its latest durable checkpoint
        # (checkpoint_store.py); state-topic positions of checkpoints delivered, by key.
        self._pointers: dict[int, str] = {}
        self._delivered: dict[bytes, tuple[int, int]] = {}
        # Assigned partitions whose restore failed (state topic unreadable): paused, retried.
        self._unrestored: dict[int, TopicPartition] = {}
        # Per partition, the next offset when its progress gauge was last set.
        self._progress: dict[int, int] = {}
        # Partitions whose state was reset because their log went backwards: checkpointed
        # before anything of them is committed (`_flush_resets`).
        self._reset: set[int] = set()
        self._restore_retry_at = 0.0
        # Why the loop is holding (a refusal, a missing permission), None when it is not; and
        # until when its partitions stay paused before it tries again.
        self._held: str | None = None
        self._hold_until = 0.0
        self._denied_at = 0.0  # when the group or the input was last refused to this reader
        self._stop = threading.Event()
        self._undelivered: list[tuple[str, KafkaError]] = []
        # Class feedback per partition not applied yet (weights, newest feedback seq in them),
        # and feedback received but applied to no partition yet (for the metrics).
        self._owed: dict[int, tuple[dict[str, dict[str, float]], int]] = {}
        self._unannounced: dict[int, dict[str, dict[str, float]]] = {}
        self._feedback_seq = 0
        self._class_series: set[tuple[str, str, str]] = set()
        self._threshold_series: set[tuple[str, str, str]] = set()
        self._drift_series: set[tuple[str, str]] = set()
        self._classes_observed = 0.0
        # Set when the loop fails: the state may be ahead of the output the broker holds, so
        # nothing may be checkpointed or committed from then on (a restart replays instead).
        self._failed = False
        self._assigned_once = False
        self._heartbeat = time.monotonic()
        self._ceilings: dict[int, DeadLetterWindow] = {}  # per input partition
        self._halted: set[int] = set()  # partitions stopped at the dead-letter ceiling
        self._version_series: set[tuple[str, str]] = set()  # scorer_threshold_ratio's
        # Per partition: the chunk slot its latest checkpoint's head names (partition.py).
        self._chunk_slots: dict[int, str | None] = {}
        # Labeling tiers (None: off) and, per partition, the tier router's snapshot read with
        # its checkpoint, until the partition's scorer is built.
        self._tiers = settings.tier_settings()
        self._tier_snapshots: dict[int, dict[str, Any] | None] = {}
        # Per partition, the probe books' snapshot read with its checkpoint (likewise).
        self._probe_snapshots: dict[int, list[list[Any]] | None] = {}
        self._plain_producer: Producer | None = None
        self._in_transaction = False
        self._commits_in_flight = 0
        client = settings.kafka.client
        consumer_config: dict[str, Any] = {
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "on_commit": self._on_commit,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "allow.auto.create.topics": False,
        }
        if settings.static_membership:
            consumer_config["group.instance.id"] = settings.instance_id
        for key, value in _GROUP_DEFAULTS.items():
            if key not in settings.kafka.client_config:
                consumer_config[key] = value
        self._errors = connection.Errors()
        consumer_config["error_cb"] = self._errors
        consumer_config["logger"] = self._errors.logger("librdkafka.scorer")
        consumer_config = client(role="consumer", overrides=consumer_config)
        self._cooperative = _cooperative(consumer_config)
        self.consumer = Consumer(consumer_config)
        self._connect()  # before anything else asks the cluster: one line if it cannot
        producer_config: dict[str, Any] = {
            "allow.auto.create.topics": False,
            "enable.idempotence": True,
            "linger.ms": 5,
            # Dead letters of large bad records are ~4/3 of the original; checkpoints hold the
            # dedupe memory (topics.py).
            "message.max.bytes": max(topics.DLQ_MAX_MESSAGE_BYTES,
                                     topics.STATE_MAX_MESSAGE_BYTES),
            # Refused records are only seen in delivery reports; a checkpoint's report also
            # says where it landed (its pointer for the next commits).
            "on_delivery": self._on_delivery,
            "error_cb": self._errors,
        }
        if self.eos:
            producer_config["transactional.id"] = f"{settings.group_id}-{settings.instance_id}"
            if "transaction.timeout.ms" not in settings.kafka.client_config:
                producer_config["transaction.timeout.ms"] = _TRANSACTION_TIMEOUT_MS
        self._producer_config = client(producer_config, role="producer")
        self.producer = Producer(self._producer_config)
        self.feedback = FeedbackReader(client({"group.id": settings.group_id + "-feedback"},
                                              role="consumer"),
                                       settings.feedback_topic, self.version)
        self._input_partitions = self._partition_count(self.topic)
        self._partitions_checked = time.monotonic()
        self._exit_code = 0
        self.metrics.input_partitions.set(self._input_partitions)
        tier_topics = sorted(set(self._tiers.topics.values())) if self._tiers else []
        for topic in (settings.state_topic, settings.requests_topic, topics.dlq(self.topic),
                      topics.dlq(settings.feedback_topic), *tier_topics):
            self._partition_count(topic)
        self._fetcher = Consumer(client({"group.id": settings.group_id + "-fetch",
                                         "enable.auto.commit": False}, role="consumer"))
        # Every group.id the scorer's clients use starts with its group's name: one prefixed
        # ACL covers them (`active-stream acls`).
        self.locator = CheckpointLocator(client(role="consumer"), settings.state_topic,
                                         self._state_key, self._marker_producer,
                                         group=settings.group_id + "-restore")
        self.ops = OpsServer(self.registry, settings.metrics_host, settings.metrics_port,
                             health=self.health, ready=self.ready,
                             access=OpsAccess.of(settings))

    def _connect(self, timeout_s: float = 30.0) -> None:
        """Wait until the cluster answers; ScorerUnavailable with one line saying why not (a
        refused password or CA is known within a second or two: no point waiting it out)."""
        deadline = time.monotonic() + timeout_s
        config = self.settings.kafka.client(role="consumer")
        while True:
            try:
                self.consumer.list_topics(timeout=2.0)
                return
            except KafkaException:
                self.consumer.poll(0.1)  # serves error_cb (nothing is assigned yet)
            if self._errors.settled is not None:
                raise ScorerUnavailable(connection.explain(self._errors.settled, config))
            self.consumer.poll(0.1)  # serves the log lines of the failed attempt too
            if time.monotonic() > deadline:
                raise ScorerUnavailable(connection.explain(self._errors.last, config))

    def _partition_count(self, topic: str) -> int:
        meta = self.consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is not None and meta.error is not None and _authorization(meta.error):
            raise ScorerUnavailable(
                f"not authorized to DESCRIBE topic {topic} ({meta.error.str()}): grant the "
                "scorer's ACLs (`active-stream acls scorer --principal User:...`)")
        if meta is None or meta.error is not None or not meta.partitions:
            raise ScorerUnavailable(
                f"topic {topic} does not exist: run `active-stream topics create`")
        return len(meta.partitions)

    # -- ops ------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._heartbeat
        # The loop wakes at least every batch_timeout_s; a minute of silence means it is stuck.
        return (stalled < 60.0), f"loop last ran {stalled:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        if not self._assigned_once:
            return False, "waiting for the group to assign partitions"
        if self._held is not None:
            return False, f"holding, retrying every {_HOLD_S:.0f} s: {self._held}"
        if self._unrestored:
            return False, (f"partitions {sorted(self._unrestored)} not restored yet: their "
                           "state topic could not be read (retrying)")
        return True, f"ready: {len(self.partitions)} partitions"

    def stop(self) -> None:
        """Ask `run()` to finish its batch, checkpoint, commit and leave. Thread-safe."""
        self._stop.set()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns 0, or 3 when the input topic's partition count changed
        (`_partition_count_changed`). Raises DeadLetterCeilingExceeded on a bad stream."""
        self.ops.start()
        if self.eos:
            self.producer.init_transactions(30)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        try:
            while not self._stop.is_set():
                self._heartbeat = time.monotonic()
                messages = self.consumer.consume(self.settings.batch_size,
                                                 self.settings.batch_timeout_s)
                try:
                    messages = self._consumer_errors(messages)
                    self._flush_resets()
                    self._resume_after_hold()
                    self._apply_feedback()
                    if messages or self.feedback.dead_letters:
                        self._process(messages)
                    else:  # idle: a partition nobody consumes from yet is noticed here
                        self._partition_count_changed({})
                    if len(messages) < self.settings.batch_size:
                        self._advance_idle()
                    self._checkpoint_due()
                    self._retry_restores()
                except _Fenced as exc:
                    self._rewind(exc)
                except DeliveryFailed as exc:
                    self._hold(str(exc))
        except KafkaException as exc:
            self._failed = True
            if exc.args and isinstance(exc.args[0], KafkaError):
                self._raise_if_replaced(exc.args[0])  # a fenced instance says so in one line
            raise
        except BaseException:
            self._failed = True
            raise
        finally:
            self._shutdown()
        return self._exit_code

    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        # Per-message work stays in C (map over the Message methods): at ~1 us an event, a
        # Python loop building a Record per message would cost as much as the Kafka client.
        if any(map(Message.error, messages)):
            messages = _without_eof(messages)
        by_partition = _by_partition(messages)
        if self._partition_count_changed(by_partition):
            return  # nothing of this batch is processed under the old share of the budget
        self._check_regressions(by_partition)
        self._flush_resets()
        results = {p: self.partitions[p].process_columns(
                       cast(list[int], list(map(Message.offset, msgs))),  # records have offsets
                       list(map(Message.value, msgs)), functools.partial(_record, msgs))
                   for p, msgs in by_partition.items() if p in self.partitions}
        self._apply_ceiling(results)
        self._produce(results)
        self._observe(results, by_partition, time.perf_counter() - started)

    def _apply_ceiling(self, results: dict[int, BatchResult]) -> None:
        """The dead-letter ceiling, per partition and before the commit: a partition most of
        whose recent records were invalid is stopped -- this batch of it neither produced nor
        committed, the partition paused and let go of (no checkpoint, no commit: a restart or
        a rebalance resumes it from its last commit, and stops it again if it is still bad) --
        while the other partitions carry on. When every partition is stopped, the scorer
        stops (DeadLetterCeilingExceeded): nothing is left to serve."""
        for p in list(results):
            window = self._ceilings.setdefault(p, DeadLetterWindow(DeadLetterCeiling()))
            result = results[p]
            window.record_counts(result.valid, len(result.invalid_codes))
            try:
                window.check()
            except DeadLetterCeilingExceeded as exc:
                del results[p]
                self._halt(p, str(exc))
        halted = {p for p in self._halted if p not in self.partitions}
        self.metrics.halted.set(len(halted))
        if halted and not self.partitions:
            raise DeadLetterCeilingExceeded(
                f"every partition of this instance stopped at the dead-letter ceiling "
                f"({', '.join(map(str, sorted(halted)))}): is the producer upstream sending the "
                "right schema? See the .dlq topic for reasons.")

    def _halt(self, partition: int, why: str) -> None:
        log.error("partition %d stopped, not committing its batch: %s", partition, why)
        self.metrics.ceiling_trips.labels(str(partition)).inc()
        self._halted.add(partition)
        self._ceilings.pop(partition, None)
        self.consumer.pause([TopicPartition(self.topic, partition)])
        self._drop([partition])

    def _partition_count_changed(self, consumed: dict[int, list[Message]]) -> bool:
        """True (and the scorer stops, exit code 3) when the input topic's partition count
        differs from the one the budget was divided by at start: each partition's share would
        be wrong, and a partition past the old count would have none. Checked at once when a
        record of such a partition arrives, else every PARTITIONS_CHECK_S of wall clock (a
        metadata request). The stop is the graceful one (checkpoint, commit); a restart divides
        the budget anew."""
        now = time.monotonic()
        beyond = any(p >= self._input_partitions for p in consumed)
        if not beyond and now - self._partitions_checked < PARTITIONS_CHECK_S:
            return False
        self._partitions_checked = now
        try:
            count = self._partition_count(self.topic)
        except (KafkaException, ScorerUnavailable) as exc:  # not this check's to judge
            log.warning("could not read the partition count of %s: %s", self.topic, exc)
            return False
        self.metrics.input_partitions.set(count)
        if count == self._input_partitions:
            return False
        log.error("the input topic %s now has %d partitions, not %d: the labeling budget is "
                  "divided by the partition count, so the scorer stops (exit 3) to restart with "
                  "the new division", self.topic, count, self._input_partitions)
        self.metrics.partition_count_changes.inc()
        self._exit_code = 3
        self.stop()
        return True

    def _produce(self, results: dict[int, BatchResult]) -> None:
        """Produce the batch's output, then commit its offsets: in one transaction (exactly_once)
        or after a flush (at_least_once: a crash before the commit replays identical output)."""
        if self.eos:
            self._begin_transaction()
        for result in results.values():
            for out in result.requests:
                self._send(self.settings.requests_topic, out)
            for topic, out in result.tier_copies:  # tiers: the copies their pools read
                self._send(topic, out)
            for out in result.drift_records:
                self._send(self.settings.feedback_topic, out)
            for out in result.stability_records:  # in the same transaction as the offsets
                self._send(self.settings.feedback_topic, out)
            # librdkafka copies what it is given: let each dead letter (up to ~4/3 of a
            # 256 KiB record) go as soon as it is queued, not when the batch is done.
            letters_out, result.dead_letters = result.dead_letters, []
            letters_out.reverse()
            while letters_out:
                self._send(topics.dlq(self.topic), self._letter(letters_out.pop()))
        letters, codes = self.feedback.take_dead_letters()
        for out in letters:
            self._send(topics.dlq(self.settings.feedback_topic), self._letter(out))
        for code in codes:
            self.metrics.feedback_invalid.labels(code).inc()
        self._finish([self._commit_position(p) for p in results])
        if self._held is not None and self._hold_until == float("inf") and results:
            log.info("the broker accepts the output again: resuming (%s)", self._held)
            self._held = None

    def _letter(self, out: Output) -> Output:
        """A dead letter as produced: redacted (hashes and sizes, no payload, key or quoted
        values) when ACTIVE_STREAM_SCORER_DEAD_LETTER_REDACT is set."""
        if not self.settings.dead_letter_redact:
            return out
        return Output(redacted_key(out.key), redact_dead_letter(out.value))

    def _send(self, topic: str, out: Output) -> None:
        """Produce one record; when librdkafka's bounded queue is full, wait for deliveries
        instead of dropping or growing a buffer of our own (the consumer is not polled meanwhile,
        so input pauses too)."""
        while True:
            try:
                self.producer.produce(topic, out.value, out.key)
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused before sending (e.g. the topic is gone)
                self._on_delivery(exc.args[0], _Refused(topic))
                self._raise_if_undelivered("not committing offsets")

    def _commit_position(self, partition: int) -> TopicPartition:
        """What to commit for `partition`: its next offset, but never below the offset the group
        had committed when this instance restored it. While it replays up to there (without
        output) its next offset is behind, and committing it would move the group's offset
        back: a second crash would then emit the replayed stretch again. The metadata points
        at the partition's latest durable checkpoint, for the next restore."""
        scorer = self.partitions[partition]
        offset = max(scorer.next_offset, scorer.suppress_below)
        where = self._pointers.get(partition)
        if where is None:
            return TopicPartition(self.topic, partition, offset)
        return TopicPartition(self.topic, partition, offset, metadata=where)

    def _finish(self, offsets: list[TopicPartition], wait: bool = False) -> None:
        """Make the batch's output durable, then commit `offsets`: in the open transaction
        (exactly_once) or after a flush (at_least_once). Raises DeliveryFailed when the broker
        refused output, _Fenced when the group refused an exactly_once transaction.

        at_least_once, the commit is sent without waiting for its answer unless `wait` (a
        hand-over) or an earlier one is still unanswered: the output it covers is durable
        already, commits of a partition reach the coordinator in order, and waiting ~1-6 ms
        per batch on Apache Kafka would cost a third of the scorer's time and block the loop
        through a rebalance. So at most two batches are ever past the durable commit (the
        unanswered one and the current one), which the feedback hold relies on (`_restore`).
        A commit the group refuses (a zombie's, one racing a rebalance) or that fails is only
        noted (`_on_commit`): the next commit of a partition still held covers it, and the new
        owner of one taken away replays it, byte for byte."""
        if self.eos:
            self._commit_transaction(offsets)
            return
        if self.producer.flush(60) != 0:
            raise KafkaException("output not delivered within 60 s; not committing offsets")
        self._raise_if_undelivered("not committing offsets")
        if not offsets:
            return
        if not wait and self._commits_in_flight < _MAX_COMMITS_IN_FLIGHT:
            self._commits_in_flight += 1
            self.consumer.commit(offsets=offsets, asynchronous=True)
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._on_commit(exc.args[0], offsets)
        self._commits_in_flight = 0  # answered in order: every earlier one is answered too

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The answer to a commit (served by consume): nothing to do unless it failed."""
        self._commits_in_flight = max(0, self._commits_in_flight - 1)
        if err is None:
            return
        if err.code() in _FENCED_CODES:
            self._refused_commit(err.str(), "may be replayed by its partitions' next owner")
            return
        if _authorization(err):
            self._denied(f"not authorized to READ group {self.settings.group_id}, so offsets "
                         f"cannot be committed ({err.str()})")
        log.warning("committing offsets failed (%s); the next commit covers them", err.str())
        self.metrics.commit_failures.inc()

    def _begin_transaction(self) -> None:
        self.producer.begin_transaction()
        self._in_transaction = True

    def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        """Commit the open transaction with `offsets` and the group's metadata, so a zombie
        (a member the group has fenced) cannot commit it. On failure the transaction is
        aborted first: left open, it would hide every later record of its partitions from
        read_committed readers until the broker times it out."""
        try:
            if offsets:
                meta = self.consumer.consumer_group_metadata()
                self.producer.send_offsets_to_transaction(offsets, meta, 30)
            self.producer.commit_transaction(60)
            self._in_transaction = False
        except KafkaException as exc:
            self._raise_if_replaced(exc.args[0])
            self._abort_transaction()
            self._raise_if_undelivered("the transaction is aborted")
            if exc.args[0].code() in _FENCED_CODES:
                raise _Fenced(exc.args[0].str(), [tp.partition for tp in offsets]) from None
            raise
        self._raise_if_undelivered("after the transaction")

    def _abort_transaction(self) -> None:
        """Abort the open transaction, if any; best effort (a fenced producer cannot, and its
        successor's init_transactions has aborted it already)."""
        if not self._in_transaction:
            return
        self._in_transaction = False
        try:
            self.producer.abort_transaction(30)
        except KafkaException as exc:
            log.warning("could not abort the open transaction: %s", exc.args[0].str())

    def _refused_commit(self, reason: str, consequence: str) -> None:
        log.warning("the group refused this instance's commit (%s): the batch's output %s",
                    reason, consequence)
        self.metrics.fenced.inc()

    def _rewind(self, fenced: _Fenced, quiet: bool = False) -> None:
        """After an aborted transaction: forget the state of the partitions it covered (ahead of
        what is committed) and restore those still assigned from their checkpoints and
        committed offsets. The group's rebalance, served by the next consume, then revokes or
        keeps them as it decides."""
        if not quiet:
            self._refused_commit(str(fenced), "was aborted; restoring its partitions")
        ahead = [p for p in fenced.partitions if p in self.partitions]
        assigned = {tp.partition: tp for tp in self.consumer.assignment()
                    if tp.topic == self.topic}
        self._drop(ahead)
        again = [assigned[p] for p in ahead if p in assigned]
        if not again:
            return
        try:
            resume = self._restore(again)
        except (CheckpointReadTimeout, KafkaException) as exc:
            log.error("partitions %s: cannot restore their state (%s); paused until a retry "
                      "succeeds", sorted(tp.partition for tp in again), _reason(exc))
            self._unrestored.update({tp.partition: tp for tp in again})
            self._restore_retry_at = time.monotonic() + _RESTORE_RETRY_S
            self.consumer.pause(again)
            return
        for tp in resume:
            self.consumer.seek(tp)

    def _hold(self, reason: str) -> None:
        """The broker refused output: nothing of it is committed. Abort what is open, rewind
        every partition to its last checkpoint (their in-memory state is past what the broker
        holds), pause them, say why (not ready), and try again in a few seconds: a restored
        ACL, a recreated topic, a raised size limit lets the scorer resume by itself, and the
        replay produces exactly the output that was refused."""
        if self._held != reason:
            log.error("holding: %s; nothing is committed past the refused output; retrying "
                      "every %.0f s", reason, _HOLD_S)
        self._held = reason
        self._hold_until = time.monotonic() + _HOLD_S
        self.metrics.holds.inc()
        self._abort_transaction()
        if self.eos:
            self._renew_producer()
        self._undelivered.clear()
        self._rewind_all()
        self.consumer.pause([TopicPartition(self.topic, p) for p in self.partitions])

    def _renew_producer(self) -> None:
        """A new transactional producer under the same transactional.id. After a refused record
        librdkafka's transactional producer can stay out of step with the broker (seen:
        OUT_OF_ORDER_SEQUENCE_NUMBER on the next commit, after the record size limit was
        raised); init_transactions starts a new epoch with fresh sequence numbers."""
        self.producer.purge()
        self.producer.flush(0)
        self.producer = Producer(self._producer_config)
        self.producer.init_transactions(30)

    def _resume_after_hold(self) -> None:
        if self._held is None:
            return
        if self._denied_at and time.monotonic() - self._denied_at > _DENIED_QUIET_S:
            log.info("no refusal for %.0f s: the permission is back (%s)", _DENIED_QUIET_S,
                     self._held)
            self._held, self._denied_at = None, 0.0
            return
        if time.monotonic() < self._hold_until:
            return
        self.consumer.resume([TopicPartition(self.topic, p) for p in self.partitions])
        self._hold_until = float("inf")  # until a batch's output is accepted (`_produce`)

    def _rewind_all(self) -> None:
        """Restore every partition still assigned from its checkpoint and committed offset."""
        self._rewind(_Fenced("", list(self.partitions)), quiet=True)

    def _consumer_errors(self, messages: list[Message]) -> list[Message]:
        """The records among `messages`. A missing permission (to read the input topic, or the
        group) is held, not fatal: librdkafka keeps asking, and once the ACL is there the
        records flow again. Any other error but end-of-partition raises."""
        if not any(map(Message.error, messages)):
            return messages
        for msg in messages:
            err = msg.error()
            if err is None or err.code() == KafkaError._PARTITION_EOF:
                continue
            kind = _authorization(err)
            if kind is None:
                self._raise_if_replaced(err)
                raise KafkaException(err)
            self._denied(f"not authorized to READ {kind} "
                         f"{msg.topic() if kind == 'topic' else self.settings.group_id} "
                         f"({err.str()})")
        return [msg for msg in messages if msg.error() is None]

    def _raise_if_replaced(self, err: KafkaError) -> None:
        """`_raise_if_replaced`, telling a self-fence (SessionLost) from another process."""
        try:
            _raise_if_replaced(err)
        except InstanceReplaced:
            if self._errors.session_lost_within(_SELF_FENCE_WINDOW_S):
                raise SessionLost(
                    f"the group session expired while the coordinator was unreachable and the "
                    f"rejoin fenced this instance's earlier membership ({err.str()})") from None
            raise

    def _denied(self, reason: str) -> None:
        """A permission the reader needs is missing: not ready until no refusal has been seen
        for a while (librdkafka keeps retrying; nothing is committed past what was processed)."""
        if self._held != reason:
            log.error("holding: %s; waiting for the permission", reason)
            self.metrics.holds.inc()
        self._held = reason
        self._hold_until = float("inf")
        self._denied_at = time.monotonic()

    def _advance_idle(self) -> None:
        """Move partitions past offsets that hold no records for this reader (transaction
        markers, aborted records): the consumer's position is past them, the last record + 1
        is not. Without it, a partition written by a transactional producer would show a lag
        of at least 1 forever, to our metric and to every tool that reads the group's offsets.
        Commits the moved partitions."""
        if not self.partitions:
            return
        positions = self.consumer.position([TopicPartition(self.topic, p)
                                            for p in self.partitions])
        # Never past the partition's end: after the consumer was sent back to the start of a
        # recreated topic, its position can still read the old log's (`_check_regressions`).
        moved = [tp.partition for tp in positions
                 if tp.partition in self.partitions
                 and self.partitions[tp.partition].next_offset < tp.offset
                 <= self.consumer.get_watermark_offsets(tp, cached=True)[1]]
        if moved:
            for tp in positions:
                if tp.partition in moved:
                    self.partitions[tp.partition].next_offset = tp.offset
            if self.eos:
                self._begin_transaction()
            self._finish([self._commit_position(p) for p in moved])
        self._observe_lag()  # an idle or stuck partition's lag must not freeze at its old value

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
        elif isinstance(msg, Message) and msg.topic() == self.settings.state_topic:
            self._delivered[msg.key() or b""] = (int(msg.partition() or 0), int(msg.offset() or 0))

    def _raise_if_undelivered(self, consequence: str) -> None:
        if not self._undelivered:
            return
        by_topic: dict[str, list[KafkaError]] = defaultdict(list)
        for topic, err in self._undelivered:
            _raise_if_replaced(err)  # refused because a newer instance fenced this one
            by_topic[topic].append(err)
        detail = "; ".join(
            f"{len(errs)} to {topic} ("
            + (f"not authorized to WRITE to topic {topic}: {errs[0].str()}"
               if _authorization(errs[0]) else errs[0].str()) + ")"
            for topic, errs in by_topic.items())
        self._undelivered.clear()
        raise DeliveryFailed(f"the broker refused records: {detail}; {consequence}")

    def _observe(self, results: dict[int, BatchResult],
                 by_partition: dict[int, list[Message]], seconds: float) -> None:
        m = self.metrics
        m.batch_seconds.observe(seconds)
        m.consumed.inc(sum(len(r) for r in by_partition.values()))
        now = time.time()
        for result in results.values():
            for code in result.invalid_codes:
                m.invalid.labels(code).inc()
            for sel in result.selected:
                m.selected.labels(sel.strategy, m.class_label(sel.class_name or "")).inc()
            for tier in result.request_tiers:
                m.requests_by_tier.labels(tier).inc()
            m.tier_withheld.inc(result.withheld)
            if result.requests:
                m.requests.inc(len(result.requests))
                for sel in result.selected:
                    m.latency.observe(max(0.0, now - sel.event_time))
            m.replayed.inc(result.suppressed)
            m.lost_deferred.inc(result.lost_deferred)
            for drift in result.drift:
                m.drift.labels(drift.model_id, m.class_label(drift.class_name)).inc()
            m.probes.inc(result.probes)
            for model_id, record in result.stability:
                m.probe_changed.labels(model_id).set(record.share)
            for reason, count in result.redundant.items():
                m.redundant.labels(reason).inc(count)
        self._observe_state()

    def _observe_classes(self) -> None:
        """Per-class confidence gauges from every owned partition's stats (at checkpoints and
        at most every 5 s: computing the class quantiles per batch would cost more than it
        tells). Series of versions no longer held are removed."""
        self._classes_observed = time.monotonic()
        weighted: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        thresholds: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for scorer in self.partitions.values():
            for model_id, version in scorer.state.versions:
                for name, stats in scorer.state.class_stats(model_id, version).items():
                    key = (model_id, version, self.metrics.class_label(name))
                    weighted[key][0] += stats["count"] * stats["mean"]
                    weighted[key][1] += stats["count"]
                    if stats["threshold"] is not None:
                        thresholds[key].append(stats["threshold"])
        self._observe_drift()
        means = {k: total / count for k, (total, count) in weighted.items() if count > 0}
        mean_thresholds = {k: sum(v) / len(v) for k, v in thresholds.items()}
        m = self.metrics
        for gauge, values, held in ((m.class_confidence, means, self._class_series),
                                    (m.class_threshold, mean_thresholds, self._threshold_series)):
            for key, value in values.items():
                gauge.labels(*key).set(value)
            for key in held - set(values):
                gauge.remove(*key)
            held.clear()
            held.update(values)

    def _observe_drift(self) -> None:
        """The drift boost per (model, class) from every owned partition's model books; a
        series whose boost ended goes back to 1 (kept: the class labels are bounded)."""
        boosts: dict[tuple[str, str], float] = {}
        for scorer in self.partitions.values():
            for model_id, book in scorer.state.books.items():
                for c in np.flatnonzero(book.boost != 1.0).tolist():
                    key = (model_id, self.metrics.class_label(book.names[c]))
                    boosts[key] = max(boosts.get(key, 1.0), float(book.boost[c]))
        for key in self._drift_series - set(boosts):
            self.metrics.drift_boost.labels(*key).set(1.0)
        for key, value in boosts.items():
            self.metrics.drift_boost.labels(*key).set(value)
        self._drift_series = set(boosts)

    def _observe_state(self) -> None:
        if time.monotonic() - self._classes_observed >= 5.0:
            self._observe_classes()
        m = self.metrics
        for lane in ("exploit", "explore"):
            m.budget.labels(lane).set(sum(s.state.budget_remaining(lane)
                                          for s in self.partitions.values()))
        thresholds: dict[tuple[str, str], float] = {}
        for scorer in self.partitions.values():
            thresholds.update(scorer.state.thresholds())
        for key, value in thresholds.items():
            m.threshold.labels(*key).set(value)
        for key in self._version_series - set(thresholds):  # versions no partition holds
            m.threshold.remove(*key)
        self._version_series = set(thresholds)
        self._observe_lag()

    def _observe_lag(self) -> None:
        """Per partition: the high watermark the last fetch reported minus the next offset to
        process (what a group-offsets tool shows once that offset is committed), and when its
        next offset last moved (a partition with lag that does not move is stalled). Costs a
        lookup in librdkafka's cache per partition."""
        now = time.time()
        regressed: list[int] = []
        for p, scorer in self.partitions.items():
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                          cached=True)
            if high >= 0:
                self.metrics.lag.labels(str(p)).set(max(0, high - scorer.next_offset))
            if 0 <= high < scorer.next_offset:  # an idle partition whose log went backwards
                regressed.append(p)
            if self._progress.get(p) != scorer.next_offset:
                self._progress[p] = scorer.next_offset
                self.metrics.progress.labels(str(p)).set(now)
        if regressed:
            self._check_regressions({p: [] for p in regressed})

    # -- feedback -------------------------------------------------------------------------

    def _apply_feedback(self) -> None:
        """Apply class feedback at a batch boundary, then checkpoint at once, so any request a
        new weight influenced comes after a durable checkpoint that holds that weight.

        Per partition: a partition restored after a crash takes feedback its checkpoint lacks
        only from `feedback_from` on (past the replay and past the most the crashed instance can
        have processed, and produced output for, without that feedback: one batch), so the
        replayed batch decides as the crashed one did. Fresh partitions, and those handed over
        with a final checkpoint, take it at once. Nothing is read with `class_feedback` off."""
        if not self.settings.class_feedback:
            return
        new = self.feedback.poll()
        if new:
            self._feedback_seq += 1
            self._unannounced[self._feedback_seq] = new
            for p in self.partitions:
                self._owed.setdefault(p, ({}, 0))[0].update(new)
                self._owed[p] = (self._owed[p][0], self._feedback_seq)
        due = [p for p, scorer in self.partitions.items()
               if self._owed.get(p, ({}, 0))[0] and scorer.next_offset >= scorer.feedback_from]
        if not due:
            return
        for p in due:
            weights, seq = self._owed.pop(p)
            for model_id, classes in weights.items():
                self.partitions[p].state.set_class_weights(model_id, classes)
                router = self.partitions[p].tiers
                if router is not None and model_id in self.feedback.tier_inputs:
                    # The latest record of the model, as the weights just applied (poll()
                    # updates both together).
                    router.set_classes(model_id, self.feedback.tier_inputs[model_id])
            self._announce(seq)
        self._checkpoint(due)

    def _announce(self, upto: int) -> None:
        """Metrics for the feedback received up to `upto`, once it is applied anywhere."""
        for seq in sorted(s for s in self._unannounced if s <= upto):
            pending = self._unannounced.pop(seq)
            for model_id, weights in pending.items():
                labelled: dict[str, list[float]] = defaultdict(list)
                for name, weight in weights.items():
                    labelled[self.metrics.class_label(name)].append(weight)
                for label, values in labelled.items():  # __other__: their mean
                    self.metrics.class_weight.labels(model_id, label).set(
                        sum(values) / len(values))
            self.metrics.feedback.inc(len(pending))

    # -- state ----------------------------------------------------------------------------

    def _state_key(self, partition: int) -> bytes:
        return f"{self.settings.group_id}/{self.topic}/{partition}".encode()

    def _checkpoint_due(self) -> None:
        now = time.monotonic()
        every_n, every_s = self.settings.checkpoint_every_events, self.settings.checkpoint_every_s
        due = []
        for p, scorer in self.partitions.items():
            offset, when = self._last_checkpoint[p]
            moved = scorer.next_offset - offset
            if moved >= every_n or (moved > 0 and now - when >= every_s):
                due.append(p)
        if due:
            self._checkpoint(due)

    def _checkpoint(self, partitions: list[int], final: bool = False) -> None:
        """Write the state of `partitions`, wait until it is durable, then commit the
        partitions' offsets with pointers to it (in the checkpoint's transaction under
        exactly_once, so a fenced zombie's checkpoint is aborted). `final`: the last one before
        this instance lets them go."""
        if self.eos:
            self._begin_transaction()
        heads = self._send_chunks(partitions, final)
        keys = {p: self._state_key(p) for p in partitions}
        for p in partitions:
            self._delivered.pop(keys[p], None)
            self._send(self.settings.state_topic, heads[p])
        if self.producer.flush(60) != 0:
            raise KafkaException("checkpoint not delivered within 60 s")
        self._raise_if_undelivered("checkpoint not written")
        previous = {p: self._pointers.get(p) for p in partitions}
        for p in partitions:
            if keys[p] in self._delivered:
                self._pointers[p] = pointer(*self._delivered.pop(keys[p]))
        self._delivered.clear()  # the chunks' positions (the heads point at them, not us)
        try:
            # The offsets are unchanged: a checkpoint is at the committed offset or, while
            # replaying, behind it; only their metadata (the pointer) moves.
            self._finish([self._commit_position(p) for p in partitions], wait=final)
        except BaseException:
            for p, before in previous.items():  # not committed: the pointers stay as they were
                if before is None:
                    self._pointers.pop(p, None)
                else:
                    self._pointers[p] = before
            raise
        for p in partitions:
            self._last_checkpoint[p] = (self.partitions[p].next_offset, time.monotonic())
        self.metrics.checkpoints.inc(len(partitions))
        self._observe_classes()

    def _send_chunks(self, partitions: list[int], final: bool) -> dict[int, Output]:
        """Send the chunks of the checkpoints too large for one record (partition.py,
        `checkpoint_records`) and, outside a transaction, wait until they are durable, before
        any head names them; returns each partition's head (or whole checkpoint) record."""
        heads, chunked = {}, False
        for p in partitions:
            groups, slot = checkpoint_records(
                self._state_key(p), self.partitions[p].checkpoint(final), self._chunk_slots.get(p))
            for out in groups[0] if len(groups) > 1 else ():
                self._send(self.settings.state_topic, out)
                chunked = True
            heads[p], self._chunk_slots[p] = groups[-1][0], slot
        if chunked and not self.eos:
            if self.producer.flush(60) != 0:  # as for every checkpoint: 60 s, then stop
                raise KafkaException("checkpoint chunks not delivered within 60 s")
            self._raise_if_undelivered("checkpoint chunks not written")
        return heads

    def _restore(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Build each assigned partition's scorer from its latest checkpoint; returns the
        partitions with the offsets to resume from. Raises CheckpointReadTimeout or
        KafkaException when the checkpoints cannot be read (the caller retries)."""
        started = time.monotonic()
        committed_tps = self.consumer.committed(partitions, 30)
        located = self.locator.locate(committed_tps)
        self._observe_restore(located, time.monotonic() - started)
        committed = {tp.partition: tp.offset for tp in committed_tps}
        resume = []
        for tp in partitions:
            p = tp.partition
            key = self._state_key(p)
            chunks = _chunks_in(located.latest, key) if located.latest is not None else None
            state, offset, final = self._initial_state(
                located.raw.get(p), self._partition_policy(p), p, chunks)
            restored = offset is not None
            done = committed.get(p, -1)
            low, high = self.consumer.get_watermark_offsets(tp, timeout=FETCH_TIMEOUT_S)
            if high < max(done, offset or 0) and self._regressed(p, max(done, offset or 0),
                                                                 low, high):
                state, offset, final, restored, done = self._fresh_state(p), low, False, False, -1
                self._tier_snapshots.pop(p, None)  # the tiers' state goes with the old log's
                self._probe_snapshots.pop(p, None)  # and so do the probe books
            if offset is None:
                # No usable checkpoint (e.g. a crash before the partition's first one): rebuild
                # the state from the partition's first record, replaying what the group already
                # committed without output. Starting a fresh state at the committed offset
                # instead would decide differently from an uninterrupted run.
                offset = 0
            # What a crashed owner may have processed, and output, past its commit without
            # feedback this state lacks: at most the batches past the durable commit (`_finish`;
            # none after a final checkpoint, or when the partition was never committed nor
            # checkpointed: a fresh start).
            in_flight = not final and (done >= 0 or restored)
            past = (_MAX_COMMITS_IN_FLIGHT + 1) * self.settings.batch_size
            self.partitions[p] = PartitionScorer(
                self.topic, p, state, offset, service_version=self.version,
                fetch=self._fetch_from(p), suppress_below=max(done, offset),
                feedback_from=max(done, offset) + past if in_flight else 0,
                probes=self._probe_books(p), **self._tier_router(p))
            if restored and p in located.pointers:
                self._pointers[p] = located.pointers[p]
            else:
                self._pointers.pop(p, None)
            self._owed[p] = ({m: dict(w) for m, w in self.feedback.latest.items()},
                             self._feedback_seq)
            self._last_checkpoint[p] = (offset, time.monotonic())
            resume.append(TopicPartition(self.topic, p, offset if offset > 0 else OFFSET_BEGINNING))
            log.info("partition %d: resuming at offset %d (replaying to %d without output)",
                     p, offset, max(done, offset))
        return resume

    # -- offsets that go backwards -------------------------------------------------------

    def _check_regressions(self, by_partition: dict[int, list[Message]]) -> None:
        """Records below a partition's next offset are a redelivery (skipped, counted) while
        its log still reaches past what was processed, and a regression when the log now ends
        before it: the topic was recreated, or truncated. Checked against the broker's live
        watermarks, and only then: never on an ordinary batch."""
        for p, msgs in list(by_partition.items()):
            scorer = self.partitions.get(p)
            if scorer is None or p in self._reset or (
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
            if self._regressed(p, was, low, high):
                self._tier_snapshots.pop(p, None)
                self._probe_snapshots.pop(p, None)
                self.partitions[p] = PartitionScorer(
                    self.topic, p, self._fresh_state(p), low, service_version=self.version,
                    fetch=self._fetch_from(p), probes=self._probe_books(p),
                    **self._tier_router(p))
                self._owed[p] = ({m: dict(w) for m, w in self.feedback.latest.items()},
                                 self._feedback_seq)
                self._last_checkpoint[p] = (low, time.monotonic())
            else:
                by_partition.pop(p, None)
                self.consumer.pause([TopicPartition(self.topic, p)])

    def _regressed(self, p: int, was: int, low: int, high: int) -> bool:
        """Say loudly that partition `p`'s log ([low, high)) ends before offset `was`, which
        this group processed; True when the policy is to reset its state (it is then
        checkpointed before anything of it is committed), False when the scorer stops."""
        self.metrics.offset_regressions.labels(str(p)).inc()
        why = (f"partition {p} of {self.topic}: its log now ends at offset {high}, before "
               f"offset {was} which this group processed (the topic was recreated or "
               f"truncated)")
        if self.settings.on_offset_regression == "stop":
            log.error("%s; stopping (exit 4): ACTIVE_STREAM_SCORER_ON_OFFSET_REGRESSION=stop. "
                      "Restart with =reset to rebuild its state from offset %d", why, low)
            self._exit_code = 4
            self.stop()
            return False
        log.error("%s; its selection state is reset and rebuilt from offset %d, the start of "
                  "its log, as for a new partition", why, low)
        self._pointers.pop(p, None)
        self._chunk_slots.pop(p, None)
        self._reset.add(p)
        return True

    def _tier_router(self, p: int) -> dict[str, Any]:
        """PartitionScorer's tier arguments for partition p: a router restored from the
        snapshot its checkpoint held (fresh without one), its share of the cost budget; {}
        when tiers are off."""
        snapshot = self._tier_snapshots.pop(p, None)
        if self._tiers is None:
            return {}
        budget = self._tiers.cost_budget
        if budget is not None:
            budget = budget.scaled(1 / max(1, self._input_partitions, p + 1))
        return {"tiers": TierRouter.from_snapshot(self._tiers.policy, budget, snapshot),
                "tier_topics": self._tiers.topics}

    def _probe_books(self, p: int) -> ProbeBooks | None:
        """Partition p's probe books, restored from the snapshot its checkpoint held (empty
        without one); None with ..._PROBE_MAX=0 (probes are then only kept out of selection)."""
        snapshot = self._probe_snapshots.pop(p, None)
        if not self.settings.probe_max:
            return None
        policy = StabilityPolicy(min_probes=min(100, self.settings.probe_max),
                                 max_probes=self.settings.probe_max)
        return ProbeBooks.from_snapshot(policy, snapshot)

    def _fresh_state(self, p: int) -> SelectorState:
        return SelectorState.create(self._partition_policy(p),
                                    partition_seed(self.settings.seed, p))

    def _flush_resets(self) -> None:
        """Checkpoint the partitions just reset, and commit their new offsets with pointers to
        it, before anything else of them is committed: a restart must find the new log's
        state, not the old log's (which would be read as a regression again, and replayed
        output emitted twice)."""
        pending = sorted(p for p in self._reset if p in self.partitions)
        self._reset.clear()
        if pending:
            self._checkpoint(pending)

    def _observe_restore(self, located: Located, seconds: float) -> None:
        self.metrics.restore_records.inc(located.records_read)
        self.metrics.restore_seconds.observe(seconds)
        log.info("restore: %d state records read in %.2f s%s", located.records_read, seconds,
                 " (the whole state topic: some partitions had no checkpoint pointer)"
                 if located.scanned else "")

    def _partition_policy(self, partition: int) -> SelectorPolicy:
        """The selection policy of one input partition: its share of the group's budget, and
        the phase of its time budget (core/budget.py)."""
        partitions = max(1, self._input_partitions, partition + 1)
        return self.policy.for_partition(partition, partitions)

    def _initial_state(self, raw: bytes | None, policy: SelectorPolicy, partition: int,
                       chunk: Callable[[str, int], bytes | None] | None = None
                       ) -> tuple[SelectorState, int | None, bool]:
        """(state, its offset or None when there is no usable checkpoint, final). `chunk`:
        the chunks of a checkpoint kept in several records (partition.read_checkpoint)."""
        self._chunk_slots.pop(partition, None)
        self._tier_snapshots.pop(partition, None)
        self._probe_snapshots.pop(partition, None)
        if raw is not None:
            restored = read_checkpoint(raw, policy, chunk)
            if restored is not None:
                self._chunk_slots[partition] = restored.slot
                self._tier_snapshots[partition] = restored.tiers
                self._probe_snapshots[partition] = restored.probes
                return restored.state, restored.offset, restored.final
            log.warning("partition %d: checkpoint unreadable with this policy; rebuilding the "
                        "state from the partition's first record", partition)
        return (SelectorState.create(policy, partition_seed(self.settings.seed, partition)), None,
                False)

    def _marker_producer(self) -> Producer:
        """Markers cannot be written inside a transaction: exactly_once uses a plain producer."""
        if not self.eos:
            return self.producer
        if self._plain_producer is None:
            self._plain_producer = Producer(
                self.settings.kafka.client({"allow.auto.create.topics": False}, role="producer"))
        return self._plain_producer

    def _fetch_from(self, partition: int) -> Callable[[int], bytes | None]:
        """`PartitionScorer.fetch` for one input partition: the value of the record at an
        offset; None when the record is gone for good (below the partition's log start, i.e.
        removed by retention); DeferredPickUnreadable when it could not be read in
        FETCH_ATTEMPTS tries of FETCH_TIMEOUT_S each (each failed try counted)."""
        def fetch(offset: int) -> bytes | None:
            tp = TopicPartition(self.topic, partition, offset)
            for _ in range(FETCH_ATTEMPTS):
                found = self._fetch_once(tp)
                if found is not _UNREAD:
                    return cast(bytes | None, found)
                self.metrics.deferred_read_failures.inc()
            raise DeferredPickUnreadable(
                f"could not read back {self.topic}[{partition}]@{offset}, a reservoir pick held "
                f"across a restore, in {FETCH_ATTEMPTS} tries of {FETCH_TIMEOUT_S:g} s; not "
                "committing offsets: a restart replays the batch and reads it again")
        return fetch

    def _fetch_once(self, tp: TopicPartition) -> bytes | None | object:
        """One try of `fetch`, FETCH_TIMEOUT_S long: the value, None (gone), or _UNREAD (error
        or timeout). A look-up that fails at once is asked again within the try: right after a
        broker restart the client's metadata names no leader for a while, and librdkafka answers
        `Unknown partition` in microseconds, which spent all the tries in one millisecond (the
        chaos soak's scorer stopped so, bench/chaos.py)."""
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        while True:
            try:
                low, _ = self._fetcher.get_watermark_offsets(
                    tp, timeout=max(0.1, deadline - time.monotonic()))
                break
            except KafkaException as exc:
                if time.monotonic() + _FETCH_RETRY_S >= deadline:
                    log.warning("reading back %s[%d]@%d: %s", tp.topic, tp.partition,
                                tp.offset, exc)
                    return _UNREAD
                time.sleep(_FETCH_RETRY_S)
        if tp.offset < low:
            return None  # removed by retention: no try will ever read it
        self._fetcher.assign([tp])
        while time.monotonic() < deadline:
            msg = self._fetcher.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                log.warning("reading back %s[%d]@%d: %s", tp.topic, tp.partition, tp.offset,
                            msg.error())
                continue
            # A later offset: the record itself is no longer there (compacted away).
            return msg.value() if msg.offset() == tp.offset else None
        return _UNREAD

    # -- rebalance ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        try:
            resume = self._restore(partitions)
        except (CheckpointReadTimeout, KafkaException) as exc:
            # Never a crash loop: take the partitions, hold them paused, not ready, and retry.
            log.error("partitions %s: cannot restore their state (%s); they stay paused and "
                      "the scorer not ready until a retry succeeds", sorted(
                          tp.partition for tp in partitions), _reason(exc))
            self._unrestored.update({tp.partition: tp for tp in partitions})
            self._restore_retry_at = time.monotonic() + _RESTORE_RETRY_S
            self._assign(consumer, partitions)
            consumer.pause(partitions)
        else:
            self._assign(consumer, resume)
        self._heartbeat = time.monotonic()  # a long restore is progress, not a stuck loop
        self._assigned_once = True
        self.metrics.partitions.set(len(self.partitions))

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take `partitions` in an assignment callback: added to what this member holds under a
        cooperative protocol, the whole assignment under an eager one."""
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _retry_restores(self) -> None:
        """Retry the restore of paused partitions (see `_on_assign`), every few seconds."""
        if not self._unrestored or time.monotonic() < self._restore_retry_at:
            return
        waiting = list(self._unrestored.values())
        try:
            resume = self._restore(waiting)
        except (CheckpointReadTimeout, KafkaException) as exc:
            log.error("partitions %s: restore failed again (%s); retrying in %.0f s",
                      sorted(self._unrestored), _reason(exc), _RESTORE_RETRY_S)
            self._restore_retry_at = time.monotonic() + _RESTORE_RETRY_S
            return
        for tp in resume:
            self.consumer.seek(tp)
        self.consumer.resume(waiting)
        self._unrestored.clear()
        self.metrics.partitions.set(len(self.partitions))
        log.info("partitions %s restored after a retry", sorted(tp.partition for tp in waiting))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._unrestored.pop(tp.partition, None)
        mine = [tp.partition for tp in partitions if tp.partition in self.partitions]
        if mine and not self._failed:
            self._hand_over(mine)
        self._drop(mine)

    def _hand_over(self, partitions: list[int]) -> None:
        """The final checkpoint and commit of partitions this instance lets go (revoke,
        shutdown). When the group has fenced this instance already, the new owner restores
        from what was durable before: nothing to do but say so."""
        try:
            self._checkpoint(partitions, final=True)  # commits the offsets too
        except DeliveryFailed as exc:
            log.error("partitions %s: their final checkpoint was refused (%s); their next owner "
                      "restores from the last durable one", partitions, exc)
        except _Fenced as exc:
            log.warning("partitions %s: the group refused the hand-over (%s); their next owner "
                        "restores from the last durable checkpoint", partitions, exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions taken away without a clean revoke: another member may own them already, so
        writing their state now could overwrite newer state. Drop them."""
        for tp in partitions:
            self._unrestored.pop(tp.partition, None)
        self._drop([tp.partition for tp in partitions])

    def _drop(self, partitions: list[int]) -> None:
        for p in partitions:
            self.partitions.pop(p, None)
            self._last_checkpoint.pop(p, None)
            self._pointers.pop(p, None)
            self._owed.pop(p, None)
            self._progress.pop(p, None)
            for gauge in (self.metrics.lag, self.metrics.progress):
                with contextlib.suppress(KeyError):
                    gauge.remove(str(p))
        self.metrics.partitions.set(len(self.partitions))

    def _shutdown(self) -> None:
        try:
            if self._failed:
                log.error("stopping after an error: no checkpoint or commit; a restart replays "
                          "from the last checkpoint")
                if self.eos:
                    self._abort_transaction()
            elif self.partitions:
                self._hand_over(list(self.partitions))
                # Handed over: the revoke that closing the consumer triggers has nothing to do.
                self._drop(list(self.partitions))
        finally:
            self.consumer.close()
            self._fetcher.close()
            self.feedback.close()
            if not self._failed:
                # After a failure there is nothing left worth delivering (the transaction is
                # aborted; at_least_once output past the last commit is replayed), and a fenced
                # producer's reports break its delivery callback (seen: a SystemError).
                self.producer.flush(30)
            self.ops.stop()
            self._errors.detach("librdkafka.scorer")


class _Refused:
    """Stands in for the Message of a record that `produce()` refused outright."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic


def _cooperative(config: dict[str, Any]) -> bool:
    """Whether the group hands out partitions incrementally: KIP-848's `consumer` protocol, or
    the classic protocol with the cooperative-sticky assignor (librdkafka's Python binding does
    not expose rd_kafka_rebalance_protocol, so it is read off the configuration)."""
    return (str(config.get("group.protocol", "classic")).lower() == "consumer"
            or "cooperative" in str(config.get("partition.assignment.strategy", "")).lower())


def _raise_if_replaced(err: KafkaError) -> None:
    """librdkafka reports a static member or a transactional producer fenced by a newer one with
    the same id as a fatal error; say it in one line."""
    replaced = err.code() in (KafkaError.FENCED_INSTANCE_ID, KafkaError.PRODUCER_FENCED,
                              KafkaError._FENCED, KafkaError.UNRELEASED_INSTANCE_ID)
    # A consumer's fatal error arrives as _FATAL with the broker's words in the text.
    text = err.str().lower()
    if err.code() == KafkaError._FATAL and ("fenced" in text or "instance id" in text):
        replaced = True
    if replaced:
        raise InstanceReplaced(
            f"another process joined with this instance's id ({err.str()}): stopping. Expected "
            "when this instance was restarted; otherwise give every instance its own "
            "ACTIVE_STREAM_SCORER_INSTANCE_ID")


_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}


def _authorization(err: KafkaError) -> str | None:
    """The kind of resource an authorization error is about, or None for another error."""
    return _AUTHORIZATION.get(err.code())


def _reason(exc: BaseException) -> str:
    """One line for a log: a KafkaError's own words, else the exception's."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc)


def _without_eof(messages: list[Message]) -> list[Message]:
    """The records among `messages`; raises InstanceReplaced when another process took this
    instance's place, KafkaException for any other error but partition EOF."""
    for msg in messages:
        err = msg.error()
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            _raise_if_replaced(err)
            raise KafkaException(err)
    return [msg for msg in messages if msg.error() is None]


def _by_partition(messages: list[Message]) -> dict[int, list[Message]]:
    """Records grouped by partition, each group in consumed (offset) order."""
    partitions = list(map(Message.partition, messages))
    if partitions and partitions.count(partitions[0]) == len(partitions):
        return {int(partitions[0] or 0): messages}  # the usual case: one fetch, one partition
    grouped: dict[int, list[Message]] = defaultdict(list)
    for partition, msg in zip(partitions, messages, strict=True):
        grouped[int(partition or 0)].append(msg)
    return grouped


def _chunks_in(latest: dict[bytes, bytes], key: bytes) -> Callable[[str, int], bytes | None]:
    """The chunk reader of the checkpoint kept at `key`, over the state topic's latest values."""
    return lambda slot, i: latest.get(chunk_key(key, slot, i))


def _record(messages: list[Message], i: int) -> Record:
    msg = messages[i]
    return Record(int(msg.offset() or 0), msg.key(), msg.value(), msg.timestamp()[1] / 1000.0)
