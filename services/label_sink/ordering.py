"""The shell around `sequence.OffsetGuard`: every agent of the sink hands each record to
`InOrder.process`, so records of a partition are processed in offset order, each once per
assignment, none skipped, and the offset committed for a partition is exactly the next one the
sink must see.

    async for event in stream.events():
        await order.process(event, handle)

On a hole (a record past the next offset), the sink reads the hole's records from the broker
itself and processes them, in order, before the record that revealed the hole; one warning line
names the partition and the offsets. Offsets without records (transaction markers, compaction)
are passed. faust's own copies of those records, if they ever come, are skipped as replays. The
hole is filled inside the agent, while faust's current event is the revealing record: table rows
written for the filled records go to the changelog partition of that same input partition.

A hole at the END of a partition shows no later record to reveal it, so `watch` (on a timer)
seeks the consumer back where a partition's next offset has not moved for a whole period while
the broker holds records from it; after `MAX_SEEKS` fruitless seeks the worker stops
(`OutOfOrder`, one line) rather than leave records unprocessed. Its committed offset stays at
the hole, so a restart re-reads from there.

A partition can also stall without a hole: while the worker catches up on a backlog, faust's
fetcher hands a partition over late (its read offset has not passed the next offset: nothing
was dropped). Measured with 300,000 labels produced up front on a loaded 2-core machine, each
seek back then threw away what had been fetched and the partition starved again, five periods
in a row, and the worker stopped itself. So while other partitions of the worker progress, a
partition whose next record the consumer has not handed over yet is left alone (no seek), and
a seek while the worker is busy does not count towards `MAX_SEEKS`: only periods in which the
whole worker processed nothing do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.structs import TopicPartition
from confluent_kafka import KafkaError, KafkaException

from services.label_sink.broker_offsets import BrokerOffsets, Partition, Record
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.sequence import OffsetGuard, Verdict

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_SEEKS = 5
# Pause between two look-ups of a partition's committed offset while the broker does not
# answer: a restarting broker is back within seconds; each try is one cheap request.
_RETRY_S = 1.0
# Records read from the broker per request while filling a hole (bounded memory per request).
FILL_BATCH = 1000

Seek = Callable[[Any, int], Awaitable[None]]
Handle = Callable[[Any], Awaitable[None]]


def _denied(exc: BaseException) -> bool:
    """An authorization refusal (not worth retrying here: the sink holds on it, worker.py)."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and error.code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)


class OutOfOrder(RuntimeError):
    """The consumer would not hand over a partition's next records: the worker stops."""


@dataclass(frozen=True)
class FetchedEvent:
    """A record read from the broker to fill a hole, shaped like the faust event the handlers
    take (`value`, and `message` with topic, partition, offset and key)."""

    message: Record

    @property
    def value(self) -> bytes | None:
        return self.message.value


