"""Prediction stability: the stopping signal's second branch (issue 18, item 5).

Labels have stopped paying when a new model version hardly changes what the model predicts: the
share of a fixed sample of the stream (the probe set) whose predicted class changes between
consecutive model versions falls below a threshold. The model service re-scores the same probe
assets with each new version; `ProbeBook` (one per model) keeps each probe asset's last
(version, predicted class), and once a version has re-scored every probe the previous version
scored, it yields a `StabilityRecord`: how many probes were compared and how many changed class.

Pure and deterministic: no clock, no randomness; `snapshot()`/`from_snapshot()` restore it
exactly, so a replay yields the same records. Bounded: at most `max_probes` assets per book (later
ones are left out, never compared).

Order: consecutive versions are consecutive in the stream (the order probes arrive in), not by
name. A probe of an older version arriving after a newer one has started (A/B serving, a late
replica) starts that version's comparison again against the newer one; interleaved versions
therefore seldom complete and yield no record, which is the safe side for a stopping signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StabilityPolicy:
    """`threshold`: predictions are stable when the share of compared probes whose class changed
    is below it; `min_probes`: fewer compared probes judge nothing (too small a sample);
    `max_probes`: probe assets remembered per model (the book's memory bound)."""

    threshold: float = 0.01
    min_probes: int = 100
    max_probes: int = 4096

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("threshold must be in (0, 1)")
        if not 1 <= self.min_probes <= self.max_probes:
            raise ValueError("1 <= min_probes <= max_probes is required")


@dataclass(frozen=True)
class StabilityRecord:
    """One version's comparison with the version before it on the probe set."""

    model_version: str
    previous_version: str
    probes: int
    changed: int

    @property
    def share(self) -> float:
        return self.changed / self.probes if self.probes else 1.0

    def stable(self, policy: StabilityPolicy) -> bool:
        """True when enough probes were compared and few enough changed class. Query."""
        return self.probes >= policy.min_probes and self.share < policy.threshold

    def to_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "previous_version": self.previous_version,
                "probes": self.probes, "changed": self.changed}


@dataclass
class ProbeBook:
    """One model's probe predictions (module doc). Command `observe`; `snapshot` to checkpoint."""

    last: dict[str, list[str]] = field(default_factory=dict)  # asset -> [version, class]
    current: str | None = None  # the version being compared
    previous: str | None = None  # the version it is compared with
    expected: int = 0  # probes of `previous` still to be re-scored by `current`, at its start
    seen: int = 0
    changed: int = 0
    done: bool = False  # `current`'s record was yielded

    def observe(self, policy: StabilityPolicy, asset: str, version: str, predicted: str
                ) -> StabilityRecord | None:
        """Fold one probe prediction; the version's record when this probe completes it, else
        None. A repeat of a probe already counted for `version` changes nothing (idempotent)."""
        if version != self.current:
            self.previous, self.current = self.current, version
            self.expected = sum(1 for v, _ in self.last.values() if v == self.previous)
            self.seen = self.changed = 0
            self.done = False
        entry = self.last.get(asset)
        if entry is None:
            if len(self.last) < policy.max_probes:
                self.last[asset] = [version, predicted]
            return None
        if entry[0] == version:
            return None  # counted already
        if entry[0] == self.previous:
            self.seen += 1
            self.changed += int(entry[1] != predicted)
        self.last[asset] = [version, predicted]
        if self.done or self.previous is None or self.seen < self.expected:
            return None
        self.done = True
        return StabilityRecord(version, self.previous, self.seen, self.changed)

    def snapshot(self) -> dict[str, Any]:
        return {"last": [[a, v, c] for a, (v, c) in self.last.items()],
                "current": self.current, "previous": self.previous, "expected": self.expected,
                "seen": self.seen, "changed": self.changed, "done": self.done}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> ProbeBook:
        return cls(last={a: [v, c] for a, v, c in data["last"]}, current=data["current"],
                   previous=data["previous"], expected=int(data["expected"]),
                   seen=int(data["seen"]), changed=int(data["changed"]),
                   done=bool(data["done"]))


def predicted_class(scores: Mapping[str, float] | None, label: str | None) -> str:
    """A probe's predicted class: `label` (top-1 events), or the class of highest probability,
    ties to the smallest class name (so the same distribution always names the same class)."""
    if scores is None:
        return label or ""
    return min(scores.items(), key=lambda item: (-item[1], item[0]))[0]


@dataclass
class ProbeBooks:
    """One input partition's `ProbeBook` per model, at most `max_models` of them: a model met
    when the bound is reached gets no book (its probes are left out, deterministically). Command
    `observe`; `snapshot`/`from_snapshot` restore it exactly."""

    policy: StabilityPolicy
    max_models: int = 64
    books: dict[str, ProbeBook] = field(default_factory=dict)

    def observe(self, model_id: str, asset: str, version: str, predicted: str
                ) -> StabilityRecord | None:
        """Fold one probe prediction of `model_id` (ProbeBook.observe)."""
        book = self.books.get(model_id)
        if book is None:
            if len(self.books) >= self.max_models:
                return None
            book = self.books[model_id] = ProbeBook()
        return book.observe(self.policy, asset, version, predicted)

    def snapshot(self) -> list[list[Any]]:
        return [[model_id, book.snapshot()] for model_id, book in self.books.items()]

    @classmethod
    def from_snapshot(cls, policy: StabilityPolicy, data: list[list[Any]] | None,
                      max_models: int = 64) -> ProbeBooks:
        """Books from `snapshot()`'s value (None: none yet)."""
        return cls(policy, max_models,
                   {m: ProbeBook.from_snapshot(b) for m, b in (data or [])})


MAX_PROBE_PARTITIONS = 1024
"""Input partitions whose latest stability record a model's mastery book keeps (later ones are
left out): the records' partition numbers come from a topic, so they are bounded here."""
MAX_STABILITY_IDS = 64
"""Stability records remembered per model for idempotence (a repeat changes nothing)."""


def fold_stability(latest: Mapping[str, list[Any]], newest: str | None,
                   policy: StabilityPolicy) -> dict[str, Any] | None:
    """The stopping signal's stability branch over one model's latest record per input
    partition (`latest`: partition -> [model_version, previous_version, probes, changed]):
    the partitions whose latest record compares `newest` (the newest version to arrive,
    MasteryBook.stability) are summed; a partition still comparing an older version is left
    out until its record for `newest` arrives. None before any record. Query."""
    if newest is None:
        return None
    mine = [entry for entry in latest.values() if entry[0] == newest]
    probes, changed = sum(int(e[2]) for e in mine), sum(int(e[3]) for e in mine)
    record = StabilityRecord(newest, "", probes, changed)
    return {"stopped": record.stable(policy), "model_version": newest, "probes": probes,
            "changed": changed, "share": record.share, "partitions": len(mine),
            "threshold": policy.threshold, "min_probes": policy.min_probes}
