"""The frame size of a requested asset, for pre-label boxes in Label Studio's percent coordinates.

An annotation request carries the predictions' boxes but not the inference event's `metadata`;
it does carry the event's Kafka coordinates (`source`), so the bridge reads that one record back
and takes the size from its metadata: `width`/`height`, `frame_width`/`frame_height` or
`image_width`/`image_height`. Only requests with a box are looked up (one fetch each: requests
are few, by the labeling budget). When the record is gone (retention) or says nothing, the
configured default applies (ACTIVE_STREAM_LABEL_STUDIO_FRAME_WIDTH / _HEIGHT), else the boxes are
left out of the pre-label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from services.streaming.events import AnnotationRequest

Frame = tuple[int, int]
_KEYS = (("width", "height"), ("frame_width", "frame_height"), ("image_width", "image_height"))
# One record from a topic the broker serves from its page cache: 5 s is ample, and a miss only
# costs the boxes of one pre-label.
_FETCH_TIMEOUT_S = 5.0


def frame_of(metadata: Any) -> Frame | None:
    """The (width, height) an inference event's metadata states, if any (positive integers)."""
    if not isinstance(metadata, dict):
        return None
    for w_key, h_key in _KEYS:
        w, h = metadata.get(w_key), metadata.get(h_key)
        if isinstance(w, int | float) and isinstance(h, int | float) and not isinstance(
                w, bool) and not isinstance(h, bool) and w > 0 and h > 0:
            return int(w), int(h)
    return None


class FrameSizes:
    """Reads source records with a consumer of its own (assigned, no group, no commits)."""

    def __init__(self, consumer_config: Mapping[str, Any], default: Frame | None) -> None:
        self._config = {**consumer_config, "enable.auto.commit": False,
                        "enable.partition.eof": False}
        self._consumer: Consumer | None = None
        self._default = default

    def lookup(self, requests: Iterable[AnnotationRequest]) -> dict[str, Frame]:
        """request id -> frame for the requests with a box whose frame is known."""
        out: dict[str, Frame] = {}
        for request in requests:
            if not any(p.bbox is not None for p in request.predictions):
                continue
            frame = self._read(request) or self._default
            if frame is not None:
                out[request.request_id] = frame
        return out

    def _read(self, request: AnnotationRequest) -> Frame | None:
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        src = request.source
        try:
            self._consumer.assign([TopicPartition(src.topic, src.partition, src.offset)])
            for msg in self._consumer.consume(1, _FETCH_TIMEOUT_S):
                if msg.error() is None and msg.offset() == src.offset:
                    return frame_of(orjson.loads(msg.value() or b"{}").get("metadata"))
        except (KafkaException, orjson.JSONDecodeError, AttributeError):
            return None
        return None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
