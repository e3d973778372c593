"""Mastery per (model, class): `learning` -> `mastered` -> `reopened`, judged on control-arm labels.

Pure and deterministic: no Kafka, no clock (time is the labels' `labeled_at`), no randomness. The
label sink keeps one `MasteryBook` per model, applies each control-arm label to it in the order
it counts labels, and checkpoints `snapshot()` in a changelog-backed table, so a replay after a
crash takes the same decisions and publishes the same bytes.

The rule (`MasteryPolicy`, all settings explicit):

- evidence of a class = the control-arm labels of the model's newest version since the class's
  last change of state (estimates.py: Hajek ratios with Wilson intervals at `confidence`);
- `learning` or `reopened` -> `mastered` when BOTH the class's accuracy (the model recognises
  its instances) and its agreement (the humans confirm the model's predictions of it) have
  >= `min_labels` annotations of evidence and an interval lower bound >= `master_at`;
- `mastered` -> `reopened` when either has >= `min_reopen_labels` annotations of evidence and
  an interval upper bound < `reopen_below` (the estimate fell, with evidence), or when the
  scorer reports drift of the class (`drift`, any version of the model);
- a new model version (first seen in a control label) restarts every class's evidence but keeps
  its state: a mastered class stays mastered until the new version's labels show otherwise.
  Labels of other versions count in their version's estimates only.

Stopping signal (issue 18, item 5, its control-arm branch): at each retrain trigger the book
records the newest version's overall control-arm accuracy (`at_trigger`), one entry per model
version (a trigger before a new version is deployed updates the entry of the current one: more
labels of the same model are no evidence that labels stopped paying). With `stop_triggers` = K
> 0, the signal is raised when the last K+1 entries all rest on >= `stop_min_labels` control
annotations and none of the last K beats the one before them by `stop_min_gain`: K model
versions in a row bought no measurable accuracy.

Its prediction-stability branch (core/stability.py): the book keeps the scorer's latest
stability record per input partition (`stability`, idempotent by the record's id) and folds
them into the trigger's `stable` (`fold_stability`): raised when, over the partitions that
compared the newest version, >= `stability.min_probes` probes were compared and the share whose
predicted class changed is below `stability.threshold`. The signal is raised when either
branch is (`stopped_by`).

The lower bound makes the rule cost what it says: with every label agreeing, Wilson's 95% lower
bound passes 0.95 only after 73 labels, so `min_labels` = 30 is a floor, not the typical count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.core.estimates import (
    ClassEstimate,
    Interval,
    Pair,
    RatioSums,
    add_label,
    book_from_snapshot,
    book_snapshot,
)
from services.core.stability import (
    MAX_PROBE_PARTITIONS,
    MAX_STABILITY_IDS,
    StabilityPolicy,
    fold_stability,
)

MAX_DRIFTS = 64
"""Drift reports remembered per model for idempotence: far more than a replay can bring again
(a scorer sends one per class, input partition and drift episode)."""


class ClassState(StrEnum):
    LEARNING = "learning"
    MASTERED = "mastered"
    REOPENED = "reopened"


@dataclass(frozen=True)
class MasteryPolicy:
    """Settings (module doc). Bounds: estimates of at most `max_versions` versions per model
    (the first seen dropped first), `max_classes` classes per model (annotations of later
    ones are left out), the last `max_changes` changes kept for publication."""

    master_at: float = 0.95
    min_labels: int = 30
    reopen_below: float = 0.95
    min_reopen_labels: int = 10
    confidence: float = 0.95
    max_versions: int = 4
    max_classes: int = 256
    max_changes: int = 16
    stop_triggers: int = 0
    stop_min_gain: float = 0.005
    stop_min_labels: int = 100
    stability: StabilityPolicy = StabilityPolicy()

    def __post_init__(self) -> None:
        if not 0.0 < self.master_at <= 1.0 or not 0.0 < self.reopen_below <= 1.0:
            raise ValueError("master_at and reopen_below must be in (0, 1]")
        if self.min_labels < 1 or self.min_reopen_labels < 1:
            raise ValueError("min_labels and min_reopen_labels must be >= 1")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError("confidence must be in [0.5, 1)")
        if self.max_versions < 1 or self.max_classes < 1 or self.max_changes < 0:
            raise ValueError("max_versions >= 1, max_classes >= 1, max_changes >= 0")
        if self.stop_triggers < 0 or self.stop_min_labels < 1 or not 0 <= self.stop_min_gain < 1:
            raise ValueError("stop_triggers >= 0, stop_min_labels >= 1, stop_min_gain in [0, 1)")


@dataclass(frozen=True)
class Change:
    """One change of state. `seq` numbers a model's changes (1, 2, ...); `at` is the event time
    (labeled_at) of the label that caused it; `reason` says which bound moved."""

    seq: int
    name: str
    old: ClassState
    new: ClassState
    at: float
    version: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "class": self.name, "from": str(self.old), "to": str(self.new),
                "at": self.at, "model_version": self.version, "reason": self.reason}


@dataclass(frozen=True)
class Plateau:
    """One model version's overall control-arm accuracy at its latest trigger, with its Wilson
    interval (`low`, `high`) at the policy's confidence (None without control labels)."""

    trigger_id: str
    version: str
    estimate: float | None
    labels: int
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"trigger_id": self.trigger_id, "model_version": self.version,
                "estimate": self.estimate, "labels": self.labels, "low": self.low,
                "high": self.high}


