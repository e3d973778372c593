"""Where each input partition's latest checkpoint is, found without reading the state topic's
history.

Every commit of an input partition's offset carries, in the commit's metadata, a pointer to the
state-topic record of that partition's latest durable checkpoint (`checkpoint@P:O`). A restore
reads the group's committed offsets, then exactly one state record per assigned partition: its
cost does not grow with the state topic's history, on any broker. Only where no usable pointer
exists (offsets committed by an older version, a pointer whose record compaction already
replaced, a broker that drops commit metadata) does it fall back to reading the whole state
topic (`load_latest`), which compaction keeps small on Apache Kafka.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from services.scorer.checkpoint_format import CHUNKED_FORMAT
from services.streaming.checkpoints import CheckpointReadTimeout, load_latest

log = logging.getLogger(__name__)

_POINTER = re.compile(r"^checkpoint@(\d+):(\d+)$")


def _is_chunk_head(raw: bytes) -> bool:
    """Whether a state record is the head of a checkpoint split into chunks
    (checkpoint_format.py)."""
    return len(raw) < 4096 and CHUNKED_FORMAT.encode() in raw


def pointer(partition: int, offset: int) -> str:
    """Commit metadata naming the state record at (`partition`, `offset`)."""
    return f"checkpoint@{partition}:{offset}"


def parse_pointer(metadata: str | None) -> tuple[int, int] | None:
    """(state partition, offset) from commit metadata, or None when it holds no pointer."""
    match = _POINTER.match(metadata or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass
class Located:
    """What a restore found: per input partition its raw checkpoint (None: none exists) and the
    pointer to it; how many state records it read, and whether it had to scan the topic. After
    a scan, `latest` holds every key's latest value (the chunks of a checkpoint too large for
    one record are read from it: checkpoint_format.py, `checkpoint_records`)."""

    raw: dict[int, bytes | None] = field(default_factory=dict)
    pointers: dict[int, str] = field(default_factory=dict)
    records_read: int = 0
    scanned: bool = False
    latest: dict[bytes, bytes] | None = None


class CheckpointLocator:
    """Finds the latest checkpoint of input partitions. Not thread-safe; blocks up to about
    `timeout_s` per call and raises CheckpointReadTimeout or KafkaException past it."""

    def __init__(self, client_config: Mapping[str, Any], state_topic: str,
                 key_of: Callable[[int], bytes], marker_producer: Callable[[], Producer],
                 timeout_s: float = 30.0, group: str = "active-stream-checkpoint-reader") -> None:
        self._config = dict(client_config)
        self.topic = state_topic
        self.key_of = key_of
        self._marker_producer = marker_producer
        self.timeout_s = timeout_s
        self.group = group  # group.id of its readers: nothing joined or committed (ACLs name it)

    def locate(self, committed: list[TopicPartition]) -> Located:
        """The checkpoints of the partitions in `committed` (the group's committed offsets,
        with their metadata)."""
        found = Located()
        missing = []
        pointed = {tp.partition: parse_pointer(tp.metadata) for tp in committed}
        reader = self._reader() if any(pointed.values()) else None
        try:
            for partition, where in pointed.items():
                raw = None if where is None or reader is None else self._read_at(reader, *where)
                found.records_read += where is not None
                if raw is None or _is_chunk_head(raw):
                    # A head's chunks have no pointers of their own: read them in the scan.
                    missing.append(partition)
                    continue
                found.raw[partition] = raw
                found.pointers[partition] = pointer(*where)  # type: ignore[misc]
        finally:
            if reader is not None:
                reader.close()
        if missing:
            self._scan(missing, found)
        return found

    def _reader(self) -> Consumer:
        return Consumer({**self._config, "group.id": self.group,
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})

    def _read_at(self, reader: Consumer, partition: int, offset: int) -> bytes | None:
        """The value at (partition, offset) if it is still there; None when the record is gone
        (compaction replaced it with a newer checkpoint) or the read timed out."""
        reader.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            msg = reader.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return None
                if err.code() == KafkaError.OFFSET_OUT_OF_RANGE:
                    return None
                raise KafkaException(err)
            if msg.offset() != offset:
                return None  # compacted away: a later record took its place
            return msg.value()
        raise CheckpointReadTimeout(f"{self.topic}[{partition}]@{offset} not read in "
                                    f"{self.timeout_s}s")

    def _scan(self, partitions: list[int], found: Located) -> None:
        """Read the whole state topic for the partitions without a usable pointer."""
        counted: list[int] = []
        latest = load_latest(self._config, self.topic, producer=self._marker_producer(),
                             timeout_s=self.timeout_s, on_record=lambda: counted.append(1),
                             group=self.group)
        found.scanned = True
        found.records_read += len(counted)
        found.latest = {key: record.value for key, record in latest.items()}
        for partition in partitions:
            record = latest.get(self.key_of(partition))
            found.raw[partition] = None if record is None else record.value
            if record is not None:
                found.pointers[partition] = pointer(record.partition, record.offset)
        log.info("restore read the whole state topic %s (%d records) for partitions %s "
                 "without a checkpoint pointer", self.topic, len(counted), partitions)
