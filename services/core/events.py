"""The shape of decoded inference events the selection core reads (structural, no decoder import).

Any object with these attributes works: the decoder's dataclasses, test fakes, namedtuples. The
core assumes the decoder already validated them (distributions have >= 2 classes, are finite,
non-negative and sum to 1; confidences lie in [0, 1]); `PredictionBatch.from_events` only raises on
shapes that no valid event can have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


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
