"""Every metric the Grafana dashboard queries (deploy/grafana/dashboards/active-stream.json) is
one the services export, with the labels it groups and filters by; counters read with `_total`,
histograms with `_bucket`/`_sum`/`_count` (tests/prometheus_support.py)."""

from __future__ import annotations

import json
from typing import Any

from tests.prometheus_support import (
    DASHBOARD,
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


def layout_problems(panels: list[dict[str, Any]]) -> list[str]:
    """One line per panel id used twice, per panel off Grafana's 24-column grid, and per pair of
    panels whose gridPos rectangles overlap (Grafana would push one down, out of its row)."""
    problems = []
    ids = [p["id"] for p in panels]
    problems += [f"id {i} is used {ids.count(i)} times" for i in sorted(set(ids))
                 if ids.count(i) > 1]
    boxes = [(p["title"], p["gridPos"]) for p in panels]
    problems += [f"{t}: {g} is off the 24-column grid" for t, g in boxes
                 if g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24 or g["h"] < 1]
    for i, (a, ga) in enumerate(boxes):
        for b, gb in boxes[i + 1:]:
            if (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                    and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]):
                problems.append(f"{a} {ga} overlaps {b} {gb}")
    return problems


def test_the_dashboard_panels_tile_without_overlapping() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 45
    assert layout_problems(panels) == []


def test_a_panel_placed_over_another_is_reported() -> None:
    def panel(i: int, x: int, y: int, w: int = 8) -> dict[str, Any]:
        return {"id": i, "title": f"p{i}", "gridPos": {"h": 8, "w": w, "x": x, "y": y}}

    assert layout_problems([panel(1, 0, 0), panel(2, 8, 0), panel(3, 0, 8)]) == []
    assert layout_problems([panel(1, 0, 0), panel(2, 4, 4)]) == [
        "p1 {'h': 8, 'w': 8, 'x': 0, 'y': 0} overlaps p2 {'h': 8, 'w': 8, 'x': 4, 'y': 4}"]
    assert layout_problems([panel(1, 20, 0)]) == [
        "p1: {'h': 8, 'w': 8, 'x': 20, 'y': 0} is off the 24-column grid"]
    assert layout_problems([panel(1, 0, 0), panel(1, 8, 0)]) == ["id 1 is used 2 times"]


def test_the_issue_18_panels_read_the_mastery_tier_and_stopping_metrics() -> None:
    """The row for class mastery, control-arm estimates, stopping and tier spend is there and
    queries each of those metrics (a panel dropped or renamed away fails here)."""
    read = set().union(*(names_in(expr).metrics for _, expr in dashboard_exprs()))
    assert {
        "label_sink_mastery_state", "label_sink_mastery_changes_total",
        "label_sink_control_estimate_ratio", "label_sink_control_labels_total",
        "label_sink_control_model_accuracy_ratio", "label_sink_stopping_signal",
        "label_sink_stopping_branch_signal", "label_sink_probe_changed_ratio",
        "label_sink_drift_reports_total",
        "label_sink_stability_records_total", "label_sink_tier_cost_units_total",
        "label_sink_tier_labels_total", "label_sink_consensus_decisions_total",
        "scorer_class_drift_total", "scorer_class_drift_boost_ratio",
        "scorer_probe_changed_ratio", "scorer_probe_events_total",
        "scorer_requests_by_tier_total", "scorer_tier_withheld_total", "scorer_class_weight",
    } <= read
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert "Label sink: mastery, tiers, estimates, stopping" in titles
