"""Synthetic inference events, the one generator of the tests and the benchmarks (no Kafka
imports here).

One stream: a 10-class model (`digits`, version `v1`) whose classes c0-c2 are hard (flat
distributions, Dirichlet with the true class at 1.5, the others at 0.3) and the rest easy (true
class at 12.0). Two ways to draw it:

- `inference_events(n, seed)`: event by event, every 7th a top-1 prediction, encoded with the
  service's encoder. The tests' input: its bytes for a given seed have not changed since the
  tests were written (replay and invariance runs compare against runs of these very events).
- `event_bodies(rng, start, n)` + `stamp(t)`: the same distribution drawn for a whole chunk at
  once (~5 µs an event instead of ~25), scores written with 6 decimals, the timestamp last so
  that a pacer stamps an event when it sends it. The benchmarks' input (bench/scorer.py, its
  peers, bench/decoders.py, bench/takeover.py); `probabilities(rng, n)` alone for
  bench/selector.py, which times selection on decoded events.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.streaming.events import encode_event

CLASSES = [f"c{i}" for i in range(10)]
HARD = 3  # classes c0..c2 are the hard ones
MODEL_ID, MODEL_VERSION = "digits", "v1"


def concentrations(truth: np.ndarray) -> np.ndarray:
    """The Dirichlet concentrations of events whose true classes are `truth` (shape n x 10)."""
    alpha = np.full((truth.size, len(CLASSES)), 0.3)
    alpha[np.arange(truth.size), truth] = np.where(truth < HARD, 1.5, 12.0)
    return alpha


def inference_events(n: int, seed: int, *, t0: float = 1_700_000_000.0,
                     dt: float = 0.5) -> list[tuple[bytes, bytes]]:
    """`n` keyed inference events of the stream, drawn one by one; every 7th event is a top-1
    prediction; event time steps `dt`. Same `n`, `seed` => the same bytes."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        truth = int(rng.integers(10))
        probs = rng.dirichlet(concentrations(np.array([truth]))[0])
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
                 "model_id": MODEL_ID, "model_version": MODEL_VERSION, "timestamp": t0 + i * dt,
                 "predictions": [prediction]}
        out.append((asset.encode(), encode_event(event)))
    return out


_SCORES = ",".join(f'"{c}":%.6f' for c in CLASSES)
# The timestamp goes last, so an event is `body + stamp(t)` and a pacer stamps at produce time.
_BODY = ('{"schema_version":1,"event_id":"ev-%s","asset_id":"%s","model_id":"' + MODEL_ID
         + '","model_version":"' + MODEL_VERSION + '","predictions":[{"scores":{' + _SCORES
         + '}}],"timestamp":')


def probabilities(rng: np.random.Generator, n: int) -> np.ndarray:
    """The stream's distributions for `n` events at once (n x 10, rows sum to 1, columns in
    CLASSES order): what `event_bodies` writes, for benchmarks that skip the JSON."""
    gamma = rng.standard_gamma(concentrations(rng.integers(len(CLASSES), size=n)))
    return gamma / gamma.sum(axis=1, keepdims=True)


def event_bodies(rng: np.random.Generator, start: int, n: int,
                 prefix: str = "asset-") -> list[tuple[bytes, bytes]]:
    """`n` (key, body) pairs numbered from `start` (asset `prefix` + number); `body + stamp(t)`
    is one inference event of the stream, a full distribution each. Scores rounded to 6
    decimals sum to 1 within 5e-6."""
    out = []
    for i, row in enumerate(probabilities(rng, n).tolist(), start):
        asset = f"{prefix}{i}"
        out.append((asset.encode(), (_BODY % (asset, asset, *row)).encode()))
    return out


def stamp(t: float) -> bytes:
    """The end of an event body: its timestamp (epoch seconds) and the closing brace."""
    return b"%.6f}" % t
