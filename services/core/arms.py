"""The selection arms `select` runs on each batch, in this order: window flushes (reservoir top
picks and the random control arm, deferred) and offers, warm-up, exploration, then the threshold
arm. Each arm is a command on (state, view) that appends what it granted to `out`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from services.core.budget import LaneGate, class_limits
from services.core.reservoir import PayloadFn
from services.core.selection import Selected
from services.core.thresholds import relative_quantiles, scan
from services.core.view import BatchView

if TYPE_CHECKING:
    from services.core.selector import SelectorState


def _payloads(view: BatchView, strategy: str, idx: np.ndarray, serial: int) -> list[Any]:
    """Reservoir payloads [Selected.to_json(), dedupe key, batch serial] for assets `idx`."""
    if view.aggregation != "max":
        return [[view.describe(i, strategy).to_json(), str(int(view.dkey[i])), serial]
                for i in idx.tolist()]
    b = view.batch
    d = view.driver[idx]
    has = d >= 0
    dd = np.maximum(d, 0)
    cols = zip(idx.tolist(), b.asset_model[idx].tolist(), has.tolist(),
               np.where(has, view.u[dd], 0.0).tolist(), view.gcls[dd].tolist(),
               b.position[dd].tolist(), view.asset_priority[idx].tolist(),
               b.asset_time[idx].tolist(), view.dkey[idx].tolist(), strict=True)
    out = []
    for i, k, ok, score, cls, pos, prio, t, key in cols:
        v = view.versions[k]
        name = view.books[k].names[cls] if ok else None
        out.append([[b.refs[i], i, v.model_id, v.version, strategy, score, None, name,
                     [pos] if ok else [], prio, None, t], str(key), serial])
    return out


def offer(state: SelectorState, view: BatchView, lo: int, hi: int) -> None:
    """Offer eligible assets lo:hi to the window's reservoirs (weighted: ready versions only)."""
    idx = lo + np.flatnonzero(view.free[lo:hi])
    serial = state.batch_serial
    state.control.offer(idx.shape[0], state.rng,
                        lambda j: _payloads(view, "random_control", idx[j], serial))
    if state.policy.mode != "reservoir":
        return
    for k, version in enumerate(view.versions):
        if not version.ready:
            continue
        mine = idx[view.assets_of(k)[idx] & (view.driver[idx] >= 0)]
        groups = view.books[k].group_hash[view.asset_cls[mine]]
        pr = view.asset_priority[mine]
        state.weighted.offer(pr, groups, pr, state.rng, _payload_fn(view, mine, serial))


def _payload_fn(view: BatchView, mine: np.ndarray, serial: int) -> PayloadFn:
    return lambda j: _payloads(view, "reservoir", mine[j], serial)


def _restore(state: SelectorState, payload: list[Any], strategy: str) -> tuple[Selected, int]:
    """A reservoir payload as the Selected it becomes now (asset_index -1 unless from this
    batch) and its dedupe key."""
    sel = Selected.from_json(payload[0])
    index = sel.asset_index if payload[2] == state.batch_serial else -1
    return replace(sel, asset_index=index, strategy=strategy), int(payload[1])


def _grant_deferred(view: BatchView, key: int, out: list[Selected], sel: Selected) -> None:
    view.taken.add(key)
    if sel.asset_index >= 0:
        view.free[sel.asset_index] = False
    out.append(sel)


def _seen(state: SelectorState, view: BatchView, key: int) -> bool:
    return key in view.taken or bool(state.dedupe.contains(np.array([key], np.uint64))[0])


def flush(state: SelectorState, view: BatchView, at: int, out: list[Selected]) -> None:
    """Close the window at asset index `at` (its budget coordinates): grant the weighted
    reservoirs' top picks, then the control arm's uniform sample."""
    n_seen, wm = float(view.n_seen[at]), float(view.watermark[at])
    _flush_weighted(state, view, n_seen, wm, out)
    _flush_control(state, view, n_seen, wm, out)


def _flush_weighted(state: SelectorState, view: BatchView, n_seen: float, wm: float,
                    out: list[Selected]) -> None:
    """Highest priority first, up to top_k, from the exploit lane and class sub-budgets."""
    pol = state.policy
    entries = state.weighted.drain()
    limit = pol.reservoir.top_k if pol.reservoir.top_k is not None else len(entries)
    granted = 0
    for _, payload in entries:
        if granted >= limit or not state.budget.available(pol.budget, "exploit", n_seen, wm):
            break
        sel, key = _restore(state, payload, "reservoir")
        book = state.books.get(sel.model_id)
        if _seen(state, view, key) or (book is not None and
                                       not _class_spend(state, book, sel, n_seen)):
            continue
        state.budget.spend(pol.budget, "exploit", n_seen, wm)
        _grant_deferred(view, key, out, sel)
        granted += 1


def _flush_control(state: SelectorState, view: BatchView, n_seen: float, wm: float,
                   out: list[Selected]) -> None:
    """The uniform sample, from the explore lane; each pick records granted / offered."""
    pol = state.policy
    payloads, offered = state.control.drain()
    chosen: list[tuple[Selected, int]] = []
    for payload in payloads:
        sel, key = _restore(state, payload, "random_control")
        if not _seen(state, view, key) and state.budget.available(pol.budget, "explore",
                                                                  n_seen, wm):
            state.budget.spend(pol.budget, "explore", n_seen, wm)
            chosen.append((sel, key))
    for sel, key in chosen:
        incl = len(chosen) / max(offered, 1)
        _grant_deferred(view, key, out, replace(sel, inclusion_probability=incl))


