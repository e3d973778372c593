"""The labeling budget: token buckets over event count and event time, split into lanes, with
per-class sub-budgets.

Guarantee (never exceeded, bursts included): a bucket with refill `rate` per unit of its coordinate
and capacity `cap` starts full, and grants a selection only when it holds >= 1 token, so over any
coordinate interval of length d it grants at most cap + rate * d. Coordinates are monotone: the
count bucket's is the number of assets seen, the time bucket's the event-time watermark (max event
time seen, seconds), so late or out-of-order events never refill anything. Each lane (exploit,
explore) has its own pair of buckets; a selection needs a token from both buckets of its lane.
Summed over lanes: selections over the first n assets <= sum(count capacities) + share * n, and over
any watermark interval of d seconds <= sum(time capacities) + labels_per_hour * d / 3600.

Across partitions (`BudgetPolicy.scaled`): each of P partitions gets 1/P of the hourly rate and
of `burst`. A token bucket whose capacity is below one token could never grant, and flooring it
at one token made the group's burst P per lane (128 instead of 50 with 64 partitions). So a time
bucket whose share of `burst` is below one token is a `PhasedBucket`: its tokens arrive one at a
time, at event times (k + phase) / rate, and each stays usable for capacity / rate seconds. With
phase = partition / P, the P partitions' arrival times interleave into one lattice of the
group's rate, so over any interval of event time that the partitions' watermarks share, the
group grants at most burst + 1 + labels_per_hour * d / 3600 per lane, whatever P. (A token not
used within its window is lost: a partition that flushes less often than its window, ~3 min by
default, can select a little below its share.) Count buckets count a partition's own assets,
which no two partitions share, so they keep the floor: at most one token per lane and
partition beyond `share_burst`, spent once (they refill per asset).

Counting instances (`BudgetPolicy.cost = "instances"`, issue 16): every amount above is in
instances instead of assets -- the count buckets refill per prediction seen, a request spends
as many tokens as it costs (instances.py), the class sub-budgets likewise. A lane still grants
when it holds >= 1 token and then spends the whole cost, going into debt: no request is too big
to ever be granted, and the bounds above hold up to one request's cost minus one (at most
`instances.max_instances` - 1 with instance-level requests, else the asset's predictions - 1).
A phased bucket in debt skips the tokens it owes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Literal

import numpy as np

from services.core.codec import decode_array, encode_array

LANES: tuple[str, ...] = ("exploit", "explore")
CostUnit = Literal["assets", "instances"]


@dataclass(frozen=True)
class BudgetPolicy:
    """Budget settings for ONE partition's selector (see `scaled`).

    `share`: max fraction of assets selected (count refill per asset), `share_burst`: its capacity
    in labels; `labels_per_hour`: event-time refill, `burst`: its capacity in labels (the hard cap
    of any window is burst + rate x window); `exploration_share`: fraction of both buckets reserved
    for random exploration (the exploration floor); `class_cap_factor`: a class may use at most
    factor x weight / n_classes of the exploit lane (its sub-budget, >= 1 token of capacity);
    1.5 (3 before issue 15) keeps a weak many-class model from spending most of the lane on the
    few classes it is most unsure of (docs/label-efficiency.md). `cost`: what one unit of
    every amount counts, `assets` (default) or `instances` (module doc).
    """

    share: float = 0.02
    share_burst: float = 10.0
    labels_per_hour: float = 1000.0
    burst: float = 50.0
    exploration_share: float = 0.1
    class_cap_factor: float = 1.5
    phase: float = 0.0  # in [0, 1): where this partition's tokens fall (module doc; `scaled`)
    cost: CostUnit = "assets"

    def __post_init__(self) -> None:
        if self.cost not in ("assets", "instances"):
            raise ValueError(f"cost must be 'assets' or 'instances', got {self.cost!r}")
        if not 0.0 <= self.share <= 1.0 or not 0.0 <= self.exploration_share < 1.0:
            raise ValueError("share must be in [0, 1] and exploration_share in [0, 1)")
        if self.labels_per_hour < 0 or self.share_burst < 1 or self.burst <= 0:
            raise ValueError("labels_per_hour >= 0, share_burst >= 1 and burst > 0 are required")
        if self.class_cap_factor <= 0 or not 0.0 <= self.phase < 1.0:
            raise ValueError("class_cap_factor must be > 0 and phase in [0, 1)")

    def scaled(self, fraction: float, slot: int = 0) -> BudgetPolicy:
        """This budget for partition `slot` of 1/fraction partitions: rates and capacities times
        `fraction`; `share` is a fraction of the partition's own assets and stays. The count
        capacity is floored at 1 label (so every partition can select); the time capacity is
        not: below one token its lanes are phased (module doc), `slot` x fraction the phase, so
        that summed over the partitions the burst stays within one label a lane of `burst`."""
        if not 0.0 < fraction <= 1.0:
            raise ValueError("fraction must be in (0, 1]")
        return replace(
            self,
            share_burst=max(1.0, self.share_burst * fraction),
            labels_per_hour=self.labels_per_hour * fraction,
            burst=self.burst * fraction,
            phase=(slot * fraction) % 1.0,
        )

    def lane(self, name: str) -> tuple[float, float, float, float]:
        """(count rate per asset, count capacity, time rate per second, time capacity) of a lane."""
        return self._lanes[name]

    @cached_property
    def _lanes(self) -> dict[str, tuple[float, float, float, float]]:
        out = {}
        for name in LANES:
            f = self.exploration_share if name == "explore" else 1.0 - self.exploration_share
            floor = 1.0 if f > 0.0 else 0.0  # a lane with no share is closed, not 1 token wide
            # Time capacities below one token stay as they are: those lanes are phased.
            out[name] = (self.share * f, max(floor, self.share_burst * f),
                         self.labels_per_hour * f / 3600.0, self.burst * f)
        return out


class TokenBucket:
    """One token bucket over a monotone coordinate; plain floats for a cheap scalar hot path."""

    __slots__ = ("level", "coord")

    def __init__(self, level: float, coord: float) -> None:
        self.level = level
        self.coord = coord

    def level_at(self, coord: float, rate: float, cap: float) -> float:
        """Tokens at `coord` (no refill for coordinates behind the last one). Query."""
        return min(cap, self.level + rate * max(coord - self.coord, 0.0))

    def spend(self, coord: float, rate: float, cap: float, cost: float = 1.0) -> None:
        """Take `cost` tokens at `coord` (below zero: a debt). The caller checked
        `level_at(...) >= 1`."""
        self.level = self.level_at(coord, rate, cap) - cost
        self.coord = max(coord, self.coord)

    def first_index(self, coords: np.ndarray, start: int, rate: float, cap: float) -> int:
        """First i >= start with level_at(coords[i]) >= 1 (coords non-decreasing); len if none."""
        n = coords.shape[0]
        if start >= n or self.level >= 1.0:
            return start
        if rate <= 0.0:
            return n
        i = max(start, int(np.searchsorted(coords, self.coord + (1.0 - self.level) / rate)))
        while i < n and self.level_at(float(coords[i]), rate, cap) < 1.0:
            i += 1  # float rounding at the boundary: at most a step or two
        return i


class PhasedBucket:
    """A token bucket of capacity `cap` < 1 token (a partition's share of a group's burst):
    token k arrives at coordinate (k + phase) / rate and can be spent until cap / rate later;
    at most one is ever available. `coord` is the arrival of the last token spent (-inf: none),
    `level` unused (kept so snapshots of both kinds have one shape). Same interface as
    TokenBucket; the `rate`, `cap` arguments are the lane's."""

    __slots__ = ("level", "coord", "phase")

    def __init__(self, coord: float, phase: float) -> None:
        self.level = 0.0
        self.coord = coord
        self.phase = phase

    def _last(self, coord: float, rate: float) -> float:
        """Arrival of the last token at or before `coord`."""
        return (math.floor(coord * rate - self.phase) + self.phase) / rate

    def level_at(self, coord: float, rate: float, cap: float) -> float:
        """1.0 when a token is usable at `coord`, else 0.0. Query."""
        if rate <= 0.0 or cap <= 0.0:
            return 0.0
        last = self._last(coord, rate)
        return 1.0 if last > coord - cap / rate and last > self.coord else 0.0

    def spend(self, coord: float, rate: float, cap: float, cost: float = 1.0) -> None:
        """Take the token usable at `coord`, and skip the next `cost` - 1 arrivals (a debt).
        The caller checked `level_at(...) >= 1`."""
        self.coord = self._last(coord, rate) + (cost - 1.0) / rate

    def first_index(self, coords: np.ndarray, start: int, rate: float, cap: float) -> int:
        """First i >= start with a token usable at coords[i]; len(coords) if none."""
        n = coords.shape[0]
        if start >= n or rate <= 0.0 or cap <= 0.0:
            return n if start < n else start
        c = coords[start:]
        last = (np.floor(c * rate - self.phase) + self.phase) / rate
        ok = (last > c - cap / rate) & (last > self.coord)
        return start + int(np.argmax(ok)) if ok.any() else n


