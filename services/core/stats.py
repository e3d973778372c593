"""Rolling confidence stats per (model version, class): count, EWMA moments, windowed quantiles.

Quantiles come from fixed-resolution histograms over [0, 1] kept in a ring of event-time buckets.
Histograms merge exactly (integer counts), so the windowed total is maintained incrementally: add on
update, subtract when a bucket leaves the window. A reported q-quantile is the upper edge of the bin
holding the ceil(q * n)-th smallest windowed confidence, so it is within 1 / bins of the exact
sample quantile and never below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.codec import decode_array, encode_array


@dataclass(frozen=True)
class ConfidenceStatsPolicy:
    """Settings. `bins`: histogram resolution (quantile error <= 1 / bins); `bucket_seconds` x
    `buckets`: the event-time window of the quantiles (default 5 min x 12 = 1 h); `ewma_alpha`:
    EWMA weight of each new confidence (per prediction of the class, not per second); `min_count`:
    windowed samples a class needs before its quantiles are reported (else "not ready")."""

    bins: int = 1000
    bucket_seconds: float = 300.0
    buckets: int = 12
    ewma_alpha: float = 0.02
    min_count: int = 100

    def __post_init__(self) -> None:
        if self.bins < 2 or self.buckets < 1 or self.bucket_seconds <= 0:
            raise ValueError("bins >= 2, buckets >= 1 and bucket_seconds > 0 are required")
        if not 0.0 < self.ewma_alpha <= 1.0 or self.min_count < 1:
            raise ValueError("ewma_alpha in (0, 1] and min_count >= 1 are required")


class ConfidenceStatsState:
    """Stats of one model version over its class indices 0..C-1 (C grows with `ensure_classes`).

    Memory is O(buckets x C x bins), independent of stream length. Deterministic: the same updates
    in the same order give bit-identical state, and snapshot/from_snapshot round-trips exactly.
    """

    def __init__(self, policy: ConfidenceStatsPolicy, n_classes: int = 0) -> None:
        self.policy = policy
        self.count = np.zeros(n_classes, dtype=np.int64)
        self.m1 = np.zeros(n_classes)
        self.m2 = np.zeros(n_classes)
        self.hist = np.zeros((policy.buckets, n_classes, policy.bins), dtype=np.uint32)
        self.total = np.zeros((n_classes, policy.bins), dtype=np.int64)
        self.bucket_ids = np.full(policy.buckets, -1, dtype=np.int64)
        self.current = -1
        self._decay = np.ones(0)  # (1 - alpha) ** k, derived (not snapshotted)
        self._encoded: list[dict[str, Any] | None] = [None] * policy.buckets  # snapshot memo

    @property
    def n_classes(self) -> int:
        return int(self.count.shape[0])

    def ensure_classes(self, n_classes: int) -> None:
        """Grow to at least `n_classes` classes (new classes start empty). Idempotent."""
        extra = n_classes - self.n_classes
        if extra <= 0:
            return
        self.count = np.r_[self.count, np.zeros(extra, dtype=np.int64)]
        self.m1 = np.r_[self.m1, np.zeros(extra)]
        self.m2 = np.r_[self.m2, np.zeros(extra)]
        pad = ((0, 0), (0, extra), (0, 0))
        self.hist = np.pad(self.hist, pad)
        self.total = np.pad(self.total, ((0, extra), (0, 0)))
        self._encoded = [None] * self.policy.buckets

    def update(self, classes: np.ndarray, conf: np.ndarray, times: np.ndarray,
               watermark: float) -> None:
        """Add confidences (in [0, 1]) of predictions of `classes` at event `times` (epoch s).

        `watermark` (>= every time seen) advances the window; samples older than the window still
        count towards `count` and the EWMAs but not the quantiles. Order within the batch matters
        for the EWMAs (arrival order).
        """
        if classes.shape[0] == 0:
            return
        self.ensure_classes(int(classes.max()) + 1)
        self._advance(int(np.floor(watermark / self.policy.bucket_seconds)))
        self._update_moments(classes, conf)
        self._update_histograms(classes, conf, times)

    def _advance(self, bucket: int) -> None:
        if bucket <= self.current:
            return
        for b in range(max(self.current + 1, bucket - self.policy.buckets + 1), bucket + 1):
            slot = b % self.policy.buckets
            self.total -= self.hist[slot]
            self.hist[slot] = 0
            self._encoded[slot] = None
            self.bucket_ids[slot] = b
        self.current = bucket

    def _update_moments(self, classes: np.ndarray, conf: np.ndarray) -> None:
        n_c = self.n_classes
        small = classes.astype(np.int16) if n_c < 2**15 else classes  # radix sort: ~3x faster
        order = np.argsort(small, kind="stable")
        per_class = np.bincount(classes, minlength=n_c)
        ends = np.cumsum(per_class)
        from_end = np.empty_like(order)
        from_end[order] = np.repeat(ends, per_class) - 1 - np.arange(order.shape[0])
        fresh = (self.count == 0) & (per_class > 0)
        if fresh.any():
            first = order[(ends - per_class)[fresh]]
            self.m1[fresh] = conf[first]
            self.m2[fresh] = conf[first] ** 2
        a = self.policy.ewma_alpha
        if self._decay.shape[0] < classes.shape[0]:
            self._decay = (1.0 - a) ** np.arange(max(classes.shape[0], 1024), dtype=np.float64)
        w = a * self._decay[from_end]
        decay = (1.0 - a) ** per_class
        self.m1 = self.m1 * decay + np.bincount(classes, w * conf, minlength=n_c)
        self.m2 = self.m2 * decay + np.bincount(classes, w * conf * conf, minlength=n_c)
        self.count += per_class

    def _update_histograms(self, classes: np.ndarray, conf: np.ndarray, times: np.ndarray) -> None:
        p = self.policy
        bins = np.minimum((conf * p.bins).astype(np.int64), p.bins - 1)
        bucket = np.minimum(np.floor(times / p.bucket_seconds).astype(np.int64), self.current)
        live = bucket > self.current - p.buckets
        cell = classes.astype(np.int64) * p.bins + bins
        size = self.n_classes * p.bins
        if bool(live.all()) and bucket.min() == bucket.max():  # the common case: one bucket
            counts = np.bincount(cell, minlength=size).reshape(self.n_classes, p.bins)
            one = int(bucket[0]) % p.buckets
            self.hist[one] += counts.astype(np.uint32)
            self._encoded[one] = None
            self.total += counts
            return
        slots = bucket[live] % p.buckets
        per_slot = np.bincount(slots * size + cell[live], minlength=p.buckets * size)
        per_slot = per_slot.reshape(p.buckets, self.n_classes, p.bins)
        self.hist += per_slot.astype(np.uint32)
        for s in np.unique(slots).tolist():
            self._encoded[s] = None
        self.total += per_slot.sum(axis=0)

    def mean(self) -> np.ndarray:
        """EWMA of each class's confidence (0 for classes never seen)."""
        return self.m1.copy()

    def variance(self) -> np.ndarray:
        """EWMA variance of each class's confidence (E[x^2] - E[x]^2, clipped at 0)."""
        return np.maximum(self.m2 - self.m1 * self.m1, 0.0)

    def window_count(self) -> np.ndarray:
        """Samples per class inside the quantile window."""
        return self.total.sum(axis=1)

    def ready(self) -> np.ndarray:
        """Per class: True when its windowed sample count reaches `min_count`."""
        return self.window_count() >= self.policy.min_count

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        """Per class c: the q[c]-quantile (q in [0, 1]) of the windowed confidences, within
        1 / bins above the exact sample quantile; NaN for classes that are not ready."""
        n = self.window_count()
        target = np.maximum(np.ceil(q * n), 1)
        below = (np.cumsum(self.total, axis=1) < target[:, None]).sum(axis=1)
        out = (below + 1) / self.policy.bins
        return np.where(n >= self.policy.min_count, np.minimum(out, 1.0), np.nan)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able, exact state (the policy is not included). The windowed total is derived
        (sum of the buckets), so it is not stored. Encodings of buckets unchanged since the last
        snapshot are reused (an internal memo), so a snapshot per batch re-encodes ~one bucket."""
        for slot, enc in enumerate(self._encoded):
            if enc is None:
                self._encoded[slot] = encode_array(self.hist[slot])
        arrays = ("count", "m1", "m2", "bucket_ids")
        return {"current": self.current, "hist": [dict(e) for e in self._encoded if e],
                **{k: encode_array(getattr(self, k)) for k in arrays}}

    @classmethod
    def from_snapshot(cls, policy: ConfidenceStatsPolicy, data: dict[str, Any]
                      ) -> ConfidenceStatsState:
        """Inverse of `snapshot`; raises ValueError if `policy` changed the histogram layout."""
        state = cls(policy)
        for k in ("count", "m1", "m2", "bucket_ids"):
            setattr(state, k, decode_array(data[k]))
        if len(data["hist"]) != policy.buckets:
            raise ValueError("snapshot histogram layout differs from the policy (buckets)")
        state.hist = np.stack([decode_array(h) for h in data["hist"]])
        if state.hist.shape[2] != policy.bins:
            raise ValueError("snapshot histogram layout differs from the policy (bins)")
        state.total = state.hist.sum(axis=0, dtype=np.int64)
        state.current = int(data["current"])
        return state
