"""Control-arm estimates (services/core/estimates.py) on synthetic streams with a known truth.

The stream: windows of very different sizes (busy hours are also harder: the model errs more when
the stream is busy), a uniform reservoir of K assets per window (the control arm, pi = K / n) and
an uncertainty arm that takes the K least confident assets of each window. The truth is the
stream's own per-class accuracy, known exactly because the simulation holds every event.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.core.estimates import (
    ClassEstimate,
    RatioSums,
    add_label,
    book_from_snapshot,
    book_snapshot,
    pairs,
    wilson,
)

CLASSES = ("cat", "dog", "bird")
K = 4  # control picks per window
WINDOWS = 40
CONFIDENCE = 0.95


def stream(seed: int) -> tuple[dict[str, float], dict[str, ClassEstimate], dict[str, list[int]],
                                dict[str, list[int]]]:
    """(true accuracy per class, control-arm estimates, control [hits, n] unweighted,
    all labels [hits, n] unweighted: control + uncertainty arm)."""
    rng = np.random.default_rng(seed)
    book: dict[str, ClassEstimate] = {}
    truth_hits, truth_n = np.zeros(3), np.zeros(3)
    naive = {c: [0, 0] for c in CLASSES}
    plain = {c: [0, 0] for c in CLASSES}
    for _ in range(WINDOWS):
        n = int(rng.integers(50, 3000))
        busy = n / 3000.0
        cls = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
        base = np.array([0.97, 0.9, 0.8])[cls] - 0.15 * busy
        conf = np.clip(base + rng.normal(0, 0.05, n), 0.01, 0.999)
        correct = rng.random(n) < base
        truth_hits += np.bincount(cls, weights=correct, minlength=3)
        truth_n += np.bincount(cls, minlength=3)
        control = rng.choice(n, size=K, replace=False)
        hard = np.argsort(conf - 0.5 * (~correct))[:K]  # low confidence: mostly the errors
        for i in control:
            c = CLASSES[cls[i]]
            add_label(book, n / K, [(c, c if correct[i] else "other", bool(correct[i]))])
            plain[c][0] += int(correct[i])
            plain[c][1] += 1
        for i in np.concatenate([control, hard]):
            c = CLASSES[cls[i]]
            naive[c][0] += int(correct[i])
            naive[c][1] += 1
    truth = {c: float(truth_hits[j] / truth_n[j]) for j, c in enumerate(CLASSES)}
    return truth, book, plain, naive


def test_interval_covers_the_true_stream_accuracy_at_its_rate_and_naive_is_biased() -> None:
    seeds = range(400)
    covered, err_ht, err_naive, err_plain = [], [], [], []
    for seed in seeds:
        truth, book, plain, naive = stream(seed)
        for c in CLASSES:
            est = book[c].accuracy.interval(CONFIDENCE)
            assert est is not None
            covered.append(est.low <= truth[c] <= est.high)
            err_ht.append(est.estimate - truth[c])
            err_naive.append(naive[c][0] / naive[c][1] - truth[c])
            err_plain.append(plain[c][0] / plain[c][1] - truth[c])
    coverage = float(np.mean(covered))
    bias_ht, bias_naive = float(np.mean(err_ht)), float(np.mean(err_naive))
    print(f"coverage {coverage:.3f} over {len(covered)} intervals; bias: HT {bias_ht:+.4f}, "
          f"unweighted control {np.mean(err_plain):+.4f}, naive all labels {bias_naive:+.4f}")
    # 1200 intervals: the standard error of a 95% rate is 0.6 points.
    assert 0.93 <= coverage <= 0.975
    assert abs(bias_ht) < 0.005
    assert bias_naive < -0.05  # the uncertainty arm's labels drag it far below the truth
    # Unweighted control labels over-represent quiet (easy) windows: biased high.
    assert float(np.mean(err_plain)) > 0.01


def test_wilson_interval_near_one_after_a_run_of_hits() -> None:
    low, high = wilson(1.0, 30, 0.95)
    assert 0.88 < low < 0.9 and high == 1.0  # Wald would give [1, 1]
    s = RatioSums()
    for _ in range(30):
        s.add(10.0, 1, 1)
    est = s.interval(0.95)
    assert est is not None and est.estimate == 1.0 and est.low == pytest.approx(low)


def test_unequal_weights_shrink_the_effective_sample() -> None:
    even, uneven = RatioSums(), RatioSums()
    for i in range(100):
        even.add(5.0, 1, i % 10 != 0)
        uneven.add(1.0 if i % 2 else 50.0, 1, i % 10 != 0)
    assert even.effective_n() == pytest.approx(100, rel=0.02)
    assert uneven.effective_n() < 60


def test_pairs_and_snapshot_round_trip() -> None:
    assert pairs([(None, "cat")], [("cat", None)]) == [("cat", "cat", True)]
    assert pairs([("i1", "cat"), ("i2", "dog")], [("dog", "i1"), ("dog", "i2")]) == [
        ("dog", "cat", False), ("dog", "dog", True)]
    assert pairs([(None, "cat"), (None, "dog")], [("dog", None), ("owl", None)]) == [
        ("dog", "dog", True), ("owl", None, False)]
    assert pairs([], [("cat", None)]) == []
    book: dict[str, ClassEstimate] = {}
    add_label(book, 4.0, [("cat", "dog", False), ("cat", "cat", True)])
    assert book["cat"].accuracy.ratio() == 0.5 and book["dog"].agreement.ratio() == 0.0
    assert book["cat"].agreement.ratio() == 1.0 and book["dog"].accuracy.ratio() is None
    assert book_snapshot(book_from_snapshot(book_snapshot(book))) == book_snapshot(book)
