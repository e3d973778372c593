"""The events a batch's selections name, built from what the batch decoder parsed: never decoded
a second time from their bytes.

Of a batch only the few selected events (~2%), and the few the reservoirs hold for a later
window, need an `InferenceEvent` (for the request's fields and predictions). An event the exact
decoder read is one already. An event of a `ScoreColumns` run has been checked whole by the batch
decoder for the fast shape (the required fields, optional `asset_uri` and flat `metadata`, one
prediction holding only a valid `scores` distribution: services/streaming/inference_batch.py),
so it is assembled from its parsed object as the exact decoder would have read it, less its
`metadata`, which no request carries.
"""

from __future__ import annotations

import bisect
import dataclasses
from itertools import accumulate
from types import MappingProxyType
from typing import Any

from services.streaming.events import SCHEMA_VERSION, InferenceEvent, Prediction
from services.streaming.inference_batch import DecodedBatch

Held = InferenceEvent | tuple[Any, ...]
"""What is kept of an event a reservoir holds for a later window (`DecodedEvents.held`): the
exact decoder's event, or the request's fields of a columns row as parsed; `event` makes either
an `InferenceEvent`, only when the pick is granted (most held events never are)."""


class DecodedEvents:
    """The valid events of one `DecodedBatch`, by their position `k` in its `index` order (the
    selector's `asset_index`). Pure; cheap to make (one pass over the batch's parts)."""

    def __init__(self, decoded: DecodedBatch) -> None:
        self._decoded = decoded
        self._starts = [0, *accumulate(map(len, decoded.parts))]

    def __getitem__(self, k: int) -> InferenceEvent:
        return event(self.held(k))

    def held(self, k: int) -> Held:
        """Event k as kept for a pick granted in a later batch: without its `metadata`, which
        no request carries and which, parsed, can take many times its bytes (nested objects)."""
        j = bisect.bisect_right(self._starts, k) - 1
        part = self._decoded.parts[j]
        if isinstance(part, list):
            found = part[k - self._starts[j]]
            return found if found.metadata is None else dataclasses.replace(found, metadata=None)
        obj = self._decoded.objs[self._decoded.index[k]]
        return (obj["event_id"], obj["asset_id"], obj.get("asset_uri"), obj["model_id"],
                obj["model_version"], obj["timestamp"], obj["predictions"][0]["scores"])


def event(held: Held) -> InferenceEvent:
    """The event of `held`. A columns row's is the exact decoder's event of its record (numbers
    as floats, an integer probability too), without `metadata`."""
    if isinstance(held, InferenceEvent):
        return held
    event_id, asset_id, asset_uri, model_id, model_version, timestamp, scores = held
    return InferenceEvent(
        schema_version=SCHEMA_VERSION, event_id=event_id, asset_id=asset_id,
        asset_uri=asset_uri, model_id=model_id, model_version=model_version,
        timestamp=float(timestamp),
        predictions=(Prediction(scores=MappingProxyType(
            {name: float(p) for name, p in scores.items()})),),
        metadata=None)
