"""Positional randomness: the random numbers an asset sees are a function of (seed, purpose, the
asset's absolute position in the partition's stream), never of how the stream was cut into batches.

Positions are grouped in blocks of `BLOCK` assets; block b of purpose p is drawn in one call from
`Generator(PCG64(SeedSequence([seed, p, b])))`, always whole, so every value (and anything computed
from a whole block, like the exponentials) is bit-identical whichever batch asks for it. Nothing
here is state: a `Draws` keeps a small cache of recent blocks and rebuilds any block on demand, so
a snapshot needs only the seed.
"""

from __future__ import annotations

import numpy as np

BLOCK = 1024
WARMUP, EXPLORE, ETA, RESERVOIR = 1, 2, 3, 4
_KINDS = {WARMUP: "uniform", EXPLORE: "uniform", ETA: "normal", RESERVOIR: "exponential"}


class Draws:
    """Per-purpose random values by absolute asset position (0-based). Deterministic in seed."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError("seed must be >= 0")
        self.seed = seed
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def _block(self, purpose: int, block: int) -> np.ndarray:
        key = (purpose, block)
        values = self._cache.get(key)
        if values is None:
            if len(self._cache) >= 16:
                self._cache.clear()
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
                [self.seed, purpose, block])))
            kind = _KINDS[purpose]
            values = rng.random(BLOCK) if kind == "uniform" else (
                rng.standard_normal(BLOCK) if kind == "normal" else rng.standard_exponential(BLOCK))
            self._cache[key] = values
        return values

    def get(self, purpose: int, lo: int, hi: int) -> np.ndarray:
        """Values of positions lo..hi-1: U[0, 1) (WARMUP, EXPLORE), N(0, 1) (ETA), Exp(1)
        (RESERVOIR). Query (the cache aside)."""
        first, last = lo // BLOCK, max(hi - 1, lo) // BLOCK
        if first == last:
            return self._block(purpose, first)[lo - first * BLOCK: hi - first * BLOCK]
        parts = [self._block(purpose, b) for b in range(first, last + 1)]
        return np.concatenate(parts)[lo - first * BLOCK: hi - first * BLOCK]
