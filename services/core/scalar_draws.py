"""`ScalarDraws`: the scalar draws `random()` and `integers(n)` of a `Generator(PCG64)`, made in
Python from the bit generator's raw 64-bit outputs, bit for bit what the Generator would give.

Why: the uniform control arm (reservoir.py, Algorithm L) makes a few scalar draws per window, in
offer order, from its own generator, whose state is checkpointed. A scalar call into numpy costs
0.4-1 us of argument handling for a few nanoseconds of work; with ~20 windows per 1,000 events
those calls were a tenth of selection. Here the raw outputs are drawn in blocks and the two
transforms are done in Python; `close()` then leaves the generator exactly where the same scalar
calls would have (same position, same buffered 32-bit half), so snapshots are unchanged.

The transforms are numpy's (numpy/random/src/distributions): `random()` is the top 53 bits of one
64-bit output times 2**-53; `integers(n)` is Lemire's bounded integer on 32-bit outputs, which
PCG64 serves as the low then the high half of one 64-bit output. A unit test compares both with
numpy's own draws, interleaved, and the generator states after them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MASK32 = 0xFFFFFFFF
_TWO_M53 = 1.0 / 9007199254740992.0
_BLOCK = 256


class ScalarDraws:
    """Scalar draws of `rng` (a Generator over PCG64) made in Python. Use it in place of `rng`
    for `random()` and `integers(n)` (n >= 1) only, then `close()` it once: until then the
    generator itself must not be used. Any other bit generator is served by `rng` directly."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.bit_generator = rng.bit_generator
        self.exact = isinstance(self.bit_generator, np.random.PCG64)
        self._start: dict[str, Any] | None = None
        self._raw: list[int] = []
        self._at = 0  # next unread raw output; len(_raw) when none is left
        self._n = 0
        self._drawn = 0  # raw outputs drawn from the generator since `_begin`
        self._has32 = 0
        self._half = 0

    def _begin(self) -> None:
        """At the first draw: remember where the generator was, its buffered half included."""
        start = dict(self.bit_generator.state)
        self._start = start
        self._has32 = int(start["has_uint32"])
        self._half = int(start["uinteger"])

    def _refill(self) -> None:
        if self._start is None:
            self._begin()
        size = max(_BLOCK, 2 * self._n)
        self._raw = self.bit_generator.random_raw(size).tolist()
        self._at, self._n = 0, size
        self._drawn += size

    def _next64(self) -> int:
        at = self._at
        if at == self._n:
            self._refill()
            at = 0
        self._at = at + 1
        return self._raw[at]

    def _next32(self) -> int:
        if self._has32:
            self._has32 = 0
            return self._half
        if self._start is None:
            self._begin()
            if self._has32:
                self._has32 = 0
                return self._half
        value = self._next64()
        self._has32, self._half = 1, value >> 32
        return value & _MASK32

    def hold(self, k: int) -> tuple[list[int], int, int, int]:
        """(raws, at, has32, half): at least `k` unread raw 64-bit outputs from raws[at] on and
        the buffered 32-bit half (has32: 1 when held), for a loop that does `random()` and
        `integers(n)` inline (reservoir.py). Exact generators only (`exact`). Until it hands the
        position back with `release`, no other draw may be made here."""
        if self._start is None:
            self._begin()
        if self._n - self._at < k:
            size = max(_BLOCK, 2 * k)
            self._raw = self._raw[self._at:self._n] + self.bit_generator.random_raw(size).tolist()
            self._at, self._n = 0, len(self._raw)
            self._drawn += size
        return self._raw, self._at, self._has32, self._half

    def release(self, at: int, has32: int, half: int) -> None:
        """Hand back the position after a `hold`: raws[:at] are used, and the buffered half."""
        self._at, self._has32, self._half = at, has32, half

    def random(self) -> float:
        """U[0, 1), as `Generator.random()`."""
        at = self._at
        if at < self._n:  # the common case: a raw output is at hand
            self._at = at + 1
            return (self._raw[at] >> 11) * _TWO_M53
        if not self.exact:
            return float(self.rng.random())
        return (self._next64() >> 11) * _TWO_M53

    def integers(self, n: int) -> int:
        """Uniform in [0, n), as `Generator.integers(n)` for 1 <= n <= 2**32."""
        if not self.exact or not 1 <= n <= 1 << 32:
            return int(self.rng.integers(n))
        if n == 1:
            return 0
        if n == 1 << 32:
            return self._next32()
        m = self._next32() * n
        low = m & _MASK32
        if low < n:
            threshold = ((1 << 32) - n) % n
            while low < threshold:
                m = self._next32() * n
                low = m & _MASK32
        return m >> 32

    def close(self) -> None:
        """Put the generator where the draws made so far leave it. Idempotent."""
        start, self._start = self._start, None
        if start is None:
            return
        bg: Any = self.bit_generator  # a PCG64 (`exact`): it has `advance`
        bg.state = start
        bg.advance(self._drawn - (self._n - self._at))  # resets the buffered half: set below
        state = bg.state
        state["has_uint32"], state["uinteger"] = self._has32, self._half
        bg.state = state
        self._raw, self._at, self._n, self._drawn = [], 0, 0, 0