class BudgetState:
    """Per-lane count and time buckets (a lane's time bucket phased when its capacity is below
    one token). Starts full. Not thread-safe; deterministic."""

    def __init__(self, policy: BudgetPolicy) -> None:
        self.count = {name: TokenBucket(policy.lane(name)[1], 0.0) for name in LANES}
        self.time = {name: _time_bucket(policy, name, policy.lane(name)[3], None)
                     for name in LANES}
        # Bumped by every spend, so a caller may keep `open_from` answers until it moves
        # (derived; never in a snapshot).
        self.spends = 0

    def available(self, policy: BudgetPolicy, lane: str, n_seen: float, watermark: float) -> bool:
        """True when `lane` can grant one selection at (assets seen, watermark). Query."""
        cr, cc, tr, tc = policy._lanes[lane]  # `lane`, without its call (a per-window path)
        return (self.count[lane].level_at(n_seen, cr, cc) >= 1.0
                and self.time[lane].level_at(watermark, tr, tc) >= 1.0)

    def open_from(self, policy: BudgetPolicy, lane: str, n_seen: np.ndarray,
                  watermark: np.ndarray) -> list[bool] | None:
        """`available` at each (n_seen[i], watermark[i]) as long as nothing spends, in one
        vectorised pass with the same float operations (and `min` / `max` semantics) as the
        scalar query, so the same answers; None for a lane whose time bucket is phased (the
        scalar query answers it). Query."""
        time = self.time[lane]
        if not isinstance(time, TokenBucket):
            return None
        cr, cc, tr, tc = policy._lanes[lane]
        return (_holds_one(self.count[lane], n_seen, cr, cc)
                & _holds_one(time, watermark, tr, tc)).tolist()

    def first_available(self, policy: BudgetPolicy, lane: str, n_seen: np.ndarray,
                        watermark: np.ndarray, start: int) -> int:
        """First i >= start at which `lane` can grant (both coordinate arrays non-decreasing)."""
        cr, cc, tr, tc = policy.lane(lane)
        i = start
        while True:
            j = self.count[lane].first_index(n_seen, i, cr, cc)
            k = self.time[lane].first_index(watermark, j, tr, tc)
            if k == j or k >= n_seen.shape[0]:
                return k
            i = k

    def spend(self, policy: BudgetPolicy, lane: str, n_seen: float, watermark: float,
              cost: float = 1.0) -> None:
        """Take one selection of `cost` units from `lane`; the caller checked `available`."""
        cr, cc, tr, tc = policy.lane(lane)
        self.spends += 1
        self.count[lane].spend(n_seen, cr, cc, cost)
        self.time[lane].spend(watermark, tr, tc, cost)

    def remaining(self, policy: BudgetPolicy, lane: str, n_seen: float, watermark: float) -> float:
        """Whole selections `lane` could grant right now (min over its two buckets). Query."""
        cr, cc, tr, tc = policy.lane(lane)
        return math.floor(min(self.count[lane].level_at(n_seen, cr, cc),
                              self.time[lane].level_at(watermark, tr, tc)))

    def snapshot(self) -> dict[str, Any]:
        """JSON-able and exact (Python floats round-trip through JSON)."""
        def enc(b: TokenBucket | PhasedBucket) -> list[float | None]:
            return [b.level, None if b.coord == -math.inf else b.coord]  # -inf: none spent
        return {"count": {k: enc(v) for k, v in self.count.items()},
                "time": {k: enc(v) for k, v in self.time.items()}}

    @classmethod
    def from_snapshot(cls, policy: BudgetPolicy, data: dict[str, Any]) -> BudgetState:
        """The state `snapshot` described, under `policy`. Either kind of time bucket reads the
        other's snapshot safely (never more tokens than it held): after a change of the
        partition count, a phased bucket's spent-up-to coordinate is a continuous bucket's last
        refill coordinate and conversely (a phased snapshot restores as an empty bucket)."""
        state = cls(policy)
        for name, (level, coord) in data["count"].items():
            state.count[name] = TokenBucket(float(level), float(coord))
        for name, (level, coord) in data["time"].items():
            state.time[name] = _time_bucket(policy, name, float(level),
                                            None if coord is None else float(coord))
        return state


