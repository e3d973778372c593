"""`SelectorState` and `select`: one partition's selection state and the per-batch decision.

Determinism contract: the same policy, seed and sequence of batches (same events, same batch
boundaries, same refs) give identical selections, and `from_snapshot(snapshot())` at any batch
boundary continues exactly as the uninterrupted state would. No clock, no global RNG: event time
comes from the events, randomness from the state's seeded Generator (snapshotted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from services.core import arms
from services.core.batch import PredictionBatch
from services.core.budget import BudgetState
from services.core.codec import decode_rng, encode_rng
from services.core.dedupe import DedupeState
from services.core.feedback import weights_from_agreement
from services.core.policy import SelectorPolicy
from services.core.registry import ModelBook, VersionState, evict_lru
from services.core.reservoir import UniformReservoirState, WeightedReservoirState
from services.core.selection import Selected, Selection
from services.core.thresholds import relative_quantiles
from services.core.view import BatchView

FORMAT = "active-stream/selector-state"
FORMAT_VERSION = 1


class SelectorState:
    """Everything one partition's selector remembers; memory bounded by the policy, not by the
    stream length. Build with `create(policy, seed)` or `from_snapshot(data, policy)`."""

    def __init__(self, policy: SelectorPolicy, rng: np.random.Generator) -> None:
        self.policy = policy
        self.rng = rng
        self.assets_seen = 0
        self.watermark = -math.inf
        self.batch_serial = 0
        self.window_id: int | None = None
        self.window_count = 0
        self.budget = BudgetState(policy.budget)
        self.dedupe = DedupeState()
        self.books: dict[str, ModelBook] = {}
        self.versions: dict[tuple[str, str], VersionState] = {}
        self.weighted = WeightedReservoirState(policy.reservoir.per_class)
        self.control = UniformReservoirState(policy.reservoir.control_size)

    @classmethod
    def create(cls, policy: SelectorPolicy, seed: int) -> SelectorState:
        """A fresh state whose randomness is `numpy.random.default_rng(seed)`."""
        return cls(policy, np.random.default_rng(seed))

    def book(self, model_id: str) -> ModelBook:
        """The model's book, created on first use. Command (may create)."""
        if model_id not in self.books:
            self.books[model_id] = ModelBook(model_id, self.policy.max_classes)
        return self.books[model_id]

    def version(self, model_id: str, model_version: str) -> VersionState:
        """The model version's state, created on first use. Command (may create)."""
        key = (model_id, model_version)
        if key not in self.versions:
            self.versions[key] = VersionState(model_id, model_version, self.policy.stats,
                                              self.policy.thresholds.initial_threshold)
        return self.versions[key]

    def apply_feedback(self, model_id: str, agreement: Mapping[str, float],
                       label_counts: Mapping[str, float] | None = None) -> None:
        """Set class weights from human-model agreement per class (see feedback.py). Weak classes
        gain budget, mastered ones lose it, none reaches zero. Idempotent for equal input."""
        weights = weights_from_agreement(self.policy.feedback, agreement, label_counts)
        self.set_class_weights(model_id, weights)

    def set_class_weights(self, model_id: str, weights: Mapping[str, float]) -> None:
        """Set class weights directly (floored at feedback.min_weight > 0)."""
        self.book(model_id).set_weights(weights, self.policy.feedback.min_weight)

    def class_weights(self, model_id: str) -> dict[str, float]:
        """Current weight per known class of `model_id`. Query."""
        book = self.books.get(model_id)
        return {} if book is None else dict(zip(book.names, book.weights.tolist(), strict=True))

    def thresholds(self) -> dict[tuple[str, str], float]:
        """Variable-uncertainty threshold (uncertainty space) per model version. Query."""
        return {k: float(np.clip(1.0 - v.theta, 0.0, 1.0)) for k, v in self.versions.items()}

    def class_stats(self, model_id: str, model_version: str) -> dict[str, dict[str, Any]]:
        """Per class of a model version: count, EWMA mean/variance of top-1 confidence, window
        count, readiness, and the class-relative confidence threshold (None if not ready). For
        metrics; empty for an unknown version. Query."""
        version = self.versions.get((model_id, model_version))
        book = self.books.get(model_id)
        if version is None or book is None or version.stats.n_classes == 0:
            return {}
        s, tp = version.stats, self.policy.thresholds
        ready = s.ready()
        q = relative_quantiles(tp.class_relative_q, tp.max_q, book.weights[: s.n_classes], s.m1,
                               ready)
        thr, var, win = s.quantiles(q).tolist(), s.variance().tolist(), s.window_count().tolist()
        return {book.names[c]: {"count": int(s.count[c]), "mean": float(s.m1[c]),
                                "variance": var[c], "window_count": int(win[c]),
                                "ready": bool(ready[c]),
                                "threshold": None if np.isnan(thr[c]) else thr[c]}
                for c in range(s.n_classes)}

    def budget_remaining(self, lane: str = "exploit") -> float:
        """Whole selections the lane could grant at the current position. Query."""
        wm = self.watermark if self.watermark > -math.inf else 0.0
        return self.budget.remaining(self.policy.budget, lane, float(self.assets_seen), wm)

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able dict (str/int/float/bool/None/list/dict; no NaN/inf; ints <= 64 bits)
        with `format` and `version`. Pure: the state is unchanged."""
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "rng": encode_rng(self.rng),
            "assets_seen": self.assets_seen, "batch_serial": self.batch_serial,
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "window_id": self.window_id, "window_count": self.window_count,
            "budget": self.budget.snapshot(), "dedupe": self.dedupe.snapshot(),
            "books": [b.snapshot() for b in self.books.values()],
            "versions": [v.snapshot() for v in self.versions.values()],
            "weighted": self.weighted.snapshot(), "control": self.control.snapshot(),
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any], policy: SelectorPolicy) -> SelectorState:
        """Rebuild the state `snapshot` described. Raises ValueError on an unknown format/version
        or a policy whose stats layout (bins, buckets) differs from the snapshot's."""
        if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported snapshot {data.get('format')!r} v{data.get('version')}")
        state = cls(policy, decode_rng(data["rng"]))
        state.assets_seen, state.batch_serial = int(data["assets_seen"]), int(data["batch_serial"])
        state.watermark = -math.inf if data["watermark"] is None else float(data["watermark"])
        state.window_id, state.window_count = data["window_id"], int(data["window_count"])
        state.budget = BudgetState.from_snapshot(policy.budget, data["budget"])
        state.dedupe = DedupeState.from_snapshot(data["dedupe"])
        for b in data["books"]:
            state.books[b["model_id"]] = ModelBook.from_snapshot(b, policy.max_classes)
        for v in data["versions"]:
            version = VersionState.from_snapshot(v, policy.stats)
            state.versions[(version.model_id, version.version)] = version
        state.weighted = WeightedReservoirState.from_snapshot(data["weighted"])
        state.control = UniformReservoirState.from_snapshot(data["control"])
        return state

    def select(self, batch: PredictionBatch) -> Selection:
        """Decide one batch; see `select`."""
        return select(self, batch)


