"""Estimates of a model's accuracy on the whole stream from the random control arm's labels.

Pure: no Kafka, no clock, no randomness. The uncertainty-driven strategies pick the hard cases on
purpose, so any figure computed from their labels is biased low. The uniform control arm
(`reason.strategy == "random_control"`) records the inclusion probability pi of each asset it
picks (the reservoir's k / n of its window); weighting each of those labels by w = 1 / pi gives a
design-based estimate of the whole stream's rate, whatever the other arms did.

Estimator: the Hajek ratio R = sum(w * y) / sum(w * m) over control labels, where a label is a
cluster of m annotations of the class and y of them are "hits". It is the Horvitz-Thompson total
of hits divided by the Horvitz-Thompson total of annotations; it needs no stream size and is
consistent whatever the windows' sizes were. Its variance is the usual linearisation,
V = n / (n - 1) * sum((w * (y - R * m))**2) / (sum(w * m))**2, with labels (assets) as clusters.

Interval: Wilson's score interval at the effective sample size of Korn and Graubard (1998),
n_eff = R (1 - R) / V, at most the number of annotations (never more informative than a simple
random sample of that size); where R is 0 or 1 (V = 0) Kish's n_eff = (sum w m)^2 / sum (w m)^2
is used. Why Wilson and not R +- z sqrt(V): mastery is judged near 1 (0.95), where the Wald
interval collapses to a point after a run of hits and covers far below its stated rate; Wilson
keeps its rate there and never leaves [0, 1].

Two rates per (model version, class), both on control labels only:
- `accuracy`: of the stream's annotations whose human class is c, the share the model got right
  (recall of c; the same comparison as the sink's `agreement`, see agreement.outcomes);
- `agreement`: of the stream's predictions of class c matched to an annotation, the share the
  human confirmed (precision of c).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

CONTROL_STRATEGY = "random_control"
"""The `reason.strategy` of the uniform control arm: the only labels the estimates use."""


@dataclass(frozen=True)
class Interval:
    """A rate in [0, 1] with its confidence interval: low <= estimate <= high."""

    estimate: float
    low: float
    high: float


@dataclass
class RatioSums:
    """Sufficient statistics of one Hajek ratio. Command `add`, query `interval`.

    n: clusters (labels) added; m_total: annotations; sw: sum w*m; sy: sum w*y; qmm, qym, qyy:
    sums of (w*m)^2, w^2*y*m, (w*y)^2 (for the variance)."""

    n: int = 0
    m_total: int = 0
    sw: float = 0.0
    sy: float = 0.0
    qmm: float = 0.0
    qym: float = 0.0
    qyy: float = 0.0

    def add(self, weight: float, m: int, y: int) -> None:
        """One control label with `m` annotations of the class, `y` of them hits; weight 1/pi."""
        if m <= 0:
            return
        if not 0 <= y <= m or not weight >= 1.0:
            raise ValueError(f"need 0 <= y <= m and weight >= 1, got y={y} m={m} w={weight}")
        self.n += 1
        self.m_total += m
        self.sw += weight * m
        self.sy += weight * y
        self.qmm += (weight * m) ** 2
        self.qym += weight * weight * y * m
        self.qyy += (weight * y) ** 2

    def merge(self, other: RatioSums) -> None:
        """Add another set of sums (of labels not in this one)."""
        self.n += other.n
        self.m_total += other.m_total
        self.sw += other.sw
        self.sy += other.sy
        self.qmm += other.qmm
        self.qym += other.qym
        self.qyy += other.qyy

    def ratio(self) -> float | None:
        return self.sy / self.sw if self.sw > 0 else None

    def effective_n(self) -> float:
        """Korn-Graubard effective sample size (module doc); 0 when nothing was added."""
        r = self.ratio()
        if r is None:
            return 0.0
        kish = self.sw * self.sw / self.qmm
        if self.n < 2 or r <= 0.0 or r >= 1.0:
            return min(kish, float(self.m_total))
        resid = max(self.qyy - 2.0 * r * self.qym + r * r * self.qmm, 0.0)
        var = self.n / (self.n - 1) * resid / (self.sw * self.sw)
        if var <= 0.0:
            return min(kish, float(self.m_total))
        return min(r * (1.0 - r) / var, float(self.m_total))

    def interval(self, confidence: float) -> Interval | None:
        """The estimate with its Wilson interval at `confidence` (e.g. 0.95); None if empty."""
        r = self.ratio()
        if r is None:
            return None
        r = min(max(r, 0.0), 1.0)
        low, high = wilson(r, self.effective_n(), confidence)
        return Interval(r, min(low, r), max(high, r))

    def snapshot(self) -> list[float]:
        return [self.n, self.m_total, self.sw, self.sy, self.qmm, self.qym, self.qyy]

    @classmethod
    def from_snapshot(cls, data: Sequence[float]) -> RatioSums:
        n, m, sw, sy, qmm, qym, qyy = data
        return cls(int(n), int(m), float(sw), float(sy), float(qmm), float(qym), float(qyy))


def wilson(p: float, n: float, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a proportion `p` observed on `n` (> 0, may be fractional)."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0))
    return max(0.0, centre - half), min(1.0, centre + half)


Pair = tuple[str, str | None, bool]
"""One annotation of a control label: (human class, matched predicted class or None, agreed)."""


def pairs(predicted: Sequence[tuple[str | None, str]],
          annotations: Iterable[tuple[str, str | None]]) -> list[Pair]:
    """Match annotations (label, instance_id) to predictions (instance_id, class), as
    agreement.outcomes does: by instance id, else one-to-one for a single pair, else agreed when
    any prediction on the asset has the human's class (then matched to that class)."""
    anns = list(annotations)
    if not predicted:
        return []
    by_instance = {iid: cls for iid, cls in predicted if iid is not None}
    asset = {cls for _, cls in predicted}
    single = len(predicted) == 1 and len(anns) == 1
    out: list[Pair] = []
    for human, iid in anns:
        if iid is not None and iid in by_instance:
            out.append((human, by_instance[iid], by_instance[iid] == human))
        elif single:
            out.append((human, predicted[0][1], predicted[0][1] == human))
        else:
            out.append((human, human if human in asset else None, human in asset))
    return out


