"""Control-arm estimates and class mastery through the real label sink on Apache Kafka.

A model with three classes. On the control arm (uniform random requests, inclusion probability
0.05) it gets shoulders always right and elbows and knees right 60% of the time; on the
uncertainty arm it gets every shoulder WRONG (the hard cases). The sink must judge shoulders on
the control arm only: mastered, estimate 1.0, counted once across a crash; the weights it
publishes must then move the budget of a real selector from shoulders to the other classes.
Rule of this sink: lower bounds >= 0.8 over >= 10 labels (Wilson: 16 straight hits).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from services.core import SelectorPolicy, SelectorState, select
from services.core.feedback import FeedbackPolicy, weights_from_agreement, with_mastery
from services.streaming import topics
from services.streaming.events import decode_class_feedback, decode_retrain_trigger, encode_event
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess, create_sink_topics, label
from tests.unit.core.synth import batches, top1_events

pytestmark = pytest.mark.timeout(300)

MODEL = "m-mastery"
CLASSES = ("shoulder", "elbow", "knee")
PI = 0.05
POLICY = {"trigger_min_labels": 60, "mastery_master_at": 0.8, "mastery_min_labels": 10,
          "mastery_min_reopen_labels": 5}


def request(rid: str, predicted: str, strategy: str, asset: str) -> bytes:
    rest = [c for c in CLASSES if c != predicted]
    return encode_event({
        "schema_version": 1, "request_id": rid, "asset_id": asset, "asset_uri": None,
        "event_id": f"ev-{rid}", "model_id": MODEL, "model_version": "v1",
        "event_timestamp": 100.0,
        "reason": {"strategy": strategy, "score": 0.5, "class": None, "threshold": None,
                   "instances": [0],
                   "inclusion_probability": PI if strategy == "random_control" else None},
        "priority": 0.5,
        "predictions": [{"scores": {predicted: 0.8, **{c: 0.1 for c in rest}}}],
        "source": {"topic": "al.inference-events.v1", "partition": 0, "offset": 0},
    })


def stream(tag: str, n: int, seed: int) -> tuple[list[tuple[bytes, bytes]],
                                                 list[tuple[bytes, bytes]], Counter[str]]:
    """Requests and their labels (in order): every third shoulder on the uncertainty arm, the
    rest on the control arm, where an elbow or knee the model gets wrong is taken for the
    other of the two. Returns the control annotations per class too."""
    rng = random.Random(seed)
    requests, labels, control = [], [], Counter[str]()
    for i in range(n):
        human = CLASSES[i % 3]
        hard = human == "shoulder" and (i // 3) % 3 == 2
        strategy = "variable_uncertainty" if hard else "random_control"
        if strategy == "random_control":
            right = human == "shoulder" or rng.random() < 0.6
            control[human] += 1
        else:
            right = False  # the hard cases the uncertainty arm finds
        wrong = "elbow" if human == "knee" else "knee"
        predicted = human if right else wrong
        asset, rid = f"a-{tag}-{i}", f"r-{tag}-{i}"
        requests.append((asset.encode(), request(rid, predicted, strategy, asset)))
        labels.append((asset.encode(), label(f"l-{tag}-{i}", [human], at=1000.0 + i,
                                             request_id=rid, asset_id=asset)))
    return requests, labels, control


def feedback(bootstrap: str, prefix: str) -> list[Any]:
    return [f for f in (decode_class_feedback(m.value())
                        for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK))
            if f.model_id == MODEL]


def requests_per_class(weights: dict[str, float]) -> Counter[str]:
    """Requests per class a real selector makes on one fixed stream under these weights."""
    rng = np.random.default_rng(5)
    names = rng.choice(list(CLASSES), 30_000).tolist()
    state = SelectorState.create(SelectorPolicy(), 0)
    state.set_class_weights(MODEL, weights)
    events = top1_events(names, rng.beta(4, 2, 30_000), model=(MODEL, "v1"))
    return Counter(s.class_name for b in batches(events, 1000) for s in select(state, b).selected)


@pytest.fixture
def sink_topics(kafka: Any) -> Iterator[tuple[str, str]]:
    prefix = f"ms-{uuid.uuid4().hex[:8]}."
    create_sink_topics(kafka.bootstrap, prefix)
    yield kafka.bootstrap, prefix


def test_control_arm_masters_a_class_through_a_crash_and_moves_its_budget(
        sink_topics: tuple[str, str]) -> None:
    bootstrap, prefix = sink_topics
    app_id = f"label-sink-{prefix}"
    requests, labels, control = stream("x", 150, seed=1)
    produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, requests)

    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    try:
        sink.wait_ready()
        produce(bootstrap, prefix + topics.LABELS, labels[:30])  # 7 control shoulders
        first = wait_for(lambda: [f for f in feedback(bootstrap, prefix)
                                  if "shoulder" in f.classes
                                  and f.classes["shoulder"].control is not None
                                  and f.classes["shoulder"].control.labels == 7], 90,
                         f"no feedback on 7 shoulders\n{sink.tail()}")[-1]
        assert first.classes["shoulder"].state == "learning"  # 7 hits: lower bound 0.65
        produce(bootstrap, prefix + topics.LABELS, labels[30:90])
        wait_for(lambda: metric(sink.metrics(), "label_sink_label_records_total") >= 90, 90,
                 f"labels not counted\n{sink.tail()}")
        sink.kill()  # SIGKILL: the rest is replayed from the committed offsets and changelogs
    finally:
        sink.stop()
    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    try:
        sink.wait_ready()
        produce(bootstrap, prefix + topics.LABELS, labels[90:] + labels[40:50])  # + resent
        last = wait_for(lambda: [f for f in feedback(bootstrap, prefix)
                                 if f.classes.get("knee") and f.classes["knee"].control
                                 and f.classes["knee"].control.labels == control["knee"]], 120,
                        f"final feedback missing\n{sink.tail()}")[-1]
        samples = sink.metrics()
    finally:
        assert sink.stop() == 0, sink.tail()

    shoulder = last.classes["shoulder"]
    # Counted once each across the crash and the resent copies; uncertainty labels left out.
    assert {c: s.control.labels for c, s in last.classes.items() if s.control} == dict(control)
    assert shoulder.state == "mastered" and shoulder.state_changed_at is not None
    assert shoulder.control is not None and shoulder.control.accuracy is not None
    assert shoulder.control.accuracy.estimate == 1.0 and shoulder.control.accuracy.low >= 0.8
    assert shoulder.agreement is not None and shoulder.agreement < 0.7  # the biased all-labels
    for name in ("elbow", "knee"):
        stats = last.classes[name]
        assert stats.state == "learning" and stats.control is not None
        assert stats.control.accuracy is not None and stats.control.accuracy.high < 0.9
    assert shoulder.weight == 0.01
    # The same feedback without mastery: the agreement weights alone (every label here was
    # compared with a prediction, so compared = labels_total).
    before = weights_from_agreement(FeedbackPolicy(),
                                    {c: s.agreement for c, s in last.classes.items()
                                     if s.agreement is not None},
                                    {c: s.labels_total for c, s in last.classes.items()})
    after = {c: s.weight for c, s in last.classes.items()}
    assert after == pytest.approx(with_mastery(FeedbackPolicy(), before, {"shoulder"}))
    assert sum(after.values()) == pytest.approx(sum(before.values()))
    assert after["elbow"] > before["elbow"] and after["knee"] > before["knee"]
    # The published weights, in a real selector: shoulders' requests fall, the others' rise.
    asked_before, asked_after = requests_per_class(before), requests_per_class(after)
    print(f"requests per class before {dict(asked_before)}, after {dict(asked_after)}")
    assert asked_after["shoulder"] < 0.5 * asked_before["shoulder"]
    assert asked_after["elbow"] > asked_before["elbow"]
    assert asked_after["knee"] > asked_before["knee"]
    assert abs(sum(asked_after.values()) - sum(asked_before.values())) <= 0.05 * sum(
        asked_before.values())
    # Retrain triggers carry the states; the change is numbered once.
    triggers = [t for t in (decode_retrain_trigger(m.value())
                            for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS))
                if t.model_id == MODEL]
    assert triggers and triggers[-1].mastery is not None
    assert triggers[-1].mastery["classes"]["shoulder"] == "mastered"
    # One model version so far: the stopping signal is there, and down.
    stopping = triggers[-1].stopping
    assert stopping is not None and stopping["stopped"] is False
    assert [v["model_version"] for v in stopping["versions"]] == ["v1"]
    changes = [c for t in triggers if t.mastery for c in t.mastery["changes"]]
    assert {(c["seq"], c["class"], c["to"]) for c in changes} == {(1, "shoulder", "mastered")}
    assert metric(samples, "label_sink_mastery_state", model_id=MODEL, **{"class": "shoulder"},
                  state="mastered") == 1.0
    assert metric(samples, "label_sink_control_estimate_ratio", model_id=MODEL,
                  **{"class": "shoulder"}, rate="accuracy", bound="estimate") == 1.0
