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

Hostile records (issue 13's kinds, each with the dead-letter code the scorer gives it):
`hostile_record(template, kind, asset)` turns a good event into one of `HOSTILE_KINDS`; used by
tests/integration/test_scorer_hostile.py and the chaos soak (bench/chaos_input.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

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


FAR = 9.8e9  # event time in year 2280: valid epoch seconds, far past any watermark's skew bound

# kind -> the dead-letter code the scorer must give it
HOSTILE_KINDS: dict[str, str] = {
    "far_timestamp": "timestamp_out_of_range",
    "duplicate_key": "duplicate_key",
    "class_name_bytes": "out_of_range",
    "deep_metadata": "out_of_range",
    "score_cells": "out_of_range",
    "not_json": "not_json",
    "tombstone": "empty",
    "wrong_type": "wrong_type",
    "metadata_bomb": "out_of_range",
}


def with_fields(template: bytes, asset: str, **changes: object) -> bytes:
    """The event `template` as asset (and event id) `asset`, with `changes` over its fields."""
    return encode_event({**orjson.loads(template), "asset_id": asset, "event_id": asset,
                         **changes})


def hostile_record(template: bytes, kind: str, asset: str) -> tuple[str, bytes | None]:
    """(dead-letter code, value) of a record of hostile `kind` made from a good event with a
    distribution (`template`), keyed `asset`. A None value is a tombstone."""
    if kind == "far_timestamp":
        value: bytes | None = with_fields(template, asset, timestamp=FAR)
    elif kind == "duplicate_key":
        value = b'{"timestamp":1,' + with_fields(template, asset)[1:]
    elif kind == "class_name_bytes":
        value = with_fields(template, asset, predictions=[
            {"scores": {"\U0001F426" * 65: 0.5, "b": 0.5}}])
    elif kind == "deep_metadata":
        deep: dict[str, object] = {"leaf": 1}
        for _ in range(8):
            deep = {"d": deep}
        value = with_fields(template, asset, metadata=deep)
    elif kind == "score_cells":
        wide = {f"c{i}": 0 for i in range(10_400)}
        wide["c0"] = 1
        value = with_fields(template, asset, predictions=[
            *[{"label": "c1", "confidence": 0.5}] * 100, {"scores": wide}])
    elif kind == "not_json":
        value = b'{"schema_version": 1, "event_id": '
    elif kind == "tombstone":
        value = None
    elif kind == "wrong_type":
        value = with_fields(template, asset,
                            predictions=orjson.loads(template)["predictions"][0])
    elif kind == "metadata_bomb":  # valid JSON, ~256 KB of nested empty objects (~26x parsed)
        value = with_fields(template, asset)[:-1] + b',"metadata":{"m":[' + b"{}," * 86_000 \
            + b"{}]}}"
    else:
        raise ValueError(f"unknown hostile kind {kind!r}")
    return HOSTILE_KINDS[kind], value
