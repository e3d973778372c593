"""Reservoir sampling over a window of the stream: weighted per class (A-Res) and uniform
(Algorithm L, the random control arm).

Both take whole batches. Payloads are the caller's JSON-able values (the selector stores each
candidate's ref and decision data), built only for items that enter the reservoir. Randomness comes
from the caller (positional exponentials for the weighted reservoirs; a Generator the uniform one
uses in offer order), so a seeded run repeats exactly however its offers were batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from services.core.codec import decode_array, encode_array
from services.core.scalar_draws import ScalarDraws

_MASK32 = 0xFFFFFFFF
_TWO_32 = 1 << 32
_TWO_M53 = 1.0 / 9007199254740992.0

PayloadFn = Callable[[np.ndarray], list[Any]]


class ScalarRandom(Protocol):
    """The scalar draws Algorithm L makes: a numpy Generator, or scalar_draws.ScalarDraws."""

    def random(self) -> float: ...

    def integers(self, n: int) -> Any: ...


@dataclass(frozen=True)
class ReservoirPolicy:
    """Settings. `per_class`: weighted reservoir size per (model, class); `top_k`: selections per
    flush (None = as many as the budget grants); `control_size`: uniform control-arm reservoir
    size (0 = off); `window_seconds` / `window_assets`: a window closes (and flushes) when the
    event-time watermark crosses a multiple of window_seconds or after window_assets assets
    (0 = no count window). 50 assets keep a window short enough that a frequently retrained
    model's newest uncertainties drive the picks, and long enough to rank (measured in the
    label-efficiency benchmark: 20-100 assets all beat random; see README). `power`: the flush
    grants a weighted random draw of the window (weight = uncertainty ** power; None = the
    strict top by priority); 4 keeps the top where uncertainty is spread and nearly a uniform
    sample where the model is unsure of everything, whose strict top is its hardest, least
    representative assets (docs/label-efficiency.md). `adaptive`: see `power_at`.
    `novelty`: the draw's weights are multiplied by how rare each asset's confusion
    (predicted, runner-up class) has been for its model, to the power `novelty`
    (novelty.py); 0 = off. `novelty_gate`: W >= 2 scales that exponent by the chance that a
    window of W assets holds another asset of an asset's confusion, from the pair counts
    (novelty.py): about 1 where a model's confusions repeat (few classes), toward 0 where they
    are spread over many pairs (many classes, a weak model); 0 = no gate."""

    per_class: int = 16
    top_k: int | None = None
    control_size: int = 2
    window_seconds: float = 600.0
    window_assets: int = 50
    power: float | None = 4.0
    adaptive: float | None = None
    novelty: float = 0.0
    novelty_gate: int = 0

    def __post_init__(self) -> None:
        if self.per_class < 1 or self.control_size < 0 or self.window_assets < 0:
            raise ValueError("per_class >= 1, control_size >= 0 and window_assets >= 0 required")
        if not 0.0 <= self.novelty <= 8.0:
            raise ValueError("novelty must be in [0, 8]")
        if self.novelty_gate != 0 and not 2 <= self.novelty_gate <= 1_000_000:
            raise ValueError("novelty_gate must be 0 (off) or in [2, 1000000]")
        if self.power is not None and not 0.0 < self.power <= 64.0:
            raise ValueError("power must be in (0, 64] or None")
        if self.adaptive is not None and (self.power is None or not 0.0 < self.adaptive <= 64.0):
            raise ValueError("adaptive must be in (0, 64] and needs a power (its upper bound)")
        if self.window_seconds <= 0 or (self.top_k is not None and self.top_k < 1):
            raise ValueError("window_seconds > 0 and top_k >= 1 (or None) are required")

    def power_at(self, level: float | None) -> float | None:
        """The flush's power for a window, given `level`, the smoothed mean uncertainty of the
        windows before it (None: none closed yet). Fixed `power` unless `adaptive` is set; then
        adaptive x (1 - level) / level, at most `power` and at least 1/4: a model unsure of most
        assets (a weak model, many classes) draws nearly a uniform sample of the window, whose
        most uncertain few are its hardest, least representative assets; a model sure of most
        draws nearly the top. The first window, with no level yet, uses `power`. Pure."""
        if self.adaptive is None or level is None:
            return self.power
        assert self.power is not None
        ratio = (1.0 - level) / max(level, 1e-6)
        return min(self.power, max(MIN_POWER, self.adaptive * ratio))


MIN_POWER = 0.25
"""The adaptive power's floor: above 0, so the draw still leans to the uncertain."""

