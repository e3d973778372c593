"""The shell around `sequence.OffsetGuard`: every agent of the sink admits a record before it
processes it and reports it done after, so no record past a hole is ever processed and the offset
committed for a partition is exactly the next one the sink must see.

    async for event in stream.events():
        if await order.admit(event):
            await handle(event)
            order.done(event)

On a hole (a record past the next offset), the broker is asked whether records exist in it:
- none (transaction markers, compaction, retention): the hole is passed;
- some: they were fetched and dropped before reaching the agent (the faust defect described in
  docs/label-sink.md, "Skipped records"). The consumer is sought back to the first of them, with
  one warning line naming the partition and the offsets, and the records still in flight past it
  are not processed. If the missing record has not arrived `REWIND_PATIENCE_S` after a seek, the
  seek is repeated; after `MAX_SEEKS` seeks the worker stops (`OutOfOrder`, one line) rather
  than skip anything. Its committed offset stays at the hole, so a restart re-reads from there.

A hole at the END of a partition shows no later record to reveal it, so `watch` (on a timer)
also seeks back a partition whose next offset has not moved for a whole period while the
broker holds records from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import TopicPartition

from services.label_sink.broker_offsets import BrokerOffsets, Partition
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.sequence import OffsetGuard, Verdict

log = logging.getLogger(__name__)

# After a seek back, records fetched before it may keep arriving for a moment (the rest of the
# batch faust is handing over); the first record past the seek takes one fetch (~ms). Past 2 s
# the seek is presumed lost (faust drops records below its read offset) and repeated: harmless
# if it was not (the records come twice; the second copy is skipped as a replay).
REWIND_PATIENCE_S = 2.0
MAX_SEEKS = 5

Seek = Callable[[Any, int], Awaitable[None]]


class OutOfOrder(RuntimeError):
    """The consumer would not hand over a partition's next record: the worker stops."""


@dataclass
class _Rewind:
    target: int
    since: float
    seeks: int


