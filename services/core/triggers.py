"""Retrain trigger policy: when a model has enough new human labels to be worth retraining.

Pure and deterministic: no Kafka, no clock. Time is *event time*, the `labeled_at` of the labels
(epoch seconds), so a replay of the same labels takes the same decisions.

A model's state is a function of the sequence of labels counted for it. The label sink keeps it
as a compact row (`snapshot()` / `from_snapshot()`: counters, the pending manifest and the
class vocabulary, never one entry per label) plus the labels counted since that row was written,
which it replays (`replay`) after a crash: the same state, hence the same decisions.
`from_records` rebuilds a state from labels in any order (while the class cap is not reached).

Classes are capped per model (`agreement.ClassCap`): past `MAX_CLASSES` names (or their byte
budget) a new class is counted as `__other__`, so counts, feedback and the state row stay
bounded whatever the number of classes annotators use.

Rules, checked in this order once the cooldown since the last trigger has passed:

1. `label_count`: new labels (since the last trigger) >= `min_labels`; with `cost` =
   `instances` (issue 16, the scorer's budget unit), new annotated instances (annotations,
   summed over the labels) >= `min_labels` instead: a label of a frame with five players
   counts five. The state is the same in both units (the per-class counts already count
   annotations), so switching the unit needs no migration and replays stay byte-identical;
   `total` and the manifest still count label records;
2. `class_coverage`: every class the model has predicted on answered requests has
   >= `min_labels_per_class` new annotations;
3. `label_age`: the oldest new label is more than `max_label_age_s` older than the newest label;
4. `disagreement`: some class has >= `min_disagreement_labels` new compared annotations and a
   disagreement rate > `max_disagreement`.

A fired trigger covers exactly the labels counted since the previous one. Its manifest lists
exactly their offsets in the label topic, as sorted, disjoint half-open runs [start, end) per
partition: every offset in a run is a label this trigger counted, and no other. A partition
has several runs where other records sit between its labels (other models' labels, duplicates,
invalid labels, labels an earlier or later trigger counted). So the manifests of a model's
triggers never share an offset, and reading a manifest gives exactly `total` labels with exactly
`counts`, however the labels were interleaved, replayed or restarted.

Bounded: a batch with `MAX_MANIFEST_RANGES` runs fires at once (rule `manifest_full`), whatever
the other rules and the cooldown say, so a trigger record stays far below the 1 MiB record limit.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.core.agreement import ClassCap, ClassTally, Outcome

RULES = ("label_count", "class_coverage", "label_age", "disagreement", "manifest_full")
# ~70 bytes of JSON per run: 8,000 runs are ~560 KB, leaving room for counts within 1 MiB.
MAX_MANIFEST_RANGES = 8_000


@dataclass(frozen=True)
class TriggerPolicy:
    """Settings; a rule whose threshold is None is off. Times in event-time seconds."""

    min_labels: int = 100
    min_labels_per_class: int | None = None
    max_label_age_s: float | None = None
    max_disagreement: float | None = None
    min_disagreement_labels: int = 20
    cooldown_s: float = 0.0
    cost: str = "assets"  # or "instances": what `min_labels` counts (module doc, rule 1)

    def __post_init__(self) -> None:
        if self.cost not in ("assets", "instances"):
            raise ValueError(f"cost must be 'assets' or 'instances', got {self.cost!r}")
        if self.min_labels < 1:
            raise ValueError(f"min_labels must be >= 1, got {self.min_labels}")
        if self.min_labels_per_class is not None and self.min_labels_per_class < 1:
            raise ValueError("min_labels_per_class must be >= 1 or None")
        if self.max_label_age_s is not None and self.max_label_age_s < 0:
            raise ValueError("max_label_age_s must be >= 0 or None")
        if self.max_disagreement is not None and not 0.0 <= self.max_disagreement < 1.0:
            raise ValueError("max_disagreement must be in [0, 1) or None")
        if self.min_disagreement_labels < 1 or self.cooldown_s < 0:
            raise ValueError("min_disagreement_labels >= 1 and cooldown_s >= 0 are required")


@dataclass(frozen=True)
class Fired:
    """The trigger a label closed: persisted with that label so a rebuild knows batches ended."""

    trigger_id: str
    rule: str
    triggered_at: float


@dataclass(frozen=True)
class LabelRecord:
    """What one counted label contributes. `batch` = number of triggers fired for the model
    before this label was counted; `fired` is set on the label whose arrival fired a trigger."""

    label_id: str
    partition: int
    offset: int
    labeled_at: float
    classes: tuple[str, ...]
    outcomes: tuple[Outcome, ...] = ()
    predicted: tuple[str, ...] = ()
    batch: int = 0
    fired: Fired | None = None
    # A consensus vote (label_sink/consensus.py): its offset is in the manifest, nothing of it
    # is counted (its request counts once, by the label that decided it).
    vote: bool = False


@dataclass(frozen=True)
class OffsetSpan:
    """Half-open [start_offset, end_offset) of one partition of the label topic."""

    partition: int
    start_offset: int
    end_offset: int


@dataclass(frozen=True)
class Decision:
    """A trigger to publish: the rule, a human-readable detail, and what it covers."""

    rule: str
    detail: str
    counts: Mapping[str, int]
    total: int
    triggered_at: float
    ranges: tuple[OffsetSpan, ...]


def trigger_id(model_id: str, topic: str, ranges: Iterable[OffsetSpan]) -> str:
    """Deterministic id: the same model and manifest always give the same id (64 hex chars)."""
    text = "\n".join(
        [model_id, topic, *(f"{r.partition}:{r.start_offset}:{r.end_offset}" for r in ranges)]
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TriggerState:
    """One model's labels since its last trigger, plus what the rules need from before.

    Commands: `record`, `fire`. Query: `should_trigger`. `clock` is the newest `labeled_at` seen.
    """

    batch: int = 0
    clock: float | None = None
    last_triggered_at: float | None = None
    total: int = 0
    oldest: float | None = None
    pending: ClassTally = field(default_factory=ClassTally)
    runs: dict[int, list[list[int]]] = field(default_factory=dict)  # partition -> [[s, e)...]
    n_runs: int = 0
    watched: set[str] = field(default_factory=set)
    all_time: ClassTally = field(default_factory=ClassTally)
    names: ClassCap = field(default_factory=ClassCap)

    @classmethod
    def from_records(cls, records: Iterable[LabelRecord]) -> TriggerState:
        """Rebuild from persisted records, in any order: equal to recording them one by one.

        The current batch is one past the last batch that fired (or the highest batch seen, if
        a label of a batch was persisted without its trigger's being)."""
        records = list(records)
        state = cls()
        fired = [r for r in records if r.fired is not None]
        if fired:
            last = max(fired, key=lambda r: r.batch)
            state.batch = last.batch + 1
            state.last_triggered_at = last.fired.triggered_at  # type: ignore[union-attr]
        state.batch = max([state.batch, *(r.batch for r in records)])
        for record in records:
            state._count(record, pending=record.batch == state.batch)
        return state

    def record(self, label: LabelRecord) -> None:
        """Count one new label (the caller has deduplicated it) into the current batch."""
        self._count(label, pending=True)

    def replay(self, label: LabelRecord) -> None:
        """Apply a persisted label counted after this state was saved, in counting order: as
        `record`, then `fire` if that label fired a trigger. A label of a later batch closes
        the current one first (its firing label was persisted without its trigger)."""
        if label.batch > self.batch:
            self._close(label.batch, self.last_triggered_at)
        self._count(label, pending=True)
        if label.fired is not None:
            self._close(self.batch + 1, label.fired.triggered_at)

    def _count(self, label: LabelRecord, *, pending: bool) -> None:
        self.clock = label.labeled_at if self.clock is None else max(self.clock, label.labeled_at)
        if label.vote:
            if pending:
                self.n_runs += _add_offset(self.runs.setdefault(label.partition, []),
                                           label.offset)
            return
        name = self.names.name
        classes = [name(c) for c in label.classes]
        results = [(name(c), agreed) for c, agreed in label.outcomes]
        self.all_time.add(classes, results)
        self.watched.update(name(c) for c in label.predicted)
        if not pending:
            return
        self.total += 1
        self.pending.add(classes, results)
        at = label.labeled_at
        self.oldest = at if self.oldest is None else min(self.oldest, at)
        self.n_runs += _add_offset(self.runs.setdefault(label.partition, []), label.offset)

    def should_trigger(self, policy: TriggerPolicy) -> Decision | None:
        """The trigger to fire now, or None. Does not change the state."""
        if self.total == 0 or self.clock is None:
            return None
        now = self.clock
        detail: tuple[str, str] | None
        if self.n_runs >= MAX_MANIFEST_RANGES:
            detail = "manifest_full", (f"the manifest holds {self.n_runs} offset runs, the most "
                                       "a trigger carries")
        elif (self.last_triggered_at is not None
              and now - self.last_triggered_at < policy.cooldown_s):
            return None
        else:
            detail = self._rule(policy, now)
        if detail is None:
            return None
        rule, text = detail
        return Decision(
            rule=rule,
            detail=text,
            counts=dict(sorted(self.pending.labels.items())),
            total=self.total,
            triggered_at=now,
            ranges=self.ranges(),
        )

    def _rule(self, policy: TriggerPolicy, now: float) -> tuple[str, str] | None:
        units = self.units(policy)
        if units >= policy.min_labels:
            noun = "labels" if policy.cost == "assets" else "instances"
            return "label_count", f"{units} new {noun} >= min_labels {policy.min_labels}"
        m = policy.min_labels_per_class
        if m is not None and self.watched:
            if all(self.pending.labels[c] >= m for c in self.watched):
                return "class_coverage", (
                    f"all {len(self.watched)} predicted classes have >= {m} new labels"
                )
        age = now - self.oldest if self.oldest is not None else 0.0
        if policy.max_label_age_s is not None and age > policy.max_label_age_s:
            return "label_age", f"oldest new label is {age:g}s old > {policy.max_label_age_s:g}s"
        d = policy.max_disagreement
        if d is not None:
            for name in sorted(self.pending.compared):
                n, rate = self.pending.compared[name], self.pending.disagreement(name)
                if n >= policy.min_disagreement_labels and rate is not None and rate > d:
                    return "disagreement", (
                        f"class {name!r}: disagreement {rate:.3f} > {d:g} over {n} labels"
                    )
        return None

    def units(self, policy: TriggerPolicy) -> int:
        """New labels since the last trigger in the policy's unit: label records, or their
        annotations (`cost` = instances). Query."""
        if policy.cost == "assets":
            return self.total
        return sum(self.pending.labels.values())

    def ranges(self) -> tuple[OffsetSpan, ...]:
        """The current batch's manifest: its labels' offsets as runs, by partition and offset."""
        return tuple(OffsetSpan(p, s, e) for p, runs in sorted(self.runs.items())
                     for s, e in runs)

    def fire(self, decision: Decision) -> None:
        """Close the current batch: the labels in it belong to the trigger just published."""
        self._close(self.batch + 1, decision.triggered_at)

    def _close(self, batch: int, triggered_at: float | None) -> None:
        self.batch = batch
        self.last_triggered_at = triggered_at
        self.total = 0
        self.oldest = None
        self.pending = ClassTally()
        self.runs = {}
        self.n_runs = 0

    def since_trigger(self) -> Counter[str]:
        """Annotations per class since the last trigger."""
        return Counter(self.pending.labels)

    def snapshot(self) -> dict[str, Any]:
        """A compact JSON-able row: class names once, counters as lists aligned with them,
        runs flattened. Its size is bounded by the class cap and MAX_MANIFEST_RANGES."""
        names = self.names.names()
        index = {n: i for i, n in enumerate(names)}

        def column(counter: Counter[str]) -> list[int]:
            return [counter.get(n, 0) for n in names]

        return {
            "n": names, "b": self.batch, "k": self.clock, "l": self.last_triggered_at,
            "T": self.total, "o": self.oldest, "N": self.n_runs,
            "pl": column(self.pending.labels), "pc": column(self.pending.compared),
            "pa": column(self.pending.agreed), "al": column(self.all_time.labels),
            "ac": column(self.all_time.compared), "aa": column(self.all_time.agreed),
            "w": sorted(index[n] for n in self.watched),
            "r": [[p, *(x for run in runs for x in run)] for p, runs in sorted(self.runs.items())],
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> TriggerState:
        """The state `snapshot()` saved (equal to it in every field)."""
        names = list(data["n"])

        def counter(column: list[int]) -> Counter[str]:
            return Counter({n: c for n, c in zip(names, column, strict=True) if c})

        runs = {int(r[0]): [[r[i], r[i + 1]] for i in range(1, len(r), 2)] for r in data["r"]}
        return cls(
            batch=data["b"], clock=data["k"], last_triggered_at=data["l"], total=data["T"],
            oldest=data["o"], n_runs=data["N"], runs=runs,
            pending=ClassTally(counter(data["pl"]), counter(data["pc"]), counter(data["pa"])),
            all_time=ClassTally(counter(data["al"]), counter(data["ac"]), counter(data["aa"])),
            watched={names[i] for i in data["w"]}, names=ClassCap(names=names),
        )


def _add_offset(runs: list[list[int]], offset: int) -> int:
    """Insert `offset` into `runs` (sorted, disjoint, non-adjacent [start, end) pairs), merging
    neighbours; returns the change in the number of runs (+1, 0 or -1). An offset already in a
    run changes nothing (a label is counted once; the caller deduplicates)."""
    i = bisect.bisect_right(runs, [offset, float("inf")])  # runs[:i] start at or before offset
    before = runs[i - 1] if i > 0 else None
    after = runs[i] if i < len(runs) else None
    if before is not None and offset < before[1]:
        return 0
    joins_before = before is not None and before[1] == offset
    joins_after = after is not None and after[0] == offset + 1
    if joins_before and joins_after:
        assert before is not None and after is not None
        before[1] = after[1]
        del runs[i]
        return -1
    if joins_before:
        assert before is not None
        before[1] = offset + 1
        return 0
    if joins_after:
        assert after is not None
        after[0] = offset
        return 0
    runs.insert(i, [offset, offset + 1])
    return 1