@dataclass
class ClassEstimate:
    """Both rates of one (model version, class): by human class and by predicted class."""

    accuracy: RatioSums
    agreement: RatioSums

    @classmethod
    def empty(cls) -> ClassEstimate:
        return cls(RatioSums(), RatioSums())


def add_label(book: dict[str, ClassEstimate], weight: float, label: Sequence[Pair]) -> None:
    """Count one control label (weight 1/pi) into per-class estimates `book` (mutated)."""
    hits: dict[str, list[int]] = {}
    preds: dict[str, list[int]] = {}
    for human, predicted, agreed in label:
        h = hits.setdefault(human, [0, 0])
        h[0] += 1
        h[1] += int(agreed)
        if predicted is not None:
            p = preds.setdefault(predicted, [0, 0])
            p[0] += 1
            p[1] += int(predicted == human)
    for name in sorted(set(hits) | set(preds)):
        est = book.setdefault(name, ClassEstimate.empty())
        m, y = hits.get(name, [0, 0])
        est.accuracy.add(weight, m, y)
        m, y = preds.get(name, [0, 0])
        est.agreement.add(weight, m, y)


def book_snapshot(book: dict[str, ClassEstimate]) -> dict[str, Any]:
    return {c: [e.accuracy.snapshot(), e.agreement.snapshot()] for c, e in sorted(book.items())}


def book_from_snapshot(data: dict[str, Any]) -> dict[str, ClassEstimate]:
    return {c: ClassEstimate(RatioSums.from_snapshot(a), RatioSums.from_snapshot(g))
            for c, (a, g) in data.items()}
