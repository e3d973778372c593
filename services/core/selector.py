"""`SelectorState` and `select`: one partition's selection state and its decisions.

Determinism contract: decisions and state are a function of (policy, seed, event sequence) only.
Cutting the same events into batches differently (one batch, single events, empty batches, cuts
inside windows) gives the same selections in the same order (all fields but the batch-relative
`asset_index`) and the same `snapshot()`, and `from_snapshot(snapshot())` after any batch continues
exactly as the uninterrupted state would. So a crash replay with other batch boundaries, and an
in-process run against a Kafka-mode run, select the same assets. (Commands between batches --
`apply_feedback`, `set_class_weights` -- act where they are called, as any input would.)

How: every state change that can influence a later decision happens at a position of the stream,
never at "batch end". `select` walks the batch in segments cut at the positions where something
changes -- an event-time or count window closes (reservoir flush), the stats refresh point (every
`policy.refresh_every` assets of the partition: pending class stats are folded, readiness and the
sub-budgets' class counts are re-published), a new dedupe generation, an asset repeating within
the segment, a model version created under the LRU cap (cuts.py) -- and decides each segment in
arrival order (arms.py, offers.py), vectorised; what does not depend on the state a segment
leaves (dedupe answers until dedupe changes, exploration candidates, reservoir inputs) is
computed once for all the windows of the batch. Random numbers are drawn by absolute asset
position (draws.py).
No clock, no global RNG: event time comes from the events, randomness from the seed. The clocks
run on the watermark, which moves only when two consecutive events agree (eventtime.py), so
one event stamped far in the future (or past) moves none of them.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from services.core import arms, flush
from services.core.batch import PredictionBatch
from services.core.cuts import Cuts
from services.core.registry import ModelBook, VersionState, evict_lru, update_drift
from services.core.scalar_draws import ScalarDraws
from services.core.selection import Selected, Selection
from services.core.state import FORMAT, FORMAT_VERSION, SelectorMemory
from services.core.tracks import TrackState
from services.core.view import BatchView

__all__ = ["FORMAT", "FORMAT_VERSION", "SelectorState", "observe_tracks", "select"]


class SelectorState(SelectorMemory):
    """One partition's selection state (state.py) with its `select` method."""

    def select(self, batch: PredictionBatch) -> Selection:
        """Decide one batch; see `select`."""
        return select(self, batch)


def select(state: SelectorMemory, batch: PredictionBatch) -> Selection:
    """Decide which assets of `batch` (and which deferred reservoir picks) go to annotation.

    Command that returns what it committed: updates budgets, thresholds, stats, reservoirs,
    dedupe memory and models. Never selects beyond the budget, never selects an asset twice for a
    model version within the dedupe guarantee, never mutates `batch`. Selections come in decision
    order (stream order; a window's deferred picks where the window closed). Invariant to batch
    boundaries (module docstring).
    """
    a = batch.n_assets
    state.suppressed = Counter()
    if a == 0:
        return Selection((), 0, batch.n_predictions)
    pol = state.policy
    lazy = not _create_upfront(state, batch)
    books: list[ModelBook | None] = [state.books.get(m) for m, _ in batch.model_keys]
    versions: list[VersionState | None] = [state.versions.get(k) for k in batch.model_keys]
    view = BatchView(batch, books, versions, pol.measure, pol.aggregation, pol.top_k,
                     state.assets_seen, state.watermark, state.last_time, pol.instances,
                     pol.budget.cost, state.units_seen)
    if pol.tracks.enabled and batch.video is not None:
        view.add_instability(pol.tracks.weight, observe_tracks(state.tracks, view))
    cuts = Cuts(state, view, lazy)
    out: list[Selected] = []
    j = 0
    if view.single_model and not lazy:  # its version exists throughout (`_after_one_model`)
        view.pending_from = 0
    state.control_draws = ScalarDraws(state.control_rng)
    # Held reservoir entries stay bare asset indexes until the batch ends (flush.settle), unless
    # the view can change under them: a model created (or evicted) mid-batch, whose assets then
    # map to another book; or track instability, which a bare index and a built payload judge
    # differently (gates.payload_in_doubt).
    settle_each = lazy or bool(view.unstable)
    try:
        while j < a:
            _before(state, view, j, out)
            end = cuts.next(j)
            arms.segment(state, view, j, end, out)
            _after(state, view, j, end, out)
            if settle_each:
                flush.settle(state, view)
            j = end
        flush.settle(state, view)
        _hold_pending(view, a)
    finally:  # the generator must be where the draws left it, even if a bug raised
        state.control_draws.close()
        state.control_draws = None
    return Selection(tuple(out), a, batch.n_predictions, dict(state.suppressed))


