"""The label sink's guard against skipped records (issue 23): the pure OffsetGuard, the InOrder
shell with a fake broker and a recorded seek, and faust's commit offsets taken from the guard."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from prometheus_client import CollectorRegistry

from services.label_sink import faust_guards
from services.label_sink.broker_offsets import Record
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.ordering import MAX_SEEKS, InOrder, OutOfOrder
from services.label_sink.sequence import OffsetGuard, Verdict

TP = ("labels", 0)


def test_guard_verdicts_and_frontier() -> None:
    guard = OffsetGuard()
    assert guard.verdict(TP, 5) is Verdict.UNKNOWN
    guard.start(TP, 5)
    assert [guard.verdict(TP, o) for o in (4, 5, 6)] == [Verdict.REPLAY, Verdict.NEXT, Verdict.GAP]
    guard.advance(TP, 5)
    assert guard.frontier(TP) == 6
    guard.skip_to(TP, 9)
    guard.advance(TP, 9)
    assert guard.frontiers() == {TP: 10}
    with pytest.raises(ValueError):
        guard.advance(TP, 3)  # never backwards
    guard.forget([TP])
    assert guard.frontier(TP) is None


class FakeBroker:
    """Records exist at `offsets` per partition; committed offsets in `committed`."""

    def __init__(self, offsets: dict[tuple[str, int], list[int]],
                 committed: dict[tuple[str, int], int]) -> None:
        self.offsets, self.committed = offsets, committed
        self.reads: list[tuple[int, int]] = []

    def start_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: self.committed[tp] for tp in tps}

    def first_at_or_after(self, tp: tuple[str, int], offset: int) -> int | None:
        return next((o for o in self.offsets[tp] if o >= offset), None)

    def read(self, tp: tuple[str, int], start: int, end: int, limit: int) -> list[Record]:
        self.reads.append((start, end))
        found = [o for o in self.offsets[tp] if start <= o < end][:limit]
        return [Record(tp[0], tp[1], o, b"k", f"v{o}".encode()) for o in found]


def event(offset: int, tp: tuple[str, int] = TP) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=tp[0], partition=tp[1], offset=offset),
                           value=f"v{offset}".encode())


def make(offsets: list[int], committed: int) -> tuple[InOrder, FakeBroker, list]:
    broker = FakeBroker({TP: offsets}, {TP: committed})
    seeks: list[tuple[Any, int]] = []

    async def seek(tp: Any, offset: int) -> None:
        seeks.append(((tp.topic, tp.partition), offset))

    order = InOrder(seek, broker, LabelSinkMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                    topics=["labels"])
    order.assign([SimpleNamespace(topic="labels", partition=0),
                  SimpleNamespace(topic="other", partition=0)])
    return order, broker, seeks


def feed(order: InOrder, offsets: list[int]) -> list[bytes]:
    """Hand the records over in this order; returns the values processed, in order."""
    processed: list[bytes] = []

    async def handle(ev: Any) -> None:
        processed.append(ev.value)

    async def go() -> None:
        for offset in offsets:
            await order.process(event(offset), handle)

    asyncio.run(go())
    return processed


def values(*offsets: int) -> list[bytes]:
    return [f"v{o}".encode() for o in offsets]


def test_records_are_processed_once_in_order_from_the_committed_offset() -> None:
    order, broker, _ = make(list(range(20)), committed=3)
    assert feed(order, [3, 4, 3, 4, 5]) == values(3, 4, 5)  # replayed ones: skipped
    assert order.frontier(TP) == 6 and broker.reads == []


def test_records_the_consumer_skipped_are_read_from_the_broker_and_processed_first() -> None:
    order, broker, _ = make(list(range(20)), committed=3)
    # 5..7 were dropped by the consumer: 8 arrives after 4, then faust's late copies of 5..7.
    assert feed(order, [3, 4, 8, 9, 5, 6, 7, 10]) == values(3, 4, 5, 6, 7, 8, 9, 10)
    assert broker.reads == [(5, 8)]  # one read of the hole; the late copies are replays
    assert order.frontier(TP) == 11


def test_records_before_the_first_handed_over_are_processed() -> None:
    order, _, _ = make(list(range(10)), committed=0)  # faust started at 4: 0..3 never came
    assert feed(order, [4, 5]) == values(0, 1, 2, 3, 4, 5)


def test_offsets_without_records_are_passed() -> None:
    order, broker, _ = make([0, 1, 2, 5, 6], committed=0)  # 3, 4: transaction markers
    assert feed(order, [0, 1, 2, 5, 6]) == values(0, 1, 2, 5, 6)
    assert broker.reads == [(3, 5)]


def test_watch_seeks_back_a_stalled_partition_then_stops_the_worker() -> None:
    order, _, seeks = make(list(range(10)), committed=0)
    assert feed(order, [0, 1]) == values(0, 1)  # 2..9 were dropped and nothing more arrives

    async def watch() -> None:
        await order.watch({TP: 10})

    asyncio.run(watch())
    assert seeks == []  # first look: no verdict yet
    for _ in range(MAX_SEEKS):
        asyncio.run(watch())
    assert seeks == [(TP, 2)] * MAX_SEEKS
    with pytest.raises(OutOfOrder, match=r"labels\[0\]: records from offset 2 exist"):
        asyncio.run(watch())
    assert order.frontier(TP) == 2  # what a commit writes: nothing past the unprocessed records


def test_progress_after_a_seek_resets_the_count() -> None:
    order, _, seeks = make(list(range(10)), committed=0)
    assert feed(order, [0]) == values(0)

    async def watch() -> None:
        await order.watch({TP: 10})

    asyncio.run(watch())
    asyncio.run(watch())
    assert feed(order, [1, 2]) == values(1, 2)
    asyncio.run(watch())
    asyncio.run(watch())
    assert seeks == [(TP, 1), (TP, 3)] and order._seeks == {TP: 1}


def test_records_of_partitions_not_assigned_are_not_processed() -> None:
    order, _, _ = make(list(range(5)), committed=0)
    order.revoke([TP])
    assert feed(order, [0, 1]) == []
    assert order.frontier(TP) is None


class FaustTP(NamedTuple):
    """Like faust's and aiokafka's TopicPartition: a named tuple."""

    topic: str
    partition: int


def test_commits_of_guarded_topics_are_the_guard_frontier() -> None:
    labels, other = FaustTP("labels", 0), FaustTP("other", 0)
    asked = []

    def original(self: Any, tps: Any) -> dict[Any, int]:
        asked.append(list(tps))
        return dict.fromkeys(tps, 99)  # faust's own answer (past a hole, say)

    committable = faust_guards._wrap_committable(original)
    consumer = SimpleNamespace(_committed_offset=defaultdict(lambda: None),
                               _acked=defaultdict(list, {labels: [3, 4, 9]}),
                               _acked_index=defaultdict(set, {labels: {3, 4, 9}}), _gap={})
    frontiers = {("labels", 0): 5}
    faust_guards.set_commit_source((frozenset({"labels"}), frontiers.get))
    try:
        assert committable(consumer, [labels, other]) == {labels: 5, other: 99}
        assert asked == [[other]]  # faust decides only for topics the sink does not guard
        assert consumer._acked[labels] == [9]  # faust's acks below the commit: dropped
        consumer._committed_offset[labels] = 5
        assert committable(consumer, [labels]) == {}  # nothing new to commit
        frontiers.clear()
        assert committable(consumer, [labels]) == {}  # not ours any more: never faust's offset
    finally:
        faust_guards.set_commit_source(None)


def test_faust_bookkeeping_below_the_commit_is_dropped() -> None:
    from intervaltree import IntervalTree

    tp = ("labels", 0)
    consumer = SimpleNamespace(_acked={tp: [3, 4, 9, 10]}, _acked_index={tp: {3, 4, 9, 10}},
                               _gap={tp: IntervalTree.from_tuples([(5, 9), (11, 12)])})
    faust_guards._forget_below(consumer, tp, 9)
    assert consumer._acked[tp] == [9, 10] and consumer._acked_index[tp] == {9, 10}
    assert sorted((i.begin, i.end) for i in consumer._gap[tp]) == [(11, 12)]


def test_a_broker_that_does_not_answer_delays_the_first_record_and_does_not_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from confluent_kafka import KafkaError, KafkaException

    from services.label_sink import ordering

    monkeypatch.setattr(ordering, "_RETRY_S", 0.0)
    order, broker, _ = make(list(range(20)), committed=3)
    answers = [KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN)), TimeoutError("slow")]
    real = broker.start_offsets

    def flaky(tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if answers:
            raise answers.pop(0)
        return real(tps)

    broker.start_offsets = flaky  # type: ignore[method-assign]
    assert feed(order, [3, 4]) == values(3, 4)  # after two failed look-ups, from the commit
    assert answers == [] and order.frontier(TP) == 5


TP1 = ("labels", 1)


def make_two(read: dict[tuple[str, int], int | None]) -> tuple[InOrder, list]:
    """Two partitions of 100 records, both committed at 0; `read`: faust's read offsets."""
    broker = FakeBroker({TP: list(range(100)), TP1: list(range(100))}, {TP: 0, TP1: 0})
    seeks: list[tuple[Any, int]] = []

    async def seek(tp: Any, offset: int) -> None:
        seeks.append(((tp.topic, tp.partition), offset))
        # what faust's seek does to its read offset (0 becomes None)
        read[(tp.topic, tp.partition)] = offset or None

    order = InOrder(seek, broker, LabelSinkMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                    topics=["labels"], read_offset=read.get)
    order.assign([SimpleNamespace(topic="labels", partition=p) for p in (0, 1)])
    return order, seeks


