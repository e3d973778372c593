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
