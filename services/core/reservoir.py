"""Reservoir sampling over a window of the stream: weighted per class (A-Res) here, uniform
(Algorithm L, the random control arm) in uniform_reservoir.py.

Both take whole batches. Payloads are the caller's JSON-able values (the selector stores each
candidate's ref and decision data), built only for items that enter the reservoir. Randomness comes
from the caller (positional exponentials for the weighted reservoirs; a Generator the uniform one
uses in offer order), so a seeded run repeats exactly however its offers were batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.codec import decode_array, encode_array
from services.core.uniform_reservoir import PayloadFn


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
