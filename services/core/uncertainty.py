"""Uncertainty of predictions, normalised to [0, 1], and its aggregation to one score per asset.

All functions are pure and vectorised over a batch. 0 means certain, 1 means maximally uncertain.
Top-1 rows (a label + confidence, no distribution) only support least-confidence, scored as
1 - confidence: the number of classes behind the confidence is unknown, so it cannot be normalised.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Measure = Literal["least_confidence", "margin", "entropy"]
Aggregation = Literal["max", "mean", "topk"]
MEASURES: tuple[str, ...] = ("least_confidence", "margin", "entropy")


def least_confidence(p_max: np.ndarray, n_classes: np.ndarray) -> np.ndarray:
    """(1 - p_max) * C / (C - 1) per row, from each row's top probability `p_max` and its
    distribution size C (>= 2); in [0, 1]."""
    c = np.maximum(n_classes, 2).astype(np.float64)
    return np.clip((1.0 - p_max) * c / (c - 1.0), 0.0, 1.0)


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p_first - p_second) per row; in [0, 1]."""
    top2 = np.partition(probs, -2, axis=1)[:, -2:] if probs.shape[1] >= 2 else None
    if top2 is None:
        return np.zeros(probs.shape[0])
    return np.clip(1.0 - (top2[:, 1] - top2[:, 0]), 0.0, 1.0)


def entropy(probs: np.ndarray, n_classes: np.ndarray) -> np.ndarray:
    """Shannon entropy / log(C) per row, C = the row's distribution size (>= 2); in [0, 1].

    Each row's terms are summed smallest first, one after the other, so the result depends on the
    row's values only, not on its column order or the zero padding around it (a row's value must
    not depend on which other rows share its batch)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0.0, probs * np.log(probs), 0.0)
    h = -np.cumsum(np.sort(plogp, axis=1), axis=1)[:, -1] if probs.shape[1] else \
        np.zeros(probs.shape[0])
    return np.clip(h / np.log(np.maximum(n_classes, 2)), 0.0, 1.0)


def score_predictions(
    measure: Measure, probs: np.ndarray, n_classes: np.ndarray, top_conf: np.ndarray
) -> np.ndarray:
    """Per-prediction uncertainty in [0, 1]: `measure` on distribution rows, 1 - top_conf on top-1
    rows (`n_classes` == 0). `top_conf` is each row's top probability (the distribution's max).
    Pure; never mutates its inputs."""
    if measure not in MEASURES:
        raise ValueError(f"unknown uncertainty measure {measure!r}")
    if probs.shape[1] == 0:  # every row is top-1
        return np.clip(1.0 - top_conf, 0.0, 1.0)
    if measure == "least_confidence":
        scores = least_confidence(top_conf, n_classes)
    elif measure == "margin":
        scores = margin(probs)
    else:
        scores = entropy(probs, n_classes)
    top1 = n_classes == 0
    if top1.any():
        scores = np.where(top1, np.clip(1.0 - top_conf, 0.0, 1.0), scores)
    return scores


def aggregate(
    values: np.ndarray, classes: np.ndarray, pred_start: np.ndarray, method: Aggregation, k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Per asset: the highest per-class aggregate of `values` and the prediction that drove it.

    `values` and `classes` are per prediction, grouped by asset (`pred_start`, a + 1 offsets).
    Predictions of one asset are grouped by class; each group aggregates by `method` (max, mean, or
    mean of its `k` largest); the asset takes its best group. Returns (asset_value, driver): the
    asset's value (0 for assets without predictions) and the index of the largest-valued prediction
    of the winning group (-1 for none); the winning class is classes[driver]. Ties go to the lower
    class index, then the earlier prediction. Pure.
    """
    if method == "max" or values.shape[0] == 0:
        return _segment_max(values, pred_start)
    if method not in ("mean", "topk"):
        raise ValueError(f"unknown aggregation {method!r}")
    n_assets = pred_start.shape[0] - 1
    asset_of = np.repeat(np.arange(n_assets), np.diff(pred_start))
    order = np.lexsort((-values, classes, asset_of))
    group = asset_of[order] * (int(classes.max()) + 1) + classes[order]
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[first, order.shape[0]])
    rank = np.arange(order.shape[0]) - np.repeat(first, sizes)
    keep = values[order] if method == "mean" else np.where(rank < k, values[order], 0.0)
    counts = sizes if method == "mean" else np.minimum(sizes, k)
    group_value = np.add.reduceat(keep, first) / counts
    group_starts = np.searchsorted(asset_of[order][first], np.arange(n_assets + 1))
    asset_value, best_group = _segment_max(group_value, group_starts)
    driver = np.where(best_group >= 0, order[first[np.maximum(best_group, 0)]], -1)
    return asset_value, driver


def _segment_max(values: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max of values[starts[i]:starts[i+1]] and the first index attaining it (0 / -1 if empty)."""
    n_seg = starts.shape[0] - 1
    sizes = np.diff(starts)
    if n_seg and values.shape[0] == n_seg and bool((sizes == 1).all()):
        return values.astype(np.float64, copy=True), np.arange(n_seg)
    out = np.zeros(n_seg)
    driver = np.full(n_seg, -1, dtype=np.int64)
    nonempty = np.flatnonzero(sizes > 0)
    if nonempty.shape[0] == 0:
        return out, driver
    lo = starts[nonempty]
    seg_max = np.maximum.reduceat(values, lo)
    full = np.repeat(seg_max, sizes[nonempty])
    candidates = np.where(values == full, np.arange(values.shape[0]), values.shape[0])
    out[nonempty] = seg_max
    driver[nonempty] = np.minimum.reduceat(candidates, lo)
    return out, driver


def driving_predictions(
    values: np.ndarray, classes: np.ndarray, lo: int, hi: int, driver: int,
    method: Aggregation, k: int = 3,
) -> list[int]:
    """Prediction indices (in lo:hi, one asset) behind its aggregate: the driver alone for `max`,
    else the driver class's predictions (its `k` largest for `topk`), largest value first."""
    if driver < 0:
        return []
    if method == "max":
        return [driver]
    cls = classes[driver]
    members = [i for i in range(lo, hi) if classes[i] == cls]
    members.sort(key=lambda i: (-float(values[i]), i))
    return members[:k] if method == "topk" else members
