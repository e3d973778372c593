"""Reading a reservoir pick's record back from the input topic: after a restore, a pick granted
in a later window needs the record of an event this process never decoded (partition.py, `fetch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import cast

from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.scorer.metrics import ScorerMetrics
from services.scorer.partition import DeferredPickUnreadable

log = logging.getLogger(__name__)

FETCH_ATTEMPTS = 3
FETCH_TIMEOUT_S = 10.0
"""Reading a reservoir pick's record back after a restore: tries, and the time each may take
(a metadata round trip, then a fetch; seconds on a healthy cluster). 3 x 10 s bounds the wait
near the 30 s a single try used to take before dropping the pick."""
FETCH_RETRY_S = 0.5  # between look-ups of a try that fail at once (`_fetch_once`)
_UNREAD = object()


class ReadBack:
    """Reads single records of `topic` with its own consumer (never joins the group). Not
    thread-safe; blocks up to FETCH_ATTEMPTS x FETCH_TIMEOUT_S per record."""

    def __init__(self, topic: str, fetcher: Consumer, metrics: ScorerMetrics) -> None:
        self.topic = topic
        self.fetcher = fetcher
        self.metrics = metrics

    def fetch_from(self, partition: int) -> Callable[[int], bytes | None]:
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
                low, _ = self.fetcher.get_watermark_offsets(
                    tp, timeout=max(0.1, deadline - time.monotonic()))
                break
            except KafkaException as exc:
                if time.monotonic() + FETCH_RETRY_S >= deadline:
                    log.warning("reading back %s[%d]@%d: %s", tp.topic, tp.partition,
                                tp.offset, exc)
                    return _UNREAD
                time.sleep(FETCH_RETRY_S)
        if tp.offset < low:
            return None  # removed by retention: no try will ever read it
        self.fetcher.assign([tp])
        while time.monotonic() < deadline:
            msg = self.fetcher.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                log.warning("reading back %s[%d]@%d: %s", tp.topic, tp.partition, tp.offset,
                            msg.error())
                continue
            # A later offset: the record itself is no longer there (compacted away).
            return msg.value() if msg.offset() == tp.offset else None
        return _UNREAD

    def close(self) -> None:
        self.fetcher.close()