def feed_tp(order: InOrder, tp: tuple[str, int], offsets: list[int]) -> None:
    async def handle(ev: Any) -> None:
        pass

    async def go() -> None:
        for offset in offsets:
            await order.process(event(offset, tp), handle)

    asyncio.run(go())


def test_a_partition_starved_while_the_worker_is_busy_is_neither_sought_nor_stopped() -> None:
    """The 300,000-label catch-up: faust hands partition 0 over late while partition 1 flows;
    nothing was dropped (read offset below the next offset), so no seek and no stop."""
    read: dict[tuple[str, int], int | None] = {TP: 4, TP1: None}
    order, seeks = make_two(read)
    feed_tp(order, TP, [0, 1, 2, 3, 4])
    for i in range(3 * MAX_SEEKS):
        feed_tp(order, TP1, [i])  # the other partition progresses every period
        asyncio.run(order.watch({TP: 100, TP1: 100}))
    assert seeks == []
    feed_tp(order, TP, [5])  # handed over at last
    assert order.frontier(TP) == 6


def test_a_seek_while_busy_is_not_repeated_nor_counted() -> None:
    """A hole (faust read past the next offset) is sought back even while the worker is busy,
    once; the refetch is then waited for, and the stop counts only idle periods."""
    read: dict[tuple[str, int], int | None] = {TP: 9, TP1: None}  # 5..9 dropped
    order, seeks = make_two(read)
    feed_tp(order, TP, [0, 1, 2, 3, 4])
    for i in range(3 * MAX_SEEKS):
        feed_tp(order, TP1, [i])
        asyncio.run(order.watch({TP: 100, TP1: 100}))
    assert seeks == [(TP, 5)]  # once; then read offset 5 == our seek: waiting for the refetch
    idle = {TP: 100, TP1: 3 * MAX_SEEKS}  # partition 1 has nothing left to read
    for _ in range(MAX_SEEKS):  # the whole worker idle: seeks that count
        asyncio.run(order.watch(idle))
    assert seeks == [(TP, 5)] * (1 + MAX_SEEKS)
    with pytest.raises(OutOfOrder):
        asyncio.run(order.watch(idle))


def test_a_seek_to_offset_zero_while_busy_is_not_repeated() -> None:
    """faust's read offset after a seek to 0 is None, as before any read: still our seek."""
    read: dict[tuple[str, int], int | None] = {TP: None, TP1: None}
    order, seeks = make_two(read)
    for i in range(3 * MAX_SEEKS):
        feed_tp(order, TP1, [i])
        asyncio.run(order.watch({TP: 100, TP1: 100}))
    assert seeks == [(TP, 0)]
