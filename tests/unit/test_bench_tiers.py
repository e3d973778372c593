"""bench/tiers.py's code paths, run small (figures are the benchmark's to print, not checked):
each arm runs, spends what its tiers cost, and the consensus arm escalates through the sink's
join."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from bench.tiers import ARMS, Crowd, Feedback, load, run_arm  # noqa: E402
from services.core.tiers import TierPolicy  # noqa: E402


def test_each_arm_runs_and_costs_what_its_tiers_cost() -> None:
    data = load(0)
    policy = TierPolicy(review_below=0.85, consensus_from=0.95)
    crowd = Crowd(annotate_error=0.3, review_error=0.0, review_catch=0.5, expert_error=0.0)
    runs = {arm: run_arm(arm, 0, data, policy, crowd, window=40) for arm in ARMS}
    n = runs["annotate"]["labels"]
    assert n == len(data[1]) // 40 and all(r["labels"] == n for r in runs.values())
    assert runs["annotate"]["cost"] == 3.0 * n
    consensus = runs["consensus"]
    assert consensus["cost"] == 6.0 * n + 8.0 * consensus["escalated"]
    assert consensus["escalated"] > 0 and consensus["noise"] < runs["annotate"]["noise"]
    tiered = runs["tiered"]["tiers"]
    assert sum(tiered.values()) == n and tiered["review"] > 0
    for r in runs.values():
        assert 0.0 < r["acc"] <= 1.0 and r["curve"][0] == (0.0, r["acc0"])


def test_arms_with_the_same_tiers_get_the_same_humans() -> None:
    # Common random numbers: the annotators' dice are drawn per stream item, not per arm, so a
    # tiered arm that happens to annotate everything IS the annotate arm, label for label. With
    # per-arm noise the paired differences the sweep prints would mostly measure luck.
    data = load(1, "segments")
    crowd = Crowd(annotate_error=0.3, review_error=0.0, review_catch=0.5, expert_error=0.0)
    never = TierPolicy(review_below=0.0, consensus_from=1.0)  # only a score of 1 -> consensus
    base = run_arm("annotate", 1, data, never, crowd, window=40)
    same = run_arm("tiered", 1, data, never, crowd, window=40, use_feedback=False)
    assert same["tiers"]["annotate"] == same["labels"]
    assert (same["curve"], same["noise"], same["cost"]) == \
        (base["curve"], base["noise"], base["cost"])
    assert base["noise"] > 0  # the dice did roll


@pytest.mark.parametrize("stream", ["digits", "segments"])
def test_default_bands_review_some_picks_and_spend_less(stream: str) -> None:
    # What the default was chosen for (docs/tiers.md): on the bench's own streams it moves a
    # real share of picks to review, whose pre-labels are mostly right, and spends less than
    # annotating every pick. Deterministic (seeded data, model and humans); accuracy is the
    # sweep's to print over many seeds, not a single run's to assert.
    data = load(0, stream)
    crowd = Crowd(annotate_error=0.1, review_error=0.01, review_catch=0.7, expert_error=0.02)
    base = run_arm("annotate", 0, data, TierPolicy(), crowd, window=8)
    tiered = run_arm("tiered", 0, data, TierPolicy(), crowd, window=8)
    reviewed = tiered["tiers"]["review"]
    assert reviewed >= 0.05 * tiered["labels"] and tiered["tiers"]["consensus"] == 0
    assert tiered["prelabel_right"]["review"] >= 0.75 * reviewed
    assert tiered["cost"] < 0.97 * base["cost"]


def test_feedback_counts_every_label_and_compares_all_but_reviews() -> None:
    # As the label sink publishes it (services/label_sink/consensus.py `compared_outcomes`):
    # per human class, labels_total counts reviews too, the agreement leaves them out.
    book = Feedback()
    book.add(3, 3, "review")  # a confirmed pre-label: counted, not compared
    book.add(3, 5, "annotate")  # the model said 5, the human 3
    book.add(3, 3, "consensus")
    book.add(7, 7, "review")  # reviews only: no agreement to publish
    assert book.classes() == {"3": (None, 0.5, 3)}


def test_tiered_arm_feeds_its_router_and_widens_the_band_on_digits() -> None:
    # The tiered arm runs the scorer's own TierRouter fed with that feedback after each
    # retrain: on digits (pre-labels right more often than their scores say) the default
    # widens the band for a real share of picks; without feedback it never does.
    data = load(0)
    crowd = Crowd(annotate_error=0.1, review_error=0.01, review_catch=0.7, expert_error=0.02)
    trace: list[tuple[object, ...]] = []
    fed = run_arm("tiered", 0, data, TierPolicy(), crowd, window=8, trace=trace)
    blind = run_arm("tiered", 0, data, TierPolicy(), crowd, window=8, use_feedback=False)
    assert blind["banded"] == 0 and fed["banded"] >= 0.2 * fed["labels"]
    assert fed["tiers"]["review"] > blind["tiers"]["review"]
    rhos = [t[5] for t in trace if t[5] is not None]
    assert rhos and max(rhos) < 1.0  # the ratio the band follows, as computed from feedback