@dataclass
class ClassMastery:
    state: ClassState = ClassState.LEARNING
    changed_at: float | None = None
    evidence: ClassEstimate = field(default_factory=ClassEstimate.empty)


@dataclass
class MasteryBook:
    """One model's estimates per version and mastery per class. Commands `apply`, `reopen`;
    queries `states`, `estimate`, `snapshot`."""

    version: str | None = None
    versions: dict[str, dict[str, ClassEstimate]] = field(default_factory=dict)
    classes: dict[str, ClassMastery] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    seq: int = 0
    last: str | None = None
    overall: dict[str, RatioSums] = field(default_factory=dict)  # version -> all classes
    plateau: list[Plateau] = field(default_factory=list)
    stopped: bool = False
    drifts: list[str] = field(default_factory=list)  # ids of the drift reports applied, newest last
    # Stability branch: input partition -> [version, previous, probes, changed] of its latest
    # record, the version of the last record applied, the ids applied (newest last).
    probes: dict[str, list[Any]] = field(default_factory=dict)
    probe_version: str | None = None
    probe_ids: list[str] = field(default_factory=list)
    probe_older: list[str] = field(default_factory=list)  # versions known older than the newest

    def apply(self, policy: MasteryPolicy, label_id: str, version: str, weight: float,
              label: Sequence[Pair], at: float) -> list[Change]:
        """Count one control-arm label (weight = 1 / inclusion probability) and judge the classes
        it touches. Idempotent for a repeat of the last label applied (the sink's crash window
        between this state's write and the label's). Returns the changes it made."""
        if label_id == self.last:
            return []
        self.last = label_id
        if version not in self.versions:
            self.versions[version] = {}
            while len(self.versions) > policy.max_versions:
                del self.versions[next(iter(self.versions))]
            for old in [v for v in self.overall if v not in self.versions]:
                del self.overall[old]
            for cm in self.classes.values():  # new version: evidence starts over
                cm.evidence = ClassEstimate.empty()
            self.version = version
        # Bounded: classes past max_classes are left out (a hostile class-name stream must
        # not grow the table row; 100 classes x 5 versions measured ~79 KB of JSON).
        for name in sorted({h for h, _, _ in label} | {p for _, p, _ in label if p}):
            if name not in self.classes and len(self.classes) < policy.max_classes:
                self.classes[name] = ClassMastery()
        label = [(h, p if p in self.classes else None, a) for h, p, a in label
                 if h in self.classes]
        add_label(self.versions[version], weight, label)
        self.overall.setdefault(version, RatioSums()).add(weight, len(label),
                                                          sum(bool(a) for _, _, a in label))
        if version != self.version:
            return []
        touched: dict[str, ClassEstimate] = {}
        add_label(touched, weight, label)
        out = []
        for name in sorted(touched):
            cm = self.classes[name]
            cm.evidence.accuracy.merge(touched[name].accuracy)
            cm.evidence.agreement.merge(touched[name].agreement)
            verdict = judge(cm, policy)
            if verdict is not None:
                out.append(self._change(policy, name, verdict[0], at, verdict[1]))
        return out

    def at_trigger(self, policy: MasteryPolicy, trigger_id: str) -> bool:
        """Record the newest version's overall accuracy for trigger `trigger_id` and return the
        stopping signal (module doc). Idempotent for a repeat of the last trigger id."""
        if self.version is None or (self.plateau and self.plateau[-1].trigger_id == trigger_id):
            return self.stopped
        sums = self.overall.get(self.version, RatioSums())
        iv = sums.interval(policy.confidence)
        entry = Plateau(trigger_id, self.version, sums.ratio(), sums.m_total,
                        None if iv is None else iv.low, None if iv is None else iv.high)
        if self.plateau and self.plateau[-1].version == self.version:
            self.plateau[-1] = entry
        else:
            self.plateau.append(entry)
        k = policy.stop_triggers
        self.plateau = self.plateau[-(k + 1):] if k else self.plateau[-1:]
        self.stopped = k > 0 and plateaued(self.plateau, policy)
        return self.stopped

    def stability(self, record_id: str, partition: int, version: str, previous: str,
                  probes: int, changed: int) -> bool:
        """Apply one scorer stability record (module doc); False when it changed nothing (a
        repeat by id over the last MAX_STABILITY_IDS, or a partition past the bound)."""
        if record_id in self.probe_ids:
            return False
        self.probe_ids = [*self.probe_ids, record_id][-MAX_STABILITY_IDS:]
        key = str(partition)
        if key not in self.probes and len(self.probes) >= MAX_PROBE_PARTITIONS:
            return False
        self.probes[key] = [version, previous, probes, changed]
        # The newest version is the latest to arrive that is not known to be older: a lagging
        # partition's record of an older comparison is kept for that partition but does not
        # turn the branch back to its version.
        if version != self.probe_version and version not in self.probe_older:
            older = [v for v in (previous, self.probe_version) if v is not None]
            self.probe_older = [*(v for v in self.probe_older if v not in older), *older
                                ][-MAX_STABILITY_IDS:]
            self.probe_version = version
        return True

    def stable(self, policy: MasteryPolicy) -> dict[str, Any] | None:
        """The trigger's `stopping.stable` (core/stability.py, fold_stability). Query."""
        return fold_stability(self.probes, self.probe_version, policy.stability)

    def stopped_by(self, policy: MasteryPolicy) -> bool:
        """The stopping signal: either branch raised. Query."""
        stable = self.stable(policy)
        return self.stopped or (stable is not None and stable["stopped"])

    def reopen(self, policy: MasteryPolicy, name: str, at: float, reason: str) -> Change | None:
        """Reopen a mastered class from outside (drift, item 4 of issue 18); None if it is not
        mastered. Its evidence starts over."""
        cm = self.classes.get(name)
        if cm is None or cm.state is not ClassState.MASTERED:
            return None
        return self._change(policy, name, ClassState.REOPENED, at, reason)

    def drift(self, policy: MasteryPolicy, drift_id: str, name: str, at: float, reason: str
              ) -> Change | None:
        """Apply the scorer's drift report `drift_id` on class `name` (event time `at`): a
        mastered class is reopened, any other keeps its state. Idempotent by `drift_id` over
        the last MAX_DRIFTS reports, whatever came in between: a replayed or re-forwarded report
        never reopens a class its first copy found learning, or mastered again since. A report
        detected before the class's last change (event time) is stale and changes nothing: say,
        old reports read from the topic's start by a sink that was just upgraded."""
        if drift_id in self.drifts:
            return None
        self.drifts = [*self.drifts, drift_id][-MAX_DRIFTS:]
        cm = self.classes.get(name)
        if cm is not None and cm.changed_at is not None and at < cm.changed_at:
            return None  # stale: the class changed state after the drift was seen
        return self.reopen(policy, name, at, reason)

    def _change(self, policy: MasteryPolicy, name: str, new: ClassState, at: float,
                reason: str) -> Change:
        cm = self.classes[name]
        self.seq += 1
        change = Change(self.seq, name, cm.state, new, at, self.version or "", reason)
        cm.state, cm.changed_at, cm.evidence = new, at, ClassEstimate.empty()
        self.changes = [*self.changes, change][-policy.max_changes:] if policy.max_changes else []
        return change

    def states(self) -> dict[str, ClassState]:
        return {name: cm.state for name, cm in sorted(self.classes.items())}

    def mastered(self) -> set[str]:
        return {n for n, cm in self.classes.items() if cm.state is ClassState.MASTERED}

    def estimate(self, policy: MasteryPolicy, name: str
                 ) -> tuple[int, Interval | None, Interval | None] | None:
        """(control annotations, accuracy, agreement) of `name` on the newest version."""
        est = self.versions.get(self.version or "", {}).get(name)
        if est is None:
            return None
        return (est.accuracy.m_total, est.accuracy.interval(policy.confidence),
                est.agreement.interval(policy.confidence))

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "versions": [[v, book_snapshot(b)] for v, b in self.versions.items()],
            "classes": {n: [str(cm.state), cm.changed_at, book_snapshot({"e": cm.evidence})]
                        for n, cm in sorted(self.classes.items())},
            "changes": [c.to_dict() for c in self.changes],
            "seq": self.seq,
            "last": self.last,
            "overall": [[v, r.snapshot()] for v, r in self.overall.items()],
            "plateau": [p.to_dict() for p in self.plateau],
            "stopped": self.stopped,
            "drifts": list(self.drifts),
            **({"probes": [[p, *e] for p, e in self.probes.items()],
                "probe_version": self.probe_version, "probe_ids": list(self.probe_ids),
                "probe_older": list(self.probe_older)}
               if self.probe_ids else {}),  # absent without stability records: same bytes
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> MasteryBook:
        classes = {}
        for name, (state, at, ev) in data["classes"].items():
            classes[name] = ClassMastery(ClassState(state), at,
                                         book_from_snapshot(ev).get("e", ClassEstimate.empty()))
        changes = [Change(c["seq"], c["class"], ClassState(c["from"]), ClassState(c["to"]),
                          c["at"], c["model_version"], c["reason"]) for c in data["changes"]]
        return cls(version=data["version"],
                   versions={v: book_from_snapshot(b) for v, b in data["versions"]},
                   classes=classes, changes=changes, seq=data["seq"], last=data["last"],
                   overall={v: RatioSums.from_snapshot(r) for v, r in data.get("overall", [])},
                   plateau=[Plateau(p["trigger_id"], p["model_version"], p["estimate"],
                                    p["labels"], p.get("low"), p.get("high"))
                            for p in data.get("plateau", [])],
                   stopped=bool(data.get("stopped", False)),
                   drifts=list(data.get("drifts", [])),
                   probes={p: list(e) for p, *e in data.get("probes", [])},
                   probe_version=data.get("probe_version"),
                   probe_ids=list(data.get("probe_ids", [])),
                   probe_older=list(data.get("probe_older", [])))


