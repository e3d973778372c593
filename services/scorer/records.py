"""The records the scorer's pure parts take in and give out: no Kafka types past the shell."""

from __future__ import annotations

from typing import NamedTuple


class Record(NamedTuple):
    """One consumed record: its offset, key, value and Kafka timestamp (epoch seconds)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


class Output(NamedTuple):
    """One record to produce: key and value bytes."""

    key: bytes | None
    value: bytes
