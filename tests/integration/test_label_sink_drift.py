"""Drift reopens a mastered class, through the real scorer and the real label sink on Apache Kafka.

The sink masters `shoulder` on control-arm labels (every one right). The scorer then reads a
stream in which the shoulder's confidence shifts, and publishes its drift record on class
feedback. The sink must read it and reopen the class: state `reopened` in its feedback (at the
drift's event time, the weight back to normal), the metrics, a retrain trigger with rule
`drift` for the labels waiting, and the changes of the triggers. Replay-safe: after a SIGKILL
the class is still reopened, once; once the class is mastered again, a second copy of the same
drift record changes nothing.
Rule of this sink: lower bounds >= 0.8 over >= 10 labels (Wilson: 16 straight hits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from services.streaming import topics
from services.streaming.events import (
    FeedbackKind,
    decode_class_feedback,
    decode_retrain_trigger,
    encode_event,
)
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess, label
from tests.integration.scorer_support import consumed, private_loop, scorer_env, scorer_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.timeout(420)]

MODEL = "m-drift"
CLASSES = ("shoulder", "elbow", "knee")
PI = 0.05
POLICY = {"trigger_min_labels": 40, "mastery_master_at": 0.8, "mastery_min_labels": 10}
T0, DT, N, SHIFT = 1_700_000_000.0, 0.05, 18_000, 12_000  # the shift at T0 + 600 s
SCORER_POLICY = {"stats": {"bucket_seconds": 60}, "drift": {"boost": 3.0}}


def control_request(rid: str, asset: str, at: float) -> bytes:
    """A control-arm request whose model predicts shoulder."""
    return encode_event({
        "schema_version": 1, "request_id": rid, "asset_id": asset, "asset_uri": None,
        "event_id": f"ev-{rid}", "model_id": MODEL, "model_version": "v1",
        "event_timestamp": at,
        "reason": {"strategy": "random_control", "score": 0.5, "class": None, "threshold": None,
                   "instances": [0], "inclusion_probability": PI},
        "priority": 0.5,
        "predictions": [{"scores": {"shoulder": 0.8, "elbow": 0.1, "knee": 0.1}}],
        "source": {"topic": "al.inference-events.v1", "partition": 0, "offset": 0},
    })


def shoulders(tag: str, n: int, at: float) -> tuple[list[Any], list[Any]]:
    """`n` control requests for shoulders and their labels, every one right."""
    requests, labels = [], []
    for i in range(n):
        asset, rid = f"a-{tag}-{i}", f"r-{tag}-{i}"
        requests.append((asset.encode(), control_request(rid, asset, at + i)))
        labels.append((asset.encode(), label(f"l-{tag}-{i}", ["shoulder"], at=at + i + 1,
                                             request_id=rid, asset_id=asset)))
    return requests, labels


def inference_events() -> list[tuple[bytes, bytes]]:
    """Top-1 events, 20 per second of event time; the shoulder's confidence drops from
    Beta(8, 2) to Beta(5, 3) at event SHIFT (as in test_scorer_drift.py)."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, N)
    conf = rng.beta(8, 2, N)
    moved = (np.arange(N) >= SHIFT) & (labels == 0)
    conf[moved] = rng.beta(5, 3, int(moved.sum()))
    return [(f"e{i}".encode(), encode_event({
        "schema_version": 1, "event_id": f"e{i}", "asset_id": f"e{i}", "model_id": MODEL,
        "model_version": "v1", "timestamp": T0 + i * DT,
        "predictions": [{"label": CLASSES[labels[i]], "confidence": float(conf[i])}]}))
        for i in range(N)]


def shoulder_feedback(bootstrap: str, prefix: str) -> list[Any]:
    """The sink's feedback records of MODEL that carry a shoulder state, oldest first."""
    out = []
    for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK):
        f = decode_class_feedback(m.value())
        if f.model_id == MODEL and f.kind is FeedbackKind.FEEDBACK and \
                "shoulder" in f.classes and f.classes["shoulder"].state is not None:
            out.append(f.classes["shoulder"])
    return out


