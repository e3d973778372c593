"""Class feedback weights: weak classes get more budget, mastered classes less, never zero.

Human-model agreement per class (from the label sink) is shrunk towards a prior by its label count,
turned into an error rate, and divided by the mean error over the reported classes, then clipped to
[min_weight, max_weight]: a class erring twice as often as the average weighs ~2, a class the model
has mastered weighs min_weight (> 0), so it is still sampled.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeedbackPolicy:
    """Settings. `prior_agreement` / `prior_labels`: pseudo-labels each class starts with;
    `min_weight` > 0 and `max_weight`: the clip range of the weights; `mastered_weight`
    (0 < it <= min_weight): the weight of a mastered class (`with_mastery`), small enough that
    the exploit lane all but ignores it and only exploration samples it."""

    prior_agreement: float = 0.8
    prior_labels: float = 20.0
    min_weight: float = 0.2
    max_weight: float = 5.0
    mastered_weight: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 < self.min_weight <= 1.0 <= self.max_weight:
            raise ValueError("0 < min_weight <= 1 <= max_weight is required")
        if not 0.0 < self.mastered_weight <= self.min_weight:
            raise ValueError("0 < mastered_weight <= min_weight is required")
        if not 0.0 <= self.prior_agreement <= 1.0 or self.prior_labels < 0:
            raise ValueError("prior_agreement in [0, 1] and prior_labels >= 0 are required")


def weights_from_agreement(policy: FeedbackPolicy, agreement: Mapping[str, float],
                           label_counts: Mapping[str, float] | None = None) -> dict[str, float]:
    """Per class in `agreement` (fractions in [0, 1]): its weight in [min_weight, max_weight].

    Classes without a label count get `prior_labels` labels of weight. All-agreeing input gives
    every class weight 1 (nothing to rebalance). Pure and deterministic (sorted class order).
    """
    names = sorted(agreement)
    if not names:
        return {}
    a = np.clip(np.array([float(agreement[c]) for c in names]), 0.0, 1.0)
    counts = label_counts or {}
    n = np.array([float(counts.get(c, policy.prior_labels)) for c in names])
    shrunk = (n * a + policy.prior_labels * policy.prior_agreement) / np.maximum(
        n + policy.prior_labels, 1e-12)
    err = 1.0 - shrunk
    mean_err = float(err.mean())
    w = err / mean_err if mean_err > 1e-12 else np.ones_like(err)
    w = np.clip(w, policy.min_weight, policy.max_weight)
    return {c: float(x) for c, x in zip(names, w, strict=True)}


def with_mastery(policy: FeedbackPolicy, weights: Mapping[str, float],
                 mastered: Collection[str]) -> dict[str, float]:
    """`weights` with every mastered class set to `mastered_weight` and the weight it frees
    spread over the other classes in proportion to theirs (each capped at `max_weight`), so the
    sum of the weights, hence the budget the class sub-budgets divide, stays the same: the
    budget a mastered class no longer takes goes to the classes still learning. Pure."""
    out = {c: float(w) for c, w in sorted(weights.items())}
    done = [c for c in out if c in mastered]
    rest = [c for c in out if c not in mastered]
    if not done:
        return out
    total = sum(out.values())
    for c in done:
        out[c] = policy.mastered_weight
    others = sum(out[c] for c in rest)
    if others > 0:
        scale = (total - policy.mastered_weight * len(done)) / others
        for c in rest:
            out[c] = min(out[c] * scale, policy.max_weight)
    return out
