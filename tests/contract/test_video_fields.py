"""The video fields end to end through the contracts (issue 16): an inference event with
`sequence_id`, tracks, boxes and embeddings decodes; the selector's track instability reaches the
annotation request as `reason.track`, which the schema and the decoder both accept."""

from __future__ import annotations

from dataclasses import replace

import orjson

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.core.tracks import TrackPolicy
from services.scorer.builders import build_request
from services.streaming.annotation_requests import decode_annotation_request
from services.streaming.events import decode_inference_event, encode_event
from tests.contract.schema_support import validator


def _event(f: int, track: str, cls: str, x: float) -> bytes:
    other = "5" if cls == "3" else "3"
    return orjson.dumps({
        "schema_version": 1, "event_id": f"e{f}{track}", "asset_id": f"clip-1/{track}/{f}",
        "model_id": "pitch", "model_version": "v1", "sequence_id": "clip-1",
        "timestamp": 1_700_000_000 + f / 25,
        "predictions": [{"scores": {cls: 0.9, other: 0.1}, "track_id": track,
                         "instance_id": f"{track}-{f}", "bbox": [x, 0.0, 10.0, 10.0],
                         "embedding": [1.0, float(f % 7), 0.5]}]})


def test_track_reason_reaches_a_valid_request() -> None:
    raw = [_event(f, "A", "3" if f < 30 else "5", 2.0 * f) for f in range(60)]
    events = [decode_inference_event(r) for r in raw]
    assert events[0].sequence_id == "clip-1" and events[0].predictions[0].track_id == "A"
    base = SelectorPolicy()
    policy = replace(base, tracks=TrackPolicy(weight=0.9),
                     budget=replace(base.budget, share=0.5, share_burst=30.0))
    state = SelectorState.create(policy, seed=1)
    sel = select(state, PredictionBatch.from_events(events, list(range(len(events)))))
    tracked = [s for s in sel.selected if s.track is not None]
    assert tracked, "the class flip at frame 30 should drive a pick"
    s = tracked[0]
    request = build_request(events[s.ref], s, "al.inference-events.v1", 0, s.ref).to_dict()
    assert not list(validator("annotation-request").iter_errors(request))
    decoded = decode_annotation_request(encode_event(request))
    assert decoded.reason.track == request["reason"]["track"]
    assert decoded.reason.track["track_id"] == "A"
    assert "class_flip" in decoded.reason.track["signals"]
    assert decoded.to_dict()["reason"]["track"] == request["reason"]["track"]


def test_keypoints_in_a_label_round_trip() -> None:
    from pathlib import Path

    from services.streaming.events import decode_label

    raw = Path("schemas/examples/label/valid-keypoints.json").read_bytes()
    label = decode_label(raw)
    points = label.annotations[0].keypoints
    assert points is not None and [(k.name, k.visibility) for k in points] == \
        [("left_shoulder", 2), ("right_hip", 1), ("left_hip", 0)]
    assert label.to_dict()["annotations"] == orjson.loads(raw)["annotations"]
    assert decode_label(encode_event(label.to_dict())) == label


def test_instance_level_request_is_valid_and_names_only_uncertain_instances() -> None:
    """With `instances.requests` on, a detection frame's request names its uncertain boxes with
    the model's pre-labels (not the confident ones), costs what it names under `cost:
    instances`, and a switch-driven one carries the frames around it; schema and decoder
    agree."""
    from services.core.instances import InstancePolicy

    raw = []
    for f in range(80):
        swapped = f >= 40  # the players meet at frame 40 and their track ids swap
        preds = [{"label": "ball", "confidence": 0.98, "instance_id": f"ball-{f}",
                  "bbox": [90.0 + f, 5.0, 4.0, 4.0]}]
        for k, (cls, p) in enumerate((("shoulder", 0.6), ("hip", 0.97))):
            track = f"p{(k + swapped) % 2}"
            x = 40.0 + (f - 40) * (1 if k == 0 else -1)
            preds.append({"scores": {cls: p, "foot": 1 - p}, "track_id": track,
                          "instance_id": f"{track}-{f}", "bbox": [x, 0.0, 8.0, 8.0]})
        raw.append(orjson.dumps({
            "schema_version": 1, "event_id": f"e{f}", "asset_id": f"clip-1/f{f}",
            "model_id": "pitch", "model_version": "v1", "sequence_id": "clip-1",
            "timestamp": 1_700_000_000 + f / 25, "predictions": preds}))
    events = [decode_inference_event(r) for r in raw]
    base = SelectorPolicy()
    policy = replace(base, tracks=TrackPolicy(weight=0.9), instances=InstancePolicy(True),
                     budget=replace(base.budget, share=0.5, share_burst=30.0, cost="instances"))
    state = SelectorState.create(policy, seed=1)
    sel = select(state, PredictionBatch.from_events(events, list(range(len(events)))))
    assert sel.selected
    check = validator("annotation-request")
    framed = 0
    for s in sel.selected:
        request = build_request(events[s.ref], s, "al.inference-events.v1", 0, s.ref).to_dict()
        assert not list(check.iter_errors(request))
        decoded = decode_annotation_request(encode_event(request))
        assert decoded.annotate == request["annotate"]
        assert decoded.to_dict()["annotate"] == request["annotate"]
        named = request["annotate"]["instances"]
        assert request["annotate"]["cost"] == len(named) == len(s.targets or ())
        assert all(i["label"] != "ball" for i in named)  # the sure ball is never asked for
        hips = [i for i in named if i["label"] == "hip"]  # sure, so only when unstable
        assert not hips or s.track is not None
        for i in named:
            pred = request["predictions"][i["position"]]
            assert i["bbox"] == pred["bbox"] and i["instance_id"] == pred["instance_id"]
            assert i["label"] == max(pred["scores"], key=pred["scores"].get)
        framed += "frames" in request["annotate"]
    assert framed, "the swap at frame 40 should ask for the frames around it"
