"""What the broker says about the sink's input partitions, asked with our own librdkafka client
(not faust's): committed offsets of the sink's group, where a partition's records start, whether
records exist from an offset on, and high watermarks (for the committed-offset lag).

Every method blocks (network); the shell calls them in a worker thread. One consumer serves them
all, under a lock (a confluent-kafka client is not to be used by two threads at once). It joins
no group and commits nothing: it only reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

# One look-up (committed offsets, watermarks) is one request on loopback; a remote cluster under
# load may need seconds. Past this the caller gets a KafkaException / TimeoutError and decides.
REQUEST_TIMEOUT_S = 15.0
# How long to wait for the first record at or after an offset: a fetch returns in milliseconds
# when records exist; this bounds the wait when the broker is slow to answer.
PROBE_TIMEOUT_S = 10.0

Partition = tuple[str, int]


@dataclass(frozen=True)
class Record:
    """One record as read from the broker: what the sink's handlers use of a faust message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class BrokerOffsets:
    """`client_config`: librdkafka settings (bootstrap, security); `group`: the sink's group."""

    def __init__(self, client_config: Mapping[str, Any], group: str) -> None:
        self._lock = threading.Lock()
        self._client: Consumer | None = None  # made on first use: building the sink connects
        self._config = {
            **client_config,
            # The sink's group id, so `committed()` reads the sink's offsets. assign() and
            # committed() never join the group; auto commit is off, so nothing is committed.
            "group.id": group,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # As faust reads (not in a transaction): a record the sink could be handed is a
            # record this client sees.
            "isolation.level": "read_uncommitted",
            "auto.offset.reset": "earliest",
            # Each look-up assigns a partition anew; with librdkafka's default (500 ms) every
            # one waited out the previous fetch's maximum wait: measured 510 ms, and 15-30 ms
            # with 10.
            "fetch.wait.max.ms": 10,
        }

    @property
    def _consumer(self) -> Consumer:
        if self._client is None:
            self._client = Consumer(self._config)
        return self._client

    def start_offsets(self, tps: Iterable[Partition]) -> dict[Partition, int]:
        """Where the sink resumes each partition: its committed offset, or (none committed, or
        committed below the log start) the first offset the partition still holds."""
        wanted = [TopicPartition(t, p) for t, p in tps]
        if not wanted:
            return {}
        with self._lock:
            committed = self._consumer.committed(wanted, timeout=REQUEST_TIMEOUT_S)
            out = {}
            for tp in committed:
                if tp.error is not None:
                    raise KafkaException(tp.error)
                low, _ = self._watermarks(tp.topic, tp.partition)
                out[(tp.topic, tp.partition)] = max(tp.offset, low) if tp.offset >= 0 else low
            return out

    def first_at_or_after(self, tp: Partition, offset: int) -> int | None:
        """Offset of the first record of `tp` at or after `offset` (past the log start if
        `offset` is below it), or None if there is none yet."""
        topic, partition = tp
        with self._lock:
            self._consumer.assign([TopicPartition(topic, partition, offset)])
            try:
                deadline = time.monotonic() + PROBE_TIMEOUT_S
                while time.monotonic() < deadline:
                    msg = self._consumer.poll(0.5)
                    if msg is None:
                        continue
                    error = msg.error()
                    if error is None:
                        found = msg.offset()
                        assert found is not None  # a record (not an event) has an offset
                        return int(found)
                    if error.code() == KafkaError._PARTITION_EOF:
                        return None
                    raise KafkaException(error)
                raise TimeoutError(f"{topic}[{partition}]: no answer from offset {offset} "
                                   f"within {PROBE_TIMEOUT_S:.0f}s")
            finally:
                self._consumer.unassign()

    def read(self, tp: Partition, start: int, end: int, limit: int) -> list[Record]:
        """The records of `tp` with offsets in [start, end), in order, at most `limit` of them
        (ask again from the last one + 1 for more). Fewer than asked when offsets hold no record
        (transaction markers, compaction, retention)."""
        topic, partition = tp
        out: list[Record] = []
        with self._lock:
            self._consumer.assign([TopicPartition(topic, partition, start)])
            try:
                deadline = time.monotonic() + PROBE_TIMEOUT_S
                while len(out) < limit:
                    msg = self._consumer.poll(0.5)
                    if msg is None:
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{topic}[{partition}]: no answer reading "
                                               f"[{start}, {end}) within {PROBE_TIMEOUT_S:.0f}s")
                        continue
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            break
                        raise KafkaException(error)
                    offset = msg.offset()
                    assert offset is not None  # a record (not an event) has an offset
                    if offset >= end:
                        break
                    if offset >= start:
                        out.append(Record(topic, partition, offset, msg.key(), msg.value()))
                    deadline = time.monotonic() + PROBE_TIMEOUT_S
            finally:
                self._consumer.unassign()
        return out

    def high_watermarks(self, tps: Iterable[Partition]) -> dict[Partition, int]:
        with self._lock:
            return {tp: self._watermarks(*tp)[1] for tp in tps}

    def committed(self, tps: Iterable[Partition]) -> dict[Partition, int | None]:
        """The sink group's committed offsets (None: nothing committed)."""
        wanted = [TopicPartition(t, p) for t, p in tps]
        if not wanted:
            return {}
        with self._lock:
            got = self._consumer.committed(wanted, timeout=REQUEST_TIMEOUT_S)
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in got}

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        got = self._consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                   timeout=REQUEST_TIMEOUT_S)
        if got is None:
            raise TimeoutError(f"{topic}[{partition}]: no watermarks in {REQUEST_TIMEOUT_S:.0f}s")
        return int(got[0]), int(got[1])
