"""A restarted label sink shows the same per-model gauges as before, before any new label, on
Apache Kafka: class states, control-arm estimates, the stopping signal and its branches, the
model's control-arm accuracy and the agreement per class are republished from the recovered
tables when the worker gets its partitions (services/label_sink/gauges.py).
Rule of this sink: lower bounds >= 0.8 over >= 10 labels (Wilson: 16 straight hits)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.streaming import topics
from services.streaming.events import encode_event
from tests.integration.kafka_support import metric, produce, wait_for
from tests.integration.label_sink_support import SinkProcess, create_sink_topics, label

pytestmark = pytest.mark.timeout(300)

MODEL = "m-gauges"
POLICY = {"trigger_min_labels": 30, "mastery_master_at": 0.8, "mastery_min_labels": 10}
GAUGES = ("label_sink_control_estimate_ratio", "label_sink_mastery_state",
          "label_sink_control_model_accuracy_ratio", "label_sink_stopping_signal",
          "label_sink_stopping_branch_signal", "label_sink_agreement_ratio")


def control_request(rid: str, asset: str, predicted: str) -> bytes:
    return encode_event({
        "schema_version": 1, "request_id": rid, "asset_id": asset, "asset_uri": None,
        "event_id": f"ev-{rid}", "model_id": MODEL, "model_version": "v1",
        "event_timestamp": 100.0,
        "reason": {"strategy": "random_control", "score": 0.5, "class": None, "threshold": None,
                   "instances": [0], "inclusion_probability": 0.05},
        "priority": 0.5,
        "predictions": [{"scores": {predicted: 0.8, "other": 0.2}}],
        "source": {"topic": "al.inference-events.v1", "partition": 0, "offset": 0},
    })


def model_gauges(samples: dict[Any, float]) -> dict[Any, float]:
    return {key: value for key, value in samples.items()
            if key[0] in GAUGES and ("model_id", MODEL) in key[1]}


def test_a_restarted_sink_republishes_its_gauges_before_any_new_label(kafka: Any) -> None:
    bootstrap = kafka.bootstrap
    prefix = f"gg-{uuid.uuid4().hex[:8]}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    requests, labels = [], []
    for i in range(40):  # shoulders always right (mastered), elbows right one time in two
        human = "shoulder" if i % 2 == 0 else "elbow"
        predicted = human if human == "shoulder" or i % 4 == 1 else "knee"
        asset, rid = f"a-{i}", f"r-{i}"
        requests.append((asset.encode(), control_request(rid, asset, predicted)))
        labels.append((asset.encode(), label(f"l-{i}", [human], at=1000.0 + i, request_id=rid,
                                             asset_id=asset)))
    produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, requests)
    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    try:
        sink.wait_ready()
        produce(bootstrap, prefix + topics.LABELS, labels)
        wait_for(lambda: metric(sink.metrics(), "label_sink_label_records_total") == 40
                 and metric(sink.metrics(), "label_sink_triggers_total",
                            rule="label_count") == 1, 90, f"labels not counted\n{sink.tail()}")
        before = model_gauges(sink.metrics())
    finally:
        assert sink.stop() == 0, sink.tail()
    # What the running sink showed: a mastered class, estimates, the stopping signal (down).
    assert before[("label_sink_mastery_state", (("class", "shoulder"), ("model_id", MODEL),
                                                ("state", "mastered")))] == 1.0
    assert before[("label_sink_stopping_branch_signal", (("branch", "control"),
                                                         ("model_id", MODEL)))] == 0.0
    assert before[("label_sink_stopping_signal", (("model_id", MODEL),))] == 0.0
    assert 0.0 < before[("label_sink_control_model_accuracy_ratio",
                         (("model_id", MODEL),))] < 1.0
    assert {key[0] for key in before} == set(GAUGES)

    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    try:
        sink.wait_ready()
        # No label comes: the gauges must come back from the recovered tables alone.
        # The wait covers the recovery (and a scrape that falls in the middle of the
        # republication): the gauges must then equal those before the restart.
        try:
            wait_for(lambda: model_gauges(sink.metrics()) == before, 60, "")
        except AssertionError:
            after = model_gauges(sink.metrics())
            raise AssertionError(f"after the restart {after}, before {before}\n"
                                 f"{sink.tail()}") from None
        assert metric(sink.metrics(), "label_sink_label_records_total") == 0  # none counted
    finally:
        assert sink.stop() == 0, sink.tail()
