"""Confusion novelty (`ReservoirPolicy.novelty`, off by default): the powered draw favours assets
whose confusion the model has rarely shown before.

The selector sees a model's probabilities, not the assets' features, so how typical an asset is
can only be judged in probability space. Its confusion is the pair (predicted class, runner-up
class). Per model, the book counts the pairs of the assets offered to the weighted reservoirs
so far (all versions, in stream order). An asset's typicality is the share of its predicted
class's earlier assets that had its runner-up, Laplace-smoothed and scaled by the runner-ups that
class has shown (1 = as common as the average one):

    r = (n(pair) + 1) / (n(class) + k(class)) x k(class),   k = distinct runner-ups seen (>= 1)

and its weight in the draw is multiplied by r ** -novelty: with novelty > 0 a confusion met
once in a while outweighs the one the model keeps making, so a window's picks spread over more
of the class boundaries. (The opposite sign, favouring typical confusions, measured worse on
every development set: docs/label-efficiency.md.)

Counts change at each offered asset's position, so decisions stay invariant to batch
boundaries; they live in the model's book and its snapshot (only once counted). Memory: at most
MAX_PAIRS pairs per book; a pair first met past it counts as never seen. Pure.
"""

from __future__ import annotations

import numpy as np

from services.core.registry import ModelBook
from services.core.view import BatchView

MAX_PAIRS = 2048
"""Pairs a book remembers (a 30-class model has 870): bounds its share of the checkpoint."""

NO_RUNNER_UP = -1
"""The runner-up of a top-1 row or a one-class distribution."""


def runner_up(view: BatchView, book: ModelBook, assets: np.ndarray) -> np.ndarray:
    """The book's class index of each asset's runner-up: the driving prediction's most probable
    class after its top one, ties to the lowest class index of the book (so the answer depends on
    the prediction only, not on the batch's class order); NO_RUNNER_UP without one. Query."""
    b = view.batch
    if assets.shape[0] == 0 or not b.classes:
        return np.full(assets.shape[0], NO_RUNNER_UP, dtype=np.int64)
    big = np.int64(2**62)
    glob = np.array([book.index.get(c, -1) for c in b.classes], dtype=np.int64)
    glob = np.where(glob >= 0, glob, big)  # a class of another model: never a runner-up
    rows = view.driver[assets]
    probs = b.probs[rows].copy()
    probs[np.arange(rows.shape[0]), b.top_class[rows]] = -1.0
    probs[:, glob == big] = -1.0
    best = probs.max(axis=1)
    tied = np.where(probs == best[:, None], glob[None, :], big).min(axis=1)
    return np.where(best > 0.0, tied, NO_RUNNER_UP)


def weigh(book: ModelBook, classes: np.ndarray, runners: np.ndarray, novelty: float
          ) -> np.ndarray:
    """The factor r ** -novelty of each asset (module docstring), counting each one's pair in
    order, so an asset's typicality counts the assets before it only. Command."""
    out = np.empty(classes.shape[0])
    pairs, total, kinds = book.pairs, book.pair_total, book.pair_kinds
    for i, (c, r) in enumerate(zip(classes.tolist(), runners.tolist(), strict=True)):
        key = c * book.max_classes + r if r >= 0 else -1 - c
        n = pairs.get(key, 0)
        k = max(int(kinds[c]), 1)
        out[i] = ((n + 1.0) / (int(total[c]) + k) * k) ** -novelty
        if n or len(pairs) < MAX_PAIRS:
            pairs[key] = n + 1
            kinds[c] += int(n == 0)
        total[c] += 1
    return out