def plateaued(entries: Sequence[Plateau], policy: MasteryPolicy) -> bool:
    """True when `entries` (oldest first) are stop_triggers + 1 versions, each estimated on
    >= stop_min_labels control annotations, and none after the first beats the first by
    stop_min_gain."""
    if len(entries) < policy.stop_triggers + 1:
        return False
    if any(e.estimate is None or e.labels < policy.stop_min_labels for e in entries):
        return False
    base = entries[0].estimate
    assert base is not None
    return all(e.estimate is not None and e.estimate < base + policy.stop_min_gain
               for e in entries[1:])


def judge(cm: ClassMastery, policy: MasteryPolicy) -> tuple[ClassState, str] | None:
    """The change the rule makes to a class now, with its reason; None to keep its state."""
    parts = (("accuracy", cm.evidence.accuracy), ("agreement", cm.evidence.agreement))
    if cm.state is ClassState.MASTERED:
        for what, sums in parts:
            iv = sums.interval(policy.confidence)
            if iv is not None and sums.m_total >= policy.min_reopen_labels \
                    and iv.high < policy.reopen_below:
                return ClassState.REOPENED, (f"{what} upper bound {iv.high:.3f} < "
                                             f"{policy.reopen_below:g} over {sums.m_total} labels")
        return None
    lows = []
    for _, sums in parts:
        iv = sums.interval(policy.confidence)
        if iv is None or sums.m_total < policy.min_labels or iv.low < policy.master_at:
            return None
        lows.append(iv.low)
    return ClassState.MASTERED, (f"accuracy and agreement lower bounds {lows[0]:.3f}, "
                                 f"{lows[1]:.3f} >= {policy.master_at:g} over "
                                 f"{cm.evidence.accuracy.m_total}, "
                                 f"{cm.evidence.agreement.m_total} labels")
