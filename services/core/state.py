"""`SelectorMemory`: everything one partition's selector remembers, its queries, commands
between batches (feedback), and its checkpoint (`snapshot` / `from_snapshot`).

What `select` (selector.py) does with it, segment by segment, lives in selector.py, cuts.py,
arms.py, offers.py, flush.py and gates.py, which all take this class; `SelectorState`
(selector.py) adds the `select` method. So the state is one idea and the decisions another, and
no module of the core imports one that imports it back.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from services.core.budget import BudgetState
from services.core.codec import decode_rng, encode_rng
from services.core.dedupe import DedupeState
from services.core.draws import Draws
from services.core.drift import DriftEvent
from services.core.feedback import weights_from_agreement
from services.core.policy import SelectorPolicy
from services.core.redundancy import RedundancyState
from services.core.registry import ModelBook, VersionState
from services.core.reservoir import WeightedReservoirState
from services.core.scalar_draws import ScalarDraws
from services.core.thresholds import growth, relative_quantiles
from services.core.tracks import TrackState
from services.core.uniform_reservoir import UniformReservoirState

FORMAT = "active-stream/selector-state"
FORMAT_VERSION = 2
_CONTROL_STREAM = 5  # SeedSequence spawn key of the control arm's generator (see draws.py: 1-4)


class SelectorMemory:
    """Everything one partition's selector remembers; memory bounded by the policy, not by the
    stream length. Build with `create(policy, seed)` or `from_snapshot(data, policy)`."""

    def __init__(self, policy: SelectorPolicy, seed: int) -> None:
        self.policy = policy
        self.seed = int(seed)
        self.draws = Draws(self.seed)
        self.control_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed, _CONTROL_STREAM])))
        # The control arm's draws during one `select` (scalar_draws.py); None between calls.
        self.control_draws: ScalarDraws | None = None
        self.assets_seen = 0
        self.units_seen = 0.0  # predictions seen: the count coordinate when cost = instances
        self.watermark = -math.inf
        self.last_time: float | None = None  # event time of the last asset (eventtime.py)
        self.window_id: int | None = None
        self.window_count = 0
        self.budget = BudgetState(policy.budget)
        self.dedupe = DedupeState()
        self.books: dict[str, ModelBook] = {}
        self.versions: dict[tuple[str, str], VersionState] = {}
        self.weighted = WeightedReservoirState(policy.reservoir.per_class)
        self.control = UniformReservoirState(policy.reservoir.control_size)
        # Classes that started drifting (drift.py), for the shell to report; drained by
        # `take_drift_events` after each `select`, so never part of a snapshot.
        self.drift_events: list[DriftEvent] = []
        self.redundancy = RedundancyState(policy.redundancy)
        self.tracks = TrackState(policy.tracks)
        self.suppressed: Counter[str] = Counter()  # of the batch being selected (Selection)

    def take_drift_events(self) -> list[DriftEvent]:
        """The drift events of the `select` calls since the last take. Command."""
        out, self.drift_events = self.drift_events, []
        return out

    @classmethod
    def create(cls, policy: SelectorPolicy, seed: int) -> Self:
        """A fresh state whose randomness derives from `seed` (an int >= 0; see draws.py)."""
        return cls(policy, seed)

    def book(self, model_id: str) -> ModelBook:
        """The model's book, created on first use. Command (may create)."""
        if model_id not in self.books:
            self.books[model_id] = ModelBook(model_id, self.policy.max_classes)
        return self.books[model_id]

    def version(self, model_id: str, model_version: str) -> VersionState:
        """The model version's state, created on first use. Command (may create)."""
        key = (model_id, model_version)
        if key not in self.versions:
            self.versions[key] = VersionState(model_id, model_version, self.policy.stats,
                                              self.policy.thresholds.initial_threshold)
        return self.versions[key]

    def apply_feedback(self, model_id: str, agreement: Mapping[str, float],
                       label_counts: Mapping[str, float] | None = None) -> bool:
        """Set class weights from human-model agreement per class (see feedback.py). Weak classes
        gain budget, mastered ones lose it, none reaches zero. Idempotent for equal input.
        False when not applied (`set_class_weights`)."""
        weights = weights_from_agreement(self.policy.feedback, agreement, label_counts)
        return self.set_class_weights(model_id, weights)

    def set_class_weights(self, model_id: str, weights: Mapping[str, float]) -> bool:
        """Set class weights directly (floored at feedback.mastered_weight > 0: a mastered
        class's weight, feedback.with_mastery, is below min_weight); False when not
        applied. Feedback never grows the state past its caps: a model the stream has not
        shown yet gets a book only while there is room under `max_models`, or in place of
        another book only feedback made (never of a model the stream has shown); its classes
        count against `max_classes` (past it they share `__other__`)."""
        if model_id not in self.books and len(self.books) >= self.policy.max_models:
            unseen = [m for m, b in self.books.items() if b.last_seen == -np.inf]
            if not unseen:
                return False
            del self.books[unseen[0]]  # the oldest feedback-only book
        self.book(model_id).set_weights(weights, self.policy.feedback.mastered_weight)
        return True

    def class_weights(self, model_id: str) -> dict[str, float]:
        """Current weight per known class of `model_id`. Query."""
        book = self.books.get(model_id)
        return {} if book is None else dict(zip(book.names, book.weights.tolist(), strict=True))

    def thresholds(self) -> dict[tuple[str, str], float]:
        """Variable-uncertainty threshold (uncertainty space) per model version. Query."""
        up = 1.0 + self.policy.thresholds.step
        return {k: float(np.clip(1.0 - min(1.0, v.theta * float(growth(up, v.misses + 1)[
            v.misses])), 0.0, 1.0)) for k, v in self.versions.items()}

    def class_stats(self, model_id: str, model_version: str) -> dict[str, dict[str, Any]]:
        """Per class of a model version: count, EWMA mean/variance of top-1 confidence, window
        count, readiness, and the class-relative confidence threshold (None if not ready). For
        metrics; empty for an unknown version. Query."""
        version = self.versions.get((model_id, model_version))
        book = self.books.get(model_id)
        if version is None or book is None or version.stats.n_classes == 0:
            return {}
        s, tp = version.stats, self.policy.thresholds
        ready = s.ready()
        q = relative_quantiles(tp.class_relative_q, tp.max_q, book.weights[: s.n_classes], s.m1,
                               ready)
        thr, var, win = s.quantiles(q).tolist(), s.variance().tolist(), s.window_count().tolist()
        return {book.names[c]: {"count": int(s.count[c]), "mean": float(s.m1[c]),
                                "variance": var[c], "window_count": int(win[c]),
                                "ready": bool(ready[c]),
                                "threshold": None if np.isnan(thr[c]) else thr[c]}
                for c in range(s.n_classes)}

    def held_refs(self) -> list[Any]:
        """The refs of assets the window's reservoirs hold: picks a later flush may grant, for
        a caller that keeps their records at hand. Query (between `select` calls)."""
        return [p[0][0] for p in self.weighted.payload] + [p[0][0] for p in self.control.payload]

    def budget_remaining(self, lane: str = "exploit") -> float:
        """Whole selections the lane could grant at the current position. Query."""
        wm = self.watermark if self.watermark > -math.inf else 0.0
        seen = self.units_seen if self.policy.budget.cost == "instances" else self.assets_seen
        return self.budget.remaining(self.policy.budget, lane, float(seen), wm)

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able dict (str/int/float/bool/None/list/dict; no NaN/inf; ints <= 64 bits)
        with `format` and `version`. Pure: the state is unchanged."""
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "seed": str(self.seed),
            "control_rng": encode_rng(self.control_rng), "assets_seen": self.assets_seen,
            "watermark": None if self.watermark == -math.inf else self.watermark,
            "last_time": self.last_time,
            "window_id": self.window_id, "window_count": self.window_count,
            "budget": self.budget.snapshot(), "dedupe": self.dedupe.snapshot(),
            "books": [b.snapshot() for b in self.books.values()],
            "versions": [v.snapshot() for v in self.versions.values()],
            "weighted": self.weighted.snapshot(), "control": self.control.snapshot(),
            # Only when a gate is on, so that a classification stream's checkpoint is unchanged.
            **({"redundancy": self.redundancy.snapshot()} if self.policy.redundancy.enabled
               else {}),
            **({"tracks": self.tracks.snapshot()} if self.policy.tracks.enabled else {}),
            **({"units_seen": self.units_seen} if self.policy.budget.cost == "instances"
               else {}),
        }

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any], policy: SelectorPolicy) -> Self:
        """Rebuild the state `snapshot` described. Raises ValueError on an unknown format/version
        or a policy whose stats layout (bins, buckets) differs from the snapshot's."""
        if data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported snapshot {data.get('format')!r} v{data.get('version')}")
        state = cls(policy, int(data["seed"]))
        state.control_rng = decode_rng(data["control_rng"])
        state.assets_seen = int(data["assets_seen"])
        state.watermark = -math.inf if data["watermark"] is None else float(data["watermark"])
        last = data.get("last_time")  # absent in checkpoints written before it existed
        state.last_time = None if last is None else float(last)
        state.window_id, state.window_count = data["window_id"], int(data["window_count"])
        state.budget = BudgetState.from_snapshot(policy.budget, data["budget"])
        state.dedupe = DedupeState.from_snapshot(data["dedupe"])
        for b in data["books"]:
            state.books[b["model_id"]] = ModelBook.from_snapshot(b, policy.max_classes)
        for v in data["versions"]:
            version = VersionState.from_snapshot(v, policy.stats)
            state.versions[(version.model_id, version.version)] = version
        state.weighted = WeightedReservoirState.from_snapshot(data["weighted"])
        state.control = UniformReservoirState.from_snapshot(data["control"])
        state.redundancy = RedundancyState.from_snapshot(policy.redundancy, data.get("redundancy"))
        state.tracks = TrackState.from_snapshot(policy.tracks, data.get("tracks"))
        state.units_seen = float(data.get("units_seen", 0.0))
        return state
