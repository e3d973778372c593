"""Requests keep their bytes unless a policy turns a video feature on (issue 16): with the default
policy, a classification stream and a multi-object detection stream give the same annotation
requests and the same selector checkpoint, byte for byte, as before instance-level requests
and the instance budget existed (digests recorded from that code)."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.scorer.builders import build_request
from services.streaming.annotation_requests import encode_annotation_request
from services.streaming.events import decode_inference_event

# sha256 of the requests and the final checkpoint, recorded with the code before issue 16 item 3.
EXPECTED = {
    "classification": "f9bce791863e2bf1bb41fcda4a56a01932669c062c78f7152232312c8669ffaf",
    "detection": "9862a6b37ee7dcc130bdb2692d17b9494f6cf5acb7782d16303b250d754a8bee",
}


def _stream(kind: str, n: int = 1500) -> list[bytes]:
    rng = np.random.default_rng(21)
    names = [f"c{i}" for i in range(6)]
    out = []
    for i in range(n):
        objects = 1 if kind == "classification" else 1 + i % 4
        preds = []
        for k in range(objects):
            p = rng.dirichlet(np.full(6, 0.4))
            pred: dict = {"scores": dict(zip(names, p.tolist(), strict=True))}
            if kind == "detection":
                pred |= {"instance_id": f"i{k}", "bbox": [5.0 * k, 1.0, 4.0, 4.0]}
            preds.append(pred)
        out.append(orjson.dumps({
            "schema_version": 1, "event_id": f"e{i}", "asset_id": f"a{i}", "model_id": "m",
            "model_version": "v1" if i < 900 else "v2", "timestamp": 1_700_000_000 + i / 20,
            "predictions": preds}))
    return out


def digest(kind: str) -> str:
    raw = _stream(kind)
    events = [decode_inference_event(r) for r in raw]
    state = SelectorState.create(SelectorPolicy(), seed=3)
    h = hashlib.sha256()
    for lo in range(0, len(events), 237):
        chunk = events[lo:lo + 237]  # windows (50 assets) straddle batches
        sel = select(state, PredictionBatch.from_events(chunk, list(range(lo, lo + len(chunk)))))
        for s in sel.selected:
            h.update(encode_annotation_request(build_request(
                events[s.ref], s, "al.inference-events.v1", 0, s.ref)))
    h.update(orjson.dumps(state.snapshot(), option=orjson.OPT_SORT_KEYS))
    return h.hexdigest()


def test_default_policy_requests_and_checkpoint_keep_their_bytes() -> None:
    for kind, expected in EXPECTED.items():
        assert digest(kind) == expected, kind
