"""The chaos soak's input and the annotator's answers: both pure functions of the seed, so the
soak and its crash-free reference run see the same bytes (bench/chaos.py).

- `stream(n, seed)`: `n` keyed inference events of tests/synthetic_events.py's stream, half of
  them under a second model id (so both sink workers count labels), with one record in 100
  replaced by a hostile one (every kind of issue 13 in turn, the 256-KB metadata bomb rarest).
- `answer(request, seed)`: the label a person gives a request (which class, after how long, and
  whether they submit it twice), drawn from the request id alone, so it does not depend on when
  or how often the annotator sees the request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from services.streaming.events import encode_event
from tests.synthetic_events import CLASSES, HOSTILE_KINDS, hostile_record, inference_events

MODELS = ("digits", "digits-b")
HOSTILE_SHARE = 0.01
# The kinds drawn for a hostile record: each of issue 13's kinds alike, the bomb (256 KB) a
# quarter as often so that a 30-minute run does not write mostly bombs.
_KINDS = list(HOSTILE_KINDS)
_KIND_WEIGHTS = np.array([0.25 if k == "metadata_bomb" else 1.0 for k in _KINDS])


@dataclass(frozen=True)
class Record:
    """One input record: `code` is the dead-letter code it must get (None: a good event)."""

    key: bytes
    value: bytes | None
    code: str | None
    model_id: str | None


def stream(n: int, seed: int) -> list[Record]:
    """`n` records (module doc). Same n and seed => the same bytes."""
    rng = np.random.default_rng([seed, 14])
    out = []
    template = None
    for i, (key, value) in enumerate(inference_events(n, seed)):
        if template is None and i % 7:
            template = value  # a full distribution (every 7th event is a top-1)
        model = MODELS[i % 2]
        if template is not None and rng.random() < HOSTILE_SHARE:
            kind = _KINDS[int(rng.choice(len(_KINDS), p=_KIND_WEIGHTS / _KIND_WEIGHTS.sum()))]
            code, bad = hostile_record(template, kind, key.decode())
            out.append(Record(key, bad, code, None))
            continue
        if model != MODELS[0]:
            value = encode_event({**orjson.loads(value), "model_id": model})
        out.append(Record(key, value, None, model))
    return out


@dataclass(frozen=True)
class Answer:
    """A person's answer to one request: the label's bytes and key, its class, the wall-clock
    delay before it is sent, and the delay of a second, byte-identical submission (None: once)."""

    key: bytes
    value: bytes
    label_id: str
    model_id: str
    label_class: str
    delay_s: float
    again_s: float | None


def _draws(request_id: str, seed: int) -> np.ndarray:
    digest = hashlib.sha256(f"{seed}\x1f{request_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big")).random(5)


def answer(request: Any, seed: int, *, max_delay_s: float = 6.0) -> Answer:
    """The answer to `request` (a decoded annotation request). A quarter are answered at once
    (often before the sink has read the request), the rest within `max_delay_s`; 70% agree with
    the model's top-1; 5% are submitted twice."""
    u = _draws(request.request_id, seed)
    delay = 0.0 if u[0] < 0.25 else float(u[1]) * max_delay_s
    top = _top1(request.predictions[0])
    given = top if u[2] < 0.7 else CLASSES[int(u[3] * len(CLASSES))]
    label_id = f"lab-{request.request_id}"
    body = {"schema_version": 1, "label_id": label_id, "request_id": request.request_id,
            "asset_id": request.asset_id, "annotations": [{"label": given}],
            "annotator_id": "chaos-annotator",
            # Event time, from the request alone: the reference run (which does not wait) sends
            # the same bytes.
            "labeled_at": request.event_timestamp + 1.0 + float(u[1]) * max_delay_s}
    again = 1.0 + float(u[4]) * 20 * max_delay_s if u[4] < 0.05 else None
    return Answer(request.asset_id.encode(), encode_event(body), label_id, request.model_id,
                  given, delay, again)


def backlog_label(model_id: str, k: int, at: float) -> Answer:
    """A label a person gives an asset of `model_id` outside the request stream (model id set,
    no request id): the soak tops each model up to a whole number of triggers with these, so the
    triggers' manifests must cover every label counted."""
    label_id = f"backlog-{model_id}-{k}"
    asset = f"backlog-asset-{model_id}-{k}"
    body = {"schema_version": 1, "label_id": label_id, "asset_id": asset, "model_id": model_id,
            "annotations": [{"label": CLASSES[k % len(CLASSES)]}],
            "annotator_id": "chaos-annotator", "labeled_at": at}
    return Answer(asset.encode(), encode_event(body), label_id, model_id,
                  CLASSES[k % len(CLASSES)], 0.0, None)


def _top1(prediction: Any) -> str:
    scores = getattr(prediction, "scores", None)
    if scores:
        return max(scores.items(), key=lambda kv: kv[1])[0]
    return str(prediction.label)
