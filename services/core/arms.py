"""The selection arms, run by `select` on one segment of a batch (a run of assets inside which no
window, refresh, dedupe generation, repeated asset or model creation happens; see selector.py).

Per asset, in arrival order, the decision is: exploration (explore lane), then warm-up or the
threshold arm (exploit lane, one scan in arrival order across all model versions), then, if it
is still free, the offer to the window's reservoirs. Within a segment exploration cannot interact
with the exploit arms except by taking an asset first (no asset repeats inside a segment), so it
runs first over the whole segment, vectorised. Window flushes (flush.py) happen between
segments.
Randomness comes from `state.draws` by absolute asset position, or from the control arm's own
generator in offer order, so no draw depends on batch boundaries.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from typing import Any

import numpy as np

from services.core import draws, gates, offers
from services.core.budget import LaneGate, class_limits
from services.core.selection import Selected
from services.core.state import SelectorMemory
from services.core.thresholds import RELATIVE, UNCERTAIN, WARMUP, Thetas, relative_quantiles, scan
from services.core.view import BatchView


def segment(state: SelectorMemory, view: BatchView, lo: int, hi: int, out: list[Selected]
            ) -> None:
    """Decide assets lo:hi of the batch; append the grants in asset order and remember them."""
    elig = _eligible(state, view, lo, hi)
    taken = np.zeros(hi - lo, dtype=bool)
    picks: list[tuple[int, Selected]] = []
    _explore(state, view, lo, hi, elig, taken, picks)
    free = elig & ~taken if picks else elig  # (nothing taken yet: the same values)
    if state.policy.mode == "threshold":  # warm-up and the threshold arm run in it only
        _exploit(state, view, lo, hi, free, taken, picks)
        free = elig & ~taken
    offers.offer(state, view, lo, free)
    if picks:
        picks.sort(key=lambda p: p[0])
        out.extend(s for _, s in picks)
        state.dedupe.add(state.policy.dedupe, view.dkey[lo + np.flatnonzero(taken)])


def _eligible(state: SelectorMemory, view: BatchView, lo: int, hi: int) -> np.ndarray:
    """Per asset of lo:hi: not remembered by dedupe. Membership is answered for the whole
    batch at once and again only after dedupe changed (a grant, a new generation). Query."""
    cached, dedupe = view.eligible, state.dedupe
    if cached is not None and cached[0] != dedupe.changes and cached[0] >= dedupe.added_since:
        # Only keys were added since (grants): only the assets of those keys turn.
        start, elig = cached[1], cached[2]
        keys = view.dkey[start:start + elig.shape[0]]
        for change, new in reversed(dedupe.added):
            if change <= cached[0]:
                break
            if new.shape[0] > 4:
                elig = elig & ~np.isin(keys, new)
            else:
                for k in new:
                    elig = elig & (keys != k)
        cached = view.eligible = (dedupe.changes, start, elig)
    if cached is None:
        end = view.batch.n_assets
    elif cached[0] != state.dedupe.changes:
        # A new generation (or keys forgotten at the cap): this segment only, then twice as
        # far each time (as it was after every grant, when grants were answered so).
        end = hi
    elif hi > cached[1] + cached[2].shape[0]:  # no change meanwhile: twice as far as last
        end = min(view.batch.n_assets, lo + max(2 * cached[2].shape[0], hi - lo))
    else:
        return cached[2][lo - cached[1]:hi - cached[1]]
    cached = view.eligible = (state.dedupe.changes, lo, ~state.dedupe.contains(view.dkey[lo:end]))
    return cached[2][:hi - lo]


def _explore(state: SelectorMemory, view: BatchView, lo: int, hi: int, elig: np.ndarray,
             taken: np.ndarray, picks: list[tuple[int, Selected]]) -> None:
    """Uniform random picks (policy.exploration_probability()) from the explore lane."""
    b = state.policy.budget
    p = state.policy.exploration_probability()
    if p <= 0.0:
        return
    if view.explorable is None:  # the batch's positions whose draw is below p, by position
        u = state.draws.get(draws.EXPLORE, view.first, view.first + view.batch.n_assets)
        view.explorable = np.flatnonzero(u < p).tolist()
    at = bisect_left(view.explorable, lo)
    cand = view.explorable[at:bisect_left(view.explorable, hi, at)]
    for r in [i - lo for i in cand if elig[i - lo]]:
        i = lo + r
        if view.lane_open(state.budget, b, "explore", i):
            n_seen, wm = float(view.n_seen[i]), float(view.watermark[i])
            sel = view.describe(i, "exploration", inclusion=p)
            state.budget.spend(b, "explore", n_seen, wm, sel.cost)
            picks.append((i, sel))
            taken[r] = True


def _exploit(state: SelectorMemory, view: BatchView, lo: int, hi: int, free: np.ndarray,
             taken: np.ndarray, picks: list[tuple[int, Selected]]) -> None:
    """Warm-up (versions not ready) and the threshold arm (ready versions), one scan in arrival
    order over every free candidate of the segment, sharing the exploit lane."""
    pol = state.policy
    b = view.batch
    n_keys = len(b.model_keys)
    kind = np.zeros(n_keys, dtype=np.int8)  # 0 none, 1 warm-up, 2 threshold
    tp = pol.thresholds
    thresholding = pol.mode == "threshold" and (tp.mode != "off" or tp.class_relative_q > 0.0)
    for k, v in enumerate(view.versions):
        if v is None:  # created at its first asset, after this segment
            continue
        if not v.ready:
            # Warm-up guards the threshold arm only: its thresholds need calibrated stats. The
            # reservoir mode ranks a window's candidates by uncertainty, which needs none.
            warming = pol.mode == "threshold" and pol.warmup.rate > 0.0
            kind[k] = 1 if warming and v.warmup_used < pol.warmup.quota else 0
        elif thresholding:
            kind[k] = 2
    if not kind.any():
        return
    akind = kind[0] if view.single_model else kind[b.asset_model[lo:hi]]
    warm = free & (akind == 1)
    if warm.any():
        warm &= state.draws.get(draws.WARMUP, view.first + lo, view.first + hi) < pol.warmup.rate
    thr = free & (akind == 2) & (view.driver[lo:hi] >= 0)
    cand_mask = warm | thr
    if not cand_mask.any():
        return
    cand = lo + np.flatnonzero(cand_mask)
    if state.budget.first_available(pol.budget, "exploit", view.n_seen[cand],
                                    view.watermark[cand], 0) >= cand.shape[0]:
        return  # the lane cannot grant in this segment: nothing to decide, nothing moves
    is_warm = warm[cand - lo]
    keys = np.zeros(cand.shape[0], dtype=np.int64) if view.single_model else \
        b.asset_model[cand].astype(np.int64)
    used = np.unique(keys).tolist()
    local = {k: j for j, k in enumerate(used)}
    ver = keys if view.single_model else np.array([local[k] for k in keys.tolist()],
                                                   dtype=np.int64).reshape(-1)
    versions = [view.versions[k] for k in used]
    books = [view.books[k] for k in used]
    rel, conf_thr = _relative(state, view, lo, hi, used)
    base = {"variable_uncertainty": None, "fixed": 1.0 - tp.fixed_threshold, "off": 0.0}[tp.mode]
    thetas = Thetas([v.theta if base is None else base for v in versions],  # type: ignore[union-attr]
                    [v.misses if base is None else 0 for v in versions],  # type: ignore[union-attr]
                    [pol.warmup.quota - v.warmup_used for v in versions])  # type: ignore[union-attr]
    quota0 = list(thetas.quota)
    eta = None
    if tp.randomization:
        eta = 1.0 + tp.randomization * state.draws.get(draws.ETA, view.first + lo,
                                                       view.first + hi)[cand - lo]
    limits = [class_limits(pol.budget, bk.weights, bk.published) for bk in books]  # type: ignore
    costs = None if pol.budget.cost == "assets" else (lambda j: view.cost_of(int(cand[j])))
    gate: Any = LaneGate(pol.budget, state.budget, view.n_seen[cand], view.watermark[cand],
                         np.where(is_warm, -1, view.asset_cls[cand]), ver,
                         [bk.buckets for bk in books], limits, costs)  # type: ignore[union-attr]
    if gates.active(state, view):
        gate = gates.RedundancyGate(gate, state, view, cand, is_warm)
    res = scan(1.0 - view.asset_priority[cand], rel[cand - lo] & ~is_warm, eta, is_warm, ver,
               thetas, tp.step, base is None, gate)
    if isinstance(gate, gates.RedundancyGate):
        state.suppressed.update(gate.vetoed.values())
    for j, v in enumerate(versions):
        assert v is not None
        v.warmup_used += quota0[j] - thetas.quota[j]
        if base is None:
            v.theta, v.misses = thetas.base[j], thetas.misses[j]
    name = "fixed" if tp.mode == "fixed" else "variable_uncertainty"
    for j, k, t in zip(res.index, res.kind, res.threshold, strict=True):
        i = int(cand[j])
        if k == WARMUP:
            sel = view.describe(i, "warmup", inclusion=pol.warmup.rate)
        elif k == UNCERTAIN:
            sel = view.describe(i, name, threshold=t)
        else:
            assert k == RELATIVE
            d = _relative_driver(view, i, conf_thr)
            sel = view.describe(i, "class_relative", driver=d,
                                threshold=float(conf_thr[int(b.asset_model[i])][view.gcls[d]]))
            if costs is not None and sel.cost != costs(j):
                # The gate spent what the asset's own driver costs (the flagged driver was not
                # known when it spent): the selection reports what was spent.
                sel = replace(sel, cost=costs(j))
        picks.append((i, sel))
        taken[i - lo] = True


def _relative(state: SelectorMemory, view: BatchView, lo: int, hi: int, used: list[int]
              ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per asset of lo:hi: flagged by the class-relative rule (any of its predictions below its
    class's confidence quantile); and per model key the per-class thresholds (NaN: not ready)."""
    tp = state.policy.thresholds
    b = view.batch
    flagged = np.zeros(hi - lo, dtype=bool)
    thresholds: dict[int, np.ndarray] = {}
    if tp.class_relative_q <= 0.0 or state.policy.mode != "threshold":
        return flagged, thresholds
    for k in used:
        version, book = view.versions[k], view.books[k]
        assert version is not None and book is not None
        stats = version.stats
        if not version.ready or stats.n_classes == 0:
            continue
        thr = _class_thresholds(state, version, book)
        thresholds[k] = thr
        rows = view.predictions_in(lo, hi, k)
        with np.errstate(invalid="ignore"):
            hit = b.top_conf[rows] < thr[view.gcls[rows]]
        assets = b.asset_of[rows][hit] - lo
        flagged[assets] = True
    return flagged, thresholds


