"""Instance-level requests and the instance cost of a request (issue 16, item 3).

A detector's frame holds many objects; the model is sure of most of them. With
`InstancePolicy.requests` on, a request names the instances to annotate -- the uncertain ones --
instead of asking for the whole frame. The instances of asset i are its predictions whose
priority (uncertainty, class weight and track instability together, view.py) is at least
`min_uncertainty`, every prediction that drove the selection, and every prediction whose track
was found unstable (tracks.py); at most `max_instances` of them, the highest priority first
(ties: the earlier prediction), listed in prediction order.

The cost of a request (`BudgetPolicy.cost`): `assets` -- 1; `instances` -- the number of
instances it names with instance-level requests on, else every prediction of the asset (the
annotator labels the whole frame); at least 1 (a frame without predictions is still one look).

Pure functions of one asset's predictions and the state's weights and track memory, never of
its batch-mates, so selections and costs are invariant to batch boundaries (view.py).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InstancePolicy:
    """Settings (see the module docstring). Off by default: requests keep their exact bytes."""

    requests: bool = False
    min_uncertainty: float = 0.5
    max_instances: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_uncertainty <= 1.0:
            raise ValueError("min_uncertainty must be in [0, 1]")
        if not 1 <= self.max_instances <= 1000:
            raise ValueError("max_instances must be in [1, 1000]")


def targets(policy: InstancePolicy, priority: np.ndarray, lo: int, hi: int,
            drivers: Sequence[int], unstable: Collection[int]) -> tuple[int, ...]:
    """The prediction rows (batch indices, lo <= row < hi) of one asset to annotate, in row
    order: drivers, unstable rows and rows with priority >= min_uncertainty, at most
    `max_instances` (highest priority first, ties to the earlier row). Pure."""
    rows = set(drivers) | {r for r in unstable if lo <= r < hi}
    rows.update((lo + np.flatnonzero(priority[lo:hi] >= policy.min_uncertainty)).tolist())
    if len(rows) > policy.max_instances:
        # Drivers first: they are why the asset was chosen; then by priority, earlier first.
        drive = set(drivers)
        ranked = sorted(rows, key=lambda r: (r not in drive, -float(priority[r]), r))
        rows = set(ranked[: policy.max_instances])
    return tuple(sorted(rows))


def cost(unit: str, n_predictions: int, n_targets: int | None) -> int:
    """Budget units one request spends (module docstring): 1 for `assets`; for `instances`
    the named instances (`n_targets`, when instance-level requests are on) or every
    prediction, at least 1. Pure."""
    if unit == "assets":
        return 1
    return max(1, n_predictions if n_targets is None else n_targets)
