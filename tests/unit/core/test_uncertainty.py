"""Uncertainty measures and multi-object aggregation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.uncertainty import (
    aggregate,
    driving_predictions,
    entropy,
    least_confidence,
    margin,
    score_predictions,
)


def _rows(*rows: list[float]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    probs = np.array([r + [0.0] * (width - len(r)) for r in rows])
    return probs, np.array([len(r) for r in rows])


def test_known_values() -> None:
    probs, n = _rows([1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.4], [0.5, 0.5])
    assert np.allclose(least_confidence(probs.max(axis=1), n), [0.0, 1.0, 0.8, 1.0])
    assert np.allclose(margin(probs), [0.0, 1.0, 0.8, 1.0])
    assert np.allclose(entropy(probs, n), [0.0, 1.0, 0.9709505944546686, 1.0])


def test_top1_rows_use_one_minus_confidence_whatever_the_measure() -> None:
    probs = np.zeros((2, 3))
    probs[1] = [0.7, 0.2, 0.1]
    n = np.array([0, 3])
    conf = np.array([0.75, 0.7])
    for measure in ("least_confidence", "margin", "entropy"):
        u = score_predictions(measure, probs, n, conf)  # type: ignore[arg-type]
        assert u[0] == 0.25
    assert np.isclose(score_predictions("margin", probs, n, conf)[1], 0.5)


@st.composite
def distributions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n_rows = draw(st.integers(1, 8))
    width = draw(st.integers(2, 12))
    rows, sizes = [], []
    for _ in range(n_rows):
        c = draw(st.integers(2, width))
        raw = np.array(draw(st.lists(st.floats(0.0, 1e6), min_size=c, max_size=c)))
        if raw.sum() <= 0:
            raw[draw(st.integers(0, c - 1))] = 1.0
        rows.append(np.r_[raw / raw.sum(), np.zeros(width - c)])
        sizes.append(c)
    return np.array(rows), np.array(sizes)


@settings(max_examples=300, deadline=None)
@given(distributions())
def test_scores_in_unit_interval_for_any_valid_distribution(d: tuple[np.ndarray, np.ndarray]
                                                            ) -> None:
    probs, n = d
    for measure in ("least_confidence", "margin", "entropy"):
        u = score_predictions(measure, probs, n, probs.max(axis=1))  # type: ignore[arg-type]
        assert np.all((u >= 0.0) & (u <= 1.0)) and np.all(np.isfinite(u))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50))
def test_top1_scores_in_unit_interval(conf: list[float]) -> None:
    c = np.array(conf)
    u = score_predictions("least_confidence", np.zeros((c.shape[0], 0)), np.zeros(c.shape[0], int),
                          c)
    assert np.all((u >= 0.0) & (u <= 1.0))


def test_aggregation_max_mean_topk_by_class() -> None:
    # asset 0: class 0 twice (0.9, 0.1), class 1 twice (0.6, 0.6); asset 1: empty; asset 2: one
    values = np.array([0.9, 0.6, 0.1, 0.6, 0.3])
    classes = np.array([0, 1, 0, 1, 2])
    starts = np.array([0, 4, 4, 5])
    v, d = aggregate(values, classes, starts, "max")
    assert np.allclose(v, [0.9, 0.0, 0.3]) and d.tolist() == [0, -1, 4]
    v, d = aggregate(values, classes, starts, "mean")
    assert np.allclose(v, [0.6, 0.0, 0.3]) and classes[d[0]] == 1 and d[1] == -1
    v, d = aggregate(values, classes, starts, "topk", k=1)
    assert np.allclose(v, [0.9, 0.0, 0.3]) and d[0] == 0
    assert driving_predictions(values, classes, 0, 4, int(d[0]), "max") == [0]
    _, d = aggregate(values, classes, starts, "mean")
    assert driving_predictions(values, classes, 0, 4, int(d[0]), "mean") == [1, 3]
    assert driving_predictions(values, classes, 0, 4, 0, "topk", k=1) == [0]


def test_aggregation_single_prediction_assets_is_identity() -> None:
    values = np.array([0.2, 0.7, 0.1])
    v, d = aggregate(values, np.array([0, 1, 2]), np.arange(4), "mean")
    assert np.allclose(v, values) and d.tolist() == [0, 1, 2]


def test_measures_do_not_mutate_inputs() -> None:
    probs, n = _rows([0.2, 0.8], [0.5, 0.3, 0.2])
    before = probs.copy()
    for measure in ("least_confidence", "margin", "entropy"):
        score_predictions(measure, probs, n, probs.max(axis=1))  # type: ignore[arg-type]
    assert np.array_equal(probs, before)