def observe_tracks(tracks: TrackState, view: BatchView) -> dict[int, Any]:
    """Feed every tracked prediction of the batch to the track memory in stream order (at the
    watermark after its asset); the unstable ones by prediction index. Command."""
    b = view.batch
    video = b.video
    assert video is not None
    out: dict[int, Any] = {}
    for r, track in enumerate(video.track):
        if track is None:
            continue
        a = int(b.asset_of[r])
        box = video.bbox[r]
        inst = tracks.observe(
            b.model_keys[int(b.asset_model[a])][0], track, float(view.watermark[a]),
            b.classes[int(b.top_class[r])], float(b.top_conf[r]),
            None if np.isnan(box[0]) else (float(box[0]), float(box[1]), float(box[2]),
                                           float(box[3])), video.asset_id[a])
        if inst is not None:
            out[r] = inst
    return out


def _create_upfront(state: SelectorMemory, batch: PredictionBatch) -> bool:
    """Create the batch's new models and versions now, in first-appearance order, if no LRU
    eviction is needed (then this equals creating each at its first asset). False otherwise:
    they are created at their first asset (`_before`)."""
    pol = state.policy
    new_versions = [k for k in batch.model_keys if k not in state.versions]
    new_models = {m for m, _ in new_versions if m not in state.books}
    if len(state.versions) + len(new_versions) > pol.max_model_versions or \
            len(state.books) + len(new_models) > pol.max_models:
        return False
    for m, v in new_versions:
        state.book(m)
        state.version(m, v)
    return True


def _before(state: SelectorMemory, view: BatchView, j: int, out: list[Selected]) -> None:
    """What happens at asset j before it is decided: the dedupe generation moves, an event-time
    window closes, a model version not in the state is created (LRU eviction)."""
    pol = state.policy
    wm = float(view.watermark[j])
    state.dedupe.advance(pol.dedupe, wm)
    tid = math.floor(wm / pol.reservoir.window_seconds)
    if state.window_id is None:
        state.window_id = tid
    elif tid > state.window_id:
        flush.flush(state, view, j, out)
        state.window_id, state.window_count = tid, 0
    k = int(view.batch.asset_model[j])
    if view.versions[k] is None or view.books[k] is None:
        _create(state, view, k, j)


def _create(state: SelectorMemory, view: BatchView, k: int, j: int) -> None:
    """Create model key k's book and/or version at asset j, evicting the least recently seen
    beyond the caps first; the view forgets evicted objects (recreated at their next asset)."""
    pol = state.policy
    model_id, version = view.batch.model_keys[k]
    if model_id not in state.books:
        for dropped in evict_lru(state.books, pol.max_models - 1):
            for key in [x for x in state.versions if x[0] == dropped]:
                del state.versions[key]
        book = state.book(model_id)
        view.rebook(k, book, j)
    if (model_id, version) not in state.versions:
        evict_lru(state.versions, pol.max_model_versions - 1)
        state.version(model_id, version)
    for kk, (m, v) in enumerate(view.batch.model_keys):
        current = state.books.get(m)
        if current is None:
            view.books[kk] = view.versions[kk] = None
            view.offer_cache = None  # its groups came from the evicted book
            continue
        if view.books[kk] is not current:
            view.rebook(kk, current, j)
        view.versions[kk] = state.versions.get((m, v))


