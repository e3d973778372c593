"""The uniform reservoir of the random control arm: Algorithm L (Li 1994) over a window of the
stream, taking whole batches, its draws made in offer order from the caller's generator, so a
seeded run repeats exactly however its offers were batched (reservoir.py has the weighted ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from services.core.scalar_draws import ScalarDraws

_MASK32 = 0xFFFFFFFF
_TWO_32 = 1 << 32
_TWO_M53 = 1.0 / 9007199254740992.0

PayloadFn = Callable[[np.ndarray], list[Any]]


class ScalarRandom(Protocol):
    """The scalar draws Algorithm L makes: a numpy Generator, or scalar_draws.ScalarDraws."""

    def random(self) -> float: ...

    def integers(self, n: int) -> Any: ...


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