def select(state: SelectorState, batch: PredictionBatch) -> Selection:
    """Decide which assets of `batch` (and which deferred reservoir picks) go to annotation.

    Command that returns what it committed: updates budgets, thresholds, stats, reservoirs,
    dedupe memory and the RNG. Never selects beyond the budget, never selects an asset twice for a
    model version within the dedupe guarantee, never mutates `batch`.
    """
    a = batch.n_assets
    if a == 0:
        return Selection((), 0, 0)
    books = [state.book(m) for m, _ in batch.model_keys]
    versions = [state.version(m, v) for m, v in batch.model_keys]
    pol = state.policy
    view = BatchView(batch, books, versions, pol.measure, pol.aggregation, pol.top_k,
                     state.assets_seen, state.watermark)
    end_wm = float(view.watermark[-1])
    state.dedupe.advance(pol.dedupe, end_wm)
    view.free &= ~(state.dedupe.contains(view.dkey) | batch.repeat)
    out: list[Selected] = []
    _windows(state, view, out)
    arms.warmup(state, view, out)
    arms.explore(state, view, out)
    if pol.mode == "threshold":
        arms.threshold(state, view, out)
    _commit(state, view, out, end_wm)
    return Selection(tuple(out), a, batch.n_predictions)


def _windows(state: SelectorState, view: BatchView, out: list[Selected]) -> None:
    """Split the batch at window boundaries (event-time watermark, asset count); flush closed
    windows and offer each segment to the reservoirs."""
    res = state.policy.reservoir
    tid = np.floor(view.watermark / res.window_seconds).astype(np.int64)
    if state.window_id is None:
        state.window_id = int(tid[0])
    a, j = tid.shape[0], 0
    while j < a:
        if tid[j] > state.window_id or 0 < res.window_assets <= state.window_count:
            arms.flush(state, view, j, out)
            state.window_id, state.window_count = int(tid[j]), 0
        end = int(np.searchsorted(tid, state.window_id, side="right"))
        if res.window_assets:
            end = min(end, j + res.window_assets - state.window_count)
        arms.offer(state, view, j, end)
        state.window_count += end - j
        if res.window_assets and state.window_count >= res.window_assets:
            arms.flush(state, view, end - 1, out)
            state.window_count = 0
        j = end


def _commit(state: SelectorState, view: BatchView, out: list[Selected], end_wm: float) -> None:
    """Fold the batch into the state: stats, readiness, dedupe, counters, LRU bounds."""
    b = view.batch
    pol = state.policy
    for k, version in enumerate(view.versions):
        sel = view.predictions_of(k)
        version.stats.update(view.gcls[sel], b.top_conf[sel], b.asset_time[b.asset_of][sel], end_wm)
        version.check_ready(pol.stats.min_count, pol.warmup.rare_share)
        version.last_seen = end_wm
        view.books[k].last_seen = end_wm
    if view.taken:
        state.dedupe.add(pol.dedupe, np.fromiter(view.taken, dtype=np.uint64))
    state.assets_seen += b.n_assets
    state.watermark = max(state.watermark, end_wm)
    state.batch_serial += 1
    evict_lru(state.versions, pol.max_model_versions)
    for model_id in evict_lru(state.books, pol.max_models):
        for key in [k for k in state.versions if k[0] == model_id]:
            del state.versions[key]
