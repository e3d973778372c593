"""The label sink's per-model gauges, as a function of the state they show.

A gauge of a model is set from that model's state in the sink's tables: its `MasteryBook` (the
`mastery` table: control-arm estimates, class states, the stopping signal and its branches, the
probes' changed share) and its `TriggerState` (the `labels` table: all-time agreement per
class). `ModelGauges` remembers which series it set for which model, so that

- after a restart or a rebalance the worker republishes every owned model's gauges from the
  recovered tables (`publish_book`, `publish_agreement`), before any new label: a dashboard
  shows the same states as before the restart, instead of nothing until a class's next
  control label;
- the series of a model whose labels-by-model partition went to another worker are removed
  (`keep_only`): that worker publishes them now, and two workers' different ages of one state
  never sit side by side;
- a full publication of a book replaces the model's series: a series the book no longer
  yields (an estimate of an older model version) goes, so the gauges are the same whether
  they were set label by label or republished at once.

Cardinality: the class names come from the book (at most `MasteryPolicy.max_classes` per
model, later classes are left out) or the trigger state's class cap (`ClassCap`: the first
1,024 names, later ones as `__other__`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Gauge

from services.core.mastery import ClassState, MasteryBook, MasteryPolicy
from services.core.triggers import TriggerState
from services.label_sink.metrics import LabelSinkMetrics
from services.streaming.partitioning import murmur2_partition

Series = tuple[Gauge, tuple[str, ...]]
BOOK, AGREEMENT = "book", "agreement"  # the two sources of a model's series


def model_partition(model_id: str, partitions: int) -> int:
    """The labels-by-model partition of `model_id` (and of its `mastery` table row): the loop's
    one rule for keyed topics, murmur2 of the key the Java way (partitioning.py), which faust's
    producer (aiokafka's default partitioner) follows too."""
    return murmur2_partition(model_id.encode(), partitions)


def book_series(metrics: LabelSinkMetrics, policy: MasteryPolicy, model_id: str,
                book: MasteryBook, names: Iterable[str] | None = None
                ) -> dict[Series, float]:
    """The gauge values `book` yields for `model_id`: of the classes `names` (None: all
    classes and the model's own gauges too). Query."""
    out: dict[Series, float] = {}
    for name in sorted(book.classes if names is None else names):
        found = book.estimate(policy, name)
        if found is not None:
            for rate, iv in (("accuracy", found[1]), ("agreement", found[2])):
                if iv is not None:
                    for bound in ("estimate", "low", "high"):
                        out[metrics.control_estimate, (model_id, name, rate, bound)] = float(
                            getattr(iv, bound))
        cm = book.classes.get(name)
        if cm is not None:
            for state in ClassState:
                out[metrics.mastery_state, (model_id, name, state.value)] = float(
                    cm.state is state)
    if names is None:
        out.update(stopping_series(metrics, policy, model_id, book))
    return out


def stopping_series(metrics: LabelSinkMetrics, policy: MasteryPolicy, model_id: str,
                    book: MasteryBook) -> dict[Series, float]:
    """The stopping signal's gauges: present once the model had a retrain trigger with control
    labels or a stability record (what a trigger's `stopping` needs). Query."""
    out: dict[Series, float] = {}
    stable = book.stable(policy)
    if book.plateau and book.plateau[-1].estimate is not None:
        out[metrics.control_model_accuracy, (model_id,)] = book.plateau[-1].estimate
    if stable is not None:
        out[metrics.probe_changed, (model_id,)] = float(stable["share"])
    if book.plateau or stable is not None:
        control = bool(book.stopped)
        by_stability = stable is not None and bool(stable["stopped"])
        out[metrics.stopping, (model_id,)] = float(control or by_stability)
        out[metrics.stopping_branch, (model_id, "control")] = float(control)
        out[metrics.stopping_branch, (model_id, "stability")] = float(by_stability)
    return out


class ModelGauges:
    """The series set per model (module doc). Commands only."""

    def __init__(self, metrics: LabelSinkMetrics, policy: MasteryPolicy) -> None:
        self.metrics, self.policy = metrics, policy
        self.series: dict[tuple[str, str], set[Series]] = {}  # (model, source) -> series

    def _set(self, key: tuple[str, str], values: dict[Series, float], *, replace: bool
             ) -> None:
        mine = self.series.setdefault(key, set())
        if replace:
            for gauge, labels in mine - values.keys():
                gauge.remove(*labels)
            mine.clear()
        for (gauge, labels), value in values.items():
            gauge.labels(*labels).set(value)
            mine.add((gauge, labels))

    def publish_book(self, model_id: str, book: MasteryBook,
                     names: Iterable[str] | None = None) -> None:
        """Set the gauges of `book`: of the classes `names` only, or (None) all of them,
        replacing every series of the model's book set before."""
        values = book_series(self.metrics, self.policy, model_id, book, names)
        self._set((model_id, BOOK), values, replace=names is None)

    def publish_stopping(self, model_id: str, book: MasteryBook) -> None:
        """Set the stopping signal's gauges of `book` (after a trigger or stability record)."""
        values = stopping_series(self.metrics, self.policy, model_id, book)
        self._set((model_id, BOOK), values, replace=False)

    def publish_agreement(self, model_id: str, state: TriggerState,
                          names: Iterable[str] | None = None) -> None:
        """Set `label_sink_agreement_ratio` from the all-time agreement of `state`: of the
        classes `names`, or (None) of every compared class, replacing the model's series."""
        tally = state.all_time
        values: dict[Series, float] = {}
        for name in sorted(tally.compared if names is None else names):
            share = tally.agreement(name)
            if share is not None:
                values[self.metrics.agreement, (model_id, name)] = share
        self._set((model_id, AGREEMENT), values, replace=names is None)

    def keep_only(self, models: set[str]) -> None:
        """Remove every series of the models not in `models` (their partition is another
        worker's now)."""
        for key in [k for k in self.series if k[0] not in models]:
            for gauge, labels in self.series.pop(key):
                gauge.remove(*labels)


def republish(gauges: ModelGauges, books: Iterable[tuple[str, Any]],
              states: Iterable[tuple[str, TriggerState]], owned: set[int], partitions: int
              ) -> set[str]:
    """Republish the gauges of every model whose labels-by-model partition is in `owned`, from
    the `mastery` table's rows (`books`: model_id -> snapshot) and the rebuilt trigger states,
    and drop every other model's. Returns the models republished."""
    models: set[str] = set()
    for model_id, data in books:
        if model_partition(model_id, partitions) in owned:
            gauges.publish_book(model_id, MasteryBook.from_snapshot(data))
            models.add(model_id)
    for model_id, state in states:
        if model_partition(model_id, partitions) in owned:
            gauges.publish_agreement(model_id, state)
            models.add(model_id)
    gauges.keep_only(models)
    return models
