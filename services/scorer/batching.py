"""How the loop takes a batch from the consumer: the first record waits up to the batch timeout,
the rest of the batch up to a short linger.

One `consume(batch_size, batch_timeout_s)` returns when the batch is full or the timeout has
passed, so the tail of every burst, and every record of a stream slower than a batch per
timeout, waited the whole timeout (0.5 s by default; bench/README.md, "Where the latency
goes"). Two calls bound that wait by the linger while an idle loop still sleeps the whole
timeout. What one call gave for free has to be kept by hand: librdkafka drops the messages of a
partition revoked during a `consume` call, but the record the first call returned is already
ours. If its partition was revoked or lost during the second call (whose rebalance callbacks
the second call serves), the record is dropped here too: the partition's next owner, or this
instance after a re-assignment, reads it again from the committed offset.

A scorer that is behind (the linger call came back full) also takes what the client has
fetched already, up to DRAIN_BATCHES batches, with calls that do not wait: fewer flushes and
commits (broker requests) for the same events, and per-partition selector calls over more
events (bench/README.md, "Larger batches when behind"); a scorer that keeps up makes the two
calls of before. Every
further call may serve rebalance callbacks too, so each drops the earlier calls' records of
what it took away, as the second call does for the first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from confluent_kafka import Message


class _Consumer(Protocol):
    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...


class Dropped(Protocol):
    """What the rebalance callbacks dropped (rebalance.py): a mark, and the partitions
    dropped since one."""

    def mark(self) -> int: ...

    def dropped_since(self, mark: int) -> set[int]: ...


# How many batches a loop turn takes at most when the scorer is behind.
DRAIN_BATCHES = 4


def batch_consumer(consumer: _Consumer, dropped: Dropped, batch_size: int, timeout_s: float,
                   linger_s: float, drain_batches: int = DRAIN_BATCHES
                   ) -> Callable[[], list[Message]]:
    """The loop's `consume`: up to `batch_size` messages, possibly none, or up to
    `drain_batches` x `batch_size` when the client holds that many fetched already. With
    `linger_s` at or above `timeout_s` (or batches of one) it is the single call it used to be."""
    if linger_s >= timeout_s or batch_size == 1:
        return lambda: consumer.consume(batch_size, timeout_s)
    most = batch_size * max(1, drain_batches)

    def consume() -> list[Message]:
        batch = consumer.consume(1, timeout_s)
        if not batch:
            return batch
        want, wait = batch_size - 1, linger_s
        while True:
            mark = dropped.mark()
            more = consumer.consume(want, wait)
            gone = dropped.dropped_since(mark)
            if gone:  # this call's own records of `gone` were dropped by librdkafka
                batch = [m for m in batch if m.partition() not in gone]
            batch = batch + more
            if len(more) < want or len(batch) >= most:
                return batch
            want, wait = min(batch_size, most - len(batch)), 0.0

    return consume
