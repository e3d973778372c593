"""Per input partition, the next offset the sink must see: the guard against skipped records.

Pure: no Kafka, no faust, no clock. The shell (`services/label_sink/ordering.py`) feeds it every
record an agent receives and asks what to do with it.

Why it exists: faust-streaming can hand an agent a partition's records with a hole in them after
a rebalance (records fetched before the seek to the committed offset, then dropped from its
buffers while its read position had already passed them; faust issues #216, #221, #312, #318).
Measured on Apache Kafka 4.1: a restarted sink passed over blocks of 6-18 label records per
partition without a trace. With this guard a record past a hole is never processed: the shell
reads the records of the hole from the broker and processes them first (ordering.py).

Contract: for each partition the guard knows (`start`), records are processed in offset order,
each offset at most once per assignment, and `frontier(tp)` is the offset up to which every
record has been processed: the offset to commit.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import Enum

TP = Hashable  # (topic, partition); faust's and aiokafka's TopicPartition tuples compare equal


class Verdict(Enum):
    """What to do with a record (see `OffsetGuard.verdict`)."""

    NEXT = "next"  # the record the sink must see next: process it, then `advance`
    REPLAY = "replay"  # already processed (a redelivery after a seek): skip it
    GAP = "gap"  # past the next offset: do not process; find out whether records are missing
    UNKNOWN = "unknown"  # a partition the guard does not know (not started, or revoked)


class OffsetGuard:
    """Commands: `start`, `advance`, `forget`. Queries: `verdict`, `frontier`, `frontiers`."""

    def __init__(self) -> None:
        self._next: dict[TP, int] = {}

    def start(self, tp: TP, offset: int) -> None:
        """The partition's next record is at `offset` (its committed offset, or its first)."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._next[tp] = offset

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: their records are no longer ours until started again."""
        for tp in tps:
            self._next.pop(tp, None)

    def known(self, tp: TP) -> bool:
        return tp in self._next

    def verdict(self, tp: TP, offset: int) -> Verdict:
        expected = self._next.get(tp)
        if expected is None:
            return Verdict.UNKNOWN
        if offset == expected:
            return Verdict.NEXT
        return Verdict.REPLAY if offset < expected else Verdict.GAP

    def advance(self, tp: TP, offset: int) -> None:
        """The record at `offset` (the next one, or the first past a gap shown to hold no
        records) has been processed."""
        expected = self._next.get(tp)
        if expected is None or offset < expected:
            raise ValueError(f"advance({tp}, {offset}) but the next offset is {expected}")
        self._next[tp] = offset + 1

    def skip_to(self, tp: TP, offset: int) -> None:
        """No record exists below `offset` past the current next offset (shown by the broker):
        the next record the sink must see is at `offset`."""
        expected = self._next.get(tp)
        if expected is None or offset < expected:
            raise ValueError(f"skip_to({tp}, {offset}) but the next offset is {expected}")
        self._next[tp] = offset

    def frontier(self, tp: TP) -> int | None:
        """Every record of `tp` below this offset has been processed (None: unknown)."""
        return self._next.get(tp)

    def frontiers(self) -> dict[TP, int]:
        return dict(self._next)
