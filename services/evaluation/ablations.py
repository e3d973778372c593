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
    # per-class sub-budgets (a class may use 1.5 x weight / classes of the exploit lane)
    # lifted, or at the former default's 3 x weight / classes
    "no-class-caps": {"budget": {"class_cap_factor": 1000.0}},
    "class-caps-3": {"budget": {"class_cap_factor": 3.0}},
    # the exploration share of the budget (default 10%)
    "explore-0": {"budget": {"exploration_share": 0.0}},
    "explore-30": {"budget": {"exploration_share": 0.3}},
    # the flush: the window's strict top, or a weighted draw of another power (default 4)
    "strict-top": {"reservoir": {"power": None}},
    "flush-power-1": {"reservoir": {"power": 1.0}},
    # the power following the windows' uncertainty level (ReservoirPolicy.power_at), up to 4
    "adaptive-power-3": {"reservoir": {"adaptive": 3.0}},
    # the uncertainty measure (default margin)
    "least-confidence": {"measure": "least_confidence"},
    "entropy": {"measure": "entropy"},
    # immediate thresholds: variable uncertainty + per-class quantile thresholds
    "threshold": {"mode": "threshold"},
    # the default before issue 15 (least confidence, strict top, class caps of 3 / classes), kept
    # so that every suite run measures it beside the default on the same seeds
    "former-default": {"measure": "least_confidence", "budget": {"class_cap_factor": 3.0},
                       "reservoir": {"power": None}},
}
