"""Threshold sampling: fixed, budget-adaptive variable uncertainty, and per-class relative.

Variable uncertainty follows Žliobaitė et al. (2014, "Active learning with drifting streaming
data"): in confidence space (c = 1 - priority) an asset is uncertain when c < theta (times a random
eta ~ N(1, randomization) when randomised); while budget is available an uncertain asset is labeled
and theta shrinks by (1 - step), a certain one leaves theta growing by (1 + step); while budget is
unavailable theta stays. It is run exactly in arrival order, but vectorised: the scan jumps straight
to the next index where the budget can grant, then tests a chunk of assets at once, since until the
next label the threshold sequence is closed-form. The closed form is a table of repeated products
(`growth`), so the result never depends on where a batch, walk or chunk started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

ThresholdMode = Literal["variable_uncertainty", "fixed", "off"]
_WALK = 8  # assets tested one by one from each budget-available index
_CHUNK = 64  # then this many per vectorised step


@dataclass(frozen=True)
class ThresholdPolicy:
    """Settings. `mode`: variable_uncertainty (default), fixed, or off. `fixed_threshold`: for
    `fixed`, select when priority >= it (uncertainty, [0, 1]). `initial_threshold`, `step`,
    `randomization`: Žliobaitė's theta_0 (confidence space), s and delta (std of eta; 0 = off).
    `class_relative_q`: select predictions in the bottom q of their class's windowed confidence
    distribution (0 = off), q scaled per class by weight x difficulty and capped at `max_q`."""

    mode: ThresholdMode = "variable_uncertainty"
    fixed_threshold: float = 0.5
    initial_threshold: float = 1.0
    step: float = 0.01
    randomization: float = 0.0
    class_relative_q: float = 0.05
    max_q: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("variable_uncertainty", "fixed", "off"):
            raise ValueError(f"unknown threshold mode {self.mode!r}")
        if not 0.0 < self.initial_threshold <= 1.0 or not 0.0 <= self.step < 1.0:
            raise ValueError("initial_threshold in (0, 1] and step in [0, 1) are required")
        if not 0.0 <= self.class_relative_q <= self.max_q <= 1.0 or self.randomization < 0:
            raise ValueError("0 <= class_relative_q <= max_q <= 1 and randomization >= 0")


class Gate(Protocol):
    """What the scan needs from a budget for one run of candidates (indices 0..m-1, arrival
    order): the lane, and the class sub-budgets of threshold candidates."""

    def first_available(self, start: int) -> int: ...

    def class_ok(self, start: int, stop: int) -> np.ndarray: ...

    def class_ok_at(self, i: int) -> bool: ...

    def spend(self, i: int, with_class: bool) -> None: ...


WARMUP, UNCERTAIN, RELATIVE = 0, 1, 2


@dataclass
class Thetas:
    """Variable-uncertainty thresholds of the versions in one scan, mutated by it: version v's
    theta is min(1, base[v] x growth(1 + step)[misses[v]]) (see `growth`); `quota[v]`: warm-up
    picks version v may still make."""

    base: list[float]
    misses: list[int]
    quota: list[int]


@dataclass(frozen=True)
class ScanResult:
    """Labels granted by `scan`: candidate indices, the kind of each (WARMUP, UNCERTAIN or
    RELATIVE) and the uncertainty threshold (1 - theta x eta) it faced (NaN for warm-up)."""

    index: list[int]
    kind: list[int]
    threshold: list[float]


_GROWTH: dict[float, np.ndarray] = {}


def growth(up: float, n: int) -> np.ndarray:
    """[1, up, up*up, ...] (at least n values), each the previous times `up`, rounded once per
    step: theta after k misses is base x growth[k] whether the k misses were walked one by one
    or counted in one vectorised chunk, so it never depends on where a scan started or stopped.
    A derived, deterministic cache (not state)."""
    table = _GROWTH.get(up)
    if table is None or table.shape[0] < n:
        size = max(n, 2 * (0 if table is None else table.shape[0]), 256)
        table = np.multiply.accumulate(np.r_[1.0, np.full(size - 1, up)])  # sequential products
        _GROWTH[up] = table
    return table


def normalize(thetas: Thetas, v: int, table: np.ndarray) -> None:
    """Fold a theta that reached 1 back to (1, 0 misses): the same threshold from then on, and
    one canonical state whatever the scan boundaries."""
    if thetas.misses[v] and thetas.base[v] * float(table[thetas.misses[v]]) >= 1.0:
        thetas.base[v], thetas.misses[v] = 1.0, 0


def scan(confidence: np.ndarray, relative: np.ndarray, eta: np.ndarray | None,
         warm: np.ndarray, version: np.ndarray, thetas: Thetas, step: float, adaptive: bool,
         gate: Gate) -> ScanResult:
    """Run warm-up and the (variable) threshold over one run of candidates in arrival order.

    `confidence`: 1 - priority per candidate; `relative`: flagged by the class-relative rule;
    `eta`: randomisation factors or None; `warm`: a warm-up candidate (its version not ready, its
    random draw passed) rather than a threshold one; `version`: index into `thetas`. While the
    lane can grant, a warm-up candidate is labeled if its version has quota left; a threshold
    candidate whose class has a token is labeled when uncertain (confidence < theta x eta) or
    flagged, theta then shrinking by (1 - step) if uncertain, else growing by (1 + step), and an
    unlabeled one grows its version's theta by (1 + step) (`adaptive`; else theta stays). Spends
    through `gate` for every label. The result is the same for any split of the candidates into
    consecutive scans (state carried in `thetas` and the gate). From each index where the lane
    can grant, a few candidates are walked one by one, then vectorised chunks follow.
    """
    m = confidence.shape[0]
    out = ScanResult([], [], [])
    if m == 0:
        return out
    run = _Run(confidence, relative, eta, warm, version, thetas, step, adaptive, gate)
    i = 0
    while i < m:
        i = gate.first_available(i)
        if i >= m:
            break
        stop = min(m, i + _WALK)
        hit = run.walk(i, stop)
        while hit is None and stop < m:
            lo, stop = stop, min(m, stop + _CHUNK)
            hit = run.chunk(lo, stop)
        if hit is None:
            break
        j, kind, thr, thr_e = hit
        out.index.append(j)
        out.kind.append(kind)
        out.threshold.append(math.nan if kind == WARMUP else min(1.0, max(0.0, 1.0 - thr_e)))
        run.label(j, kind, thr)
        i = j + 1
    return out


Hit = tuple[int, int, float, float]


class _Run:
    """One scan's inputs as arrays (vectorised chunks) and, once a walk needs them, as Python
    lists (cheap scalar access)."""

    def __init__(self, conf: np.ndarray, rel: np.ndarray, eta: np.ndarray | None,
                 warm: np.ndarray, version: np.ndarray, thetas: Thetas, step: float,
                 adaptive: bool, gate: Gate) -> None:
        self.conf_a, self.rel_a, self.eta_a, self.warm_a, self.ver_a = conf, rel, eta, warm, version
        self.thetas, self.step, self.adaptive, self.gate = thetas, step, adaptive, gate
        self.any_warm = bool(warm.any())
        self.single = len(thetas.base) == 1
        self.table = growth(1.0 + step, 2 * _CHUNK + max(thetas.misses))
        self.conf: list[float] = []

    def _lists(self) -> None:
        self.conf, self.rel = self.conf_a.tolist(), self.rel_a.tolist()
        self.eta = None if self.eta_a is None else self.eta_a.tolist()
        self.warm, self.ver = self.warm_a.tolist(), self.ver_a.tolist()

    def _ensure(self, extra: int) -> None:
        need = max(self.thetas.misses) + extra + 1
        if self.table.shape[0] < need:
            self.table = growth(1.0 + self.step, need)

    def walk(self, lo: int, hi: int) -> Hit | None:
        """First hit in lo:hi, one candidate at a time."""
        if not self.conf:
            self._lists()
        th, table = self.thetas, self.table
        self._ensure(hi - lo)
        table = self.table
        for k in range(lo, hi):
            v = self.ver[k]
            if self.warm[k]:
                if th.quota[v] > 0:
                    return k, WARMUP, math.nan, math.nan
                continue
            if not self.gate.class_ok_at(k):
                continue
            thr = min(1.0, th.base[v] * float(table[th.misses[v]]))
            thr_e = thr if self.eta is None else thr * self.eta[k]
            unc = self.conf[k] < thr_e
            if unc or self.rel[k]:
                return k, (UNCERTAIN if unc else RELATIVE), thr, thr_e
            if self.adaptive:
                th.misses[v] += 1
                normalize(th, v, table)
        return None

    def chunk(self, lo: int, hi: int) -> Hit | None:
        """The same as `walk`, vectorised: until the first hit each theta is closed-form."""
        th = self.thetas
        self._ensure(hi - lo)
        ok = self.gate.class_ok(lo, hi)
        warm = self.warm_a[lo:hi] if self.any_warm else None
        if warm is not None:
            ok &= ~warm
        ver = self.ver_a[lo:hi]
        if self.single:
            before = np.cumsum(ok) - ok if self.adaptive else np.zeros(hi - lo, dtype=np.int64)
            thr = np.minimum(1.0, th.base[0] * self.table[th.misses[0] + before])
        else:
            thr = np.empty(hi - lo)
            before = np.zeros(hi - lo, dtype=np.int64)
            for v in np.unique(ver).tolist():
                mine = ver == v
                if self.adaptive:
                    okv = ok & mine
                    before[mine] = (np.cumsum(okv) - okv)[mine]
                thr[mine] = np.minimum(1.0, th.base[v] * self.table[th.misses[v] + before[mine]])
        thr_e = thr if self.eta_a is None else thr * self.eta_a[lo:hi]
        unc = self.conf_a[lo:hi] < thr_e
        hit = ok & (unc | self.rel_a[lo:hi])
        if warm is not None:
            quota = np.array(th.quota)[ver] > 0
            hit |= warm & quota
        stop = int(hit.argmax()) if hit.any() else hi - lo
        if self.adaptive:
            counted = ok[:stop]
            for v in (range(1) if self.single else np.unique(ver[:stop][counted]).tolist()):
                n = int(counted.sum()) if self.single else int((ver[:stop][counted] == v).sum())
                if n:
                    th.misses[v] += n
                    normalize(th, v, self.table)
        if stop == hi - lo:
            return None
        j = stop
        if warm is not None and warm[j]:
            return lo + j, WARMUP, math.nan, math.nan
        return lo + j, (UNCERTAIN if unc[j] else RELATIVE), float(thr[j]), float(thr_e[j])

    def label(self, j: int, kind: int, thr: float) -> None:
        """Spend for the label at candidate j and move its version's theta / quota."""
        v = int(self.ver_a[j])
        th = self.thetas
        if kind == WARMUP:
            self.gate.spend(j, False)
            th.quota[v] -= 1
            return
        self.gate.spend(j, True)
        if self.adaptive:
            th.base[v] = max(1e-6, thr * (1.0 - self.step)) if kind == UNCERTAIN else \
                min(1.0, thr * (1.0 + self.step))
            th.misses[v] = 0


def relative_quantiles(q: float, max_q: float, weights: np.ndarray, mean_conf: np.ndarray,
                       ready: np.ndarray) -> np.ndarray:
    """Per-class q for the class-relative rule: q x weight x difficulty, capped at `max_q`.

    Difficulty is the class's EWMA uncertainty (1 - mean confidence) over the mean of the ready
    classes', so a class the model is sure of (the ball) gets a small quantile and one it is unsure
    of (shoulders) a large one. Classes that are not ready get q x weight. In [0, max_q].
    """
    unsure = 1.0 - mean_conf
    ref = float(unsure[ready].mean()) if ready.any() else 0.0
    difficulty = np.where(ready, unsure / ref, 1.0) if ref > 0.0 else np.ones_like(unsure)
    return np.clip(q * weights * difficulty, 0.0, max_q)
