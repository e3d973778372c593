"""Redundancy suppression: near-duplicate embeddings and a cap per sequence (issue 16, item 1).

A video stream is mostly redundancy: thirty frames a second of one scene are thirty near-identical
assets. Two optional gates keep one hard moment from taking the whole budget:

- **near duplicates** (events carry `embedding`): an exploit-lane candidate whose embedding has a
  cosine similarity >= `similarity` with an asset requested for the same model within the last
  `horizon_seconds` of event time is skipped (reason `near_duplicate`). A window's reservoir
  picks are checked one by one, each against the earlier ones too, so a flush spreads its picks.
- **sequence cap** (events carry `sequence_id`, e.g. a camera or a clip): at most
  `sequence_cap` requests per (model, sequence) per tumbling `sequence_seconds` of event time
  (reason `sequence_cap`).

A candidate whose identity is in doubt (track instability, tracks.py: a crossing or a suspected
identity switch together with a class flip) is spared the near-duplicate gate while
`spare_identity_doubt` is on (the default): its frame looks like the ones requested before, but
who is who is exactly what a person should check. The sequence cap still applies to it.

Only the exploit lane (reservoir and threshold arms) is gated; exploration, warm-up and the random
control arm keep their recorded inclusion probabilities honest and are never suppressed, but every
granted asset, whatever its arm, is remembered. Time is the partition's watermark at the decision
(never a clock), so the gates are deterministic and invariant to batch boundaries.

Memory is bounded: `memory` embeddings per model (oldest forgotten first), at most `max_models`
models (the least recently granted forgotten first), `max_sequences` sequence counters; an
embedding is folded to at most `dims` numbers (`fold`), so a checkpoint holds at most
max_models x memory x dims float32 values. Both gates are off by default, and a stream without
the fields is never affected: its state snapshot has no `redundancy` entry at all.
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

NEAR_DUPLICATE, SEQUENCE_CAP = "near_duplicate", "sequence_cap"
REASONS = (NEAR_DUPLICATE, SEQUENCE_CAP)


@dataclass(frozen=True)
class RedundancyPolicy:
    """Settings (see the module docstring). `similarity`: cosine in (-1, 1] at or above which a
    candidate is a near duplicate of a remembered request; None turns the gate off.
    `sequence_cap`: requests per sequence per `sequence_seconds`; 0 turns the cap off.
    `per_model`: overrides of `similarity` / `horizon_seconds` by model id."""

    similarity: float | None = None
    horizon_seconds: float = 60.0
    memory: int = 64
    dims: int = 128
    max_models: int = 16
    sequence_cap: int = 0
    sequence_seconds: float = 10.0
    max_sequences: int = 4096
    per_model: Mapping[str, Mapping[str, float]] | None = None
    spare_identity_doubt: bool = True

    def __post_init__(self) -> None:
        if self.similarity is not None and not -1.0 < self.similarity <= 1.0:
            raise ValueError("similarity must be in (-1, 1] or None")
        if self.horizon_seconds <= 0 or self.sequence_seconds <= 0:
            raise ValueError("horizon_seconds and sequence_seconds must be > 0")
        if min(self.memory, self.dims, self.max_models, self.max_sequences) < 1:
            raise ValueError("memory, dims, max_models and max_sequences must be >= 1")
        if self.sequence_cap < 0:
            raise ValueError("sequence_cap must be >= 0")
        for model, over in (self.per_model or {}).items():
            unknown = set(over) - {"similarity", "horizon_seconds"}
            if unknown:
                raise ValueError(f"per_model[{model!r}] has unknown settings {sorted(unknown)}")

    @property
    def enabled(self) -> bool:
        return self.similarity is not None or self.sequence_cap > 0

    def for_model(self, model_id: str) -> tuple[float | None, float]:
        """(similarity, horizon_seconds) for `model_id`. Query."""
        over = (self.per_model or {}).get(model_id, {})
        sim = over.get("similarity", self.similarity)
        return (None if sim is None else float(sim)), float(over.get("horizon_seconds",
                                                                      self.horizon_seconds))


def fold(vector: np.ndarray, dims: int) -> np.ndarray:
    """`vector` as a unit float32 vector of exactly `dims` numbers: shorter ones zero-padded,
    longer ones folded (component i added into i mod dims), so cosine is exact up to `dims`
    numbers and approximate past it. A zero vector stays zero (similar to nothing). Pure."""
    v: np.ndarray = np.asarray(vector, dtype=np.float64).reshape(-1)
    if v.shape[0] > dims:
        v = np.bincount(np.arange(v.shape[0]) % dims, weights=v, minlength=dims).astype(np.float64)
    out = np.zeros(dims, dtype=np.float64)
    out[: v.shape[0]] = v
    norm = float(np.sqrt(out @ out))
    return (out / norm if norm > 0 and math.isfinite(norm) else np.zeros(dims)).astype(np.float32)


class _Model:
    """One model's remembered requests: unit vectors and their event times, oldest first."""

    def __init__(self, dims: int) -> None:
        self.vectors = np.zeros((0, dims), dtype=np.float32)
        self.times = np.zeros(0, dtype=np.float64)
        self.last = -math.inf


