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


def batch_consumer(consumer: _Consumer, dropped: Dropped, batch_size: int, timeout_s: float,
                   linger_s: float) -> Callable[[], list[Message]]:
    """The loop's `consume`: up to `batch_size` messages, possibly none. With `linger_s` at or
    above `timeout_s` (or batches of one) it is the single call it used to be."""
    if linger_s >= timeout_s or batch_size == 1:
        return lambda: consumer.consume(batch_size, timeout_s)

    def consume() -> list[Message]:
        first = consumer.consume(1, timeout_s)
        if not first:
            return first
        mark = dropped.mark()
        rest = consumer.consume(batch_size - 1, linger_s)
        gone = dropped.dropped_since(mark)
        if gone and first[0].partition() in gone:
            return rest
        return first + rest

    return consume
