"""What `active-stream demo` shows a person besides accuracy: each class's mastery state as it
changes, the spend per labeling tier, and the control-arm accuracy estimate of each model version.

`LoopView` folds what the closed loop reads anyway -- retrain triggers (their `mastery.changes`
and `stopping.versions`) and the label sink's class feedback (each class's `state`) -- plus the
sink's `label_sink_tier_cost_units_total` metric; `lines` formats a round's news for the
progress display. Pure: no Kafka, no clock; the loop hands it decoded events and scraped samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.core.tiers import TIERS

LEARNING = "learning"
"""The state of a class the sink has not judged (feedback without `state`)."""


def tier_spend(samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]
               ) -> dict[str, float]:
    """Cost units spent per tier, summed over models and classes, from the label sink's scraped
    `label_sink_tier_cost_units_total{model_id,tier,class}`; tiers without spend are left out."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "label_sink_tier_cost_units_total" and value:
            tier = dict(labels).get("tier", "")
            out[tier] = out.get(tier, 0.0) + value
    return {t: out[t] for t in TIERS if t in out} | {t: v for t, v in out.items()
                                                      if t not in TIERS}


@dataclass(frozen=True)
class ControlPoint:
    """One model version's overall control-arm accuracy estimate at its latest trigger."""

    version: str
    estimate: float
    low: float
    high: float
    labels: int


class LoopView:
    """Mastery states, their changes and the control-arm estimates seen so far (one model)."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.seen_seq = 0  # changes are numbered per model; the triggers repeat the last 16
        self.control: dict[str, ControlPoint] = {}  # model version -> its latest estimate
        self.newest: ControlPoint | None = None  # the estimate the last trigger updated
        self.stable: Mapping[str, Any] | None = None  # the last trigger's stopping.stable

    def trigger(self, mastery: Mapping[str, Any] | None, stopping: Mapping[str, Any] | None
                ) -> list[Mapping[str, Any]]:
        """Fold one retrain trigger's optional fields; returns its changes not seen before."""
        new = []
        if mastery is not None:
            for change in mastery["changes"]:
                if change["seq"] > self.seen_seq:
                    new.append(change)
            self.seen_seq = max([self.seen_seq, *(c["seq"] for c in new)])
            self.states.update(mastery["classes"])
        if stopping is not None and stopping.get("stable") is not None:
            self.stable = stopping["stable"]
        for entry in (stopping or {}).get("versions", ()):
            if entry["estimate"] is not None and entry.get("low") is not None:
                point = ControlPoint(entry["model_version"], entry["estimate"], entry["low"],
                                     entry["high"], entry["labels"])
                self.control[point.version] = self.newest = point
        return new

    def feedback(self, classes: Mapping[str, Any]) -> None:
        """Fold the sink's class feedback (name -> ClassStats): the current state of each class."""
        for name, stats in classes.items():
            self.states[name] = getattr(stats, "state", None) or LEARNING


def states_text(states: Mapping[str, str]) -> str:
    """`classes 7 learning, 3 mastered` (states in their lifecycle order; '' without any)."""
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    order = [s for s in ("learning", "mastered", "reopened") if s in counts]
    return "classes " + ", ".join(f"{counts[s]} {s}" for s in order) if order else ""


def stable_text(stable: Mapping[str, Any] | None) -> str:
    """`v4 changed 2 of 300 probes (0.7%): predictions stable, stop` ('' without the branch)."""
    if not stable:
        return ""
    verdict = ": predictions stable, stop" if stable["stopped"] else ""
    return (f"{stable['model_version']} changed {stable['changed']} of {stable['probes']} "
            f"probes ({stable['share']:.1%}){verdict}")


def spend_text(spend: Mapping[str, float]) -> str:
    """`spend review 12 · annotate 210 · consensus 36 units` ('' without tiers)."""
    if not spend:
        return ""
    return "spend " + " · ".join(f"{t} {v:g}" for t, v in spend.items()) + " units"


def change_lines(changes: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per change of state, with the rule that made it."""
    return [f"  class {c['class']}: {c['from']} -> {c['to']} (model {c['model_version']}: "
            f"{c['reason']})" for c in changes]
