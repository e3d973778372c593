"""Which offsets of `al.labels.v1` a model has counted: the per-model frontier that tells a label
the label reader forwards again after a crash (a REPLAY) from a new one, however far back
the dedupe window ends (issue 14; docs/label-sink.md, "State").

The label reader forwards each label of partition q of `al.labels.v1` with `f`, its *floor*:
the lowest offset of q not forwarded yet once this label is, i.e. min(the offsets of q's
labels still held for their request (early.py) other than this one, this offset + 1). Every
label of q below `f` was forwarded before this one, or dead-lettered, or is not a label at
all. A model's labels all go to one labels-by-model partition, in the order they are sent, so
when the counter reaches a row with floor f, every label of that model below f on q has
already reached it: a row of the model with an offset below f can only be a re-forward.

A label's floor is also kept at or below every lower offset of q whose forward is not yet
known to be delivered (`InFlight`): aiokafka sends a partition's next batch after one it gave
up on, so a forward of offset 5 can be lost while the one of offset 9 is counted. Had 9 carried
floor 10, the re-forward of 5 after the restart would look like a replay and 5 would never be
counted; with floor 5 it is counted, and 9's re-forward is still a replay (9 is in `above`).

So per (model, q) the frontier keeps `floor`, the highest f among the model's counted rows,
and `above`, the offsets at or past `floor` it counted: labels forwarded while an older label
of q was held (early labels come out of offset order, so a plain "highest offset" would drop
them). A row (q, o) is a replay iff o < floor or o in above.

Bound: `above` holds only labels counted while an older label of q waits for its request or
for its forward's delivery, so at most the labels of that model read on q during
`early_label_max_wait_s` plus those in flight (aiokafka holds about two batches a partition:
tens to a few hundred labels); it is capped at
`limit` offsets whatever the traffic: past it the lowest are dropped, and a re-forward of one
of those falls back to the label_id dedupe window (the behaviour before this frontier) rather
than a held label ever being taken for a replay. Pure and deterministic: the state depends
only on the labels decided (counted, or skipped as a duplicate of a label_id in the window),
and not on their order (`merge`), so a rebuild from the persisted rows gives it back.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

# Offsets kept above a floor per (model, label partition): a model's state row carries them, at
# about 8 bytes each in JSON.
FRONTIER_LIMIT = 2_000


@dataclass
class Frontier:
    """The label offsets of one label-topic partition a model has counted (module docstring)."""

    floor: int = 0
    above: list[int] = field(default_factory=list)  # sorted, all >= floor

    def seen(self, offset: int) -> bool:
        if offset < self.floor:
            return True
        i = bisect_left(self.above, offset)
        return i < len(self.above) and self.above[i] == offset

    def add(self, offset: int, floor: int, limit: int) -> None:
        """Record the counted label at `offset`, forwarded with `floor`."""
        if floor > self.floor:
            self.floor = floor
            self.above = self.above[bisect_left(self.above, floor):]
        if offset >= self.floor and not self.seen(offset):
            insort(self.above, offset)
        if len(self.above) > limit:
            # Forget the oldest: their re-forwards fall back to the label_id window.
            del self.above[:len(self.above) - limit]

    def merge(self, other: Frontier, limit: int) -> None:
        """Take in `other`'s knowledge. The result does not depend on the order of `add`s and
        `merge`s: the highest floor, and the highest `limit` offsets at or above it."""
        if other.floor > self.floor:
            self.floor = other.floor
        above = sorted({o for o in self.above + other.above if o >= self.floor})
        self.above = above[max(0, len(above) - limit):]

    def dump(self) -> list[Any]:
        return [self.floor, list(self.above)]

    @classmethod
    def load(cls, value: list[Any]) -> Frontier:
        return cls(int(value[0]), sorted(int(o) for o in value[1]))


class Frontiers:
    """Per model, per label partition `Frontier`s. Queries: `seen`, `dump`; command: `add`."""

    def __init__(self, limit: int = FRONTIER_LIMIT) -> None:
        if limit < 0:
            raise ValueError("frontier limit must be >= 0")
        self.limit = limit
        self._by_model: dict[str, dict[int, Frontier]] = {}

    def seen(self, model_id: str, partition: int, offset: int) -> bool:
        f = self._by_model.get(model_id, {}).get(partition)
        return f is not None and f.seen(offset)

    def add(self, model_id: str, partition: int, offset: int, floor: int | None) -> None:
        """A counted label of `model_id` at (`partition`, `offset`); `floor` None: a row from
        a label reader before the frontier, which says nothing about other offsets."""
        if floor is None:
            return
        frontier = self._by_model.setdefault(model_id, {}).setdefault(partition, Frontier())
        frontier.add(offset, floor, self.limit)

    def dump(self, model_id: str) -> dict[str, list[Any]]:
        """The model's frontiers as its state row keeps them (JSON keys are strings)."""
        return {str(q): f.dump() for q, f in sorted(self._by_model.get(model_id, {}).items())}

    def merge(self, model_id: str, value: dict[str, list[Any]] | None) -> None:
        """Take in a dumped frontier of `model_id` (a state row's, a duplicate's frontier row),
        in any order (`Frontier.merge`)."""
        mine = self._by_model.setdefault(model_id, {})
        for q, v in (value or {}).items():
            mine.setdefault(int(q), Frontier()).merge(Frontier.load(v), self.limit)


class InFlight:
    """The offsets per input partition whose forward was sent and is not known to be delivered
    (module docstring). A forward that fails stays here: the worker stops on it (delivery.py),
    and until then no later label's floor passes it. Command: `sent`, `delivered`; query:
    `oldest`."""

    def __init__(self) -> None:
        self._count: dict[Hashable, dict[int, int]] = {}
        self._heap: dict[Hashable, list[int]] = {}

    def sent(self, tp: Hashable, offset: int) -> None:
        counts = self._count.setdefault(tp, {})
        if offset not in counts:
            heapq.heappush(self._heap.setdefault(tp, []), offset)
        counts[offset] = counts.get(offset, 0) + 1

    def delivered(self, tp: Hashable, offset: int) -> None:
        counts = self._count.get(tp, {})
        left = counts.get(offset, 0) - 1
        if left > 0:
            counts[offset] = left
        else:
            counts.pop(offset, None)

    def oldest(self, tp: Hashable) -> int | None:
        """The lowest offset of `tp` in flight. O(log n) amortised."""
        heap, counts = self._heap.get(tp, []), self._count.get(tp, {})
        while heap and heap[0] not in counts:
            heapq.heappop(heap)  # delivered since: dropped lazily
        return heap[0] if heap else None

    def __len__(self) -> int:
        return sum(len(c) for c in self._count.values())


def floor_of(held_offsets: list[int], offset: int, in_flight: int | None = None) -> int:
    """The floor a label at `offset` is forwarded with: the lowest offset of its partition
    still held for its request other than itself, or whose forward is `in_flight` (the
    lowest; an earlier forward of this very offset counts: the floor is then at most
    `offset`, which only puts it among the offsets above), or `offset` + 1."""
    lowest = min([o for o in held_offsets if o != offset] + [offset + 1])
    return lowest if in_flight is None else min(lowest, in_flight)
