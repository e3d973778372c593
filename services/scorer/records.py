"""The records the scorer's pure parts take in and give out: no Kafka types past the shell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from services.core import Selected
from services.core.drift import DriftEvent
from services.core.stability import StabilityRecord


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


@dataclass
class BatchResult:
    """What one `process` call produced, plus what the metrics need to know about it."""

    requests: list[Output] = field(default_factory=list)
    dead_letters: list[Output] = field(default_factory=list)
    invalid_codes: list[str] = field(default_factory=list)
    selected: list[Selected] = field(default_factory=list)
    valid: int = 0
    suppressed: int = 0
    # Reservoir picks whose record could not be read back (e.g. removed by retention).
    lost_deferred: int = 0
    # Tiers (only with a tier policy): each request's tier, in request order; per-tier copies
    # (topic, record) for teams whose annotator pools read their own topic; selections the cost
    # budget could not afford (no request).
    request_tiers: list[str] = field(default_factory=list)
    tier_copies: list[tuple[str, Output]] = field(default_factory=list)
    withheld: int = 0
    # Classes that started drifting (core/drift.py), and their class-feedback records.
    drift: list[DriftEvent] = field(default_factory=list)
    drift_records: list[Output] = field(default_factory=list)
    # Exploit candidates the redundancy gates skipped, by reason (services/core/redundancy.py).
    redundant: dict[str, int] = field(default_factory=dict)
    # Probe events (never selected), and the stability records of the comparisons they
    # completed, as (model_id, record) and as class-feedback records.
    probes: int = 0
    stability: list[tuple[str, StabilityRecord]] = field(default_factory=list)
    stability_records: list[Output] = field(default_factory=list)