class InOrder:
    """Shared by the sink's agents. `seek(tp, offset)`: faust's consumer seek (tp: aiokafka's
    TopicPartition); `topics`: the topics guarded (the sink's inputs); `describe(tp)`: faust's
    view of a partition, for the log line of a stalled one."""

    def __init__(self, seek: Seek, broker: BrokerOffsets, metrics: LabelSinkMetrics,
                 topics: Iterable[str],
                 describe: Callable[[Partition], str] | None = None,
                 read_offset: Callable[[Partition], int | None] | None = None) -> None:
        self.guard = OffsetGuard()
        self.topics = frozenset(topics)
        self._seek = seek
        self._broker = broker
        self._metrics = metrics
        self._describe = describe
        # faust's read offset of a partition: the last offset it handed over (or the offset it
        # was sought to); None when unknown.
        self._read_offset = read_offset
        self._sought: dict[Partition, int] = {}  # the offset of our last seek back
        self._assigned: set[Partition] = set()
        self._watched: dict[Partition, int] = {}  # next offset at the previous `watch`
        self._seeks: dict[Partition, int] = {}  # seeks back without progress since

    # -- rebalances ------------------------------------------------------------------------

    def assign(self, tps: Iterable[Any]) -> None:
        """The consumer's whole new assignment (faust's on_partitions_assigned)."""
        mine = {(tp.topic, tp.partition) for tp in tps if tp.topic in self.topics}
        self.revoke(self._assigned - mine)
        for tp in mine - self._assigned:
            self._progressed(tp)
        self._assigned = mine

    def revoke(self, tps: Iterable[Any]) -> None:
        gone = {(tp[0], tp[1]) for tp in tps}
        self.guard.forget(gone)
        self._assigned -= gone
        for tp in gone:
            self._watched.pop(tp, None)
            self._seeks.pop(tp, None)
            self._sought.pop(tp, None)
            try:
                self._metrics.progress.remove(tp[0], str(tp[1]))
            except KeyError:
                pass  # never exported (not ours)

    def assigned(self) -> set[Partition]:
        return set(self._assigned)

    def frontier(self, tp: Partition) -> int | None:
        """The offset to commit for `tp`: the next one to process (None: not ours / unknown)."""
        return self.guard.frontier(tp) if tp in self._assigned else None

    # -- the agents' side ------------------------------------------------------------------

    async def process(self, event: Any, handle: Handle) -> None:
        """Run `handle` on `event` if it is the partition's next record, after the records of
        a hole before it (read from the broker); skip it if it was processed already."""
        msg = event.message
        tp: Partition = (msg.topic, msg.partition)
        if not await self._known(tp):
            self._count(msg.topic, "not_assigned")
            return
        verdict = self.guard.verdict(tp, msg.offset)
        if verdict is Verdict.REPLAY:
            self._count(msg.topic, "replayed")
            return
        if verdict is Verdict.GAP:
            await self._fill(tp, msg.offset, handle)
        await handle(event)
        self.guard.advance(tp, msg.offset)
        self._seeks.pop(tp, None)
        self._progressed(tp)

    async def _known(self, tp: Partition) -> bool:
        """Whether `tp` is ours, starting its guard from the broker's offsets if need be. The
        look-up is retried while the broker does not answer (it restarts, say): the record
        waits, unprocessed and uncommitted, instead of crashing the worker."""
        failures = 0
        while tp in self._assigned and not self.guard.known(tp):
            try:
                starts = await asyncio.to_thread(self._broker.start_offsets, [tp])
            except (KafkaException, TimeoutError) as exc:
                if _denied(exc):
                    raise
                if failures % 10 == 0:
                    log.warning("%s[%d]: where to resume is unknown, the broker did not answer "
                                "(%s); asking again every %g s", tp[0], tp[1], exc, _RETRY_S)
                failures += 1
                await asyncio.sleep(_RETRY_S)
                continue
            if tp in self._assigned and not self.guard.known(tp):
                self.guard.start(tp, starts[tp])
        return tp in self._assigned

    async def _ask(self, look_up: Callable[..., T], *args: Any) -> T:
        """`look_up(*args)` on a thread, asked again every _RETRY_S while the broker does not
        answer (one warning per outage); a refused permission is raised (the sink holds)."""
        failed = 0
        while True:
            try:
                answer = await asyncio.to_thread(look_up, *args)
            except (KafkaException, TimeoutError) as exc:
                if _denied(exc):
                    raise
                if failed == 0:
                    log.warning("the broker did not answer %s (%s); asking again every %g s",
                                getattr(look_up, "__name__", "a look-up"), exc, _RETRY_S)
                failed += 1
                await asyncio.sleep(_RETRY_S)
                continue
            if failed:
                log.info("the broker answered %s again after %d failed tries",
                         getattr(look_up, "__name__", "a look-up"), failed)
            return answer

    async def _fill(self, tp: Partition, offset: int, handle: Handle) -> None:
        """Process the records of `tp` the consumer skipped, from the next offset up to (not
        including) `offset`."""
        expected = self.guard.frontier(tp)
        assert expected is not None
        filled = 0
        start = expected
        while start < offset:
            records = await self._ask(self._broker.read, tp, start, offset, FILL_BATCH)
            if not records:
                break
            if filled == 0:
                log.warning("%s[%d]: offset %d arrived while the next to process is %d; the "
                            "consumer skipped records: processing them from the broker", tp[0],
                            tp[1], offset, expected)
            for record in records:
                self.guard.skip_to(tp, record.offset)
                await handle(FetchedEvent(record))
                self.guard.advance(tp, record.offset)
            filled += len(records)
            start = records[-1].offset + 1
        self.guard.skip_to(tp, offset)  # what is left holds no record
        if filled:
            self._metrics.out_of_order.labels(tp[0], "hole_filled").inc(filled)
        else:
            self._count(tp[0], "empty_hole")

    # -- stalls ----------------------------------------------------------------------------

    async def watch(self, ends: Mapping[Partition, int]) -> None:
        """Called on a timer with the partitions' high watermarks. Seeks the consumer back where
        a partition's next offset has not moved since the previous call although the broker
        holds records from it; raises OutOfOrder after MAX_SEEKS such seeks in a row."""
        unknown = [tp for tp in sorted(self._assigned) if not self.guard.known(tp)]
        if unknown:
            # No record yet since the assignment: a partition the consumer never hands over
            # must be noticed too.
            starts = await self._ask(self._broker.start_offsets, unknown)
            for tp in unknown:
                if tp in self._assigned and not self.guard.known(tp):
                    self.guard.start(tp, starts[tp])
        busy = any(self._watched.get(tp) != self.guard.frontier(tp)
                   for tp in self._assigned)  # the worker processed something this period
        for tp in sorted(self._assigned):
            expected = self.guard.frontier(tp)
            if expected is None:
                continue
            previous = self._watched.get(tp)
            self._watched[tp] = expected
            if previous != expected:
                self._seeks.pop(tp, None)  # progress
                self._sought.pop(tp, None)
                continue
            if ends.get(tp, 0) <= expected:
                continue  # nothing left to read
            if busy and self._not_handed_over(tp, expected):
                continue  # starved by the backlog, not skipped: a seek would only refetch
            first = await self._ask(self._broker.first_at_or_after, tp, expected)
            if first is None or self.guard.frontier(tp) != expected:
                continue  # only markers past it, or progress meanwhile
            seeks = self._seeks.get(tp, 0) + (0 if busy else 1)
            if seeks > MAX_SEEKS:
                raise OutOfOrder(f"{tp[0]}[{tp[1]}]: records from offset {first} exist but "
                                 f"{MAX_SEEKS} seeks back did not bring them; stopping rather "
                                 "than leave them unprocessed")
            self._seeks[tp] = seeks
            self._sought[tp] = first
            state = f" ({self._describe(tp)})" if self._describe is not None else ""
            log.warning("%s[%d]: no record processed since offset %d for a whole check period "
                        "while the broker holds records from %d%s: seeking back to %d (seek %d%s)",
                        tp[0], tp[1], expected, first, state, first, seeks,
                        ", worker busy: not counted" if busy else "")
            self._count(tp[0], "stall_sought_back")
            self.guard.skip_to(tp, first)
            await self._seek(TopicPartition(*tp), first)

    def _not_handed_over(self, tp: Partition, expected: int) -> bool:
        """Whether faust has not handed over `tp`'s record at `expected` yet (its read offset
        is below it, or at it since our own seek there): nothing of it can have been dropped."""
        if self._read_offset is None:
            return False
        read, sought = self._read_offset(tp), self._sought.get(tp)
        if read is None:  # faust's seek to offset 0 leaves None too
            return sought == expected
        return read < expected or (read == expected and sought == expected)

    def _progressed(self, tp: Partition) -> None:
        self._metrics.progress.labels(tp[0], str(tp[1])).set(time.time())

    def _count(self, topic: str, outcome: str) -> None:
        self._metrics.out_of_order.labels(topic, outcome).inc()