def _class_thresholds(state: SelectorMemory, version: Any, book: Any) -> np.ndarray:
    """Per class of the book: the class-relative confidence threshold (NaN: not ready), from
    the stats of the last refresh and the current weights; cached until either changes."""
    key = (version.refreshes, book.weights.tobytes(), len(book.names))
    cached = version.relative_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    tp = state.policy.thresholds
    stats = version.stats
    weights = book.weights[: stats.n_classes]
    q = relative_quantiles(tp.class_relative_q, tp.max_q, weights, stats.m1, stats.ready())
    thr = np.r_[stats.quantiles(q), np.full(max(len(book.names) - stats.n_classes, 0), np.nan)]
    version.relative_cache = (key, thr)
    return thr


def _relative_driver(view: BatchView, i: int, conf_thr: dict[int, np.ndarray]) -> int:
    """The flagged prediction of asset i with the highest priority."""
    b = view.batch
    lo, hi = int(b.pred_start[i]), int(b.pred_start[i + 1])
    thr = conf_thr[int(b.asset_model[i])]
    with np.errstate(invalid="ignore"):
        flagged = lo + np.flatnonzero(b.top_conf[lo:hi] < thr[view.gcls[lo:hi]])
    return int(flagged[np.argmax(view.priority[flagged])])
