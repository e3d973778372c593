"""The tier rule, the cost gate and the per-partition router (services/core/tiers.py)."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.tiers import (
    TIERS,
    CostBudgetPolicy,
    CostGate,
    TierPolicy,
    TierRouter,
    assign_tier,
)
from services.streaming.annotation_requests import TIER_NAMES

P = TierPolicy(review_below=0.25, consensus_from=0.75,
               disagreement_consensus=0.4)  # instability 0.5


def test_tier_names_equal_the_contract() -> None:
    assert TIERS == TIER_NAMES


@pytest.mark.parametrize(("score", "tier"), [(0.0, "review"), (0.2499, "review"),
                                             (0.25, "annotate"), (0.7499, "annotate"),
                                             (0.75, "consensus"), (1.0, "consensus")])
def test_uncertainty_bands(score: float, tier: str) -> None:
    assert assign_tier(P, score) == tier


def test_unknown_class_state_is_learning() -> None:
    for state in (None, "learning", "no-such-state"):
        assert assign_tier(P, 0.5, state) == "annotate"
        assert assign_tier(P, 0.1, state) == "review"


def test_mastered_class_is_reviewed_below_the_consensus_band() -> None:
    assert assign_tier(P, 0.6, "mastered") == "review"
    assert assign_tier(P, 0.8, "mastered") == "consensus"
    off = TierPolicy(review_below=0.25, consensus_from=0.75, mastered_review=False)
    assert assign_tier(off, 0.6, "mastered") == "annotate"  # in P's annotate band


def test_reopened_class_is_never_reviewed() -> None:
    assert assign_tier(P, 0.1, "reopened") == "annotate"
    assert assign_tier(P, 0.8, "reopened") == "consensus"


def test_disagreement_sends_the_annotate_band_to_consensus() -> None:
    assert assign_tier(P, 0.5, disagreement=0.39) == "annotate"
    assert assign_tier(P, 0.5, disagreement=0.4) == "consensus"
    assert assign_tier(P, 0.1, disagreement=0.9) == "review"  # confident: still a review


def test_track_instability_goes_to_consensus_whatever_the_band() -> None:
    assert assign_tier(P, 0.1, instability=0.49) == "review"
    assert assign_tier(P, 0.1, instability=0.5) == "consensus"
    assert assign_tier(P, 0.1, "mastered", instability=0.9) == "consensus"


def test_unbiased_arm_is_always_annotated() -> None:
    for score in (0.0, 0.5, 1.0):
        assert assign_tier(P, score, "mastered", 0.9, 0.9, "random_control") == "annotate"
    assert assign_tier(P, 0.0, strategy="reservoir") == "review"


@given(st.floats(0, 1), st.sampled_from([None, "learning", "mastered", "reopened"]),
       st.one_of(st.none(), st.floats(0, 1)), st.one_of(st.none(), st.floats(0, 1)))
def test_rule_is_total_and_monotone_in_uncertainty(score: float, state: str | None,
                                                   dis: float | None, inst: float | None) -> None:
    order = {"review": 0, "annotate": 1, "consensus": 2}
    tier = assign_tier(P, score, state, dis, inst)
    assert tier in order
    # more uncertainty never asks for cheaper work
    assert order[assign_tier(P, min(1.0, score + 0.3), state, dis, inst)] >= order[tier]


def test_policy_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        TierPolicy(review_below=0.8, consensus_from=0.5)
    with pytest.raises(ValueError):
        TierPolicy(consensus_k=1)
    with pytest.raises(ValueError):
        TierPolicy(quorum=3)
    with pytest.raises(ValueError):
        TierPolicy(costs={"review": 1.0, "annotate": 2.0, "consensus": 2.0})
    with pytest.raises(ValueError):
        TierPolicy(costs={"review": 0.0, "annotate": 2.0, "consensus": 2.0, "expert": 4.0})


def test_costs_and_quorum() -> None:
    assert P.request_cost("review") == 1.0 and P.request_cost("annotate") == 3.0
    assert P.request_cost("consensus") == 6.0  # k = 2 labels at 3 each
    assert P.agreement_quorum == 2  # majority of 2 = unanimity
    assert TierPolicy(consensus_k=3).agreement_quorum == 2
    assert TierPolicy(consensus_k=3, quorum=3).agreement_quorum == 3


def test_cost_gate_downgrades_then_withholds_and_is_never_overspent() -> None:
    gate = CostGate(CostBudgetPolicy(units_per_hour=0.0, burst=10.0))
    assert gate.afford(P, "consensus", 0.0) == "consensus"  # 10 -> 4
    assert gate.afford(P, "consensus", 0.0) == "annotate"  # 4 -> 1
    assert gate.afford(P, "annotate", 0.0) == "review"  # 1 -> 0
    assert gate.afford(P, "review", 0.0) is None
    assert gate.remaining(0.0) == 0.0


@given(st.lists(st.tuples(st.sampled_from(["review", "annotate", "consensus"]),
                          st.floats(0, 7200)), max_size=200))
def test_cost_gate_spend_within_burst_plus_rate(asks: list[tuple[str, float]]) -> None:
    budget = CostBudgetPolicy(units_per_hour=360.0, burst=12.0)
    gate = CostGate(budget)
    spent, high = 0.0, 0.0
    for tier, t in asks:
        granted = gate.afford(P, tier, t)
        high = max(high, t)
        if granted is not None:
            spent += P.request_cost(granted)
    assert spent <= budget.burst + budget.units_per_hour * high / 3600.0 + 1e-9


def test_router_uses_class_inputs_and_snapshots_exactly() -> None:
    router = TierRouter(P, CostBudgetPolicy(units_per_hour=3600.0, burst=8.0))
    router.set_classes("m", {"cat": ("mastered", 0.99), "dog": (None, 0.5), "eel": (None, None)})
    assert router.route("m", "cat", 0.6, "reservoir", 0.0) == ("review", 1, 1.0)
    assert router.route("m", "dog", 0.6, "reservoir", 0.0) == ("consensus", 2, 6.0)
    # 8 - 1 - 6 = 1 unit left: annotate (3) does not fit, review (1) does
    assert router.route("m", "eel", 0.6, "reservoir", 0.0) == ("review", 1, 1.0)
    assert router.route("m", "eel", 0.6, "reservoir", 0.0) is None and router.withheld == 1
    data = orjson.loads(orjson.dumps(router.snapshot()))
    again = TierRouter.from_snapshot(P, CostBudgetPolicy(units_per_hour=3600.0, burst=8.0), data)
    assert again.snapshot() == router.snapshot()
    for t in (1.0, 2.0, 5.0, 9.0):
        assert again.route("m", "dog", 0.6, "x", t) == router.route("m", "dog", 0.6, "x", t)


def test_router_without_gate_never_withholds_and_is_bounded() -> None:
    router = TierRouter(P)
    for m in range(300):
        router.set_classes(f"m{m}", {f"c{c}": ("learning", 0.5) for c in range(3)})
    assert len(router.classes) == 256 and "m299" in router.classes and "m0" not in router.classes
    assert all(router.route("m1", "c0", s, "reservoir", math.inf) is not None
               for s in (0.0, 0.5, 1.0))


def test_default_bands_review_the_confident_picks_and_keep_consensus_for_other_signals() -> None:
    # The defaults' behaviour (bench/tiers_sweep.py chose them, docs/tiers.md): a review band
    # below the middle of the score range, no consensus band, so consensus comes from a class's
    # disagreement or a track's instability. Derived from the policy, not its constants: breaks
    # if the band comparison, its order, or the defaults' shape (a consensus band) changes.
    d = TierPolicy()
    assert 0.0 < d.review_below < 0.6  # wider bands lost accuracy on the bench's streams
    scores = [i / 1000 for i in range(1000)]  # [0, 1): every score short of a dead heat
    tiers = [assign_tier(d, s) for s in scores]
    assert set(tiers) == {"review", "annotate"}
    first_annotated = tiers.index("annotate")
    assert all(t == "review" for t in tiers[:first_annotated])
    assert all(t == "annotate" for t in tiers[first_annotated:])
    assert scores[first_annotated - 1] < d.review_below <= scores[first_annotated]
    above = d.review_below + 0.01
    assert assign_tier(d, above, disagreement=d.disagreement_consensus) == "consensus"
    assert assign_tier(d, above, disagreement=d.disagreement_consensus - 0.01) == "annotate"
    assert assign_tier(d, 0.0, instability=d.instability_consensus) == "consensus"
    assert assign_tier(d, 0.0, "reopened") == "annotate"
    assert assign_tier(d, 0.99, "mastered") == "review"  # no consensus band to stop it
