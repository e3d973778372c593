"""Drift of a class's confidence distribution: a two-window Kolmogorov-Smirnov test on the
rolling histograms the confidence stats already keep (stats.py), and a bounded budget boost.

Per (model version, class), each time the stats' event-time ring closes a bucket, the last
`recent_buckets` closed buckets (the recent window) are compared with the older closed buckets
still in the ring (the reference window). The statistic is the KS distance D = max |F_ref -
F_recent| between the two binned CDFs; the class drifts when both windows hold >= `min_count`
confidences and D exceeds the asymptotic critical value c(alpha) x sqrt((n + m) / (n m)),
c(alpha) = sqrt(-ln(alpha / 2) / 2). So `alpha` is the false-alarm probability of one test of a
stationary class (binning makes the test conservative), whatever the class's volume; PSI, by
contrast, has no calibrated threshold (its noise grows as windows shrink; bench/drift.py). A
drifting class's weight is multiplied by `boost` until `boost_seconds` of event time after its
last positive test.

Why this design: no memory beyond the stats' ring (the reference slides with the window, so a
shift is "news" for about one window, then the new distribution is the norm), one vectorised
test per bucket close, and everything runs on event time at the selector's refresh points, so a
replay with other batch boundaries detects the same drift at the same asset. A change slower
than the window (gradual ageing over days) is not what this catches: see docs/drift.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.codec import decode_array, encode_array
from services.core.stats import ConfidenceStatsState

MAX_BOOST = 10.0


@dataclass(frozen=True)
class DriftPolicy:
    """Settings. `enabled`: test at all. `recent_buckets`: closed stats buckets in the recent
    window (the rest of the ring's closed buckets are the reference; stats.buckets must leave at
    least one). `alpha`: false-alarm probability of one test of one stationary class. `min_count`:
    confidences each window needs before a class is tested. `boost`: weight multiplier of a
    drifting class, in [1, MAX_BOOST] (1 = detect and report only). `boost_seconds`: event time
    the boost lasts after the last positive test."""

    enabled: bool = True
    recent_buckets: int = 1
    alpha: float = 1e-4
    min_count: int = 200
    boost: float = 2.0
    boost_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.recent_buckets < 1 or self.min_count < 1 or self.boost_seconds < 0:
            raise ValueError("recent_buckets >= 1, min_count >= 1, boost_seconds >= 0 required")
        if not 0.0 < self.alpha < 1.0 or not 1.0 <= self.boost <= MAX_BOOST:
            raise ValueError(f"alpha in (0, 1) and boost in [1, {MAX_BOOST:g}] are required")

    def critical(self, n: np.ndarray, m: np.ndarray) -> np.ndarray:
        """KS critical distance for windows of n and m samples (n, m > 0). Query."""
        c = math.sqrt(-math.log(self.alpha / 2.0) / 2.0)
        return c * np.sqrt((n + m) / np.maximum(n * m, 1))


@dataclass(frozen=True)
class DriftEvent:
    """A class that started drifting: which, how far (KS distance and its critical value),
    on how many confidences, at which watermark, and the boost it got until when."""

    model_id: str
    model_version: str
    class_name: str
    distance: float
    critical: float
    recent_count: int
    reference_count: int
    detected_at: float
    boost: float
    boost_until: float


def windows(stats: ConfidenceStatsState, recent_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference, recent) histograms, each (classes, bins) int64, of the stats' closed
    buckets: recent = the last `recent_buckets` closed, reference = the older ones still in
    the window. The open (current) bucket is in neither. Query."""
    ids, cur, size = stats.bucket_ids, stats.current, stats.policy.buckets
    live = (ids > cur - size) & (ids < cur) & (ids >= 0)
    recent = live & (ids >= cur - recent_buckets)
    reference = live & ~recent
    shape = (stats.n_classes, stats.policy.bins)
    rec = stats.hist[recent].sum(axis=0, dtype=np.int64) if recent.any() else np.zeros(shape,
                                                                                       np.int64)
    ref = stats.hist[reference].sum(axis=0, dtype=np.int64) if reference.any() else \
        np.zeros(shape, np.int64)
    return ref, rec


