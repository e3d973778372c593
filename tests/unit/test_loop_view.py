"""What the demo shows besides accuracy (services/evaluation/loop_view.py, cli.round_lines,
report's control-arm panel)."""

from __future__ import annotations

import json
from pathlib import Path

from services.evaluation import report
from services.evaluation.cli import round_lines
from services.evaluation.harness import SeedRun
from services.evaluation.kafka_loop import RoundReport
from services.evaluation.loop_view import (
    LoopView,
    spend_text,
    stable_text,
    states_text,
    tier_spend,
)


def change(seq: int, name: str, old: str, new: str) -> dict[str, object]:
    return {"seq": seq, "class": name, "from": old, "to": new, "at": 1.0,
            "model_version": "v3", "reason": "lower bounds 0.96, 0.97 >= 0.95"}


def test_spend_per_tier_sums_models_and_classes_in_tier_order() -> None:
    samples = {
        ("label_sink_tier_cost_units_total", (("class", "a"), ("model_id", "m"),
                                              ("tier", "consensus"))): 12.0,
        ("label_sink_tier_cost_units_total", (("class", "b"), ("model_id", "m"),
                                              ("tier", "consensus"))): 6.0,
        ("label_sink_tier_cost_units_total", (("class", "a"), ("model_id", "m"),
                                              ("tier", "review"))): 2.0,
        ("label_sink_tier_cost_units_total", (("class", "a"), ("model_id", "m"),
                                              ("tier", "annotate"))): 0.0,
        ("label_sink_tier_labels_total", (("tier", "review"),)): 2.0,
    }
    spend = tier_spend(samples)
    assert spend == {"review": 2.0, "consensus": 18.0}
    assert list(spend) == ["review", "consensus"]
    assert spend_text(spend) == "spend review 2 · consensus 18 units"
    assert spend_text({}) == ""


def test_view_reports_each_change_once_and_keeps_the_newest_estimate_per_version() -> None:
    view = LoopView()
    stopping = {"stopped": False, "window": 3, "min_gain": 0.005, "versions": [
        {"trigger_id": "t1", "model_version": "v1", "estimate": 0.9, "labels": 4,
         "low": 0.5, "high": 0.99},
        {"trigger_id": "t0", "model_version": "v0", "estimate": None, "labels": 0,
         "low": None, "high": None}]}
    first = view.trigger({"classes": {"a": "mastered", "b": "learning"},
                          "changes": [change(1, "a", "learning", "mastered")]}, stopping)
    assert [c["seq"] for c in first] == [1]
    again = view.trigger({"classes": {"a": "reopened", "b": "learning"},
                          "changes": [change(1, "a", "learning", "mastered"),
                                      change(2, "a", "mastered", "reopened")]}, None)
    assert [c["seq"] for c in again] == [2]  # the repeated change 1 is not shown twice
    assert view.states == {"a": "reopened", "b": "learning"}
    assert set(view.control) == {"v1"} and view.newest is not None
    assert view.newest.low == 0.5 and view.newest.labels == 4
    assert states_text({"a": "mastered", "b": "learning", "c": "learning"}) == \
        "classes 2 learning, 1 mastered"


def test_round_lines_show_changes_states_spend_and_the_estimate() -> None:
    view = LoopView()
    view.trigger(None, {"versions": [{"trigger_id": "t", "model_version": "v2",
                                      "estimate": 0.75, "labels": 4, "low": 0.3,
                                      "high": 0.95}]})
    r = RoundReport(0, 100, 1000, 10, 10, 100, 1, 0.9, "v3", {"a": "mastered", "b": "learning"},
                    (change(1, "a", "learning", "mastered"),), {"annotate": 9.0}, view.newest)
    lines = round_lines(r, triggered=True)
    assert lines[0] == ("  class a: learning -> mastered (model v3: lower bounds 0.96, 0.97 "
                        ">= 0.95)")
    assert lines[1] == ("  model v3: classes 1 learning, 1 mastered; spend annotate 9 units; "
                        "control-arm accuracy of v2 0.75 [0.30, 0.95] on 4 labels")
    assert round_lines(r, triggered=False) == lines[:1]


def test_round_lines_show_the_stability_branch() -> None:
    view = LoopView()
    stable = {"stopped": True, "model_version": "v4", "probes": 300, "changed": 2,
              "share": 2 / 300, "partitions": 1, "threshold": 0.01, "min_probes": 100}
    view.trigger(None, {"stopped": True, "window": 3, "min_gain": 0.005, "versions": [],
                        "stable": stable})
    view.trigger(None, {"stopped": False, "window": 3, "min_gain": 0.005, "versions": []})
    assert view.stable == stable  # a trigger without the branch keeps the last one seen
    r = RoundReport(0, 100, 1000, 10, 10, 100, 1, 0.9, "v5", None, (), None, None,
                    view.stable)
    assert round_lines(r, triggered=True) == [
        "  model v5: v4 changed 2 of 300 probes (0.7%): predictions stable, stop"]
    assert stable_text({**stable, "stopped": False}) == "v4 changed 2 of 300 probes (0.7%)"
    assert stable_text(None) == ""


def test_results_keep_each_seeds_estimates_and_the_plot_gains_their_panel(
        tmp_path: Path) -> None:
    control = [{"labels": 60, "model_version": "v1", "estimate": 0.9, "low": 0.6, "high": 0.98,
                "control_labels": 5}]
    runs = [SeedRun("active-stream", 0, 20, [(50, 0.8), (60, 0.85)], 1.0, {}, [], control),
            SeedRun("random", 0, 20, [(50, 0.8), (60, 0.82)], 1.0)]
    results = report.summarize(runs, {"seed_labels": 50, "seeds": 1})
    assert results["strategies"]["active-stream"]["control_estimate_per_seed"] == [control]
    assert "control_estimate_per_seed" not in results["strategies"]["random"]
    json.dumps(results)
    with_panel, without = tmp_path / "a.png", tmp_path / "b.png"
    report.plot(results, with_panel, "t")
    del results["strategies"]["active-stream"]["control_estimate_per_seed"]
    report.plot(results, without, "t")
    from matplotlib.image import imread
    assert imread(with_panel).shape[0] > imread(without).shape[0]  # a second panel below