def _class_spend(state: SelectorState, book: Any, sel: Selected, n_seen: float) -> bool:
    """Spend the class sub-budget of a deferred pick if it has a token; False if not."""
    cls = book.index.get(sel.class_name) if sel.class_name is not None else None
    if cls is None:
        return True
    rate, cap = class_limits(state.policy.budget, book.weights)
    level = book.buckets.levels_at(np.array([cls]), np.array([n_seen]), rate, cap)[0]
    if level < 1.0:
        return False
    book.buckets.spend(cls, n_seen, rate, cap)
    return True


def warmup(state: SelectorState, view: BatchView, out: list[Selected]) -> None:
    """Random picks (probability `warmup.rate`, exploit lane) for versions not ready yet."""
    pol = state.policy
    warming = [k for k, v in enumerate(view.versions)
               if not v.ready and v.warmup_used < pol.warmup.quota]
    if not warming or pol.warmup.rate <= 0.0:
        return
    draw = state.rng.random(view.batch.n_assets) < pol.warmup.rate
    mask = draw & view.free & np.isin(view.batch.asset_model, warming)
    for i in np.flatnonzero(mask).tolist():
        version = view.versions[int(view.batch.asset_model[i])]
        n_seen, wm = float(view.n_seen[i]), float(view.watermark[i])
        if version.warmup_used >= pol.warmup.quota or not view.can_take(i) or \
                not state.budget.available(pol.budget, "exploit", n_seen, wm):
            continue
        state.budget.spend(pol.budget, "exploit", n_seen, wm)
        version.warmup_used += 1
        out.append(view.describe(i, "warmup", inclusion=pol.warmup.rate))
        view.take(i)


def explore(state: SelectorState, view: BatchView, out: list[Selected]) -> None:
    """Uniform random picks (policy.exploration_probability()) from the explore lane."""
    b = state.policy.budget
    p = state.policy.exploration_probability()
    if p <= 0.0:
        return
    draw = state.rng.random(view.batch.n_assets) < p
    for i in np.flatnonzero(draw & view.free).tolist():
        n_seen, wm = float(view.n_seen[i]), float(view.watermark[i])
        if view.can_take(i) and state.budget.available(b, "explore", n_seen, wm):
            state.budget.spend(b, "explore", n_seen, wm)
            out.append(view.describe(i, "exploration", inclusion=p))
            view.take(i)


def threshold(state: SelectorState, view: BatchView, out: list[Selected]) -> None:
    """Variable-uncertainty / fixed threshold plus the class-relative rule, per ready version."""
    for k, version in enumerate(view.versions):
        if version.ready:
            _threshold_version(state, view, k, out)


def _threshold_version(state: SelectorState, view: BatchView, k: int, out: list[Selected]
                       ) -> None:
    tp = state.policy.thresholds
    version, book = view.versions[k], view.books[k]
    idx = np.flatnonzero(view.free & view.assets_of(k) & (view.driver >= 0))
    if idx.shape[0] == 0:
        return
    rel_pred, conf_thr = _relative(state, view, k)
    rel = np.zeros(idx.shape[0], dtype=bool) if rel_pred is None else (
        np.bincount(view.batch.asset_of[rel_pred], minlength=view.batch.n_assets)[idx] > 0)
    eta = state.rng.normal(1.0, tp.randomization, idx.shape[0]) if tp.randomization else None
    theta, step = {"variable_uncertainty": (version.theta, tp.step),
                   "fixed": (1.0 - tp.fixed_threshold, 0.0), "off": (0.0, 0.0)}[tp.mode]
    gate = LaneGate(state.policy.budget, state.budget, view.n_seen[idx], view.watermark[idx],
                    view.asset_cls[idx], book.buckets, book.weights)
    res = scan(1.0 - view.asset_priority[idx], rel, eta, theta, step, gate)
    if tp.mode == "variable_uncertainty":
        version.theta = res.theta
    name = "fixed" if tp.mode == "fixed" else "variable_uncertainty"
    for j, unc, thr in zip(res.index, res.uncertain, res.threshold, strict=True):
        i = int(idx[j])
        if unc:
            out.append(view.describe(i, name, threshold=thr))
        else:
            d = _relative_driver(view, i, rel_pred)
            out.append(view.describe(i, "class_relative", driver=d,
                                     threshold=float(conf_thr[view.gcls[d]])))
        view.take(i)


def _relative(state: SelectorState, view: BatchView, k: int
              ) -> tuple[np.ndarray | None, np.ndarray]:
    """Prediction indices flagged by the class-relative rule for version k, and the per-class
    confidence thresholds (NaN: class not ready)."""
    tp = state.policy.thresholds
    stats = view.versions[k].stats
    if tp.class_relative_q <= 0.0 or stats.n_classes == 0:
        return None, np.zeros(0)
    weights = view.books[k].weights[: stats.n_classes]
    q = relative_quantiles(tp.class_relative_q, tp.max_q, weights, stats.m1, stats.ready())
    thr = np.r_[stats.quantiles(q), np.full(max(len(view.books[k].names) - stats.n_classes, 0),
                                            np.nan)]
    sel = view.predictions_of(k)
    preds = np.arange(view.batch.n_predictions)[sel]
    with np.errstate(invalid="ignore"):
        hit = view.batch.top_conf[preds] < thr[view.gcls[preds]]
    return preds[hit], thr


def _relative_driver(view: BatchView, i: int, rel_pred: np.ndarray | None) -> int:
    """The flagged prediction of asset i with the highest priority."""
    b = view.batch
    lo, hi = int(b.pred_start[i]), int(b.pred_start[i + 1])
    assert rel_pred is not None
    cands = rel_pred[(rel_pred >= lo) & (rel_pred < hi)]
    return int(cands[np.argmax(view.priority[cands])])
