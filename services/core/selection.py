"""What `select` returns: one `Selected` per asset to annotate, collected in a `Selection`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STRATEGIES: tuple[str, ...] = (
    "variable_uncertainty", "fixed", "class_relative", "reservoir", "random_control", "warmup",
    "exploration",
)


@dataclass(frozen=True, slots=True)
class Selected:
    """One selected asset.

    `ref`: the caller's value for the asset. `asset_index`: its index in the current batch, or -1
    when it comes from an earlier batch (a reservoir flush). `strategy`: one of STRATEGIES.
    `score`: uncertainty in [0, 1] of the predictions that drove it. `threshold`: the bar it
    passed at decision time, or None: an uncertainty threshold for variable_uncertainty / fixed
    (score-space), a top-1 confidence threshold for class_relative (selected below it).
    `class_name`: the class that drove it (None for an asset without predictions).
    `driving_predictions`: positions in the event's `predictions`. `priority`: in [0, 1], the
    class-weighted score used for ordering. `inclusion_probability`: the design probability of a
    random arm (warmup, exploration, random_control) selecting this asset, else None.
    `event_time`: the asset's event time (epoch s). `track`: when track instability drove the
    driving prediction, which track, signals, score and frames (tracks.Instability.to_json).
    `targets`: with instance-level requests on (instances.py), the positions in the event's
    `predictions` of the instances to annotate, else None. `cost`: the budget units the
    selection spent (1 unless the budget counts instances).
    """

    ref: Any
    asset_index: int
    model_id: str
    model_version: str
    strategy: str
    score: float
    threshold: float | None
    class_name: str | None
    driving_predictions: tuple[int, ...]
    priority: float
    inclusion_probability: float | None
    event_time: float
    track: Mapping[str, Any] | None = None
    targets: tuple[int, ...] | None = None
    cost: int = 1

    def to_json(self) -> list[Any]:
        """JSON-able list form (used for deferred candidates held in snapshots); `track` only
        when set, and {targets, cost} only when either is set, so other selections keep their
        form."""
        out = [self.ref, self.asset_index, self.model_id, self.model_version, self.strategy,
               self.score, self.threshold, self.class_name, list(self.driving_predictions),
               self.priority, self.inclusion_probability, self.event_time]
        extra = self.targets is not None or self.cost != 1
        if self.track is not None or extra:
            out.append(None if self.track is None else dict(self.track))
        if extra:
            out.append({"targets": None if self.targets is None else list(self.targets),
                        "cost": self.cost})
        return out

    @classmethod
    def from_json(cls, data: list[Any]) -> Selected:
        fields = list(data)
        fields[8] = tuple(fields[8])
        if len(fields) > 13:
            extra = fields.pop(13)
            targets = extra.get("targets")
            fields += [None if targets is None else tuple(targets), int(extra.get("cost", 1))]
        return cls(*fields)


@dataclass(frozen=True)
class Selection:
    """The decisions of one batch: selected assets in decision order (deferred flushes first).
    `suppressed`: exploit-lane candidates skipped as redundant, by reason (redundancy.py; empty
    unless a redundancy gate is on)."""

    selected: tuple[Selected, ...]
    n_assets: int
    n_predictions: int
    suppressed: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.selected)

    def by_strategy(self) -> dict[str, int]:
        """Count of selections per strategy name. Query."""
        return dict(Counter(s.strategy for s in self.selected))
