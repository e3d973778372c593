"""Class feedback weights: weak classes get more budget, mastered classes less, never zero.

Human-model agreement per class (from the label sink) is shrunk towards a prior by its label count,
turned into an error rate, and divided by the mean error over the reported classes, then clipped to
[min_weight, max_weight]: a class erring twice as often as the average weighs ~2, a class the model
has mastered weighs min_weight (> 0), so it is still sampled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeedbackPolicy:
    """Settings. `prior_agreement` / `prior_labels`: pseudo-labels each class starts with;
    `min_weight` > 0 and `max_weight`: the clip range of the weights."""

    prior_agreement: float = 0.8
    prior_labels: float = 20.0
    min_weight: float = 0.2
    max_weight: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 < self.min_weight <= 1.0 <= self.max_weight:
            raise ValueError("0 < min_weight <= 1 <= max_weight is required")
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
