"""Synthetic inference events shared by unit and integration tests (no Kafka imports here)."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.streaming.events import encode_event

CLASSES = [f"c{i}" for i in range(10)]


def inference_events(n: int, seed: int, *, t0: float = 1_700_000_000.0,
                     dt: float = 0.5) -> list[tuple[bytes, bytes]]:
    """`n` keyed inference events of a 10-class model: classes c0-c2 are hard (flat
    distributions), the rest easy; every 7th event is a top-1 prediction; event time steps `dt`."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = int(rng.integers(10))
        alpha = np.full(10, 0.3)
        alpha[truth] = 1.5 if truth < 3 else 12.0
        probs = rng.dirichlet(alpha)
        probs = np.round(probs / probs.sum(), 6)
        probs[int(np.argmax(probs))] += 1.0 - probs.sum()
        if i % 7 == 0:
            top = int(np.argmax(probs))
            prediction: dict[str, Any] = {"label": CLASSES[top],
                                          "confidence": float(probs[top])}
        else:
            prediction = {"scores": dict(zip(CLASSES, map(float, probs), strict=True))}
        asset = f"asset-{seed}-{i}"
        event = {"schema_version": 1, "event_id": f"ev-{seed}-{i}", "asset_id": asset,
                 "model_id": "digits", "model_version": "v1", "timestamp": t0 + i * dt,
                 "predictions": [prediction]}
        out.append((asset.encode(), encode_event(event)))
    return out
