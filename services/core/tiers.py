"""Labeling tiers: which kind of human work a selected asset gets, what it costs, and a budget
stated in cost units.

Tiers, cheapest first:

- `review`: an annotator confirms or corrects the model's pre-label (cheap; anchored on the
  pre-label, so kept for assets the model is fairly sure of);
- `annotate`: a full annotation from scratch;
- `consensus`: `k` independent annotations of the same asset; the label sink decides by
  agreement (`quorum` equal answers) and escalates a disagreement to
- `expert`: one annotation by a referee (the sink asks for it, never the scorer).

`assign_tier` is the rule, a pure function of (uncertainty band, class state, human-model
disagreement of the class, track instability where the stream has tracks, selection strategy).
`CostGate` is the optional budget in cost units: a token bucket over event time whose tokens are
cost units; a request whose tier it cannot afford is moved down to the dearest tier it can, and
withheld when not even `review` fits (the gate is never overspent). No clock, no RNG: same
inputs, same tiers, and the gate's `snapshot()` restores it exactly.

Off by default: the scorer builds no tier policy unless configured, and then requests carry no
`tier` field at all (byte-identical to before tiers existed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.core.budget import TokenBucket

TIERS: tuple[str, ...] = ("review", "annotate", "consensus", "expert")
"""Every tier, cheapest kind of work first. `expert` is only ever asked for by the label sink."""
SCORER_TIERS: tuple[str, ...] = ("review", "annotate", "consensus")
CLASS_STATES: tuple[str, ...] = ("learning", "mastered", "reopened")
UNKNOWN_STATE = "learning"
"""The state of a class nobody has judged yet (class feedback without a state, or none)."""
UNBIASED_STRATEGIES: frozenset[str] = frozenset({"random_control"})
"""Arms whose labels feed unbiased estimates: never `review` (a pre-label anchors the human)."""


def _default_costs() -> dict[str, float]:
    # Relative costs of one label, in the units of the budget. Defaults follow the usual ratio of
    # confirming a pre-label to drawing it from scratch (~1:3) and a referee at ~2.5 annotations.
    return {"review": 1.0, "annotate": 3.0, "consensus": 3.0, "expert": 8.0}


@dataclass(frozen=True)
class TierPolicy:
    """Tier rule settings (immutable).

    Uncertainty bands are on the selection score in [0, 1] (1 = most uncertain): below
    `review_below` the pre-label is reviewed, from `consensus_from` on it goes to consensus, in
    between it is annotated. A class whose human-model disagreement (1 - agreement, from class
    feedback) is at least `disagreement_consensus` sends its non-review band to consensus; a track
    whose instability (class flips, identity switches; [0, 1]) reaches `instability_consensus`
    goes to consensus whatever its band. A `mastered` class is reviewed below `consensus_from`
    (`mastered_review`); a `reopened` class is never reviewed (its pre-labels are suspect).
    Assets of an unbiased arm (UNBIASED_STRATEGIES) are annotated whatever else holds.
    `costs`: cost of ONE label per tier; a consensus request costs `consensus_k` x
    costs["consensus"]. `quorum`: equal answers that decide a consensus (default: a majority of
    `consensus_k`, so unanimity for k = 2). `expert_priority`: priority of escalations.
    """

    # Defaults measured with bench/tiers_sweep.py (docs/tiers.md, "Choosing the default"): over
    # 20 seeds each of digits, segments and an imbalanced synthetic stream, reviewing below 0.55
    # kept the paired accuracy within noise of annotating everything on all three while a wider
    # band lost ~1 pt on segments (0.6) or ~2 pt on the synthetic one (0.7); a consensus band
    # cost ~5% more on digits and bought nothing measurable, even with a 25%-error crowd, so
    # by default only disagreement and track instability (or a score of exactly 1) reach it.
    review_below: float = 0.55
    consensus_from: float = 1.0
    disagreement_consensus: float = 0.4
    instability_consensus: float = 0.5
    mastered_review: bool = True
    consensus_k: int = 2
    quorum: int | None = None
    costs: Mapping[str, float] = field(default_factory=_default_costs)
    expert_priority: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_below <= self.consensus_from <= 1.0:
            raise ValueError("0 <= review_below <= consensus_from <= 1 is required")
        if not 0.0 <= self.disagreement_consensus <= 1.0 or \
                not 0.0 <= self.instability_consensus <= 1.0:
            raise ValueError("disagreement_consensus and instability_consensus in [0, 1]")
        if not 2 <= self.consensus_k <= 9:
            raise ValueError("consensus_k must be in [2, 9]")
        if self.quorum is not None and not 1 <= self.quorum <= self.consensus_k:
            raise ValueError("quorum must be in [1, consensus_k]")
        if set(self.costs) != set(TIERS) or \
                any(not (math.isfinite(c) and c > 0) for c in self.costs.values()):
            raise ValueError(f"costs needs a finite positive cost for each of {TIERS}")
        if not 0.0 <= self.expert_priority <= 1.0:
            raise ValueError("expert_priority must be in [0, 1]")

    @property
    def agreement_quorum(self) -> int:
        """Equal answers needed to decide a consensus request."""
        return self.quorum if self.quorum is not None else self.consensus_k // 2 + 1

    def labels_per_request(self, tier: str) -> int:
        """How many labels one request of `tier` asks for."""
        return self.consensus_k if tier == "consensus" else 1

    def request_cost(self, tier: str) -> float:
        """Cost units one request of `tier` spends when all its labels come back. Query."""
        return self.costs[tier] * self.labels_per_request(tier)


def assign_tier(policy: TierPolicy, score: float, class_state: str | None = None,
                disagreement: float | None = None, instability: float | None = None,
                strategy: str | None = None) -> str:
    """The tier of one selected asset. Pure.

    `score`: its uncertainty in [0, 1]; `class_state`: its class's state (None or unknown ->
    `learning`); `disagreement`: the class's human-model disagreement in [0, 1], None when not
    known (no rule fires on it); `instability`: its track's instability in [0, 1], None for
    assets without tracks; `strategy`: the arm that selected it. Returns one of SCORER_TIERS.
    """
    if strategy in UNBIASED_STRATEGIES:
        return "annotate"
    state = class_state if class_state in CLASS_STATES else UNKNOWN_STATE
    if instability is not None and instability >= policy.instability_consensus:
        return "consensus"
    if score >= policy.consensus_from:
        return "consensus"
    review = score < policy.review_below or (state == "mastered" and policy.mastered_review)
    if state == "reopened":
        review = False
    if review:
        return "review"
    if disagreement is not None and disagreement >= policy.disagreement_consensus:
        return "consensus"
    return "annotate"


@dataclass(frozen=True)
class CostBudgetPolicy:
    """A budget in cost units over event time: `units_per_hour` refill, `burst` capacity (the
    hard cap of any window of d seconds is burst + units_per_hour x d / 3600). For one partition
    of P, use `scaled(1 / P)`."""

    units_per_hour: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.units_per_hour >= 0 and self.burst > 0):
            raise ValueError("units_per_hour >= 0 and burst > 0 are required")

    def scaled(self, fraction: float) -> CostBudgetPolicy:
        if not 0.0 < fraction <= 1.0:
            raise ValueError("fraction must be in (0, 1]")
        return CostBudgetPolicy(self.units_per_hour * fraction, self.burst * fraction)


_DOWNGRADE = {"consensus": ("consensus", "annotate", "review"),
              "annotate": ("annotate", "review"), "review": ("review",)}


class CostGate:
    """The cost budget's token bucket (starts full). Not thread-safe; deterministic."""

    def __init__(self, policy: CostBudgetPolicy) -> None:
        self.policy = policy
        self.bucket = TokenBucket(policy.burst, 0.0)

    def afford(self, tiers: TierPolicy, tier: str, watermark: float) -> str | None:
        """Spend the cost of `tier` at event time `watermark`, or of the first cheaper tier the
        bucket holds enough for; returns the tier granted, None (nothing spent) if none fits.
        Command. Watermarks behind the last one refill nothing (monotone coordinate)."""
        rate, cap = self.policy.units_per_hour / 3600.0, self.policy.burst
        level = self.bucket.level_at(watermark, rate, cap)
        for option in _DOWNGRADE[tier]:
            cost = tiers.request_cost(option)
            if level >= cost:
                self.bucket.level = level - cost
                self.bucket.coord = max(watermark, self.bucket.coord)
                return option
        return None

    def remaining(self, watermark: float) -> float:
        """Cost units available at `watermark`. Query."""
        return self.bucket.level_at(watermark, self.policy.units_per_hour / 3600.0,
                                    self.policy.burst)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able and exact."""
        return {"level": self.bucket.level, "coord": self.bucket.coord}

    @classmethod
    def from_snapshot(cls, policy: CostBudgetPolicy, data: Mapping[str, Any]) -> CostGate:
        gate = cls(policy)
        gate.bucket = TokenBucket(min(float(data["level"]), policy.burst), float(data["coord"]))
        return gate


MAX_TIER_MODELS = 256
"""Models whose class inputs a router keeps (least recently updated dropped first)."""
MAX_TIER_CLASSES = 1024
"""Classes per model a router keeps (feedback beyond it is ignored for tiers: `learning`)."""


class TierRouter:
    """One input partition's tiering: the rule, the optional cost gate, and the class inputs
    (state, human-model disagreement) class feedback gave per (model, class). Bounded by
    MAX_TIER_MODELS x MAX_TIER_CLASSES; `snapshot()`/`from_snapshot()` restore it exactly."""

    def __init__(self, policy: TierPolicy, budget: CostBudgetPolicy | None = None) -> None:
        self.policy = policy
        self.gate = None if budget is None else CostGate(budget)
        self.classes: dict[str, dict[str, tuple[str | None, float | None]]] = {}
        self.withheld = 0  # requests the cost gate could not afford, since creation (a count)

    def set_classes(self, model_id: str,
                    classes: Mapping[str, tuple[str | None, float | None]]) -> None:
        """Replace `model_id`'s class inputs: class -> (state or None, agreement in [0, 1] or
        None). Command; idempotent for equal input."""
        kept = dict(sorted(classes.items())[:MAX_TIER_CLASSES])
        self.classes.pop(model_id, None)
        self.classes[model_id] = {name: (s if s in CLASS_STATES else None,
                                         None if a is None else 1.0 - a)
                                  for name, (s, a) in kept.items()}
        while len(self.classes) > MAX_TIER_MODELS:
            del self.classes[next(iter(self.classes))]

    def route(self, model_id: str, class_name: str | None, score: float, strategy: str,
              event_time: float, instability: float | None = None
              ) -> tuple[str, int, float] | None:
        """(tier, labels wanted, cost) of one selected asset, spending the cost gate if any;
        None when the gate cannot afford even `review` (the request is withheld). Command."""
        state, disagreement = self.classes.get(model_id, {}).get(class_name or "", (None, None))
        tier = assign_tier(self.policy, score, state, disagreement, instability, strategy)
        if self.gate is not None:
            granted = self.gate.afford(self.policy, tier, event_time)
            if granted is None:
                self.withheld += 1
                return None
            tier = granted
        return tier, self.policy.labels_per_request(tier), self.policy.request_cost(tier)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able; class inputs in insertion (recency) order."""
        return {"gate": None if self.gate is None else self.gate.snapshot(),
                "classes": [[m, [[c, s, d] for c, (s, d) in v.items()]]
                            for m, v in self.classes.items()],
                "withheld": self.withheld}

    @classmethod
    def from_snapshot(cls, policy: TierPolicy, budget: CostBudgetPolicy | None,
                      data: Mapping[str, Any] | None) -> TierRouter:
        """The router `snapshot` described under these settings (None: a fresh one). A gate
        added since the snapshot starts full; one removed is dropped."""
        router = cls(policy, budget)
        if data is None:
            return router
        if budget is not None and data.get("gate") is not None:
            router.gate = CostGate.from_snapshot(budget, data["gate"])
        for model_id, rows in data.get("classes", []):
            router.classes[model_id] = {c: (s, d) for c, s, d in rows}
        router.withheld = int(data.get("withheld", 0))
        return router
