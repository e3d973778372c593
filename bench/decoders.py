"""Decoder throughput on one core: events/s for typical inference events and labels.

Run: .venv/bin/python bench/decoders.py [--seconds 1.0]. Prints one line per case; best of five
timed rounds, so background noise inflates nothing. The payloads are built here, compact JSON as a
producer would send it. The `batch` cases time the scorer's batch decoder
(`decode_inference_batch`) on 1,000 events and print the time per event.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from services.streaming.events import decode_inference_event, decode_label
from services.streaming.inference_batch import decode_inference_batch


def _inference(classes: int, predictions: int, embedding: int = 0) -> bytes:
    share = 1.0 / classes
    prediction: dict = {"scores": {f"class-{i}": share for i in range(classes)}}
    if predictions > 1:
        prediction.update(instance_id="obj-1", bbox=[10.0, 20.5, 64.0, 128.0])
    if embedding:
        prediction["embedding"] = [0.001 * i for i in range(embedding)]
    event = {
        "schema_version": 1,
        "event_id": "0b7e4c1e-5a8f-4d5e-9a49-3b9b8c1d2e3f",
        "asset_id": "img-2024-06-01-000123",
        "asset_uri": "s3://shelf-cams/2024/06/01/000123.jpg",
        "model_id": "shelf-classifier",
        "model_version": "2024.06.1",
        "timestamp": 1717243200.125,
        "predictions": [prediction] * predictions,
        "metadata": {"camera": "aisle-7"},
    }
    return orjson.dumps(event)


def _label() -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "label_id": "lbl-0001",
            "request_id": "req-3f9a2c",
            "asset_id": "frame-000981",
            "model_id": "people-detector",
            "annotations": [{"label": "person", "instance_id": "obj-1", "bbox": [11, 20, 62, 130]}],
            "annotator_id": "annotator-42",
            "labeled_at": 1717246800.5,
        }
    )


CASES: list[tuple[str, Callable[[bytes], object], bytes]] = [
    ("inference: 10 classes, 1 prediction", decode_inference_event, _inference(10, 1)),
    ("inference: 1000 classes, 1 prediction", decode_inference_event, _inference(1000, 1)),
    ("inference: 10 classes, 20 detections", decode_inference_event, _inference(10, 20)),
    ("inference: 10 classes, 512-d embedding", decode_inference_event, _inference(10, 1, 512)),
    ("label: 1 annotation with bbox", decode_label, _label()),
]


def _batch(event: bytes, n: int = 1000) -> list[bytes]:
    """n copies of `event` with distinct ids (the decoder's fast shape keeps no per-event state
    beyond them)."""
    out = []
    for i in range(n):
        obj = orjson.loads(event)
        obj["event_id"], obj["asset_id"] = f"ev-{i}", f"asset-{i}"
        out.append(orjson.dumps(obj))
    return out


def _mixed(n: int = 1000) -> list[bytes]:
    """Like tests/synthetic_events.py: 10 classes, every 7th event a top-1 label, no optional
    fields."""
    out = []
    for i, value in enumerate(_batch(_inference(10, 1), n)):
        obj = orjson.loads(value)
        del obj["asset_uri"], obj["metadata"]
        if i % 7 == 0:
            obj["predictions"] = [{"label": "class-3", "confidence": 0.4}]
        out.append(orjson.dumps(obj))
    return out


def _mixed(n: int = 1000) -> list[bytes]:
    """Like tests/synthetic_events.py: 10 classes, every 7th event a top-1 label, no optional
    fields."""
    out = []
    for i, value in enumerate(_batch(_inference(10, 1), n)):
        obj = orjson.loads(value)
        del obj["asset_uri"], obj["metadata"]
        if i % 7 == 0:
            obj["predictions"] = [{"label": "class-3", "confidence": 0.4}]
        out.append(orjson.dumps(obj))
    return out


BATCH_CASES: list[tuple[str, list[bytes]]] = [
    ("batch: 10 classes, 1 prediction, metadata", _batch(_inference(10, 1))),
    ("batch: 1 in 7 events top-1, no metadata", _mixed()),
    ("batch: 10 classes, 20 detections", _batch(_inference(10, 20))),
]


def _rate(decode: Callable[[Any], object], data: Any, seconds: float) -> float:
    n = 1
    while True:  # calibrate a batch size that takes about seconds / 5
        start = time.perf_counter()
        for _ in range(n):
            decode(data)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 5:
            break
        n *= 2
    best = elapsed
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(n):
            decode(data)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="rough time per case")
    args = parser.parse_args()
    for name, decode, data in CASES:
        rate = _rate(decode, data, args.seconds)
        print(f"{name:42s} {len(data):7d} B  {rate:12,.0f} events/s  {1e6 / rate:8.2f} µs/event")
    for name, values in BATCH_CASES:
        size = sum(map(len, values)) // len(values)
        rate = _rate(decode_inference_batch, values, args.seconds) * len(values)
        print(f"{name:42s} {size:7d} B  {rate:12,.0f} events/s  {1e6 / rate:8.2f} µs/event")


if __name__ == "__main__":
    main()
