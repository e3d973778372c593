"""The scorer's metrics stay bounded whatever the stream names: class label values are capped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.scorer.metrics import MAX_CLASS_LABELS, ClassLabels, ScorerMetrics


def test_class_labels_past_the_cap_report_as_other() -> None:
    labels = ClassLabels(limit=3)
    assert [labels(n) for n in ("a", "b", "a", "c", "d", "b", "e")] == [
        "a", "b", "a", "c", "__other__", "b", "__other__"]


def test_a_stream_of_invented_class_names_grows_no_series_past_the_cap() -> None:
    registry = CollectorRegistry()
    metrics = ScorerMetrics(registry)
    for i in range(MAX_CLASS_LABELS + 500):
        metrics.selected.labels("reservoir", metrics.class_label(f"class-{i}")).inc()
    classes = {s.labels["class"] for m in registry.collect() if m.name == "scorer_selected"
               for s in m.samples if s.name == "scorer_selected_total"}
    assert len(classes) == MAX_CLASS_LABELS + 1 and "__other__" in classes