class InOrder:
    """Shared by the sink's agents. `seek(tp, offset)`: faust's consumer seek (tp: aiokafka's
    TopicPartition); `topics`: the topics guarded (the sink's inputs); `clock`: seconds."""

    def __init__(self, seek: Seek, broker: BrokerOffsets, metrics: LabelSinkMetrics,
                 topics: Iterable[str], clock: Callable[[], float] = time.monotonic,
                 describe: Callable[[Partition], str] | None = None) -> None:
        self.guard = OffsetGuard()
        self._describe = describe
        self.topics = frozenset(topics)
        self._seek = seek
        self._broker = broker
        self._metrics = metrics
        self._clock = clock
        self._assigned: set[Partition] = set()
        self._rewinding: dict[Partition, _Rewind] = {}
        self._watched: dict[Partition, int] = {}  # next offset at the previous `watch`

    # -- rebalances ------------------------------------------------------------------------

    def assign(self, tps: Iterable[Any]) -> None:
        """The consumer's whole new assignment (faust's on_partitions_assigned)."""
        mine = {(tp.topic, tp.partition) for tp in tps if tp.topic in self.topics}
        self.revoke(self._assigned - mine)
        self._assigned = mine

    def revoke(self, tps: Iterable[Any]) -> None:
        gone = {(tp[0], tp[1]) for tp in tps}
        self.guard.forget(gone)
        self._assigned -= gone
        for tp in gone:
            self._rewinding.pop(tp, None)
            self._watched.pop(tp, None)

    def assigned(self) -> set[Partition]:
        return set(self._assigned)

    def frontier(self, tp: Partition) -> int | None:
        """The offset to commit for `tp`: the next one to process (None: not ours / unknown)."""
        return self.guard.frontier(tp) if tp in self._assigned else None

    # -- the agents' side ------------------------------------------------------------------

    async def admit(self, event: Any) -> bool:
        """True if the agent must process `event` now (then call `done`); False to skip it.
        Raises OutOfOrder when seeking back no longer brings a missing record."""
        msg = event.message
        tp: Partition = (msg.topic, msg.partition)
        while True:
            if tp not in self._assigned:
                self._count(msg.topic, "not_assigned")
                return False
            if self.guard.known(tp):
                break
            starts = await asyncio.to_thread(self._broker.start_offsets, [tp])
            if tp in self._assigned and not self.guard.known(tp):
                self.guard.start(tp, starts[tp])
        verdict = self.guard.verdict(tp, msg.offset)
        if verdict is Verdict.NEXT:
            self._rewinding.pop(tp, None)
            return True
        if verdict is Verdict.REPLAY:
            self._count(msg.topic, "replayed")
            return False
        if verdict is Verdict.UNKNOWN:
            return False
        return await self._hole(tp, msg.offset)

    def done(self, event: Any) -> None:
        msg = event.message
        tp = (msg.topic, msg.partition)
        if self.guard.known(tp):
            self.guard.advance(tp, msg.offset)

    # -- holes -----------------------------------------------------------------------------

    async def _hole(self, tp: Partition, offset: int) -> bool:
        expected = self.guard.frontier(tp)
        assert expected is not None
        rewind = self._rewinding.get(tp)
        if rewind is not None and self._clock() - rewind.since < REWIND_PATIENCE_S:
            self._count(tp[0], "after_seek")  # fetched before the seek back; ours is coming
            return False
        first = await asyncio.to_thread(self._broker.first_at_or_after, tp, expected)
        if self.guard.frontier(tp) != expected:
            return False  # the assignment changed meanwhile: the record is no longer judged
        if first is None or first >= offset:
            # Nothing in between: offsets without records (transaction markers, compaction).
            self.guard.skip_to(tp, offset)
            self._count(tp[0], "empty_hole")
            return True
        await self._seek_back(tp, first, f"offset {offset} arrived while the next to process is "
                                         f"{expected}")
        return False

    async def _seek_back(self, tp: Partition, first: int, why: str) -> None:
        self.guard.skip_to(tp, first)
        rewind = self._rewinding.get(tp)
        seeks = 1 if rewind is None else rewind.seeks + 1
        if seeks > MAX_SEEKS:
            raise OutOfOrder(f"{tp[0]}[{tp[1]}]: records from offset {first} exist but "
                             f"{MAX_SEEKS} seeks back did not bring them ({why}); stopping "
                             "rather than skip them")
        log.warning("%s[%d]: %s, and the broker holds records from %d: seeking back to %d "
                    "(seek %d)", tp[0], tp[1], why, first, first, seeks)
        self._count(tp[0], "hole_sought_back")
        self._rewinding[tp] = _Rewind(first, self._clock(), seeks)
        await self._seek(TopicPartition(*tp), first)

    async def watch(self, ends: Mapping[Partition, int]) -> None:
        """Called on a timer with the partitions' high watermarks. Seeks back a partition whose
        next offset has not moved since the previous call although records exist from it, and
        one whose seek back has not brought the missing record within the patience."""
        unknown = [tp for tp in sorted(self._assigned) if not self.guard.known(tp)]
        if unknown:
            # No record yet since the assignment: a partition the consumer never hands over
            # must be noticed too.
            starts = await asyncio.to_thread(self._broker.start_offsets, unknown)
            for tp in unknown:
                if tp in self._assigned and not self.guard.known(tp):
                    self.guard.start(tp, starts[tp])
        for tp in sorted(self._assigned):
            expected = self.guard.frontier(tp)
            if expected is None:
                continue
            previous = self._watched.get(tp)
            self._watched[tp] = expected
            rewind = self._rewinding.get(tp)
            if rewind is not None:
                if self._clock() - rewind.since < REWIND_PATIENCE_S:
                    continue
            elif previous != expected or ends.get(tp, 0) <= expected:
                continue  # progress, or nothing left to read
            first = await asyncio.to_thread(self._broker.first_at_or_after, tp, expected)
            if first is None or self.guard.frontier(tp) != expected:
                continue  # only markers past it, or progress meanwhile
            state = f" ({self._describe(tp)})" if self._describe is not None else ""
            await self._seek_back(tp, first, f"no record processed since offset {expected} for "
                                             f"a whole check period{state}")

    def _count(self, topic: str, outcome: str) -> None:
        self._metrics.out_of_order.labels(topic, outcome).inc()
