"""Synthetic inference events and batches for the core's tests (seeded, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from services.core import PredictionBatch


@dataclass(frozen=True)
class Pred:
    scores: Mapping[str, float] | None = None
    label: str | None = None
    confidence: float | None = None
    instance_id: str | None = None


@dataclass(frozen=True)
class Event:
    event_id: str
    asset_id: str
    model_id: str
    model_version: str
    timestamp: float
    predictions: tuple[Pred, ...] = field(default_factory=tuple)


def class_names(n: int) -> list[str]:
    return [f"c{i}" for i in range(n)]


def dirichlet_events(rng: np.random.Generator, n: int, *, n_classes: int = 10, start: int = 0,
                     t0: float = 1_000_000.0, rate: float = 100.0, concentration: float = 0.3,
                     model: tuple[str, str] = ("m", "v1"), objects: int = 1) -> list[Event]:
    """n events (assets a{start}..), `objects` predictions each, one per 1/rate seconds."""
    names = class_names(n_classes)
    probs = rng.dirichlet(np.full(n_classes, concentration), size=n * objects)
    out = []
    for i in range(n):
        preds = tuple(Pred(scores=dict(zip(names, probs[i * objects + j].tolist(), strict=True)))
                      for j in range(objects))
        out.append(Event(f"e{start + i}", f"a{start + i}", model[0], model[1],
                         t0 + (start + i) / rate, preds))
    return out


def top1_events(labels: list[str], conf: np.ndarray, *, start: int = 0, t0: float = 1_000_000.0,
                rate: float = 100.0, model: tuple[str, str] = ("m", "v1")) -> list[Event]:
    """One top-1 prediction per event: labels[i] with confidence conf[i]."""
    return [Event(f"e{start + i}", f"a{start + i}", model[0], model[1], t0 + (start + i) / rate,
                  (Pred(label=lab, confidence=float(c)),))
            for i, (lab, c) in enumerate(zip(labels, conf, strict=True))]


def batches(events: list[Event], size: int) -> list[PredictionBatch]:
    return [PredictionBatch.from_events(events[i:i + size], [e.event_id for e in
                                                             events[i:i + size]])
            for i in range(0, len(events), size)]


MIXED_CLASSES = ["ball", "shoulder", "hip", "c0", "c1", "c2"]


def mixed_events(seed: int, n: int) -> list[Event]:
    """A hostile stream for batch-invariance tests: two models (one switching through three
    versions), 0-3 objects per asset mixing distributions (varying class sets and dict orders,
    with ties) and top-1 predictions, asset ids repeating, event times jittering backwards and
    jumping forwards across windows."""
    rng = np.random.default_rng(seed)
    out = []
    t = 1_000_000.0
    for i in range(n):
        if rng.random() < 0.3:
            model = ("cls", "2024")
        else:
            model = ("det", ("v1", "v2", "v3")[min(2, 3 * i // max(n, 1))])
        preds = []
        for j in range(int(rng.choice(4, p=[0.1, 0.6, 0.2, 0.1]))):
            r = rng.random()
            if r < 0.25:
                preds.append(Pred(label=str(rng.choice(MIXED_CLASSES)),
                                  confidence=float(np.round(rng.random(), 2)), instance_id=f"o{j}"))
                continue
            k = int(rng.integers(2, len(MIXED_CLASSES) + 1))
            names = [str(x) for x in rng.permutation(MIXED_CLASSES)[:k]]
            p = rng.dirichlet(np.full(k, 0.5)) if r > 0.35 else np.full(k, 1.0 / k)
            preds.append(Pred(scores=dict(zip(names, p.tolist(), strict=True))))
        step = rng.exponential(0.3)
        if rng.random() < 0.01:
            step += float(rng.choice([45.0, 130.0, 400.0]))
        t += step
        jitter = -float(rng.exponential(5.0)) if rng.random() < 0.1 else 0.0
        out.append(Event(f"e{i}", f"a{int(rng.integers(0, max(n // 3, 1)))}", *model,
                         t + jitter, tuple(preds)))
    return out
