"""The label sink's control-arm estimates and class mastery: the shell around core/mastery.py.

What flows where (docs/mastery.md):

1. A request picked by the uniform control arm (`reason.strategy == "random_control"` with a
   known `inclusion_probability`) keeps `[model_version, pi]` in its request row
   (`control_request`).
2. A label answering such a request carries, in its joined row, `[model_version, 1 / pi,
   [[human class, matched predicted class or None, agreed], ...]]` (`control_unit`). Labels of
   every other strategy carry nothing: they never reach the estimates.
3. Counting a control label applies it to the model's `MasteryBook`, kept as a JSON snapshot in
   the `mastery` table (changelog-backed, key model_id), BEFORE the label's own row is written:
   a crash between the two replays the label, which the book recognises as its last (`last`),
   so it is counted once. The book never gets rebuilt by re-summing, so its floats, and the
   feedback and triggers made from them, are the same bytes after a replay.
4. Class feedback gets per class `state`, `state_changed_at` and `control` (estimates of the
   newest version with their intervals), and the weights with mastered classes at
   `FeedbackPolicy.mastered_weight` and their share spread over the others (`with_mastery`).
   Retrain triggers get `mastery`: every class's state and the last changes.
6. Stability (docs/mastery.md, "Stopping signal"): the scorer's stability records (`kind:
   stability`) take the same way as drift records (`stability_row`, forwarded by model_id to
   labels-by-model); the book keeps the latest per input partition, applied once by its id, and
   each trigger's `stopping` gets the folded `stable` branch.
5. Drift (docs/drift.md): the sink reads the scorer's drift records (`kind: drift`) from the
   class-feedback topic and forwards each, as a `drift_row` keyed by model_id, to the same
   labels-by-model topic as the labels. So the report meets the model's book on the worker
   and changelog partition that own it, in one order with the model's labels that a replay
   reads again; the book applies it once by its id (`MasteryBook.drift`), reopening the class
   if it is mastered.
"""

from __future__ import annotations

from typing import Any

from services.core.estimates import CONTROL_STRATEGY, Interval, pairs
from services.core.feedback import FeedbackPolicy, with_mastery
from services.core.mastery import Change, ClassState, MasteryBook, MasteryPolicy
from services.core.stability import StabilityPolicy
from services.label_sink.gauges import ModelGauges
from services.label_sink.metrics import LabelSinkMetrics
from services.streaming.events import AnnotationRequest, ClassFeedback, FeedbackKind, Label
from services.streaming.settings import LabelSinkSettings, SettingsError

CONTROL = "k"
"""Key of the control-arm fields in request rows and joined label rows."""
DRIFT = "dr"
"""Key of a drift report in a labels-by-model row (`drift_row`); such a row holds no label."""
STABLE = "st"
"""Key of a stability record in a labels-by-model row (`stability_row`); it holds no label."""
DUE = "due"
"""Key, in a `mastery` table row beside the book's snapshot, of `[seq, drift report id]`: the
reopening on drift whose retrain trigger (rule `drift`) was due when the row was written."""


def stability_row(feedback: ClassFeedback) -> dict[str, Any] | None:
    """The labels-by-model row of a scorer's stability record: `{"m": model_id, STABLE: [id,
    partition, model_version, previous_version, probes, changed]}`; None for any other record.
    The id names the comparison (versions, input partition): the scorer's copies share it."""
    notice = feedback.stability
    if feedback.kind is not FeedbackKind.STABILITY or notice is None:
        return None
    record = "\x1f".join((notice.model_version, notice.previous_version,
                           str(notice.partition)))
    return {"m": feedback.model_id,
            STABLE: [record, notice.partition, notice.model_version, notice.previous_version,
                     notice.probes, notice.changed]}


def drift_row(feedback: ClassFeedback) -> dict[str, Any] | None:
    """The labels-by-model row of a scorer's drift record: `{"m": model_id, DRIFT: [id, class,
    detected_at, reason]}`; None for any other class-feedback record (the sink's own). The id
    names the report (version, class, input partition, detection time): the scorer's copies of
    one report share it."""
    notice = feedback.drift
    if feedback.kind is not FeedbackKind.DRIFT or notice is None:
        return None
    report = "\x1f".join((notice.model_version, notice.class_name, str(notice.partition),
                          repr(notice.detected_at)))
    reason = (f"drift of {notice.model_version} on input partition {notice.partition}: KS "
              f"distance {notice.distance:.3f} > {notice.critical:.3f}")
    return {"m": feedback.model_id,
            DRIFT: [report, notice.class_name, notice.detected_at, reason]}