LEVEL_SMOOTHING = 0.25
"""Weight of the window just closed in the smoothed uncertainty level (an exponential mean over
windows: a 50-asset window alone is noisy, and the level should follow a retrained model within
a few windows)."""

QUANTUM = 1_000_000
"""Uncertainties are summed as integers of 1e-6, so a window's sum is exact whatever the batches
its assets came in (float sums depend on their grouping), and a replay decides identically."""


def quanta(uncertainty: np.ndarray) -> np.ndarray:
    """Uncertainties (clipped to [0, 1]) as int64 multiples of 1 / QUANTUM. Pure."""
    return np.rint(np.clip(uncertainty, 0.0, 1.0) * QUANTUM).astype(np.int64)


_NO_KEYS = np.zeros(0)
_NO_GROUPS = np.zeros(0, dtype=np.uint64)
_NO_KEYS.flags.writeable = _NO_GROUPS.flags.writeable = False


class WeightedReservoirState:
    """Per-group (model, class) weighted reservoirs of `size` items, A-Res (Efraimidis–Spirakis).

    Item i with weight w_i > 0 gets key -E_i / w_i = log(u_i) / w_i, E_i ~ Exp(1); each group
    keeps its `size` largest keys, a weighted sample without replacement: with size 1 the kept
    item is i with probability w_i / sum(w). A-ExpJ draws fewer random numbers by jumping over
    items, which pays off per item in Python; batched, one vectorised draw per item is cheaper
    and has the same law.
    """

    def __init__(self, size: int, level: float | None = None) -> None:
        self.size = size
        # Shared read-only empties: a window is emptied at every flush, and arrays here are
        # only ever replaced, never written in place.
        self.key, self.group, self.priority = _NO_KEYS, _NO_GROUPS, _NO_KEYS
        self.payload: list[Any] = []
        # The uncertainty level (ReservoirPolicy.power_at): this window's sum and count, and the
        # smoothed mean of the windows closed before it (kept across drains).
        self.u_sum, self.u_count, self.level = 0, 0, level

    def observe(self, uncertainty: np.ndarray) -> None:
        """Count the uncertainties of the window's offered assets toward its level. Command."""
        self.observe_quanta(quanta(uncertainty))

    def observe_quanta(self, units: np.ndarray) -> None:
        """`observe` of uncertainties already in integer quanta (`quanta`). Command."""
        self.u_sum += int(units.sum())
        self.u_count += int(units.shape[0])

    def observe_total(self, units: int, count: int) -> None:
        """`observe_quanta` of `count` values summing to `units` quanta. Command."""
        self.u_sum += units
        self.u_count += count

    def __len__(self) -> int:
        return len(self.payload)

    def offer(self, weights: np.ndarray, groups: np.ndarray, priorities: np.ndarray,
              exponentials: np.ndarray, make_payload: PayloadFn | list[Any]) -> None:
        """Offer items (weights in [0, 1], uint64 group ids) with one Exp(1) variate each (the
        caller's, e.g. by stream position: key = -E / w has the law of log(u) / w); weight-0
        items only fill spare room. Deterministic; offering items in one call or in consecutive
        calls keeps the same items (the largest keys per group). `make_payload` builds the
        payloads of the items kept, or is the list of every item's payload, ready made."""
        m = weights.shape[0]
        if m == 0:
            return
        # The divisor is >= 1e-300, so no division by zero: no errstate needed (it costs ~2 us).
        new_key = -exponentials / np.maximum(weights, 1e-300)
        # This runs once per segment, so numpy's fixed costs count: np.concatenate, not np.r_;
        # ranks by a running maximum, not np.diff(append=) + np.repeat (~11 us).
        key = np.concatenate((self.key, new_key))
        group = np.concatenate((self.group, groups.astype(np.uint64)))
        order = np.lexsort((-key, group))
        g = group[order]
        n = g.shape[0]
        starts = np.empty(n, dtype=bool)
        starts[0] = True
        np.not_equal(g[1:], g[:-1], out=starts[1:])
        at = np.arange(n)
        rank = at - np.maximum.accumulate(np.where(starts, at, 0))
        kept = order[rank < self.size]
        if isinstance(make_payload, list):
            pool = self.payload + make_payload
            self.payload = [pool[i] for i in kept.tolist()]
        else:
            n_old = len(self.payload)
            fresh = kept[kept >= n_old] - n_old
            built = iter(make_payload(fresh))
            self.payload = [self.payload[i] if i < n_old else next(built)
                            for i in kept.tolist()]
        self.key, self.group = key[kept], group[kept]
        self.priority = np.concatenate((self.priority, priorities))[kept]

    def drain(self, by_key: bool = False) -> list[tuple[float, Any]]:
        """Empty the reservoirs; return (priority, payload) pairs, highest priority first (ties:
        group order, then key), or with `by_key` largest key first: taking the first k is then
        a weighted sample without replacement of the window. Command (it resets the window)."""
        order = np.argsort(-(self.key if by_key else self.priority), kind="stable")
        priority = self.priority.tolist()
        out = [(priority[i], self.payload[i]) for i in order.tolist()]
        self.clear()
        return out

    def clear(self) -> None:
        """Empty the reservoirs without ordering them (`drain` whose picks are not wanted):
        the window's uncertainty joins the level. Command."""
        level = self.level
        if self.u_count:
            mean = self.u_sum / (QUANTUM * self.u_count)
            level = mean if level is None else level + LEVEL_SMOOTHING * (mean - level)
        # `__init__(size, level)`, spelled out: this runs at every window's close.
        self.key, self.group, self.priority = _NO_KEYS, _NO_GROUPS, _NO_KEYS
        self.payload = []
        self.u_sum, self.u_count, self.level = 0, 0, level

    def snapshot(self) -> dict[str, Any]:
        return {"size": self.size, "key": encode_array(self.key),
                "group": encode_array(self.group), "priority": encode_array(self.priority),
                "payload": list(self.payload), "u_sum": self.u_sum, "u_count": self.u_count,
                "level": self.level}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> WeightedReservoirState:
        # Snapshots taken before the level existed restore without one (the first window's power).
        level = data.get("level")
        state = cls(int(data["size"]), None if level is None else float(level))
        state.key, state.group = decode_array(data["key"]), decode_array(data["group"])
        state.priority, state.payload = decode_array(data["priority"]), list(data["payload"])
        state.u_sum, state.u_count = int(data.get("u_sum", 0)), int(data.get("u_count", 0))
        return state


