"""The ablations `--ablate` runs beside the default policy: each changes one part of it.

Names say what changes; values are `SelectorPolicy` overrides (as --policy-json takes them) on
top of the run's own policy. docs/label-efficiency.md reports what each part costs and gains.
"""

from __future__ import annotations

from typing import Any

ABLATIONS: dict[str, dict[str, Any]] = {
    # the window the reservoirs rank (default 50 assets)
    "window-20": {"reservoir": {"window_assets": 20}},
    "window-200": {"reservoir": {"window_assets": 200}},
    # class feedback: every class weighs 1 whatever the humans' agreement
    "no-feedback": {"feedback": {"min_weight": 1.0, "max_weight": 1.0}},
    # per-class sub-budgets (a class may use 3 x weight / classes of the exploit lane) lifted
    "no-class-caps": {"budget": {"class_cap_factor": 1000.0}},
    # the exploration share of the budget (default 10%)
    "explore-0": {"budget": {"exploration_share": 0.0}},
    "explore-30": {"budget": {"exploration_share": 0.3}},
    # the flush: a weighted random sample (weight = uncertainty ** power) instead of the top
    "flush-power-1": {"reservoir": {"power": 1.0}},
    "flush-power-4": {"reservoir": {"power": 4.0}},
    # the uncertainty measure (default least confidence)
    "margin": {"measure": "margin"},
    "entropy": {"measure": "entropy"},
    # immediate thresholds: variable uncertainty + per-class quantile thresholds
    "threshold": {"mode": "threshold"},
    # not one part: the best combination found so far (docs/label-efficiency.md), kept here so
    # that every suite run measures it beside the default on the same seeds
    "margin-caps-1.5-power-4": {"measure": "margin", "budget": {"class_cap_factor": 1.5},
                                "reservoir": {"power": 4.0}},
}
