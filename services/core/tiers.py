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
disagreement of the class and the labels behind it, the model's calibration, track instability
where the stream has tracks, selection strategy). The calibration (`TierRouter.calibration`) is
how often the model's pre-labels were wrong (class feedback) per unit of the uncertainty its
picks claimed (their scores): a model right more often than its scores say gets a wider review
band, one wrong more often a narrower one; without enough feedback the band is `review_below`.
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
    The review band follows the model's calibration ratio (rho = the pooled human-model
    disagreement of its classes over the mean score of its non-review picks, once its feedback
    holds `calibration_labels` labels; `TierRouter.calibration`): rho <= `confident_ratio`
    widens it to `wide_review_below`, rho >= `doubtful_ratio` (None: never) narrows it to
    `narrow_review_below` (a wide band never narrower than `review_below`, a narrow one never
    wider; `consensus_from` still comes first). Without a ratio the band is `review_below`, so
    a stream without class feedback is tiered exactly as without these. A class's disagreement
    sends it to consensus only once it stands on `disagreement_labels` labels (when the count is
    known).
    `costs`: cost of ONE label per tier; a consensus request costs `consensus_k` x
    costs["consensus"]. `quorum`: equal answers that decide a consensus (default: a majority of
    `consensus_k`, so unanimity for k = 2). `expert_priority`: priority of escalations.
    """

    # Defaults measured with bench/tiers_sweep.py (docs/tiers.md, "Choosing the default"): over
    # 20 seeds each of digits, segments and an imbalanced synthetic stream, reviewing below 0.55
    # kept the paired accuracy within noise of annotating everything on all three while a wider
    # band lost ~1 pt on segments (0.6) or ~2 pt on the synthetic one (0.7); a consensus band
    # cost ~5% more on digits and bought nothing measurable, even with a 25%-error crowd, so
    # by default only a dead heat reaches it.
    review_below: float = 0.55
    consensus_from: float = 1.0
    # The band follows the model's calibration (docs/tiers.md, "The band follows calibration"):
    # with the sink's feedback simulated, widening to 0.7 at a ratio <= 0.7 cut digits' cost
    # from -5% to -18% and segments' from -22% to -24% at the same accuracy (20 seeds, and 20
    # fresh ones); the synthetic stream's ratio stays near 1 and it is tiered as before.
    calibration_labels: int = 30
    confident_ratio: float = 0.7
    wide_review_below: float = 0.7
    doubtful_ratio: float | None = None
    narrow_review_below: float = 0.45
    # Fed with the feedback uncertainty-sampled picks get (agreement ~0.3-0.6), 0.4 sent 57% of
    # digits' picks and 71% of the synthetic stream's to consensus (+77% and +91% cost for +1.1
    # and +1.5 pt); 0.7 still +19% and +44%. So by default only a class every one of whose 20+
    # compared labels disagreed goes there.
    disagreement_consensus: float = 1.0
    disagreement_labels: int = 20
    instability_consensus: float = 0.5
    mastered_review: bool = True
    consensus_k: int = 2
    quorum: int | None = None
    costs: Mapping[str, float] = field(default_factory=_default_costs)
    expert_priority: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.review_below <= self.consensus_from <= 1.0:
            raise ValueError("0 <= review_below <= consensus_from <= 1 is required")
        if not (0.0 <= self.narrow_review_below <= 1.0 and 0.0 <= self.wide_review_below <= 1.0
                and math.isfinite(self.confident_ratio) and self.confident_ratio >= 0.0
                and (self.doubtful_ratio is None or (math.isfinite(self.doubtful_ratio)
                                                     and self.doubtful_ratio >= 0.0))
                and self.calibration_labels >= 1 and self.disagreement_labels >= 1):
            raise ValueError("wide_review_below and narrow_review_below in [0, 1], finite "
                             "confident_ratio and doubtful_ratio (or null) >= 0, "
                             "calibration_labels and disagreement_labels >= 1 are required")
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


def review_band(policy: TierPolicy, calibration: float | None) -> float:
    """The review band (scores below it are reviewed) under the model's calibration ratio
    (None: not known yet -> `review_below`): `wide_review_below` at or below
    `confident_ratio`, `narrow_review_below` at or above `doubtful_ratio` (a wide band never
    narrower than `review_below`, a narrow one never wider). Pure."""
    if calibration is None:
        return policy.review_below
    if calibration <= policy.confident_ratio:
        return max(policy.review_below, policy.wide_review_below)
    if policy.doubtful_ratio is not None and calibration >= policy.doubtful_ratio:
        return min(policy.review_below, policy.narrow_review_below)
    return policy.review_below


def assign_tier(policy: TierPolicy, score: float, class_state: str | None = None,
                disagreement: float | None = None, instability: float | None = None,
                strategy: str | None = None, labels: int | None = None,
                calibration: float | None = None) -> str:
    """The tier of one selected asset. Pure.

    `score`: its uncertainty in [0, 1]; `class_state`: its class's state (None or unknown ->
    `learning`); `disagreement`: the class's human-model disagreement in [0, 1], None when not
    known (no rule fires on it); `instability`: its track's instability in [0, 1], None for
    assets without tracks; `strategy`: the arm that selected it; `labels`: how many labels the
    class's disagreement stands on (None: unknown; fewer than `disagreement_labels`: the
    disagreement is ignored); `calibration`: the model's calibration ratio, None when not known
    (the band is then `review_below`; see `review_band`). Returns one of SCORER_TIERS.
    """
    if strategy in UNBIASED_STRATEGIES:
        return "annotate"
    state = class_state if class_state in CLASS_STATES else UNKNOWN_STATE
    if instability is not None and instability >= policy.instability_consensus:
        return "consensus"
    if score >= policy.consensus_from:
        return "consensus"
    review = score < review_band(policy, calibration) or \
        (state == "mastered" and policy.mastered_review)
    if state == "reopened":
        review = False
    if review:
        return "review"
    # A disagreement over fewer than `disagreement_labels` labels is noise: one wrong pre-label of a
    # new class is a disagreement of 1 (bench/tiers.py sent 6% of digits' picks to consensus
    # so). Without a count (None) it is taken as it comes, as before counts were known.
    if disagreement is not None and disagreement >= policy.disagreement_consensus and \
            (labels is None or labels >= policy.disagreement_labels):
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


ClassInputs = tuple[str | None, float | None] | tuple[str | None, float | None, int | None]
"""One class's tier inputs from class feedback: (state or None, agreement in [0, 1] or None[,
labels_total or None])."""


class TierRouter:
    """One input partition's tiering: the rule, the optional cost gate, the class inputs
    (state, human-model disagreement, the labels behind it) class feedback gave per (model,
    class), and per model with feedback the scores of its picks sent to a tier whose labels
    are compared with the model (every tier but `review`), for its calibration. Bounded by
    MAX_TIER_MODELS x MAX_TIER_CLASSES; `snapshot()`/`from_snapshot()` restore it exactly."""

    def __init__(self, policy: TierPolicy, budget: CostBudgetPolicy | None = None) -> None:
        self.policy = policy
        self.gate = None if budget is None else CostGate(budget)
        self.classes: dict[str, dict[str, tuple[str | None, float | None, int | None]]] = {}
        # model -> [sum of scores, picks] of its compared picks since its first feedback
        self.scores: dict[str, list[float]] = {}
        self.withheld = 0  # requests the cost gate could not afford, since creation (a count)

    def set_classes(self, model_id: str, classes: Mapping[str, ClassInputs]) -> None:
        """Replace `model_id`'s class inputs: class -> (state or None, agreement in [0, 1] or
        None[, labels_total or None]). Command; idempotent for equal input."""
        kept = dict(sorted(classes.items())[:MAX_TIER_CLASSES])
        self.classes.pop(model_id, None)
        self.classes[model_id] = {
            name: (v[0] if v[0] in CLASS_STATES else None, None if v[1] is None else 1.0 - v[1],
                   _count(v[2]) if len(v) > 2 else None)
            for name, v in kept.items()}
        while len(self.classes) > MAX_TIER_MODELS:
            del self.classes[next(iter(self.classes))]
        for gone in [m for m in self.scores if m not in self.classes]:
            del self.scores[gone]

    def calibration(self, model_id: str) -> float | None:
        """The model's calibration ratio: the disagreement of its classes pooled by their
        labels (class feedback), over the mean uncertainty score of its picks whose labels are
        compared (every tier but `review`, whose answers the label sink does not compare). A
        least-confidence score s of a calibrated model is wrong about s (k - 1) / k of the
        time, so the ratio is near 1 when pre-labels are as right as their scores say, lower
        when they are right more often. None until the feedback holds `calibration_labels`
        labels (classes with an agreement and a count) and as many picks were seen. Query."""
        rows = [(d, n) for _, d, n in self.classes.get(model_id, {}).values()
                if d is not None and n is not None and n > 0]
        labels = sum(n for _, n in rows)
        total, picks = self.scores.get(model_id, (0.0, 0))
        if labels < self.policy.calibration_labels or picks < self.policy.calibration_labels \
                or total <= 0.0:
            return None
        return (sum(d * n for d, n in rows) / labels) / (total / picks)

    def route(self, model_id: str, class_name: str | None, score: float, strategy: str,
              event_time: float, instability: float | None = None
              ) -> tuple[str, int, float] | None:
        """(tier, labels wanted, cost) of one selected asset, spending the cost gate if any;
        None when the gate cannot afford even `review` (the request is withheld). Command."""
        state, disagreement, labels = self.classes.get(model_id, {}).get(
            class_name or "", (None, None, None))
        tier = assign_tier(self.policy, score, state, disagreement, instability, strategy,
                           labels, self.calibration(model_id))
        if self.gate is not None:
            granted = self.gate.afford(self.policy, tier, event_time)
            if granted is None:
                self.withheld += 1
                return None
            tier = granted
        if tier != "review" and model_id in self.classes:
            # Only models with feedback: without it nothing is kept, as before calibration.
            kept = self.scores.setdefault(model_id, [0.0, 0])
            kept[0] += min(max(float(score), 0.0), 1.0)
            kept[1] += 1
        return tier, self.policy.labels_per_request(tier), self.policy.request_cost(tier)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able; class inputs in insertion (recency) order. A class without a label count
        is written as [class, state, disagreement], and `scores` only once kept, as before
        counts and calibration were (a stream without feedback checkpoints the same bytes)."""
        out: dict[str, Any] = {
            "gate": None if self.gate is None else self.gate.snapshot(),
            "classes": [[m, [[c, s, d] if n is None else [c, s, d, n]
                             for c, (s, d, n) in v.items()]] for m, v in self.classes.items()],
            "withheld": self.withheld}
        if self.scores:
            out["scores"] = [[m, v[0], v[1]] for m, v in self.scores.items()]
        return out

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
            router.classes[model_id] = {row[0]: (row[1], row[2], row[3] if len(row) > 3 else None)
                                        for row in rows}
        for model_id, total, picks in data.get("scores", []):
            router.scores[model_id] = [float(total), int(picks)]
        router.withheld = int(data.get("withheld", 0))
        return router


def _count(value: Any) -> int | None:
    """A label count from class feedback: a non-negative int, else None (not known)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