class UniformReservoirState:
    """Uniform reservoir of `size` items, Algorithm L (Li 1994): after n offered items each one is
    held with probability exactly min(1, size / n). O(size x log(n / size)) random draws overall,
    one Python step per replacement, none per item."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen = 0
        self.w = 0.0
        self.next_at = 0
        self.payload: list[Any] = []

    def offer(self, m: int, rng: ScalarRandom, make_payload: PayloadFn | list[Any]) -> None:
        """Offer the next `m` items (batch indices 0..m-1). Deterministic given rng.
        `make_payload` builds the payloads of items taken, or is the list of the m items'
        payloads, ready made."""
        if self.size == 0 or m == 0:
            self.seen += m
            return
        if isinstance(rng, ScalarDraws) and rng.exact and isinstance(make_payload, list) and \
                self.size < 1 << 32:
            self._offer_exact(m, rng, make_payload)
            return
        if isinstance(make_payload, list):
            items = make_payload

            def one(item: int) -> Any:
                return items[item]
        else:
            build = make_payload

            def one(item: int) -> Any:
                return build(np.array([item]))[0]
        fill = min(m, self.size - len(self.payload))
        if fill > 0:
            self.payload.extend(one(j) for j in range(fill))
            self.seen += fill
            if len(self.payload) < self.size:
                return
            self.w = math.exp(math.log(1.0 - rng.random()) / self.size)
            self._skip(rng)
        end = self.seen + m - fill
        # `_skip` inlined, with locals: this loop runs a few times per window (~6 of 50 assets
        # with 2 slots), and its Python overhead is most of the control arm's cost.
        size, seen, payload = self.size, self.seen, self.payload
        w, next_at = self.w, self.next_at
        random, integers, log, exp = rng.random, rng.integers, math.log, math.exp
        while next_at <= end:
            payload[int(integers(size))] = one(next_at - seen - 1 + fill)
            w *= exp(log(1.0 - random()) / size)
            u = 1.0 - random()
            base = next_at if next_at else seen
            if w >= 1.0 or w <= 0.0:  # degenerate draws: take the next item / stop
                next_at = base + 1 if w >= 1.0 else 2**62
            else:
                next_at = base + int(math.floor(log(u) / math.log1p(-w))) + 1
        self.w, self.next_at, self.seen = w, next_at, end

    def _offer_exact(self, m: int, draws: ScalarDraws, items: list[Any]) -> None:
        """`offer` of m items with ready payloads, drawing from `draws` (over PCG64) with its
        two transforms inline (`ScalarDraws.random`, `integers`): a call into them cost more
        than its work, and this runs a few times a window. The same draws in the same order, so
        the same picks and the same generator position."""
        size, payload = self.size, self.payload
        log, exp, log1p, floor = math.log, math.exp, math.log1p, math.floor
        fill = min(m, size - len(payload))
        raws: list[int] = []
        at = n = has32 = half = 0
        if fill > 0:
            payload.extend(items[:fill])
            self.seen += fill
            if len(payload) < size:
                return
            raws, at, has32, half = draws.hold(64)
            n = len(raws)
            w = exp(log(1.0 - (raws[at] >> 11) * _TWO_M53) / size)  # then `_skip`
            u = 1.0 - (raws[at + 1] >> 11) * _TWO_M53
            at += 2
            base = self.next_at if self.next_at else self.seen
            if w >= 1.0 or w <= 0.0:  # degenerate draws: take the next item / stop
                self.next_at = base + 1 if w >= 1.0 else 2**62
            else:
                self.next_at = base + int(floor(log(u) / log1p(-w))) + 1
            self.w = w
        seen, w, next_at = self.seen, self.w, self.next_at
        end = seen + m - fill
        if next_at > end:  # no replacement in these items: no more draws
            if n:
                draws.release(at, has32, half)
            self.seen = end
            return
        if not n:
            raws, at, has32, half = draws.hold(64)
            n = len(raws)
        offset = fill - seen - 1  # item next_at is items[next_at + offset]
        while next_at <= end:
            if at + 3 > n:  # one 32-bit and two 64-bit draws ahead (more only on a rejection)
                draws.release(at, has32, half)
                raws, at, has32, half = draws.hold(64)
                n = len(raws)
            slot = 0  # integers(1) draws nothing
            if size > 1:  # integers(size): Lemire's method on 32-bit halves, low half first
                while True:
                    if has32:
                        value, has32 = half, 0
                    else:
                        value = raws[at]
                        at += 1
                        half, has32 = value >> 32, 1
                        value &= _MASK32
                    slot = value * size
                    low = slot & _MASK32
                    if low >= size or low >= (_TWO_32 - size) % size:
                        break
                    if at + 3 > n:  # a rejection (p < size / 2**32): keep two draws ahead
                        draws.release(at, has32, half)
                        raws, at, has32, half = draws.hold(64)
                        n = len(raws)
                slot >>= 32
            payload[slot] = items[next_at + offset]
            w *= exp(log(1.0 - (raws[at] >> 11) * _TWO_M53) / size)
            u = 1.0 - (raws[at + 1] >> 11) * _TWO_M53
            at += 2
            base = next_at if next_at else seen
            if w >= 1.0 or w <= 0.0:  # degenerate draws: take the next item / stop
                next_at = base + 1 if w >= 1.0 else 2**62
            else:
                next_at = base + int(floor(log(u) / log1p(-w))) + 1
        draws.release(at, has32, half)
        self.w, self.next_at, self.seen = w, next_at, end

    def _skip(self, rng: ScalarRandom) -> None:
        u = 1.0 - rng.random()
        base = self.next_at if self.next_at else self.seen
        if self.w >= 1.0 or self.w <= 0.0:  # degenerate draws: take the next item / stop
            self.next_at = base + 1 if self.w >= 1.0 else 2**62
            return
        self.next_at = base + int(math.floor(math.log(u) / math.log1p(-self.w))) + 1

    def drain(self) -> tuple[list[Any], int]:
        """Empty the reservoir; return (payloads in slot order, items offered in the window)."""
        out = (self.payload, self.seen)
        self.__init__(self.size)  # type: ignore[misc]
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"size": self.size, "seen": self.seen, "w": self.w, "next_at": self.next_at,
                "payload": list(self.payload)}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> UniformReservoirState:
        state = cls(int(data["size"]))
        state.seen, state.w = int(data["seen"]), float(data["w"])
        state.next_at = int(data["next_at"])
        state.payload = list(data["payload"])
        return state