def _holds_one(bucket: TokenBucket, coords: np.ndarray, rate: float, cap: float) -> np.ndarray:
    """`bucket.level_at(c, rate, cap) >= 1` per coordinate c: Python's max(d, 0.0) is
    d unless 0.0 > d, min(cap, x) is x if x < cap else cap (NaN included)."""
    with np.errstate(invalid="ignore"):  # 0 x inf: NaN, as in Python
        d = coords - bucket.coord
        x = bucket.level + rate * np.where(0.0 > d, 0.0, d)
        return np.where(x < cap, x, cap) >= 1.0


def _time_bucket(policy: BudgetPolicy, lane: str, level: float, coord: float | None
                 ) -> TokenBucket | PhasedBucket:
    """The time bucket of `lane` (phased when its capacity is below one token) at `level`,
    `coord` (None: a fresh bucket)."""
    if policy.lane(lane)[3] < 1.0:
        return PhasedBucket(-math.inf if coord is None else coord, policy.phase)
    return TokenBucket(level, 0.0 if coord is None else coord)


class ClassBuckets:
    """Per-class count buckets (the sub-budgets of one model's classes), vectorised.

    Rates and capacities come from `class_limits` at query time, so a feedback change applies
    from the class's last spend on (bounded by its capacity).
    """

    def __init__(self, n_classes: int = 0) -> None:
        self.level = np.full(n_classes, np.inf)
        self.coord = np.zeros(n_classes)

    def ensure_classes(self, n_classes: int) -> None:
        """Grow to `n_classes`; new classes start full (level = capacity). Idempotent."""
        extra = n_classes - self.level.shape[0]
        if extra > 0:
            self.level = np.r_[self.level, np.full(extra, np.inf)]
            self.coord = np.r_[self.coord, np.zeros(extra)]

    def levels_at(self, classes: np.ndarray, n_seen: np.ndarray, rate: np.ndarray,
                  cap: np.ndarray) -> np.ndarray:
        """Tokens of each `classes[i]` at asset count `n_seen[i]` (no spends in between). Query."""
        gain = rate[classes] * np.maximum(n_seen - self.coord[classes], 0.0)
        return np.minimum(cap[classes], self.level[classes] + gain)

    def spend(self, cls: int, n_seen: float, rate: np.ndarray, cap: np.ndarray,
              cost: float = 1.0) -> None:
        """Take `cost` tokens (below zero: a debt) from class `cls` at count `n_seen`."""
        gain = rate[cls] * max(n_seen - self.coord[cls], 0.0)
        self.level[cls] = min(cap[cls], self.level[cls] + gain) - cost
        self.coord[cls] = max(n_seen, self.coord[cls])

    def snapshot(self) -> dict[str, Any]:
        return {"level": encode_array(self.level), "coord": encode_array(self.coord)}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> ClassBuckets:
        state = cls()
        state.level, state.coord = decode_array(data["level"]), decode_array(data["coord"])
        return state


