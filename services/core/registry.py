"""Per-model and per-model-version state: class vocabularies, feedback weights, class sub-budgets,
confidence stats, the variable-uncertainty threshold and warm-up progress. Bounded by LRU eviction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from services.core.budget import ClassBuckets
from services.core.codec import decode_array, encode_array, stable_hash64
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
        self.weights = np.zeros(0)
        self.group_hash = np.zeros(0, dtype=np.uint64)
        self.buckets = ClassBuckets()
        self.last_seen = -np.inf
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
        group = np.uint64(stable_hash64(f"{self.model_id}\x1f{name}"))
        self.group_hash = np.r_[self.group_hash, group]
        self.buckets.ensure_classes(idx + 1)
        return idx

    def set_weights(self, weights: Mapping[str, float], min_weight: float) -> None:
        """Set feedback weights by class name (floored at min_weight > 0); others keep theirs."""
        for name, w in weights.items():
            idx = self.class_index(name)  # first: it may grow self.weights
            self.weights[idx] = max(float(w), min_weight)

    def snapshot(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "names": list(self.names),
                "weights": encode_array(self.weights), "buckets": self.buckets.snapshot(),
                "last_seen": None if self.last_seen == -np.inf else self.last_seen}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], max_classes: int) -> ModelBook:
        book = cls(data["model_id"], max_classes)
        book.names = list(data["names"])
        book.index = {name: i for i, name in enumerate(book.names)}
        book.group_hash = np.array(
            [stable_hash64(f"{book.model_id}\x1f{n}") for n in book.names], dtype=np.uint64)
        book.weights = decode_array(data["weights"])
        book.buckets = ClassBuckets.from_snapshot(data["buckets"])
        book.last_seen = -np.inf if data["last_seen"] is None else float(data["last_seen"])
        return book


class VersionState:
    """One (model_id, model_version): stats, VU theta, warm-up picks, readiness."""

    def __init__(self, model_id: str, version: str, stats_policy: ConfidenceStatsPolicy,
                 theta: float) -> None:
        self.model_id = model_id
        self.version = version
        self.key_hash = stable_hash64(f"{model_id}\x1f{version}")
        self.stats = ConfidenceStatsState(stats_policy)
        self.theta = theta
        self.warmup_used = 0
        self.ready = False
        self.last_seen = -np.inf

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
        return {"model_id": self.model_id, "version": self.version, "theta": self.theta,
                "warmup_used": self.warmup_used, "ready": self.ready,
                "last_seen": None if self.last_seen == -np.inf else self.last_seen,
                "stats": self.stats.snapshot()}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any], stats_policy: ConfidenceStatsPolicy
                      ) -> VersionState:
        v = cls(data["model_id"], data["version"], stats_policy, float(data["theta"]))
        v.warmup_used, v.ready = int(data["warmup_used"]), bool(data["ready"])
        v.last_seen = -np.inf if data["last_seen"] is None else float(data["last_seen"])
        v.stats = ConfidenceStatsState.from_snapshot(stats_policy, data["stats"])
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
