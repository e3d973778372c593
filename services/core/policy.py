"""`SelectorPolicy`: every setting of the selection core in one frozen, documented object.

Defaults work untuned for a 10-class model on one partition: margin scores (top two
probabilities; top-1-only rows use least confidence), the most uncertain object decides a
multi-object asset, and every window of 50 assets (or 10 minutes of event time) grants a weighted
random draw of its candidates (weight = uncertainty ** 4: nearly its top where uncertainty is
spread, nearly a uniform sample where the model is unsure of everything), drawn through per-class
weighted reservoirs, under a budget of 2% of assets (at most 10 at once) and 1,000 labels/hour,
10% of it reserved for random exploration, a class using at most 1.5 / classes of the rest; an
asset is requested at most once per model version within 7 days of event time.

Why these (docs/label-efficiency.md): on the label-efficiency development suite the former
default (least confidence, the window's strict top, class caps of 3 / classes) lost to random
where the model stays weak (11 classes and 64 labels, 9 noisy classes, 30 classes); margin, the
powered draw and the tighter class cap are ahead of random on every set of it and on the
held-out sets measured, and far ahead of the former default where it lost (not everywhere: see
the doc).

Why the reservoir mode by default: ranking a window needs no calibrated threshold, so a model
retrained every few dozen labels is served by its newest uncertainties from its first asset, and
the label-efficiency benchmark measured it ahead of random on every data set tried, where the
immediate threshold mode (Žliobaitė's variable uncertainty plus a class-relative bottom-5% rule,
`mode="threshold"`, lower latency) only tied random under frequent retraining: each new version
is warmed up with random picks until its per-class stats hold 100 samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from services.core.budget import BudgetPolicy
from services.core.dedupe import DedupePolicy
from services.core.drift import DriftPolicy
from services.core.eventtime import EventTimePolicy
from services.core.feedback import FeedbackPolicy
from services.core.instances import InstancePolicy
from services.core.redundancy import RedundancyPolicy
from services.core.reservoir import ReservoirPolicy
from services.core.stats import ConfidenceStatsPolicy
from services.core.thresholds import ThresholdPolicy
from services.core.tracks import TrackPolicy
from services.core.uncertainty import MEASURES, Aggregation, Measure

SelectionMode = Literal["threshold", "reservoir"]


@dataclass(frozen=True)
class WarmupPolicy:
    """Cold start of a model version in the threshold mode (its thresholds need calibrated stats;
    the reservoir mode needs no warm-up): while its stats are not ready, each asset is picked at
    random with probability `rate`, at most `quota` picks per version (per partition). A version
    is ready when every class holding >= `rare_share` of its predictions has `min_count` of the
    stats policy; rarer classes never hold warm-up back. Readiness, once reached, sticks."""

    rate: float = 0.1
    quota: int = 100
    rare_share: float = 0.02

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0 or self.quota < 0 or not 0.0 <= self.rare_share <= 1.0:
            raise ValueError("rate and rare_share in [0, 1], quota >= 0 are required")


@dataclass(frozen=True)
class SelectorPolicy:
    """All selector settings (immutable; build variants with `dataclasses.replace`).

    `measure`: least_confidence | margin | entropy (top-1 rows always use least-confidence);
    `aggregation`: max | mean | topk (mean of the `top_k` largest) over an asset's predictions of
    one class, the asset taking its best class; `mode`: `threshold` selects immediately (variable
    uncertainty / fixed + class-relative), `reservoir` collects per-class weighted reservoirs and
    selects the top ones at each window flush. Exploration, warm-up and the random control arm
    run in both modes. `exploration_rate`: probability that exploration picks an asset (from the
    explore lane); None = 0.8 x the lane's share rate, so demand stays below supply and the lane
    rarely runs dry (the recorded inclusion probability stays honest); the lane's remaining
    tokens serve the control arm. `max_model_versions`, `max_models`, `max_classes` bound state
    memory (least recently seen versions/models are evicted when a new one arrives; classes past
    the cap share one `__other__` slot). `refresh_every`: the partition's class stats, readiness
    and sub-budget class counts are refreshed after every `refresh_every` assets (at absolute
    multiples, so never at a batch boundary); decisions in between use the last refresh (smaller:
    fresher stats, a few more numpy calls per batch). `event_time`: how far ahead of the
    partition's watermark an event may be (eventtime.py; the scorer dead-letters the others).
    `drift`: per-class confidence drift detection and its budget boost (drift.py).
    `redundancy`: near-duplicate suppression by `embedding` and a cap per `sequence_id`
    (redundancy.py; off by default). `tracks`: track instability by `track_id` joins uncertainty
    in the ranking with `tracks.weight` (tracks.py; weight 0 by default = off).
    `instances`: instance-level requests (instances.py; off by default); with
    `budget.cost = "instances"` the budget counts the instances a request names.
    """

    measure: Measure = "margin"
    aggregation: Aggregation = "max"
    top_k: int = 3
    mode: SelectionMode = "reservoir"
    thresholds: ThresholdPolicy = field(default_factory=ThresholdPolicy)
    reservoir: ReservoirPolicy = field(default_factory=ReservoirPolicy)
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)
    stats: ConfidenceStatsPolicy = field(default_factory=ConfidenceStatsPolicy)
    dedupe: DedupePolicy = field(default_factory=DedupePolicy)
    feedback: FeedbackPolicy = field(default_factory=FeedbackPolicy)
    warmup: WarmupPolicy = field(default_factory=WarmupPolicy)
    event_time: EventTimePolicy = field(default_factory=EventTimePolicy)
    drift: DriftPolicy = field(default_factory=DriftPolicy)
    redundancy: RedundancyPolicy = field(default_factory=RedundancyPolicy)
    tracks: TrackPolicy = field(default_factory=TrackPolicy)
    instances: InstancePolicy = field(default_factory=InstancePolicy)
    exploration_rate: float | None = None
    max_model_versions: int = 8
    max_models: int = 16
    max_classes: int = 1024
    refresh_every: int = 500

    def __post_init__(self) -> None:
        if self.measure not in MEASURES or self.aggregation not in ("max", "mean", "topk"):
            raise ValueError(f"bad measure/aggregation {self.measure!r}/{self.aggregation!r}")
        if self.mode not in ("threshold", "reservoir") or self.top_k < 1:
            raise ValueError(f"bad mode {self.mode!r} or top_k {self.top_k}")
        if self.exploration_rate is not None and not 0.0 <= self.exploration_rate <= 1.0:
            raise ValueError("exploration_rate must be in [0, 1] or None")
        if min(self.max_model_versions, self.max_models) < 1 or self.max_classes < 2:
            raise ValueError("max_model_versions, max_models >= 1 and max_classes >= 2 required")
        if self.refresh_every < 1:
            raise ValueError("refresh_every must be >= 1")
        if self.drift.enabled and self.drift.recent_buckets >= self.stats.buckets - 1:
            raise ValueError("drift.recent_buckets must leave stats.buckets a reference bucket")

    def exploration_probability(self) -> float:
        """Per-asset probability of an exploration pick (see `exploration_rate`). Query."""
        if self.exploration_rate is not None:
            return self.exploration_rate
        return 0.8 * self.budget.exploration_share * self.budget.share

    def for_partition(self, partition: int, partitions: int) -> SelectorPolicy:
        """The policy of input partition `partition` of `partitions` sharing this budget:
        `scaled(1 / partitions, slot=partition)`."""
        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} is not one of {partitions}")
        return self.scaled(1 / partitions, slot=partition)

    def scaled(self, fraction: float, slot: int = 0) -> SelectorPolicy:
        """The policy for one of several partitions sharing this budget: pass 1 / num_partitions
        and the partition's index as `slot` (or use `for_partition`).

        Budget rates and capacities, the warm-up quota, the control-arm size and a fixed reservoir
        top_k are multiplied by `fraction` (rounded up / floored at 1 so each partition still
        works); shares and thresholds are per partition already and stay. `slot` phases the
        time budget of lanes whose share of the burst is below one label (budget.py), so that
        the group's burst holds whatever the number of partitions.
        """
        def part(n: int) -> int:
            return 0 if n == 0 else max(1, math.ceil(n * fraction))

        res = self.reservoir
        top_k = None if res.top_k is None else part(res.top_k)
        return replace(
            self,
            budget=self.budget.scaled(fraction, slot),
            warmup=replace(self.warmup, quota=part(self.warmup.quota)),
            reservoir=replace(res, control_size=part(res.control_size), top_k=top_k),
        )


def with_overrides(base: object, overrides: Mapping[str, Any], where: str = "policy") -> Any:
    """`base` (a policy dataclass) with `overrides` applied, nested by sub-policy:
    {"mode": "threshold", "budget": {"share": 0.1}}. Pure. Raises ValueError naming the path of
    an unknown field or a value the policy rejects (e.g. "policy.budget: share must be ...")."""
    if not dataclasses.is_dataclass(base) or isinstance(base, type):
        raise TypeError("base must be a dataclass instance")
    names = {f.name for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"{where} has no field {key!r}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = with_overrides(current, value, f"{where}.{key}")
        elif dataclasses.is_dataclass(current):
            raise ValueError(f"{where}.{key} must be an object of settings")
        else:
            changes[key] = value
    try:
        return dataclasses.replace(base, **changes)  # type: ignore[type-var]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