def ks_distance(ref: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """Per row: the largest gap between the two histograms' empirical CDFs (0 for an empty
    row). Pure."""
    n = np.maximum(ref.sum(axis=1, keepdims=True), 1)
    m = np.maximum(rec.sum(axis=1, keepdims=True), 1)
    gap = np.abs(np.cumsum(ref, axis=1) / n - np.cumsum(rec, axis=1) / m)
    return gap.max(axis=1) if gap.shape[1] else np.zeros(gap.shape[0])


def psi(ref: np.ndarray, rec: np.ndarray, groups: int = 10, floor: float = 1e-4) -> np.ndarray:
    """Population stability index per row over `groups` equal-width confidence bins (the
    industry's statistic; bench/drift.py compares it with KS). Pure."""
    k = ref.shape[1] // groups
    a = ref[:, : k * groups].reshape(ref.shape[0], groups, k).sum(axis=2).astype(np.float64)
    b = rec[:, : k * groups].reshape(rec.shape[0], groups, k).sum(axis=2).astype(np.float64)
    p = np.maximum(a / np.maximum(a.sum(axis=1, keepdims=True), 1), floor)
    q = np.maximum(b / np.maximum(b.sum(axis=1, keepdims=True), 1), floor)
    return ((q - p) * np.log(q / p)).sum(axis=1)


class DriftState:
    """Drift memory of one model version: the last stats bucket tested, and per class the
    event time its boost ends (-inf: none) and its last test's D / critical (NaN: untested).
    O(classes); snapshot round-trips exactly."""

    def __init__(self) -> None:
        self.checked = -1
        self.until = np.zeros(0)
        self.ratio = np.zeros(0)

    def _grow(self, n: int) -> None:
        extra = n - self.until.shape[0]
        if extra > 0:
            self.until = np.r_[self.until, np.full(extra, -np.inf)]
            self.ratio = np.r_[self.ratio, np.full(extra, np.nan)]

    def check(self, policy: DriftPolicy, stats: ConfidenceStatsState, watermark: float
              ) -> list[tuple[int, float, float, int, int]]:
        """Test every class once per newly closed stats bucket. Returns (class, distance,
        critical, recent count, reference count) of the classes that start drifting (not those
        already boosted, whose boost is extended). Command."""
        self._grow(stats.n_classes)
        if stats.current <= self.checked or stats.n_classes == 0:
            return []
        self.checked = stats.current
        ref, rec = windows(stats, policy.recent_buckets)
        n, m = ref.sum(axis=1), rec.sum(axis=1)
        tested = (n >= policy.min_count) & (m >= policy.min_count)
        d, crit = ks_distance(ref, rec), policy.critical(n, m)
        self.ratio = np.full(d.shape[0], np.nan)
        np.divide(d, crit, out=self.ratio, where=tested)
        fired = tested & (d > crit)
        fresh = fired & ~(self.until > watermark)
        self.until[fired] = watermark + policy.boost_seconds
        return [(c, float(d[c]), float(crit[c]), int(m[c]), int(n[c]))
                for c in np.flatnonzero(fresh).tolist()]

    def active(self, watermark: float) -> np.ndarray:
        """Per class: its boost is running at `watermark`. Query."""
        return self.until > watermark

    def snapshot(self) -> dict[str, Any]:
        return {"checked": self.checked, "until": encode_array(self.until),
                "ratio": encode_array(self.ratio)}

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any] | None) -> DriftState:
        """Inverse of `snapshot`; None (a checkpoint from before drift existed) is fresh."""
        state = cls()
        if data is not None:
            state.checked = int(data["checked"])
            state.until, state.ratio = decode_array(data["until"]), decode_array(data["ratio"])
        return state

