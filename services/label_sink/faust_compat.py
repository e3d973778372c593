"""Compatibility shim: make faust's table recovery read to the TRUE end of a changelog partition.

Why: the embedded broker (Tansu 0.6.0) reports a wrong high watermark. ListOffsets(latest) answers
"base offset of the last record batch + 1", so after a multi-record batch the reported end is short
by (records in that batch - 1). faust recovers a table by reading its changelog up to that
highwater, so it silently drops the tail of the changelog (a restarted sink would forget the last
labels it counted) and may later crash with `ConsistencyError: persisted offset > highwater`
(docs/brokers.md, "High watermark").

What: `patch_faust_highwaters()` replaces faust's aiokafka `highwaters()` lookup. For each
partition whose reported end H is > 0 it fetches from offset H - 1 with a short-lived group-less
consumer: the broker returns the whole last batch, and the true end is the last offset read + 1.
The result is never below H, so on a broker with correct watermarks (Apache Kafka, Redpanda) the
answer is unchanged and only costs one extra fetch per changelog partition at recovery.

Where: only the label sink calls it, once, before it builds its faust App, and only when the
broker-compat option asks for it. Nothing else in faust is touched. Remove this module when the
broker reports correct watermarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiokafka
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka

# Generous: a fetch of one batch on loopback takes milliseconds; a remote cluster under load may
# need seconds. Past it we keep the reported value (the pre-patch behaviour) rather than hang.
_FETCH_TIMEOUT_S = 10.0
_PATCHED_FLAG = "_active_stream_true_highwaters"


async def true_end_offsets(
    consumer: aiokafka.AIOKafkaConsumer, reported: Mapping[Any, int]
) -> dict[Any, int]:
    """Correct `reported` end offsets using `consumer` (started, no group, nothing assigned).

    Returns {tp: max(reported end, last offset found from reported - 1, + 1)}. Partitions whose
    fetch times out keep the reported value."""
    result = dict(reported)
    todo = {tp: end for tp, end in reported.items() if end}
    if not todo:
        return result
    tps = [TopicPartition(tp.topic, tp.partition) for tp in todo]
    consumer.assign(tps)
    for tp, end in zip(tps, todo.values(), strict=True):
        consumer.seek(tp, end - 1)
    remaining = set(tps)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _FETCH_TIMEOUT_S
    while remaining and loop.time() < deadline:
        batches = await consumer.getmany(*remaining, timeout_ms=200)
        for tp, records in batches.items():
            if records:
                key = next(k for k in todo if (k.topic, k.partition) == (tp.topic, tp.partition))
                result[key] = max(result[key], records[-1].offset + 1)
                # The batch holding offset end-1 came back whole: it reaches the true end.
                remaining.discard(tp)
    return result


async def _true_highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
    reported = await _ORIGINAL(self, partitions)
    if self.consumer.in_transaction or not any(reported.values()):
        return reported  # empty partitions: nothing to correct, no probe needed
    probe = self._create_client_consumer(self.transport)
    probe._enable_auto_commit = False  # a probe must never commit anything
    await probe.start()
    # Let the probe's background tasks take their first step: aiokafka's no-group coordinator
    # raises CancelledError from stop() if its task is cancelled before it ever ran.
    await asyncio.sleep(0)
    try:
        return await true_end_offsets(probe, reported)
    finally:
        await probe.stop()


_ORIGINAL = faust_aiokafka.AIOKafkaConsumerThread._highwaters


def patch_faust_highwaters() -> None:
    """Install the true-end lookup into faust's aiokafka driver. Idempotent; process-wide."""
    cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, _PATCHED_FLAG, False):
        return
    cls._highwaters = _true_highwaters  # type: ignore[method-assign]
    setattr(cls, _PATCHED_FLAG, True)