def control_request(request: AnnotationRequest) -> dict[str, Any]:
    """Extra request-row fields for a control-arm request; {} for any other request."""
    pi = request.reason.inclusion_probability
    if request.reason.strategy != CONTROL_STRATEGY or pi is None or not 0.0 < pi <= 1.0:
        return {}
    return {CONTROL: [request.model_version, pi]}


def control_unit(request: dict[str, Any] | None, label: Label) -> list[Any] | None:
    """The joined-row field of a label answering a control-arm request (module doc), else None."""
    if request is None or CONTROL not in request:
        return None
    version, pi = request[CONTROL]
    # A detection's row entries are [instance, class, bbox] (tables.py), others [instance, class]
    found = pairs([(p[0], p[1]) for p in request["p"]],
                  [(a.label, a.instance_id) for a in label.annotations])
    if not found:
        return None
    return [version, 1.0 / pi, [list(p) for p in found]]


def mastery_policy(settings: LabelSinkSettings) -> MasteryPolicy:
    """The mastery rule the settings describe; SettingsError naming the variables if invalid."""
    try:
        return MasteryPolicy(master_at=settings.mastery_master_at,
                             min_labels=settings.mastery_min_labels,
                             reopen_below=settings.mastery_reopen_below,
                             min_reopen_labels=settings.mastery_min_reopen_labels,
                             confidence=settings.mastery_confidence,
                             stop_triggers=settings.mastery_stop_triggers,
                             stop_min_gain=settings.mastery_stop_min_gain,
                             stop_min_labels=settings.mastery_stop_min_labels,
                             stability=StabilityPolicy(
                                 threshold=settings.mastery_stable_threshold,
                                 min_probes=settings.mastery_stable_min_probes,
                                 max_probes=max(4096, settings.mastery_stable_min_probes)))
    except ValueError as exc:
        raise SettingsError(f"{settings.PREFIX}MASTERY_*: {exc}") from None


def interval_dict(iv: Interval | None) -> dict[str, float] | None:
    return None if iv is None else {"estimate": iv.estimate, "low": iv.low, "high": iv.high}