class RedundancyState:
    """The memory of recent requests (see the module docstring). Queries: `reason`; commands:
    `record`. Snapshot round-trips exactly."""

    def __init__(self, policy: RedundancyPolicy) -> None:
        self.policy = policy
        self.models: OrderedDict[str, _Model] = OrderedDict()
        self.sequences: OrderedDict[str, list[int]] = OrderedDict()  # key -> [window, count]

    def _seq_key(self, model_id: str, sequence: str) -> str:
        return f"{model_id}\x1f{sequence}"

    def reason(self, model_id: str, vector: np.ndarray | None, sequence: str | None,
               watermark: float, in_doubt: bool = False) -> str | None:
        """Why a candidate (its folded `vector`, its sequence) would be suppressed at
        `watermark`, or None when it may be requested. `in_doubt`: its identity is in doubt
        (module docstring), so only the sequence cap is checked when the policy spares it.
        Query."""
        pol = self.policy
        if pol.sequence_cap and sequence is not None:
            entry = self.sequences.get(self._seq_key(model_id, sequence))
            window = math.floor(watermark / pol.sequence_seconds)
            if entry is not None and entry[0] == window and entry[1] >= pol.sequence_cap:
                return SEQUENCE_CAP
        if in_doubt and pol.spare_identity_doubt:
            return None
        similarity, horizon = pol.for_model(model_id)
        if similarity is not None and vector is not None:
            mem = self.models.get(model_id)
            if mem is not None and mem.times.shape[0]:
                live = mem.times >= watermark - horizon
                if live.any() and float((mem.vectors[live] @ vector).max()) >= similarity - 1e-6:
                    return NEAR_DUPLICATE
        return None

    def record(self, model_id: str, vector: np.ndarray | None, sequence: str | None,
               watermark: float) -> None:
        """Remember a granted request (any arm). Command."""
        pol = self.policy
        if pol.sequence_cap and sequence is not None:
            key = self._seq_key(model_id, sequence)
            window = math.floor(watermark / pol.sequence_seconds)
            entry = self.sequences.pop(key, None)
            entry = [window, 0] if entry is None or entry[0] != window else entry
            entry[1] += 1
            self.sequences[key] = entry  # most recently used last
            while len(self.sequences) > pol.max_sequences:
                self.sequences.popitem(last=False)
        if pol.for_model(model_id)[0] is not None and vector is not None:
            mem = self.models.pop(model_id, None) or _Model(pol.dims)
            self.models[model_id] = mem
            mem.vectors = np.vstack([mem.vectors, vector[None, :]])[-pol.memory:]
            mem.times = np.r_[mem.times, watermark][-pol.memory:]
            mem.last = watermark
            while len(self.models) > pol.max_models:
                self.models.popitem(last=False)

    def size(self) -> int:
        """Remembered embeddings plus sequence counters (for tests of the bound). Query."""
        return sum(m.times.shape[0] for m in self.models.values()) + len(self.sequences)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able; vectors as base64 of little-endian float32 bytes (exact)."""
        return {
            "models": [[m, base64.b64encode(v.vectors.astype("<f4").tobytes()).decode(),
                        v.times.tolist(), v.last] for m, v in self.models.items()],
            "sequences": [[k, e[0], e[1]] for k, e in self.sequences.items()],
        }

    @classmethod
    def from_snapshot(cls, policy: RedundancyPolicy, data: Mapping[str, Any] | None
                      ) -> RedundancyState:
        """Rebuild; None (a checkpoint written with the gates off) gives an empty memory. A
        policy with other `dims` or a smaller bound keeps what fits."""
        state = cls(policy)
        if not data:
            return state
        for model_id, blob, times, last in data["models"]:
            raw = np.frombuffer(base64.b64decode(blob), dtype="<f4").astype(np.float32)
            mem = _Model(policy.dims)
            if times and raw.shape[0] == len(times) * policy.dims:
                mem.vectors = raw.reshape(len(times), policy.dims)[-policy.memory:].copy()
                mem.times = np.asarray(times, dtype=np.float64)[-policy.memory:]
            mem.last = float(last)
            state.models[model_id] = mem
        for key, window, count in data["sequences"]:
            state.sequences[key] = [int(window), int(count)]
        while len(state.models) > policy.max_models:
            state.models.popitem(last=False)
        while len(state.sequences) > policy.max_sequences:
            state.sequences.popitem(last=False)
        return state
