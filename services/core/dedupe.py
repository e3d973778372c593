"""Dedupe: an asset is selected at most once per model version, in bounded memory.

Keys are stable 64-bit hashes of (model_id, model_version, asset_id). They live in one sorted array
tagged with the event-time generation (watermark // generation_seconds) in which they were added;
when the watermark enters a new generation, keys older than `generations` generations are dropped,
and if more than `max_entries` keys are held, whole oldest generations go early.

Exact guarantee: once an asset is selected for a model version at stream position p (watermark W
there, the max event time seen so far), it is not selected again for that version at any later
position whose watermark is below W + ttl_seconds, provided at most `max_entries` keys had to be
held meanwhile (past that cap the oldest generations are forgotten first; with the default budget
a partition cannot select that many within the ttl). The selector advances generations and adds
keys by stream position, so the guarantee (and what is remembered) does not depend on batching.
Hash collisions
(probability < n^2 / 2^65 for n remembered keys) can only make an asset look already selected,
never the reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.codec import decode_array, encode_array


@dataclass(frozen=True)
class DedupePolicy:
    """Settings. `ttl_seconds`: event-time memory of a selection (default 7 days), kept in
    `generations` + 1 rotating generations; `max_entries`: hard memory cap (~12 bytes per key)."""

    ttl_seconds: float = 7 * 86400.0
    generations: int = 8
    max_entries: int = 250_000

    def __post_init__(self) -> None:
        if self.ttl_seconds <= 0 or self.generations < 1 or self.max_entries < 1:
            raise ValueError("ttl_seconds > 0, generations >= 1 and max_entries >= 1 required")

    @property
    def generation_seconds(self) -> float:
        return self.ttl_seconds / self.generations


class DedupeState:
    """Sorted uint64 keys with their generation; membership is one vectorised searchsorted.

    New keys go to a small sorted `recent` array and join the main one in bulk once it holds
    `merge_at` keys: inserting into the main array copies all of it (~170 us a key at 240k keys,
    measured), and the selector adds about one key a window. What the state answers (`contains`,
    `len`, `snapshot`) is that of one sorted array, wherever a key is kept.
    """

    merge_at = 2048

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.uint64)
        self.gens = np.zeros(0, dtype=np.int64)
        self.recent_keys = np.zeros(0, dtype=np.uint64)
        self.recent_gens = np.zeros(0, dtype=np.int64)
        self.generation = -(2**62)
        # Bumped by every command that may change what `contains` answers, so that a caller
        # may keep answers for a whole batch until it moves (derived; never in a snapshot).
        self.changes = 0
        # What `contains` answers now is what it answered at change count `added_since`, plus
        # the keys of `added` ((change count after the add, uint64 keys), oldest first): only
        # adds happened since. Kept answers are brought up to date from it without asking
        # again (derived; never in a snapshot).
        self.added_since = 0
        self.added: list[tuple[int, np.ndarray]] = []

    def __len__(self) -> int:
        return int(self.keys.shape[0] + self.recent_keys.shape[0])

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Per key: True if remembered. Query."""
        found = _member(self.keys, keys)
        if self.recent_keys.shape[0]:
            found |= _member(self.recent_keys, keys)
        return found

    def advance(self, policy: DedupePolicy, watermark: float) -> None:
        """Move to the generation of `watermark` (monotone; earlier watermarks are ignored) and
        forget keys older than the ttl. Idempotent."""
        gen = math.floor(watermark / policy.generation_seconds)
        if gen <= self.generation:
            return
        self.generation = gen
        self.changes += 1
        self._forgot()
        keep = self.gens >= gen - policy.generations
        if not keep.all():
            self.keys, self.gens = self.keys[keep], self.gens[keep]
        keep = self.recent_gens >= gen - policy.generations
        if not keep.all():
            self.recent_keys, self.recent_gens = self.recent_keys[keep], self.recent_gens[keep]

    def add(self, policy: DedupePolicy, keys: np.ndarray) -> None:
        """Remember `keys` in the current generation (call `advance` first); a key already held
        moves to the current generation. Idempotent per key."""
        new = np.unique(keys.astype(np.uint64))
        self._note_added(new)
        for held_keys, held_gens in ((self.keys, self.gens), (self.recent_keys, self.recent_gens)):
            held = _member(held_keys, new)
            if held.any():
                held_gens[np.searchsorted(held_keys, new[held])] = self.generation
                new = new[~held]
        if new.shape[0] == 0:
            return
        pos = np.searchsorted(self.recent_keys, new)
        self.recent_keys = np.insert(self.recent_keys, pos, new)
        self.recent_gens = np.insert(self.recent_gens, pos, self.generation)
        self._bound(policy)

    def _note_added(self, keys: np.ndarray) -> None:
        """Count a change that adds `keys` (see `added`)."""
        self.changes += 1
        if len(self.added) >= 64:  # bounded: answers older than the log are asked again
            self.added_since = self.added.pop(0)[0]
        self.added.append((self.changes, keys))

    def _forgot(self) -> None:
        """Keys may have left: no answer kept before now is brought up to date."""
        self.added_since, self.added = self.changes, []

    def _locate(self, k: np.uint64) -> tuple[np.ndarray, int] | None:
        """(the generations array holding key k, its index there), or None. Query."""
        for keys, gens in ((self.keys, self.gens), (self.recent_keys, self.recent_gens)):
            i = int(keys.searchsorted(k))
            if i < keys.shape[0] and keys[i] == k:
                return gens, i
        return None

    def holds(self, key: int) -> bool:
        """`contains` of one key. Query."""
        return self._locate(np.uint64(key)) is not None

    def add_one(self, policy: DedupePolicy, key: int) -> None:
        """`add` of one key (a window's grants come one at a time), without set operations."""
        k = np.uint64(key)
        self._note_added(np.array([k], dtype=np.uint64))
        found = self._locate(k)
        if found is not None:
            gens, i = found
            gens[i] = self.generation
            return
        i = int(self.recent_keys.searchsorted(k))
        rk, rg = self.recent_keys, self.recent_gens
        self.recent_keys = np.concatenate((rk[:i], np.array([k], dtype=np.uint64), rk[i:]))
        self.recent_gens = np.concatenate((rg[:i], np.array([self.generation], dtype=np.int64),
                                           rg[i:]))
        self._bound(policy)

    def _bound(self, policy: DedupePolicy) -> None:
        """Merge the recent keys in when due, then hold the memory to `max_entries`."""
        if self.recent_keys.shape[0] >= self.merge_at or len(self) > policy.max_entries:
            self.keys, self.gens = self._union()
            self.recent_keys = np.zeros(0, dtype=np.uint64)
            self.recent_gens = np.zeros(0, dtype=np.int64)
        while self.keys.shape[0] > policy.max_entries:
            self._forgot()
            oldest = self.gens.min()
            if oldest == self.generation:  # one generation over the cap: drop the excess keys
                cap = policy.max_entries
                self.keys, self.gens = self.keys[:cap], self.gens[:cap]
                break
            keep = self.gens > oldest
            self.keys, self.gens = self.keys[keep], self.gens[keep]

    def _union(self) -> tuple[np.ndarray, np.ndarray]:
        """All keys in one sorted array, with their generations (the two arrays never share a
        key). Query."""
        if self.recent_keys.shape[0] == 0:
            return self.keys, self.gens
        pos = np.searchsorted(self.keys, self.recent_keys)
        return (np.insert(self.keys, pos, self.recent_keys),
                np.insert(self.gens, pos, self.recent_gens))

    def snapshot(self) -> dict[str, Any]:
        keys, gens = self._union()
        return {"generation": self.generation, "keys": encode_array(keys),
                "gens": encode_array(gens)}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> DedupeState:
        state = cls()
        state.generation = int(data["generation"])
        state.keys, state.gens = decode_array(data["keys"]), decode_array(data["gens"])
        return state


def _member(held: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per key: True if in the sorted array `held`."""
    if held.shape[0] == 0 or keys.shape[0] == 0:
        return np.zeros(keys.shape[0], dtype=bool)
    pos = np.minimum(np.searchsorted(held, keys), held.shape[0] - 1)
    return held[pos] == keys
