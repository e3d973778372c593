"""The shape of decoded inference events the selection core reads (structural, no decoder import).

Any object with these attributes works: the decoder's dataclasses, test fakes, namedtuples. The
core assumes the decoder already validated them (distributions have >= 2 classes, are finite,
non-negative and sum to 1; confidences lie in [0, 1]); `PredictionBatch.from_events` only raises on
shapes that no valid event can have. `ScoreColumns` is the same for a run of single-distribution
events held as columns (`PredictionBatch.from_parts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PredictionLike(Protocol):
    """One object/instance prediction: a full distribution OR a top-1 label with its confidence."""

    @property
    def scores(self) -> Mapping[str, float] | None: ...

    @property
    def label(self) -> str | None: ...

    @property
    def confidence(self) -> float | None: ...

    @property
    def instance_id(self) -> str | None: ...


@runtime_checkable
class InferenceEventLike(Protocol):
    """One asset's inference result; `timestamp` is event time in epoch seconds."""

    @property
    def event_id(self) -> str: ...

    @property
    def asset_id(self) -> str: ...

    @property
    def model_id(self) -> str: ...

    @property
    def model_version(self) -> str: ...

    @property
    def timestamp(self) -> float: ...

    @property
    def predictions(self) -> Sequence[PredictionLike]: ...


@dataclass(frozen=True, eq=False)
class ScoreColumns:
    """n already-validated events with exactly one prediction each, a `scores` distribution and
    nothing else, held as columns (a decoder's batch fast path; no per-event objects).

    Event columns (length n, event order): `asset_ids`, `model_ids`, `model_versions`,
    `timestamps` (epoch s). Distributions are grouped by class layout: `layouts[g]` is a tuple of
    class names in the events' own order, `rows[g]` the ascending event indices (0..n-1, int64)
    with that layout and `values[g]` their probabilities (len(rows[g]) x len(layouts[g]),
    float64). Layouts come in order of first appearance. Equivalent, for `PredictionBatch`, to
    the events it stands for, whatever their other fields. Treat as read-only.
    """

    asset_ids: Sequence[str]
    model_ids: Sequence[str]
    model_versions: Sequence[str]
    timestamps: Sequence[float]
    layouts: tuple[tuple[str, ...], ...]
    rows: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.asset_ids)
