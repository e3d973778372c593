"""Threshold sampling: fixed, budget-adaptive variable uncertainty, and per-class relative.

Variable uncertainty follows Žliobaitė et al. (2014, "Active learning with drifting streaming
data"): in confidence space (c = 1 - priority) an asset is uncertain when c < theta (times a random
eta ~ N(1, randomization) when randomised); while budget is available an uncertain asset is labeled
and theta shrinks by (1 - step), a certain one leaves theta growing by (1 + step); while budget is
unavailable theta stays. It is run exactly in arrival order, but vectorised: the scan jumps straight
to the next index where the budget can grant, then tests a chunk of assets at once, since until the
next label the threshold sequence is closed-form.
"""

from __future__ import annotations

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
    """What the scan needs from a budget for one run of assets (indices 0..m-1, arrival order)."""

    def first_available(self, start: int) -> int: ...

    def class_ok(self, start: int, stop: int) -> np.ndarray: ...

    def class_ok_at(self, i: int) -> bool: ...

    def spend(self, i: int) -> None: ...


@dataclass(frozen=True)
class ScanResult:
    """Labels granted by `scan`: asset indices, whether each was uncertain (else it came from
    the class-relative rule), the uncertainty threshold (1 - theta x eta) each faced, and the
    final theta."""

    index: list[int]
    uncertain: list[bool]
    threshold: list[float]
    theta: float


def scan(confidence: np.ndarray, relative: np.ndarray, eta: np.ndarray | None, theta: float,
         step: float, gate: Gate) -> ScanResult:
    """Run the (variable) threshold over one run of assets in order; `step` = 0 keeps it fixed.

    `confidence`: 1 - priority per asset; `relative`: assets the class-relative rule flags; `eta`:
    per-asset randomisation factors or None. Spends through `gate` for every label; never labels
    when the gate cannot grant. Deterministic. From each index where the budget can grant, the
    next few assets are walked one by one (a label usually comes within two or three), then in
    vectorised chunks, so a long run without labels costs O(run / chunk) numpy calls.
    """
    m = confidence.shape[0]
    out = ScanResult([], [], [], theta)
    run = _Run(confidence, relative, eta, step, gate)
    i = 0
    while i < m:
        i = gate.first_available(i)
        if i >= m:
            break
        stop = min(m, i + _WALK)
        hit, theta = run.walk(theta, i, stop)
        while hit is None and stop < m:
            lo, stop = stop, min(m, stop + _CHUNK)
            hit, theta = run.chunk(theta, lo, stop)
        if hit is None:
            break
        j, unc, thr = hit
        out.index.append(j)
        out.uncertain.append(unc)
        out.threshold.append(min(1.0, max(0.0, 1.0 - thr)))
        theta = max(1e-6, theta * (1.0 - step)) if unc else min(1.0, theta * (1.0 + step))
        gate.spend(j)
        i = j + 1
    return ScanResult(out.index, out.uncertain, out.threshold, theta)


Hit = tuple[int, bool, float]


class _Run:
    """One scan's inputs as arrays (vectorised chunks) and, once a walk needs them, as Python
    lists (cheap scalar access)."""

    def __init__(self, conf: np.ndarray, rel: np.ndarray, eta: np.ndarray | None, step: float,
                 gate: Gate) -> None:
        self.conf_a, self.rel_a, self.eta_a = conf, rel, eta
        self.up, self.step, self.gate = 1.0 + step, step, gate
        self.conf: list[float] = []
        self.rel: list[bool] = []
        self.eta: list[float] | None = None

    def walk(self, theta: float, lo: int, hi: int) -> tuple[Hit | None, float]:
        """First hit in lo:hi, one asset at a time; theta grows on each available miss."""
        if not self.conf:
            self.conf, self.rel = self.conf_a.tolist(), self.rel_a.tolist()
            self.eta = None if self.eta_a is None else self.eta_a.tolist()
        for k in range(lo, hi):
            if not self.gate.class_ok_at(k):
                continue
            thr = theta if self.eta is None else theta * self.eta[k]
            unc = self.conf[k] < thr
            if unc or self.rel[k]:
                return (k, unc, thr), theta
            theta = min(1.0, theta * self.up)
        return None, theta

    def chunk(self, theta: float, lo: int, hi: int) -> tuple[Hit | None, float]:
        """The same as `walk`, vectorised: until the first hit theta is closed-form."""
        ok = self.gate.class_ok(lo, hi)
        before = np.cumsum(ok) - ok
        thr = np.minimum(1.0, theta * self.up ** before)
        if self.eta_a is not None:
            thr = thr * self.eta_a[lo:hi]
        unc = self.conf_a[lo:hi] < thr
        hit = ok & (unc | self.rel_a[lo:hi])
        if not hit.any():
            return None, min(1.0, theta * self.up ** int(ok.sum()))
        j = int(hit.argmax())
        theta = min(1.0, theta * self.up ** int(before[j]))
        return (lo + j, bool(unc[j]), float(thr[j])), theta


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


class VariableUncertaintyState:
    """theta of one model version; starts at the policy's `initial_threshold`."""

    def __init__(self, policy: ThresholdPolicy) -> None:
        self.theta = policy.initial_threshold

    def uncertainty_threshold(self) -> float:
        """Current (non-randomised) threshold in uncertainty space, 1 - theta, in [0, 1]. Query."""
        return float(np.clip(1.0 - self.theta, 0.0, 1.0))
