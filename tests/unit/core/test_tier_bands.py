"""The review band follows the model's calibration (services/core/tiers.py `review_band`,
`TierRouter.calibration`): a model whose pre-labels are right more often than their scores say
gets a wider review band, one wrong more often a narrower one, and a stream without class
feedback is tiered exactly as before; a class's disagreement needs enough labels to send it to
consensus."""

from __future__ import annotations

from dataclasses import replace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.tiers import (
    UNBIASED_STRATEGIES,
    TierPolicy,
    TierRouter,
    assign_tier,
    review_band,
)

# rho <= 0.75: review below 0.7; rho >= 1.1: below 0.4; else 0.55. 30 labels and picks first.
B = TierPolicy(review_below=0.55, consensus_from=1.0, disagreement_consensus=0.4,
               calibration_labels=30, confident_ratio=0.75, wide_review_below=0.7,
               doubtful_ratio=1.1, narrow_review_below=0.4, disagreement_labels=20)
ORDER = {"review": 0, "annotate": 1, "consensus": 2}


def _before_bands(policy: TierPolicy, score: float, state: str | None, dis: float | None,
                  inst: float | None, strategy: str | None) -> str:
    """The rule as it was before calibration (docs/tiers.md, "The rule"), for reference."""
    if strategy in UNBIASED_STRATEGIES:
        return "annotate"
    state = state if state in ("learning", "mastered", "reopened") else "learning"
    if inst is not None and inst >= policy.instability_consensus:
        return "consensus"
    if score >= policy.consensus_from:
        return "consensus"
    review = score < policy.review_below or (state == "mastered" and policy.mastered_review)
    if state == "reopened":
        review = False
    if review:
        return "review"
    if dis is not None and dis >= policy.disagreement_consensus:
        return "consensus"
    return "annotate"


def test_the_band_follows_the_calibration_ratio() -> None:
    assert review_band(B, None) == 0.55
    assert review_band(B, 0.6) == review_band(B, 0.75) == 0.7
    assert review_band(B, 0.76) == review_band(B, 1.09) == 0.55
    assert review_band(B, 1.1) == review_band(B, 3.0) == 0.4
    assert review_band(TierPolicy(doubtful_ratio=None), 9.0) == TierPolicy().review_below


def test_an_under_confident_models_mid_score_pick_is_reviewed() -> None:
    assert assign_tier(B, 0.65, calibration=0.6) == "review"
    assert assign_tier(B, 0.7, calibration=0.6) == "annotate"  # the wide band's edge holds
    assert assign_tier(B, 0.65, calibration=0.9) == "annotate"  # as right as its scores say
    assert assign_tier(B, 0.65) == "annotate"  # no feedback yet
    assert assign_tier(B, 0.5, calibration=1.2) == "annotate"  # wrong more often: narrower
    assert assign_tier(B, 0.3, calibration=1.2) == "review"


def test_bands_never_cross_review_below_and_consensus_comes_first() -> None:
    odd = TierPolicy(review_below=0.55, consensus_from=0.7, wide_review_below=0.4,
                     doubtful_ratio=1.0, narrow_review_below=0.9)
    assert review_band(odd, 0.1) == 0.55  # a "wide" band narrower: not narrowed
    assert review_band(odd, 2.0) == 0.55  # a "narrow" band wider: not widened
    wide = TierPolicy(review_below=0.55, consensus_from=0.7, wide_review_below=0.9)
    assert assign_tier(wide, 0.75, calibration=0.1) == "consensus"
    assert assign_tier(wide, 0.65, calibration=0.1, strategy="random_control") == "annotate"


def test_a_disagreement_needs_enough_labels_to_send_a_class_to_consensus() -> None:
    assert assign_tier(B, 0.6, disagreement=1.0, labels=19) == "annotate"
    assert assign_tier(B, 0.6, disagreement=0.4, labels=20) == "consensus"
    assert assign_tier(B, 0.6, disagreement=0.4) == "consensus"  # no count: as before counts


def test_settings_are_checked() -> None:
    for bad in ({"confident_ratio": -0.1}, {"confident_ratio": float("inf")},
                {"doubtful_ratio": float("nan")}, {"calibration_labels": 0},
                {"disagreement_labels": 0}, {"wide_review_below": 1.2},
                {"narrow_review_below": -0.2}):
        with pytest.raises(ValueError):
            TierPolicy(**bad)  # type: ignore[arg-type]


scores = st.floats(0, 1)
states = st.sampled_from([None, "learning", "mastered", "reopened", "odd"])
shares = st.one_of(st.none(), st.floats(0, 1))
strategies = st.sampled_from([None, "reservoir", "random_control"])


@given(scores, states, shares, shares, strategies)
def test_without_feedback_the_tier_is_the_one_before_calibration(
        score: float, state: str | None, dis: float | None, inst: float | None,
        strategy: str | None) -> None:
    for policy in (B, TierPolicy()):
        expected = _before_bands(policy, score, state, dis, inst, strategy)
        assert assign_tier(policy, score, state, dis, inst, strategy) == expected
        assert assign_tier(policy, score, state, dis, inst, strategy, None, None) == expected


