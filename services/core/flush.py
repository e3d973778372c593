"""A window's close (`flush`, run by `select` between segments; see selector.py) and the
reservoir payloads it grants from: the weighted reservoirs' picks first (exploit lane, class
sub-budgets, redundancy gates), then the uniform control arm's sample (explore lane), each
checked against dedupe at the moment of the grant.

A payload is a bare batch asset index while its batch is being decided, and is built
(`settle`) only for an entry that outlives its batch: most entries of a window are displaced or
drained first, so building them all would cost more than the decisions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from services.core import gates
from services.core.budget import class_limits
from services.core.selection import Selected
from services.core.state import SelectorMemory
from services.core.view import BatchView


def settle(state: SelectorMemory, view: BatchView) -> None:
    """Build the payloads of reservoir entries that outlive the batch (called by `select` when
    its last segment is decided, while the batch view still describes them; after every segment
    when the view may change under a bare index: selector.py).

    `offers.offer` stores a bare batch asset index as an entry's payload: most entries of a
    window are displaced or drained before the batch ends, so a payload is built only for a pick
    granted at a flush (`_restore`) or an entry still held here; never in a snapshot. Until
    2026-12-07 this ran after every segment, and a batch whose windows, refresh points and end
    did not line up (every batch once an event-time window had closed off the count grid) built
    the held entries' payloads three times a batch: ~1/8 of `bench/selector.py`'s time."""
    if not state.weighted.payload and not state.control.payload:  # a window just closed
        return
    for payloads, strategy in ((state.weighted.payload, "reservoir"),
                               (state.control.payload, "random_control")):
        bare = [k for k, p in enumerate(payloads) if isinstance(p, int)]
        if bare:
            built = _payloads(state, view, strategy, np.array([payloads[k] for k in bare]))
            for k, payload in zip(bare, built, strict=True):
                payloads[k] = payload


def _payloads(state: SelectorMemory, view: BatchView, strategy: str, idx: np.ndarray
              ) -> list[Any]:
    """Reservoir payloads [Selected.to_json() (asset_index -1), dedupe key, stream position],
    plus [folded embedding (base64 float32) or None, sequence or None] when a redundancy gate is
    on and the asset has either."""
    if view.plain_rows() and not gates.active(state, view):  # the usual case, ~6x faster
        rows = view.held_rows(idx, strategy)
        return [[row, str(key), pos] for row, key, pos in
                zip(rows, view.dkey[idx].tolist(), view.pos[idx].tolist(), strict=True)]
    return _described(state, view, strategy, idx)


def _described(state: SelectorMemory, view: BatchView, strategy: str, idx: np.ndarray
               ) -> list[Any]:
    """`_payloads`, one `describe` per asset: every case, and the reference the fast path is
    held to (test_payloads.py)."""
    out = []
    for i in idx.tolist():
        row = view.describe(i, strategy).to_json()
        row[1] = -1
        out.append([row, str(int(view.dkey[i])), int(view.pos[i]),
                    *gates.payload_extra(state, view, i)])
    return out


def _video(state: SelectorMemory, view: BatchView, payload: Any
           ) -> tuple[np.ndarray | None, str | None]:
    """The gates' view of a reservoir payload (see gates.py)."""
    if isinstance(payload, int):
        return gates.of_asset(state, view, payload)
    return gates.of_payload(payload)


def _restore(view: BatchView, payload: Any, strategy: str) -> tuple[Selected, int]:
    """A reservoir payload as the Selected it becomes now (asset_index -1 unless from this
    batch) and its dedupe key."""
    if isinstance(payload, int):  # offered in this segment: the view describes it directly
        return view.describe(payload, strategy), int(view.dkey[payload])
    sel = Selected.from_json(payload[0])
    index = int(payload[2]) - view.first
    index = index if 0 <= index < view.batch.n_assets else -1
    return replace(sel, asset_index=index, strategy=strategy), int(payload[1])


def _grant(state: SelectorMemory, key: int, out: list[Selected], sel: Selected) -> None:
    state.dedupe.add_one(state.policy.dedupe, key)
    out.append(sel)


def flush(state: SelectorMemory, view: BatchView, at: int, out: list[Selected]) -> None:
    """Close the window at asset index `at` (its budget coordinates): grant the weighted
    reservoirs' top picks, then the control arm's uniform sample."""
    n_seen, wm = float(view.n_seen[at]), float(view.watermark[at])
    _flush_weighted(state, view, at, n_seen, wm, out)
    _flush_control(state, view, at, n_seen, wm, out)