def test_drift_from_the_scorer_reopens_a_mastered_class_once(kafka: Any) -> None:
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=1)
    app_id = f"label-sink-{prefix}"
    feedback_topic = prefix + topics.CLASS_FEEDBACK

    def state() -> str | None:
        found = shoulder_feedback(bootstrap, prefix)
        return found[-1].state if found else None

    requests, labels = shoulders("a", 20, 1000.0)
    produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, requests)
    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    try:
        sink.wait_ready()
        produce(bootstrap, prefix + topics.LABELS, labels)
        wait_for(lambda: state() == "mastered", 90, f"shoulder not mastered\n{sink.tail()}")

        # The real scorer sees the shift and writes its drift record on class feedback.
        produce(bootstrap, prefix + topics.INFERENCE_EVENTS, inference_events())
        env = scorer_env(bootstrap, prefix, f"g-{prefix}",
                         policy=orjson.dumps(SCORER_POLICY).decode())
        with scorer_in_thread(env) as scorer:
            wait_for(lambda: consumed(scorer, N), 180, "stream not consumed")
            drifts = wait_for(lambda: [m for m in read_all(bootstrap, feedback_topic)
                                       if m.key().startswith(b"drift\x1f")], 60,
                              "no drift record from the scorer")
        assert len(drifts) == 1
        notice = decode_class_feedback(drifts[0].value()).drift
        assert notice is not None and notice.class_name == "shoulder"

        reopened = wait_for(lambda: [s for s in shoulder_feedback(bootstrap, prefix)
                                     if s.state == "reopened"], 60,
                            f"shoulder not reopened\n{sink.tail()}")[-1]
        assert reopened.state_changed_at == notice.detected_at
        assert reopened.weight >= 1.0  # the budget is back (it was 0.01 while mastered)
        samples = sink.metrics()
        assert metric(samples, "label_sink_drift_reports_total", outcome="reopened") == 1.0
        assert metric(samples, "label_sink_mastery_state", model_id=MODEL,
                      **{"class": "shoulder"}, state="reopened") == 1.0
        sink.kill()  # SIGKILL: whatever was not committed is replayed
    finally:
        sink.stop()

    # The reopening fired a `drift` trigger with the 20 labels waiting (docs/mastery.md), so
    # the next 20 make a label_count trigger only at 20.
    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1",
                       **{**POLICY, "trigger_min_labels": 20}).start()
    try:
        sink.wait_ready()
        # Mastered again, on labels stamped before the drift was detected (a backlog): so
        # the copy below is not stale by event time, and only its id keeps it out.
        requests, labels = shoulders("b", 20, notice.detected_at - 500)
        produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, requests)
        produce(bootstrap, prefix + topics.LABELS, labels)
        wait_for(lambda: state() == "mastered", 90, f"not mastered again\n{sink.tail()}")
        kept = metric(sink.metrics(), "label_sink_drift_reports_total", outcome="kept")
        # A second copy of the same drift record (a scorer's replay) changes nothing.
        produce(bootstrap, feedback_topic, [(drifts[0].key(), drifts[0].value())])
        wait_for(lambda: metric(sink.metrics(), "label_sink_drift_reports_total",
                                outcome="kept") == kept + 1, 60,
                 f"the copy was not read\n{sink.tail()}")
        samples = sink.metrics()
        assert metric(samples, "label_sink_drift_reports_total", outcome="reopened") == 0.0
        assert metric(samples, "label_sink_mastery_state", model_id=MODEL,
                      **{"class": "shoulder"}, state="mastered") == 1.0
    finally:
        assert sink.stop() == 0, sink.tail()

    # Each change once, numbered in order, in the retrain triggers' `mastery`.
    triggers = [decode_retrain_trigger(m.value())
                for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)]
    assert sorted({(t.trigger_id, str(t.rule), t.total) for t in triggers},
                  key=lambda t: t[1]) == [(triggers[0].trigger_id, "drift", 20),
                                          (triggers[-1].trigger_id, "label_count", 20)]
    changes = {(c["seq"], c["to"], c["at"]) for t in triggers if t.mastery
               for c in t.mastery["changes"] if c["class"] == "shoulder"}
    assert [(seq, to) for seq, to, _ in sorted(changes)] == [
        (1, "mastered"), (2, "reopened"), (3, "mastered")]
    assert (2, "reopened", notice.detected_at) in changes
    assert state() == "mastered"
