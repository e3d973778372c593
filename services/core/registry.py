"""Per-model and per-model-version state: class vocabularies, feedback weights, class sub-budgets,
confidence stats, the variable-uncertainty threshold and warm-up progress. Bounded by LRU eviction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from services.core.budget import ClassBuckets
from services.core.codec import decode_array, encode_array, stable_hash64
from services.core.drift import DriftEvent, DriftPolicy, DriftState
from services.core.stats import ConfidenceStatsPolicy, ConfidenceStatsState

OTHER_CLASS = "__other__"


class ModelBook:
    """One model_id: its class vocabulary (grows; stable indices), feedback weights, and per-class
    sub-budget buckets. Vocabularies are shared by all versions of the model."""

    def __init__(self, model_id: str, max_classes: int) -> None:
        self.model_id = model_id
        self.max_classes = max_classes
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.weights = np.zeros(0)  # in use: feedback x drift boost
        self.feedback = np.zeros(0)  # as set by feedback
        self.boost = np.ones(0)  # drift boost per class (drift.py), 1 = none
        self.group_hash = np.zeros(0, dtype=np.uint64)
        # Confusion pairs (predicted, runner-up) and per class their total and distinct kinds,
        # counted only under confusion novelty (novelty.py).
        self.pairs: dict[int, int] = {}
        self.pair_total = np.zeros(0, dtype=np.int64)
        self.pair_kinds = np.zeros(0, dtype=np.int64)
        self.buckets = ClassBuckets()
        self.last_seen = -np.inf
        self.known = 0  # classes met by the stream so far (positional; vocabularies may run ahead)
        self.published = 0  # `known` at the last stats refresh (sizes the sub-budgets)
        self._luts: dict[tuple[str, ...], np.ndarray] = {}

    def lookup(self, names: tuple[str, ...]) -> np.ndarray:
        """Class indices of `names` (registering new ones in order), cached per names tuple.
        Indices never change, so the cache needs no snapshot; it is bounded to 64 tuples."""
        lut = self._luts.get(names)
        if lut is None:
            lut = np.array([self.class_index(n) for n in names], dtype=np.int64)
            if len(self._luts) >= 64:
                self._luts.clear()
            self._luts[names] = lut
        return lut

    def class_index(self, name: str) -> int:
        """Index of class `name`, adding it (weight 1) if new; past `max_classes` - 1 names every
        new class maps to `__other__`. Command (may grow the vocabulary)."""
        idx = self.index.get(name)
        if idx is not None:
            return idx
        if len(self.names) >= self.max_classes - 1 and name != OTHER_CLASS:
            return self.class_index(OTHER_CLASS)
        idx = len(self.names)
        self.names.append(name)
        self.index[name] = idx
        self.weights = np.r_[self.weights, 1.0]
        self.feedback = np.r_[self.feedback, 1.0]
        self.boost = np.r_[self.boost, 1.0]
        group = np.uint64(stable_hash64(f"{self.model_id}\x1f{name}"))
        self.group_hash = np.r_[self.group_hash, group]
        self.pair_total = np.r_[self.pair_total, np.int64(0)]
        self.pair_kinds = np.r_[self.pair_kinds, np.int64(0)]
        self.buckets.ensure_classes(idx + 1)
        return idx

    def register(self, layouts: tuple[tuple[int, ...], ...], classes: tuple[str, ...],
                 pred_layout: np.ndarray, top_class: np.ndarray) -> None:
        """Register the classes of some predictions (in stream order) in order of first
        appearance: a distribution row brings its classes in the event's dict order, a top-1 row
        its label. The same predictions register the same names in the same order however they
        were batched. Command."""
        if pred_layout.shape[0] == 0:
            return
        seen: set[int] = set()
        for lay, top in zip(pred_layout.tolist(), top_class.tolist(), strict=True):
            key = lay if lay >= 0 else -1 - top
            if key in seen:
                continue
            seen.add(key)
            for c in (layouts[lay] if lay >= 0 else (top,)):
                self.class_index(classes[c])

    def set_weights(self, weights: Mapping[str, float], min_weight: float) -> None:
        """Set feedback weights by class name (floored at min_weight > 0); others keep theirs."""
        for name, w in weights.items():
            idx = self.class_index(name)  # first: it may grow self.weights
            self.feedback[idx] = max(float(w), min_weight)
            self.weights[idx] = self.feedback[idx] * self.boost[idx]
            self.known = max(self.known, idx + 1)

    def set_boost(self, boost: np.ndarray | None) -> bool:
        """Set the drift boost per class index (None or shorter: 1 for the rest); the weights
        in use become feedback x boost. Command; returns whether anything changed."""
        new = np.ones(self.feedback.shape[0])
        if boost is not None:
            k = min(boost.shape[0], new.shape[0])
            new[:k] = boost[:k]
        if np.array_equal(new, self.boost):
            return False
        self.boost = new
        self.weights = self.feedback * new
        return True

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model_id": self.model_id, "names": list(self.names),
            "weights": encode_array(self.feedback), "buckets": self.buckets.snapshot(),
            "last_seen": None if self.last_seen == -np.inf else self.last_seen,
            "known": self.known, "published": self.published}
        if (self.boost != 1.0).any():  # only while a drift boost runs: else as before
            out["boost"] = encode_array(self.boost)
        if self.pairs:  # only under confusion novelty: else as before
            keys = np.array(sorted(self.pairs), dtype=np.int64)
            out["pairs"] = [encode_array(keys), encode_array(np.array(
                [self.pairs[k] for k in keys.tolist()], dtype=np.int64)),
                encode_array(self.pair_total), encode_array(self.pair_kinds)]
        return out

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], max_classes: int) -> ModelBook:
        book = cls(data["model_id"], max_classes)
        book.names = list(data["names"])
        book.index = {name: i for i, name in enumerate(book.names)}
        book.group_hash = np.array(
            [stable_hash64(f"{book.model_id}\x1f{n}") for n in book.names], dtype=np.uint64)
        book.feedback = decode_array(data["weights"])
        book.boost = decode_array(data["boost"]) if "boost" in data else \
            np.ones(book.feedback.shape[0])
        book.weights = book.feedback * book.boost
        book.pair_total = np.zeros(len(book.names), dtype=np.int64)
        book.pair_kinds = np.zeros(len(book.names), dtype=np.int64)
        if "pairs" in data:
            keys, counts, total, kinds = (decode_array(a).astype(np.int64) for a in data["pairs"])
            book.pairs = dict(zip(keys.tolist(), counts.tolist(), strict=True))
            book.pair_total, book.pair_kinds = total, kinds
        book.buckets = ClassBuckets.from_snapshot(data["buckets"])
        book.last_seen = -np.inf if data["last_seen"] is None else float(data["last_seen"])
        book.known, book.published = int(data["known"]), int(data["published"])
        return book


class VersionState:
    """One (model_id, model_version): stats (folded at refresh points) plus the predictions
    pending since the last refresh, the VU theta as (base, misses: theta = min(1, base x
    growth[misses]), see thresholds.growth), warm-up picks, readiness."""

    def __init__(self, model_id: str, version: str, stats_policy: ConfidenceStatsPolicy,
                 theta: float) -> None:
        self.model_id = model_id
        self.version = version
        self.key_hash = stable_hash64(f"{model_id}\x1f{version}")
        self.stats = ConfidenceStatsState(stats_policy)
        self.theta = theta
        self.misses = 0
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.refreshes = 0  # derived, not snapshotted: keys `relative_cache`
        self.relative_cache: tuple[Any, np.ndarray] | None = None
        self.warmup_used = 0
        self.ready = False
        self.last_seen = -np.inf
        self.drift = DriftState()

    def add_pending(self, classes: np.ndarray, conf: np.ndarray, times: np.ndarray) -> None:
        """Hold predictions (class, top-1 confidence, event time) until the next refresh."""
        if classes.shape[0]:
            self.pending.append((classes.astype(np.int64), conf.astype(np.float64),
                                 times.astype(np.float64)))

    def refresh(self, watermark: float, min_count: int, rare_share: float) -> None:
        """Fold the pending predictions into the stats (one update, arrival order) at
        `watermark` and re-check readiness. Command."""
        if not self.pending:
            return
        cls, conf, times = (np.concatenate(parts) for parts in zip(*self.pending, strict=True))
        self.pending = []
        self.refreshes += 1
        self.stats.update(cls, conf, times, watermark)
        self.check_ready(min_count, rare_share)

    def check_ready(self, min_count: int, rare_share: float) -> None:
        """Become ready (for good) once every class with >= rare_share of this version's
        predictions has >= min_count of them. Command."""
        counts = self.stats.count
        total = int(counts.sum())
        if self.ready or total == 0:
            return
        frequent = counts >= rare_share * total
        self.ready = bool((counts[frequent] >= min_count).all())

    def snapshot(self) -> dict[str, Any]:
        cls, conf, times = ((np.concatenate(p) for p in zip(*self.pending, strict=True))
                            if self.pending else (np.zeros(0, np.int64), np.zeros(0), np.zeros(0)))
        return {"model_id": self.model_id, "version": self.version, "theta": self.theta,
                "misses": self.misses, "warmup_used": self.warmup_used, "ready": self.ready,
                "last_seen": None if self.last_seen == -np.inf else self.last_seen,
                "stats": self.stats.snapshot(), "drift": self.drift.snapshot(),
                "pending": [encode_array(cls), encode_array(conf), encode_array(times)]}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], stats_policy: ConfidenceStatsPolicy
                      ) -> VersionState:
        v = cls(data["model_id"], data["version"], stats_policy, float(data["theta"]))
        v.misses = int(data["misses"])
        v.warmup_used, v.ready = int(data["warmup_used"]), bool(data["ready"])
        v.last_seen = -np.inf if data["last_seen"] is None else float(data["last_seen"])
        v.stats = ConfidenceStatsState.from_snapshot(stats_policy, data["stats"])
        v.drift = DriftState.from_snapshot(data.get("drift"))  # absent: an older checkpoint
        v.add_pending(*(decode_array(a) for a in data["pending"]))
        return v


def evict_lru(items: dict[Any, Any], limit: int) -> list[Any]:
    """Drop the least recently seen entries (by `.last_seen`, then insertion order) beyond
    `limit`; return the dropped keys. Command."""
    if len(items) <= limit:
        return []
    ranked = sorted(enumerate(items), key=lambda p: (items[p[1]].last_seen, p[0]))
    dropped = [key for _, key in ranked[: len(items) - limit]]
    for key in dropped:
        del items[key]
    return dropped


def update_drift(policy: DriftPolicy, versions: Iterable[VersionState],
                 books: Mapping[str, ModelBook], watermark: float
                 ) -> tuple[list[DriftEvent], list[str]]:
    """At a stats refresh: test each version whose stats closed a bucket (drift.py), then set
    each model book's class boosts (a class of a model boosts while any of its versions' boost
    runs).
    Returns the classes that started drifting (in version order, then class order) and the
    models whose boosts changed (their weights in use changed). Command."""
    events: list[DriftEvent] = []
    active: dict[str, np.ndarray] = {}
    for v in versions:
        book = books.get(v.model_id)
        if book is None:
            continue
        for c, d, crit, n_rec, n_ref in v.drift.check(policy, v.stats, watermark):
            events.append(DriftEvent(v.model_id, v.version, book.names[c], d, crit, n_rec,
                                     n_ref, watermark, policy.boost,
                                     watermark + policy.boost_seconds))
        on = v.drift.active(watermark)
        if on.any():
            prev = active.get(v.model_id, np.zeros(0, dtype=bool))
            size = max(prev.shape[0], on.shape[0])
            active[v.model_id] = np.pad(prev, (0, size - prev.shape[0])) | \
                np.pad(on, (0, size - on.shape[0]))
    changed = []
    for model_id, book in books.items():
        mine = active.get(model_id)
        if book.set_boost(None if mine is None else np.where(mine, policy.boost, 1.0)):
            changed.append(model_id)
    return events, changed