def _flush_weighted(state: SelectorMemory, view: BatchView, at: int, n_seen: float, wm: float,
                    out: list[Selected]) -> None:
    """Highest priority first, up to top_k, from the exploit lane and class sub-budgets, at
    asset `at` (its coordinates n_seen, wm)."""
    pol = state.policy
    if not view.lane_open(state.budget, pol.budget, "exploit", at):
        state.weighted.clear()  # the loop below would stop at its first entry
        return
    entries = state.weighted.drain(by_key=pol.reservoir.power is not None)
    limit = pol.reservoir.top_k if pol.reservoir.top_k is not None else len(entries)
    granted = 0
    limits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    gating = pol.redundancy.enabled
    # The lane was open above, and only a grant below spends from it: it is asked again after
    # each grant rather than before each entry (most entries are passed over).
    for _, payload in entries:
        if granted >= limit:
            break
        # Checked on the payload's identity first: most entries are passed over, and building
        # the Selected (`_restore`) costs more than the checks.
        key, model_id, class_name = _identity(view, payload)
        book = state.books.get(model_id)
        if state.dedupe.holds(key):
            continue
        video = _video(state, view, payload) if gating else (None, None)
        why = gates.reason(state, model_id, video, wm,
                           gating and gates.payload_in_doubt(view, payload))
        if why is not None:  # checked before the class token, which it would spend
            state.suppressed[why] += 1
            continue
        sel = _restore(view, payload, "reservoir")[0] if pol.budget.cost != "assets" else None
        cost = 1 if sel is None else sel.cost
        if book is not None and not _class_spend(state, book, class_name, n_seen, limits,
                                                 cost):
            continue
        state.budget.spend(pol.budget, "exploit", n_seen, wm, cost)
        _grant(state, key, out, sel or _restore(view, payload, "reservoir")[0])
        gates.remember(state, model_id, video, wm)
        granted += 1
        if not state.budget.available(pol.budget, "exploit", n_seen, wm):
            break


def _identity(view: BatchView, payload: Any) -> tuple[int, str, str | None]:
    """(dedupe key, model id, class name) of a reservoir payload, as `_restore` would give."""
    if isinstance(payload, int):
        k = int(view.batch.asset_model[payload])
        d = int(view.driver[payload])
        book = view.books[k]
        assert book is not None
        name = book.names[int(view.gcls[d])] if d >= 0 else None
        return int(view.dkey[payload]), view.batch.model_keys[k][0], name
    row = payload[0]
    return int(payload[1]), row[2], row[7]


def _flush_control(state: SelectorMemory, view: BatchView, at: int, n_seen: float, wm: float,
                   out: list[Selected]) -> None:
    """The uniform sample, from the explore lane, at asset `at` (its coordinates n_seen, wm);
    each pick records granted / offered."""
    pol = state.policy
    payloads, offered = state.control.drain()
    if not view.lane_open(state.budget, pol.budget, "explore", at):
        return  # nothing is spent below until a grant: no payload could be granted
    chosen: list[tuple[Selected, int]] = []
    for payload in payloads:
        key = _identity(view, payload)[0]
        if not state.dedupe.holds(key) and state.budget.available(pol.budget, "explore", n_seen,
                                                                   wm):
            sel = _restore(view, payload, "random_control")[0]
            state.budget.spend(pol.budget, "explore", n_seen, wm, sel.cost)
            chosen.append((sel, key))
            state.dedupe.add_one(pol.dedupe, key)
            if pol.redundancy.enabled:  # remembered, never suppressed (a random arm)
                gates.remember(state, sel.model_id, _video(state, view, payload), wm)
    for sel, _ in chosen:
        incl = len(chosen) / max(offered, 1)
        out.append(replace(sel, inclusion_probability=incl))


def _class_spend(state: SelectorMemory, book: Any, class_name: str | None, n_seen: float,
                 limits: dict[str, tuple[np.ndarray, np.ndarray]], cost: int = 1) -> bool:
    """Spend `cost` from the class sub-budget of a deferred pick if it has a token; False if
    not.
    `limits` caches the books' class limits for one flush (they change at refreshes only)."""
    cls = book.index.get(class_name) if class_name is not None else None
    if cls is None:
        return True
    if book.model_id not in limits:
        limits[book.model_id] = class_limits(state.policy.budget, book.weights, book.published)
    rate, cap = limits[book.model_id]
    buckets = book.buckets
    gain = rate[cls] * max(n_seen - buckets.coord[cls], 0.0)  # ClassBuckets.levels_at, scalar
    if min(cap[cls], buckets.level[cls] + gain) < 1.0:
        return False
    buckets.spend(cls, n_seen, rate, cap, cost)
    return True