def _drift(state: SelectorMemory, view: BatchView, hi: int) -> None:
    """Drift tests at a refresh point (drift.py). A boost that changed a model's weights in
    use changes the priorities of its assets from hi on: the view re-derives them, as a batch
    starting at hi would."""
    events, changed = update_drift(state.policy.drift, state.versions.values(), state.books,
                                   state.watermark)
    state.drift_events += events
    if not changed or hi >= view.batch.n_assets:
        return
    for model_id in changed:
        for k, (m, _) in enumerate(view.batch.model_keys):
            book = view.books[k]
            if m == model_id and book is not None:
                view.rebook(k, book, hi)
                break


def _after(state: SelectorMemory, view: BatchView, lo: int, hi: int, out: list[Selected]) -> None:
    """Assets lo:hi are decided: count them, hold their predictions for the stats, mark models
    seen; then, at a refresh point, fold the stats, and close a full count window."""
    pol = state.policy
    b = view.batch
    state.assets_seen = view.first + hi
    if pol.budget.cost == "instances":
        state.units_seen = float(view.n_seen[hi - 1])
    state.watermark = float(view.watermark[hi - 1])
    state.last_time = float(b.asset_time[hi - 1])
    state.window_count += hi - lo
    one_model = view.pending_from is not None
    if one_model:
        _after_one_model(view, hi)
    for k, version in enumerate(() if one_model else view.versions):
        if version is None:
            continue
        if view.single_model:
            last = hi - 1
        else:
            mine = np.flatnonzero(b.asset_model[lo:hi] == k)
            if mine.shape[0] == 0:
                continue
            last = lo + int(mine[-1])
        rows = view.predictions_in(lo, hi, k)
        version.add_pending(view.gcls[rows], b.top_conf[rows], b.asset_time[b.asset_of[rows]])
        seen = float(view.watermark[last])
        version.last_seen = seen
        book = view.books[k]
        assert book is not None
        book.last_seen = max(book.last_seen, seen)
        reached = view.reg_max[rows]
        if reached.shape[0]:
            book.known = max(book.known, int(reached.max()) + 1)
    if state.assets_seen % pol.refresh_every == 0:
        _hold_pending(view, hi)
        for version in state.versions.values():
            version.refresh(state.watermark, pol.stats.min_count, pol.warmup.rare_share)
        for book in state.books.values():
            book.published = book.known
        if pol.drift.enabled:
            _drift(state, view, hi)
    if pol.reservoir.window_assets and state.window_count >= pol.reservoir.window_assets:
        flush.flush(state, view, hi - 1, out)
        state.window_count = 0


def _after_one_model(view: BatchView, hi: int) -> None:
    """`_after` of a batch of one model whose version and book exist from its start: the same
    marks, while the predictions for the stats are held together at the next refresh point or
    at the batch's end (`_hold_pending`: the same arrays in the same order as segment by
    segment), and the vocabulary reached is read from a running maximum."""
    version, book = view.versions[0], view.books[0]
    assert version is not None and book is not None
    seen = float(view.watermark[hi - 1])
    version.last_seen = seen
    book.last_seen = max(book.last_seen, seen)
    p1 = int(view.batch.pred_start[hi])
    if p1:
        if view.reach is None:
            view.reach = np.maximum.accumulate(view.reg_max)
        book.known = max(book.known, int(view.reach[p1 - 1]) + 1)


def _hold_pending(view: BatchView, hi: int) -> None:
    """Hold the predictions of assets pending_from:hi for the one model's stats. Command."""
    lo = view.pending_from
    if lo is None or hi <= lo:
        return
    b, version = view.batch, view.versions[0]
    assert version is not None
    rows = slice(int(b.pred_start[lo]), int(b.pred_start[hi]))
    version.add_pending(view.gcls[rows], b.top_conf[rows], b.asset_time[b.asset_of[rows]])
    view.pending_from = hi
