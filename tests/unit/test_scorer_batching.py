"""The loop's two-call consume (services/scorer/batching.py): the first record waits up to the
batch timeout, the rest up to the linger; a record whose partition a rebalance took away during
the second call is not processed (its next owner reads it again)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from services.scorer.batching import batch_consumer
from tests.unit.test_scorer_rebalance import _rebalance


@dataclass(frozen=True)
class _Message:
    p: int
    offset: int

    def partition(self) -> int:
        return self.p


class _Consumer:
    """Answers each consume call with the next planned batch; `during[k]` runs inside the k-th
    call, as librdkafka serves rebalance callbacks inside consume."""

    def __init__(self, batches: list[list[_Message]],
                 during: dict[int, Callable[[], None]] | None = None) -> None:
        self.batches = batches
        self.during = during or {}
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[_Message]:
        self.calls.append((num_messages, timeout))
        if len(self.calls) in self.during:
            self.during[len(self.calls)]()
        return self.batches.pop(0) if self.batches else []


def _tps(*partitions: int) -> list[TopicPartition]:
    return [TopicPartition("t", p) for p in partitions]


def test_the_first_record_waits_the_timeout_the_rest_the_linger() -> None:
    rebalance, *_ = _rebalance()
    first, rest = [_Message(0, 5)], [_Message(1, 7), _Message(0, 6)]
    consumer = _Consumer([first, rest])
    consume = batch_consumer(consumer, rebalance, 1000, 0.5, 0.05)  # type: ignore[arg-type]
    assert consume() == first + rest
    assert consumer.calls == [(1, 0.5), (999, 0.05)]


def test_an_idle_turn_is_one_call() -> None:
    rebalance, *_ = _rebalance()
    consumer = _Consumer([[]])
    assert batch_consumer(consumer, rebalance, 1000, 0.5, 0.05)() == []  # type: ignore[arg-type]
    assert consumer.calls == [(1, 0.5)]


def test_a_linger_at_or_above_the_timeout_is_the_single_call_of_before() -> None:
    rebalance, *_ = _rebalance()
    for linger in (0.5, 2.0):
        consumer = _Consumer([[_Message(0, 1), _Message(0, 2)]])
        consume = batch_consumer(consumer, rebalance, 1000, 0.5, linger)  # type: ignore[arg-type]
        assert consume() == [_Message(0, 1), _Message(0, 2)]
        assert consumer.calls == [(1000, 0.5)]


def test_the_first_record_is_dropped_when_its_partition_left_during_the_second_call() -> None:
    rebalance, rconsumer, *_ = _rebalance()
    rebalance.on_assign(rconsumer, _tps(0, 1, 2))
    # The second call serves a rebalance that revokes partition 0: librdkafka drops that call's
    # own records of it, the first call's record is ours to drop.
    consumer = _Consumer([[_Message(0, 5)], [_Message(1, 9)]],
                         during={2: lambda: rebalance.on_revoke(rconsumer, _tps(0))})
    consume = batch_consumer(consumer, rebalance, 1000, 0.5, 0.05)  # type: ignore[arg-type]
    assert consume() == [_Message(1, 9)]
    # Lost (no clean revoke) counts the same.
    consumer = _Consumer([[_Message(1, 10)], []],
                         during={2: lambda: rebalance.on_lost(rconsumer, _tps(1))})
    consume = batch_consumer(consumer, rebalance, 1000, 0.5, 0.05)  # type: ignore[arg-type]
    assert consume() == []
    # Another partition's loss keeps the record; so does a drop before the first call returned.
    rebalance.on_lost(rconsumer, _tps(3))
    consumer = _Consumer([[_Message(2, 3)], [_Message(2, 4)]],
                         during={2: lambda: rebalance.on_lost(rconsumer, _tps(4))})
    consume = batch_consumer(consumer, rebalance, 1000, 0.5, 0.05)  # type: ignore[arg-type]
    assert consume() == [_Message(2, 3), _Message(2, 4)]


def test_drops_are_remembered_per_partition_from_a_mark() -> None:
    rebalance, rconsumer, *_ = _rebalance()
    rebalance.on_assign(rconsumer, _tps(0, 1, 2))
    mark = rebalance.mark()
    assert rebalance.dropped_since(mark) == set()
    rebalance.on_lost(rconsumer, _tps(1))
    later = rebalance.mark()
    rebalance.drop([2])
    assert rebalance.dropped_since(mark) == {1, 2}
    assert rebalance.dropped_since(later) == {2}
    assert rebalance.dropped_since(rebalance.mark()) == set()


def _run(p: int, start: int, n: int) -> list[_Message]:
    return [_Message(p, offset) for offset in range(start, start + n)]


def test_a_scorer_behind_takes_what_is_fetched_already_without_waiting() -> None:
    """The linger call came back full: the client holds more, so the turn takes it with calls
    that do not wait, until one comes back short or the turn holds DRAIN_BATCHES batches."""
    rebalance, *_ = _rebalance()
    first, full, short = _run(0, 0, 1), _run(0, 1, 9), _run(1, 0, 4)
    consumer = _Consumer([first, full, _run(0, 10, 10), short, _run(2, 0, 10)])
    consume = batch_consumer(consumer, rebalance, 10, 0.5, 0.05)  # type: ignore[arg-type]
    assert consume() == first + full + _run(0, 10, 10) + short
    assert consumer.calls == [(1, 0.5), (9, 0.05), (10, 0.0), (10, 0.0)]
    # Never more than DRAIN_BATCHES (here 3) batches in one turn.
    consumer = _Consumer([first, full] + [_run(0, 10 * k, 10) for k in range(1, 5)])
    consume = batch_consumer(consumer, rebalance, 10, 0.5, 0.05, 3)  # type: ignore[arg-type]
    assert len(consume()) == 30
    assert consumer.calls == [(1, 0.5), (9, 0.05), (10, 0.0), (10, 0.0)]
    # A scorer that keeps up (the linger call short) makes the two calls of before.
    consumer = _Consumer([first, _run(0, 1, 5)])
    consume = batch_consumer(consumer, rebalance, 10, 0.5, 0.05)  # type: ignore[arg-type]
    assert len(consume()) == 6 and len(consumer.calls) == 2


def test_a_partition_taken_away_during_a_drain_call_loses_its_earlier_records_only() -> None:
    """A rebalance served inside a later call drops the records the earlier calls returned of
    the partitions it took away; the later call's own records (librdkafka has dropped that
    partition's already) and the other partitions' stay."""
    rebalance, rconsumer, *_ = _rebalance()
    rebalance.on_assign(rconsumer, _tps(0, 1, 2))
    first, full = _run(0, 0, 1), _run(0, 1, 4) + _run(1, 0, 5)
    third = _run(1, 5, 2)
    consumer = _Consumer([first, full, third],
                         during={3: lambda: rebalance.on_revoke(rconsumer, _tps(0))})
    consume = batch_consumer(consumer, rebalance, 10, 0.5, 0.05)  # type: ignore[arg-type]
    assert consume() == _run(1, 0, 5) + third