class Mastery:
    """Mastery books in a faust table (any mapping of model_id -> snapshot dict works)."""

    def __init__(self, table: Any, policy: MasteryPolicy, feedback: FeedbackPolicy,
                 metrics: LabelSinkMetrics, *, stop_to_exploration: bool = False,
                 trigger_on_drift: bool = False) -> None:
        self.table, self.policy, self.feedback, self.metrics = table, policy, feedback, metrics
        self.stop_to_exploration = stop_to_exploration
        self.trigger_on_drift = trigger_on_drift
        self.gauges = ModelGauges(metrics, policy)

    def book(self, model_id: str) -> MasteryBook | None:
        data = self.table.get(model_id)
        return None if data is None else MasteryBook.from_snapshot(data)

    def save(self, model_id: str, book: MasteryBook, due: list[Any] | None = None) -> None:
        """Write the book's row; it keeps its `DUE` (the reopening on drift whose retrain
        trigger was due, `drift_due`) unless `due` replaces it."""
        data = book.snapshot()
        old = self.table.get(model_id) if due is None else None
        due = due if due is not None else (old or {}).get(DUE)
        self.table[model_id] = data if due is None else {**data, DUE: due}

    def drift_due(self, model_id: str, report: str) -> tuple[int, str] | None:
        """(seq, detail) of the change by which the drift report `report` reopened a class, when
        the book's row says its retrain trigger was due (written with the change, in one row:
        docs/mastery.md, "Retrain trigger on drift"); None otherwise. Query."""
        data = self.table.get(model_id)
        due = None if data is None else data.get(DUE)
        if due is None or due[1] != report:
            return None
        change = next((c for c in MasteryBook.from_snapshot(data).changes if c.seq == due[0]),
                      None)
        detail = (f"class {change.name!r} reopened on {change.reason}" if change is not None
                  else f"a class reopened on drift (change {due[0]})")
        return int(due[0]), detail

    def count(self, model_id: str, row: dict[str, Any]) -> list[Change]:
        """Apply the control-arm label `row` (a joined label row with CONTROL) and persist."""
        version, weight, found = row[CONTROL]
        book = self.book(model_id) or MasteryBook()
        newest = book.version
        label = [(h, p, bool(a)) for h, p, a in found]
        changes = book.apply(self.policy, row["id"], version, weight, label, row["t"])
        self.save(model_id, book)
        for human, _, _ in label:
            self.metrics.control_labels.labels(model_id, human).inc()
        names = {h for h, _, _ in label} | {p for _, p, _ in label if p}
        for name in names & book.classes.keys():
            for state in ClassState:  # at 0 before the first change (increase() sees it)
                self.metrics.mastery_changes.labels(model_id, name, state.value)
        if book.version != newest:  # a new version: every class's estimates start over
            self.gauges.publish_book(model_id, book)
        else:
            self.gauges.publish_book(model_id, book, names)
        for change in changes:
            self.metrics.mastery_changes.labels(model_id, change.name, change.new.value).inc()
        return changes

    def drift(self, model_id: str, row: dict[str, Any]) -> Change | None:
        """Apply the drift report of `row` (a `drift_row`) to the model's book and persist it;
        the change if it reopened a mastered class. A model without a book has nothing
        mastered: the report changes nothing."""
        report, name, at, reason = row[DRIFT]
        book = self.book(model_id)
        if book is None or report in book.drifts:  # no book, or a repeat: nothing to write
            self.metrics.drift_reports.labels("kept").inc()
            return None
        change = book.drift(self.policy, report, name, at, reason)
        self.metrics.drift_reports.labels("reopened" if change else "kept").inc()
        due = [change.seq, report] if change is not None and self.trigger_on_drift else None
        self.save(model_id, book, due)
        if change is not None:
            self.gauges.publish_book(model_id, book, {name})
            self.metrics.mastery_changes.labels(model_id, change.name, change.new.value).inc()
        return change

    def stability(self, model_id: str, row: dict[str, Any]) -> bool:
        """Apply the stability record of `row` (a `stability_row`) to the model's book (made
        if it has none: probes need no control labels) and persist it; False for a repeat."""
        record, partition, version, previous, probes, changed = row[STABLE]
        book = self.book(model_id) or MasteryBook()
        applied = book.stability(record, partition, version, previous, probes, changed)
        self.metrics.stability_records.labels("applied" if applied else "kept").inc()
        if applied:
            self.save(model_id, book)
            self.gauges.publish_stopping(model_id, book)
        return applied

    def feedback_classes(self, model_id: str, classes: dict[str, dict[str, Any]]
                         ) -> dict[str, dict[str, Any]]:
        """Class-feedback `classes` (name -> stats dict) with the mastery fields added and the
        weights rebalanced for mastered classes. Classes without control labels are unchanged."""
        book = self.book(model_id)
        if book is None:
            return classes
        weights = with_mastery(self.feedback, {c: s["weight"] for c, s in classes.items()},
                               book.mastered())
        if self.stop_to_exploration and book.stopped_by(self.policy):  # explore only
            weights = dict.fromkeys(weights, self.feedback.mastered_weight)
        out = {}
        for name, stats in classes.items():
            stats = {**stats, "weight": weights[name]}
            cm = book.classes.get(name)
            if cm is not None:
                stats["state"] = cm.state.value
                if cm.changed_at is not None:
                    stats["state_changed_at"] = cm.changed_at
            found = book.estimate(self.policy, name)
            if found is not None:
                stats["control"] = {"model_version": book.version, "labels": found[0],
                                    "accuracy": interval_dict(found[1]),
                                    "agreement": interval_dict(found[2])}
            out[name] = stats
        return out

    def at_trigger(self, model_id: str, trigger_id: str) -> dict[str, Any] | None:
        """Record the trigger in the model's book (before the trigger is published; idempotent
        by trigger id) and return the trigger's `stopping` field: the control-arm branch
        (`versions`, empty without control labels) and, once a stability record arrived, the
        stability branch (`stable`); `stopped` when either is raised. None with neither."""
        book = self.book(model_id)
        if book is None:
            return None
        stable = book.stable(self.policy)
        if book.version is None and stable is None:
            return None
        if book.version is not None:
            book.at_trigger(self.policy, trigger_id)
            self.save(model_id, book)
        self.gauges.publish_stopping(model_id, book)
        stopped = book.stopped_by(self.policy)
        out: dict[str, Any] = {"stopped": stopped, "window": self.policy.stop_triggers,
                               "min_gain": self.policy.stop_min_gain,
                               "versions": [p.to_dict() for p in book.plateau]}
        if stable is not None:
            out["stable"] = stable
        return out

    def trigger_field(self, model_id: str) -> dict[str, Any] | None:
        """The retrain trigger's `mastery`: states of all judged classes and the last changes."""
        book = self.book(model_id)
        if book is None or not book.classes:
            return None
        return {"classes": {n: s.value for n, s in book.states().items()},
                "changes": [c.to_dict() for c in book.changes]}
