"""What a segment offers the window's reservoirs (run by arms.py after the arms decided the
segment): every still-free asset to the uniform control arm, those with a scored driver to the
per-class weighted reservoirs, which `flush.py` grants from when the window closes.

Vectorised across the windows of a batch where the result allows: a one-model batch's inputs
(groups, weights, positional draws, uncertainty quanta) are computed once and sliced per
segment, and a segment whose window will close with the exploit lane dry only counts toward the
uncertainty level. Every value is elementwise, so a slice equals what the segment alone would
compute: the picks and snapshots are those of offering segment by segment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.core import draws, novelty
from services.core.reservoir import quanta
from services.core.state import SelectorMemory
from services.core.view import BatchView


def offer(state: SelectorMemory, view: BatchView, lo: int, free: np.ndarray) -> None:
    """Offer the segment's still-free assets to the window's reservoirs: all of them to the
    uniform control arm, those with a scored driver (weight = priority) to the weighted ones,
    whether or not their version's stats are ready (ranking within a window needs no
    calibration, so a retrained model version is served from its first asset)."""
    n = free.shape[0]
    # The usual segment: no asset explored or remembered by dedupe, every asset offered; its
    # index array is built only if asked for (np.count_nonzero: a fraction of .all()'s cost).
    every = np.count_nonzero(free) == n
    idx: np.ndarray | None = None if every else lo + np.flatnonzero(free)
    items = list(range(lo, lo + n)) if idx is None else idx.tolist()
    if not items:
        return
    rng = state.control_draws if state.control_draws is not None else state.control_rng
    state.control.offer(len(items), rng, items)
    if state.policy.mode != "reservoir":
        return
    dry = _dry_flush(state, view, lo, lo + n)
    c = _offer_inputs(state, view)
    if c is None:
        _offer_weighted(state, view, lo, np.arange(lo, lo + n) if idx is None else idx, dry)
        return
    # `pick` indexes the batch-wide inputs: a slice when every asset of the segment is offered
    # (the usual case), the same values as the index array at a fraction of its cost.
    pick: slice | np.ndarray
    mine: np.ndarray | None
    if idx is None and np.count_nonzero(c["has"][lo:lo + n]) == n:
        mine, pick = None, slice(lo, lo + n)  # mine: the assets lo:lo + n (`items`)
    else:
        if idx is None:
            idx = np.arange(lo, lo + n)
        mine = pick = idx[c["has"][idx]]
        if mine.shape[0] == 0:
            return
        items = mine.tolist()
    if mine is None:  # a run of the batch: its sum from the running sums (exact integers)
        running = c["running"]
        if running is None:
            running = c["running"] = [0, *np.cumsum(c["quanta"]).tolist()]
        state.weighted.observe_total(running[lo + n] - running[lo], n)
    else:
        state.weighted.observe_quanta(c["quanta"][pick])
    # Counted before the dry check, like the level: whether a segment is dry depends on where
    # the batch was cut, the assets offered do not.
    factor = None
    if state.policy.reservoir.novelty:
        factor = _novelty(state, view, np.arange(lo, lo + n) if mine is None else mine)
    if dry:
        return
    power = state.policy.reservoir.power_at(state.weighted.level)
    pr = c["priority"][pick]
    if power is None:
        weights = pr
    elif power == c["power"]:
        weights = c["weights"][pick]
    else:
        weights = pr ** power
    if factor is not None:
        weights = weights * factor
    if c["exp"] is None:  # drawn at the batch's first offer that is not dry
        c["exp"] = state.draws.get(draws.RESERVOIR, view.first, view.first + view.batch.n_assets)
    state.weighted.offer(weights, c["groups"][pick], pr, c["exp"][pick], items)


def _novelty(state: SelectorMemory, view: BatchView, mine: np.ndarray) -> np.ndarray:
    """Each offered asset's confusion-novelty factor (novelty.py), counted in stream order per
    model book, whether or not the segment is dry (the assets of several models interleave;
    each book counts its own). Command."""
    out = np.ones(mine.shape[0])
    beta, window = state.policy.reservoir.novelty, state.policy.reservoir.novelty_gate
    books = {bk.model_id: bk for bk in view.books if bk is not None}
    for book in books.values():
        at = np.flatnonzero([view.books[k] is book for k in
                             view.batch.asset_model[mine].tolist()])
        if at.shape[0]:
            assets = mine[at]
            out[at] = novelty.weigh(book, view.asset_cls[assets],
                                    novelty.runner_up(view, book, assets), beta, window)
    return out


def _offer_inputs(state: SelectorMemory, view: BatchView) -> dict[str, Any] | None:
    """The weighted reservoirs' inputs of every asset of a one-model batch whose book exists,
    computed once a batch (and again when the view re-derives priorities): has a driver, group
    (model, class), priority, its Exp(1) draw by position (drawn when first needed: a dry
    segment offers nothing), its driver's uncertainty in quanta,
    and its weight under the power of the first window that asks. Elementwise, so a segment's
    slice equals what the segment alone computes (`_offer_weighted`). None for other batches."""
    if view.offer_cache is not None:
        return view.offer_cache
    book = view.books[0]
    if not view.single_model or book is None:
        return None
    b = view.batch
    has = view.driver >= 0
    groups = np.zeros(b.n_assets, dtype=np.uint64)
    groups[has] = book.group_hash[view.asset_cls[has]]
    pr = view.asset_priority
    power = state.policy.reservoir.power_at(state.weighted.level)
    view.offer_cache = {
        "has": has, "groups": groups, "priority": pr, "power": power,
        "weights": pr if power is None else pr ** power,
        "exp": None,
        "running": None,  # running sums of "quanta", made at the first run that asks
        "quanta": quanta(view.u[np.maximum(view.driver, 0)]) if view.u.shape[0] else
        np.zeros(b.n_assets, dtype=np.int64),  # no predictions: no asset has a driver
    }
    return view.offer_cache


def _dry_flush(state: SelectorMemory, view: BatchView, lo: int, hi: int) -> bool:
    """The segment lo:hi closes a count window whose flush will find the exploit lane
    dry. Then the flush grants nothing from the weighted reservoirs and empties them: what
    this segment would offer them can only count toward the uncertainty level. (Nothing
    spends from the exploit lane between here and that flush: in the reservoir mode only
    flushes do.) Query."""
    pol = state.policy
    size = pol.reservoir.window_assets
    if not size or pol.mode != "reservoir" or state.window_count + hi - lo < size:
        return False
    return not view.lane_open(state.budget, pol.budget, "exploit", hi - 1)


def _offer_weighted(state: SelectorMemory, view: BatchView, lo: int, idx: np.ndarray,
                    dry: bool) -> None:
    """The weighted offer of batch assets `idx` (of the segment from lo), computed for them
    alone: batches of several models, whose books may be created, evicted or remapped
    between segments. `dry`: see `_dry_flush`."""
    b = view.batch
    mine = idx[view.driver[idx] >= 0]
    if mine.shape[0] == 0:
        return
    groups = np.zeros(mine.shape[0], dtype=np.uint64)
    for k, book in enumerate(view.books):
        if book is None:  # created at its first asset, later (its assets have no driver yet)
            continue
        sel = b.asset_model[mine] == k
        if sel.any():
            groups[sel] = book.group_hash[view.asset_cls[mine[sel]]]
    pr = view.asset_priority[mine]
    hi = int(mine[-1]) + 1
    exp = state.draws.get(draws.RESERVOIR, view.first + lo, view.first + hi)[mine - lo]
    state.weighted.observe(view.u[view.driver[mine]])
    factor = _novelty(state, view, mine) if state.policy.reservoir.novelty else None
    if dry:
        return
    power = state.policy.reservoir.power_at(state.weighted.level)
    weights = pr if power is None else pr ** power
    if factor is not None:
        weights = weights * factor
    state.weighted.offer(weights, groups, pr, exp, mine.tolist())
