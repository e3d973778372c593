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

The gate (`ReservoirPolicy.novelty_gate` = W assets, 0 = off) scales the exponent by how
concentrated the model's confusions are: novelty x (1 - exp(-(W - 1) x c)), c the chance that
two earlier counted assets share a pair (sum n(n - 1) / (N (N - 1)) over the remembered pairs,
N their total: the unbiased collision estimate; the factor is 1 while N < 2). (W - 1) x c is
the expected number of the other W - 1 assets of a window with an asset's confusion, and the
factor the chance (Poisson) that there is at least one. Few classes and a model whose
confusions repeat: near 1, the configured novelty (segments, 1 / c ~ 12: 0.98 at W = 50).
Many classes or a model whose runner-ups are spread: a window seldom holds one confusion twice,
its picks already span many boundaries, and a rare pair is more often the weak model's noise
than a boundary the picks miss; the exponent falls toward 0 (the 30-class development stream,
1 / c ~ 280: 0.16; vowel, 11 classes, ~50: 0.6). Measured in docs/label-efficiency.md: it keeps
novelty off the 30-class stream, and is not the default.

Counts change at each offered asset's position, so decisions stay invariant to batch
boundaries; they live in the model's book and its snapshot (only once counted), and the gate
is a function of them. Memory: at most MAX_PAIRS pairs per book; a pair first met past it
counts as never seen. Pure.
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


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions grouped by key: the stable order sorting them, whether each sorted position
    starts its key's run, and the sorted index where its run starts. Pure."""
    order = keys.argsort(kind="stable")
    s = keys[order]
    starts = np.empty(s.shape[0], dtype=bool)
    starts[0] = True
    np.not_equal(s[1:], s[:-1], out=starts[1:])
    at = np.arange(s.shape[0])
    return order, starts, np.maximum.accumulate(np.where(starts, at, 0))


def gate(counted: int, collisions: int, window: int) -> float:
    """The gate's factor (module docstring) from N = `counted` assets of the remembered pairs and
    `collisions` = sum n(n - 1) over them; `window` = W >= 2. Pure."""
    if counted < 2:
        return 1.0
    c = collisions / (counted * (counted - 1.0))
    return float(1.0 - np.exp(-(window - 1.0) * c))


def weigh(book: ModelBook, classes: np.ndarray, runners: np.ndarray, novelty: float,
          window: int = 0) -> np.ndarray:
    """The factor r ** -novelty of each asset (module docstring), counting each one's pair in
    order, so an asset's typicality counts the assets before it only; with `window` >= 2 the
    exponent of each asset is gated by the counts before it (`gate`). The same factors and
    counts as counting the assets one at a time, computed for the batch at once. Command."""
    m = classes.shape[0]
    if m == 0:
        return np.empty(0)
    classes = classes.astype(np.int64)
    runners = runners.astype(np.int64)
    pairs, total, kinds = book.pairs, book.pair_total, book.pair_kinds
    keys = np.where(runners >= 0, classes * book.max_classes + runners, -1 - classes)
    order, starts, run_start = _groups(keys)
    occ = np.empty(m, dtype=np.int64)
    occ[order] = np.arange(m) - run_start  # earlier assets of the batch with the same pair
    uniq = keys[order][starts]
    inv = np.empty(m, dtype=np.int64)
    inv[order] = starts.cumsum() - 1
    # Stored counts of the batch's distinct pairs; the new ones are admitted in order of first
    # appearance while the book has room (a pair refused once is refused for good: the book
    # never forgets a pair).
    stored = np.array([pairs.get(k, 0) for k in uniq.tolist()], dtype=np.int64)
    new_first = (occ == 0) & (stored[inv] == 0)
    admitted_first = new_first & (new_first.cumsum() <= MAX_PAIRS - len(pairs))
    admitted = stored > 0
    admitted[inv[admitted_first]] = True
    kept = admitted[inv]
    n = np.where(kept, stored[inv] + occ, 0)
    # Per class: its assets, and the pairs it newly admitted, earlier in the batch.
    order, starts, run_start = _groups(classes)
    c_occ = np.empty(m, dtype=np.int64)
    c_occ[order] = np.arange(m) - run_start
    new_kinds = admitted_first.astype(np.int64)
    sorted_new = new_kinds[order]
    excl = sorted_new.cumsum() - sorted_new
    kinds_before = np.empty(m, dtype=np.int64)
    kinds_before[order] = excl - excl[run_start]
    k = np.maximum(kinds[classes] + kinds_before, 1)
    t = total[classes] + c_occ
    r = (n + 1.0) / (t + k) * k
    if window >= 2:
        counted = np.fromiter(pairs.values(), dtype=np.int64, count=len(pairs))
        step = kept.astype(np.int64)
        n_before = step.cumsum() - step + int(counted.sum())
        bump = 2 * n * step  # n(n - 1) grows by 2n when a pair counted n times is met again
        coll_before = bump.cumsum() - bump + int((counted * (counted - 1)).sum())
        c = coll_before / np.maximum(n_before * (n_before - 1.0), 1.0)
        g = np.where(n_before >= 2, 1.0 - np.exp(-(window - 1.0) * c), 1.0)
        exponent = (-novelty * g).tolist()
    else:
        exponent = [-novelty] * m
    # The C library's pow, one asset at a time: numpy's vectorised power differs from it in the
    # last bit on ~5% of values, and the draw's keys (and the pinned selection hashes) would
    # move with it. ~50 ns an asset.
    out = np.array([x ** e for x, e in zip(r.tolist(), exponent, strict=True)])
    # The counts after the batch.
    final = stored + np.bincount(inv, weights=kept, minlength=uniq.shape[0]).astype(np.int64)
    for key, count, keep in zip(uniq.tolist(), final.tolist(), admitted.tolist(), strict=True):
        if keep:
            pairs[key] = count
    kinds += np.bincount(classes, weights=new_kinds, minlength=kinds.shape[0]).astype(np.int64)
    total += np.bincount(classes, minlength=total.shape[0])
    return out