def class_limits(policy: BudgetPolicy, weights: np.ndarray, n_classes: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(rate per asset, capacity) of each class's sub-budget in the exploit lane.

    A class gets min(1, class_cap_factor x weight / n_classes) of the lane, weights being the
    feedback weights (mean 1 when uniform) and `n_classes` the model's class count (default: the
    number of weights; the selector passes the count published at its last stats refresh, so a
    class first seen mid-segment does not change its neighbours' sub-budgets mid-segment);
    capacity is floored at 1 so no class is ever shut out.
    """
    count_rate, count_cap, _, _ = policy.lane("exploit")
    n = max(weights.shape[0] if n_classes is None else n_classes, 1)
    frac = np.minimum(1.0, policy.class_cap_factor * weights / n)
    return count_rate * frac, np.maximum(1.0, count_cap * frac)


class LaneGate:
    """A budget gate over one run of candidates (arrival order) for `thresholds.scan`: the
    exploit lane's buckets plus the class sub-budgets of each candidate's model (`book_of[i]`
    indexes `buckets`, `limits`). Spending goes to the lane and, for threshold labels, the class.
    """

    def __init__(self, policy: BudgetPolicy, budget: BudgetState, n_seen: np.ndarray,
                 watermark: np.ndarray, classes: np.ndarray, book_of: np.ndarray,
                 buckets: list[ClassBuckets], limits: list[tuple[np.ndarray, np.ndarray]],
                 costs: Any = None) -> None:
        self.policy, self.budget, self.buckets, self.limits = policy, budget, buckets, limits
        self.costs = costs  # per candidate -> units it spends (None: 1 each)
        self.n_seen, self.watermark, self.classes, self.book_of = n_seen, watermark, classes, \
            book_of
        self.single = len(buckets) == 1
        self._classes: list[int] = []
        self._n_seen: list[float] = []
        self._books: list[int] = []
        self._limits = [(r.tolist(), c.tolist()) for r, c in limits]

    def first_available(self, start: int) -> int:
        """First index >= start at which the lane can grant (class aside). Query."""
        return self.budget.first_available(self.policy, "exploit", self.n_seen, self.watermark,
                                           start)

    def class_ok(self, start: int, stop: int) -> np.ndarray:
        """Per candidate in start:stop: its class sub-budget holds a token (True for candidates
        without a class). Query."""
        cls = self.classes[start:stop]
        seen = self.n_seen[start:stop]
        valid = cls >= 0
        if self.single and bool(valid.all()):
            rate, cap = self.limits[0]
            return self.buckets[0].levels_at(cls, seen, rate, cap) >= 1.0
        out = np.ones(stop - start, dtype=bool)
        books = self.book_of[start:stop]
        for k in np.unique(books[valid]).tolist():
            mine = valid & (books == k)
            rate, cap = self.limits[k]
            out[mine] = self.buckets[k].levels_at(cls[mine], seen[mine], rate, cap) >= 1.0
        return out

    def class_ok_at(self, i: int) -> bool:
        """`class_ok` for the single candidate i (scalar fast path). Query."""
        if not self._classes:
            self._classes, self._n_seen = self.classes.tolist(), self.n_seen.tolist()
            self._books = self.book_of.tolist()
        c, k = self._classes[i], self._books[i]
        if c < 0:
            return True
        rate, cap = self._limits[k]
        b = self.buckets[k]
        gain = rate[c] * max(self._n_seen[i] - float(b.coord[c]), 0.0)
        return min(cap[c], float(b.level[c]) + gain) >= 1.0

    def spend(self, i: int, with_class: bool) -> None:
        """Take candidate i's cost from the lane and (threshold labels) its class."""
        n_seen, wm = float(self.n_seen[i]), float(self.watermark[i])
        cost = 1.0 if self.costs is None else float(self.costs(i))
        self.budget.spend(self.policy, "exploit", n_seen, wm, cost)
        c = int(self.classes[i])
        if with_class and c >= 0:
            k = int(self.book_of[i])
            rate, cap = self.limits[k]
            self.buckets[k].spend(c, n_seen, rate, cap, cost)
