"""Every metric the Grafana dashboard queries (deploy/grafana/dashboards/active-stream.json) is
one the services export, with the labels it groups and filters by; counters read with `_total`,
histograms with `_bucket`/`_sum`/`_count` (tests/prometheus_support.py)."""

from __future__ import annotations

from tests.prometheus_support import (
    PROMETHEUS_SERIES,
    TARGET_LABELS,
    dashboard_exprs,
    exported,
    names_in,
)


def unknown_names(exprs: list[tuple[str, str]]) -> list[str]:
    """One line per metric no service exports, and per label that none of the expression's
    metrics carries (besides job and instance, which Prometheus adds to every target)."""
    known = exported() | PROMETHEUS_SERIES
    problems = []
    for where, expr in exprs:
        names = names_in(expr)
        problems += [f"{where}: metric {m} is not exported"
                     for m in sorted(names.metrics - set(known))]
        labels = set(TARGET_LABELS).union(*(known[m] for m in names.metrics if m in known))
        problems += [f"{where}: label {lab} is on none of {sorted(names.metrics)}"
                     for lab in sorted(names.labels - labels)]
    return problems


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 30
    assert unknown_names(exprs) == []


def test_exported_names_carry_the_suffixes_prometheus_sees() -> None:
    names = exported()
    assert names["scorer_events_consumed_total"] == frozenset()
    assert "scorer_events_consumed" not in names
    assert names["scorer_events_invalid_total"] == {"reason"}
    assert names["scorer_batch_duration_seconds_bucket"] == {"le"}
    assert {"scorer_batch_duration_seconds_sum", "scorer_batch_duration_seconds_count",
            "label_sink_turnaround_seconds_bucket", "label_sink_agreement_ratio"} <= set(names)
    assert names["label_sink_labels_total"] == {"model_id", "class"}


def test_names_in_reads_selectors_groupings_and_skips_functions() -> None:
    names = names_in(
        'histogram_quantile(0.99, sum by (le) (rate(scorer_batch_duration_seconds_bucket'
        '{job="active-stream-scorer", reason=~"a|b"}[$__rate_interval]))) > 1'
        ' and on () max(label_sink_agreement_ratio offset 1d) or vector(0)')
    assert names.metrics == {"scorer_batch_duration_seconds_bucket", "label_sink_agreement_ratio"}
    assert names.labels == {"le", "job", "reason"}
    assert names_in("sum(up)").metrics == {"up"}


def test_a_misspelt_metric_or_label_is_reported() -> None:
    assert unknown_names([("p", "sum(rate(scorer_events_consumed[5m]))")]) == [
        "p: metric scorer_events_consumed is not exported"]
    assert unknown_names([("p", "sum by (lane) (scorer_events_invalid_total)")]) == [
        "p: label lane is on none of ['scorer_events_invalid_total']"]
    assert unknown_names([("p", 'label_sink_turnaround_seconds{job="x"}')]) == [
        "p: metric label_sink_turnaround_seconds is not exported"]