@given(scores, states, shares, shares, st.one_of(st.none(), st.integers(0, 500)),
       st.one_of(st.none(), st.floats(0, 3)))
def test_the_rule_stays_monotone_in_uncertainty(score: float, state: str | None,
                                                dis: float | None, inst: float | None,
                                                labels: int | None, rho: float | None) -> None:
    tier = assign_tier(B, score, state, dis, inst, None, labels, rho)
    worse = assign_tier(B, min(1.0, score + 0.3), state, dis, inst, None, labels, rho)
    assert ORDER[worse] >= ORDER[tier]


def _fed(agreement: float, policy: TierPolicy = B) -> TierRouter:
    """A router whose model `m` has 40 labels of feedback at `agreement` (two classes)."""
    router = TierRouter(policy)
    router.set_classes("m", {"cat": (None, agreement, 25), "dog": (None, agreement, 15)})
    return router


def test_router_calibration_is_pooled_disagreement_over_mean_compared_score() -> None:
    router = _fed(0.6)  # disagreement 0.4
    for _ in range(29):
        router.route("m", "cat", 0.8, "reservoir", 0.0)  # annotated: compared, counted
    assert router.calibration("m") is None  # 29 picks < 30
    router.route("m", "cat", 0.2, "reservoir", 0.0)  # reviewed: its score is not counted
    assert router.calibration("m") is None
    router.route("m", "cat", 0.8, "reservoir", 0.0)
    assert router.calibration("m") == pytest.approx(0.4 / 0.8)
    # pooled by labels: (0.5 x 10 + 0.1 x 30) / 40 = 0.2
    router.set_classes("m", {"cat": (None, 0.5, 10), "dog": (None, 0.9, 30),
                             "eel": (None, None, 5), "fox": ("learning", 0.0, None)})
    assert router.calibration("m") == pytest.approx(0.2 / 0.8)
    router.set_classes("m", {"cat": (None, 0.5, 29)})  # < 30 labels: not yet
    assert router.calibration("m") is None


def test_router_reviews_mid_score_picks_of_an_under_confident_model_only() -> None:
    no_consensus = replace(B, disagreement_consensus=1.0)
    right, doubtful = _fed(0.7, no_consensus), _fed(0.3, no_consensus)  # rho 0.375, 0.875
    for router in (right, doubtful):
        for _ in range(30):
            router.route("m", "cat", 0.8, "reservoir", 0.0)
    assert right.route("m", "cat", 0.65, "reservoir", 0.0) == ("review", 1, 1.0)
    assert doubtful.route("m", "cat", 0.65, "reservoir", 0.0) == ("annotate", 1, 3.0)
    assert right.route("m2", "cat", 0.65, "reservoir", 0.0) == ("annotate", 1, 3.0)


def test_router_without_feedback_keeps_no_scores_and_snapshots_as_before() -> None:
    router = TierRouter(B)
    for score in (0.1, 0.6, 0.9):
        router.route("m", "cat", score, "reservoir", 0.0)
    assert router.snapshot() == {"gate": None, "classes": [], "withheld": 0}


def test_router_snapshot_restores_counts_and_scores_exactly() -> None:
    router = _fed(0.7)
    router.set_classes("m2", {"cat": (None, 0.7)})  # no count: the row as before counts
    for score in (0.8, 0.9, 0.3, 0.7):
        router.route("m", "cat", score, "reservoir", 0.0)
    data = orjson.loads(orjson.dumps(router.snapshot()))
    rows = {m: {r[0]: r for r in v} for m, v in data["classes"]}
    assert rows["m"]["cat"][3] == 25 and len(rows["m2"]["cat"]) == 3
    assert data["scores"] == [["m", pytest.approx(2.4), 3]]  # 0.3 was reviewed
    again = TierRouter.from_snapshot(B, None, data)
    assert again.snapshot() == router.snapshot()
    for _ in range(30):
        assert again.route("m", "cat", 0.8, "x", 0.0) == router.route("m", "cat", 0.8, "x", 0.0)
    assert again.calibration("m") == router.calibration("m") is not None


def test_router_reads_a_snapshot_written_before_counts_and_scores() -> None:
    old = {"gate": None, "classes": [["m", [["cat", None, 0.02]]]], "withheld": 0}
    router = TierRouter.from_snapshot(B, None, old)
    assert router.classes["m"]["cat"] == (None, 0.02, None)
    assert router.calibration("m") is None and router.snapshot() == old


def test_router_ignores_nonsense_label_counts() -> None:
    router = TierRouter(B)
    router.set_classes("m", {"a": (None, 0.5, -3), "b": (None, 0.5, True),  # type: ignore
                             "c": (None, 0.5, 2.5)})  # type: ignore[dict-item]
    assert {v[2] for v in router.classes["m"].values()} == {None}
