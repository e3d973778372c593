"""A restarted label sink shows the same per-model gauges as before, before any new label, on
Apache Kafka: class states, control-arm estimates, the stopping signal and its branches, the
model's control-arm accuracy and the agreement per class are republished from the recovered
tables when the worker gets its partitions (services/label_sink/gauges.py). When a second worker
joins, each model's gauges move with its labels-by-model partition: shown by exactly one worker,
the same values, and back on the first worker when the second leaves.
Rule of this sink: lower bounds >= 0.8 over >= 10 labels (Wilson: 16 straight hits)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.streaming import topics
from services.streaming.events import encode_event
from services.streaming.partitioning import murmur2_partition
from tests.integration.kafka_support import metric, produce, wait_for
from tests.integration.label_sink_support import SinkProcess, create_sink_topics, label

pytestmark = pytest.mark.timeout(300)

MODEL = "m-gauges"
POLICY = {"trigger_min_labels": 30, "mastery_master_at": 0.8, "mastery_min_labels": 10}
GAUGES = ("label_sink_control_estimate_ratio", "label_sink_mastery_state",
          "label_sink_control_model_accuracy_ratio", "label_sink_stopping_signal",
          "label_sink_stopping_branch_signal", "label_sink_agreement_ratio")


def control_request(rid: str, asset: str, predicted: str, model: str = MODEL) -> bytes:
    return encode_event({
        "schema_version": 1, "request_id": rid, "asset_id": asset, "asset_uri": None,
        "event_id": f"ev-{rid}", "model_id": model, "model_version": "v1",
        "event_timestamp": 100.0,
        "reason": {"strategy": "random_control", "score": 0.5, "class": None, "threshold": None,
                   "instances": [0], "inclusion_probability": 0.05},
        "priority": 0.5,
        "predictions": [{"scores": {predicted: 0.8, "other": 0.2}}],
        "source": {"topic": "al.inference-events.v1", "partition": 0, "offset": 0},
    })


def model_gauges(samples: dict[Any, float], model: str = MODEL) -> dict[Any, float]:
    return {key: value for key, value in samples.items()
            if key[0] in GAUGES and ("model_id", model) in key[1]}


def control_stream(model: str = MODEL, n: int = 40) -> tuple[list[Any], list[Any]]:
    """`n` control requests of `model` and their labels: shoulders always right (mastered),
    elbows right one time in two."""
    requests, labels = [], []
    for i in range(n):
        human = "shoulder" if i % 2 == 0 else "elbow"
        predicted = human if human == "shoulder" or i % 4 == 1 else "knee"
        asset, rid = f"{model}-a-{i}", f"{model}-r-{i}"
        requests.append((asset.encode(), control_request(rid, asset, predicted, model)))
        labels.append((asset.encode(), label(f"{model}-l-{i}", [human], at=1000.0 + i,
                                             request_id=rid, asset_id=asset)))
    return requests, labels


def test_a_restarted_sink_republishes_its_gauges_before_any_new_label(kafka: Any) -> None:
    bootstrap = kafka.bootstrap
    prefix = f"gg-{uuid.uuid4().hex[:8]}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    requests, labels = control_stream()
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


def by_model(samples: dict[Any, float], models: list[str]) -> dict[str, dict[Any, float]]:
    """Each model's gauges in `samples`, for the models that have any."""
    found = {model: model_gauges(samples, model) for model in models}
    return {model: gauges for model, gauges in found.items() if gauges}


def test_a_models_gauges_move_with_its_partition_between_workers(kafka: Any) -> None:
    """One model on each of the 4 labels-by-model partitions. One worker counts them all; a
    second joins and takes half the partitions: the first drops the gauges of the models it
    no longer owns (`keep_only`), the second republishes them from the tables it recovers, so
    each model is shown by exactly one worker, with the values it had. When the second
    leaves, the first shows all four again."""
    bootstrap = kafka.bootstrap
    prefix = f"gm-{uuid.uuid4().hex[:8]}."
    create_sink_topics(bootstrap, prefix, partitions=4)
    app_id = f"label-sink-{prefix}"
    models: dict[int, str] = {}
    i = 0
    while len(models) < 4:  # one model per partition, by the loop's own keyed-partition rule
        models.setdefault(murmur2_partition(f"m-{i}".encode(), 4), f"m-{i}")
        i += 1
    names = sorted(models.values())
    requests, labels = [], []
    for model in names:
        r, lab = control_stream(model)
        requests += r
        labels += lab
    produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, requests)
    first = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    second = None
    try:
        first.wait_ready()
        produce(bootstrap, prefix + topics.LABELS, labels)
        wait_for(lambda: metric(first.metrics(), "label_sink_label_records_total") == len(labels)
                 and len(by_model(first.metrics(), names)) == 4, 90,
                 f"labels not counted\n{first.tail()}")
        before = by_model(first.metrics(), names)
        assert all(("label_sink_mastery_state",
                    (("class", "shoulder"), ("model_id", m), ("state", "mastered")))
                   in before[m] for m in names), before

        second = SinkProcess(bootstrap, app_id, prefix, instance_id="w-2", **POLICY).start()
        second.wait_ready()

        def split() -> bool:
            one, two = by_model(first.metrics(), names), by_model(second.metrics(), names)
            return (bool(one) and bool(two) and not one.keys() & two.keys()
                    and {**one, **two} == before)
        try:
            wait_for(split, 120, "")
        except AssertionError:
            raise AssertionError(
                f"first shows {sorted(by_model(first.metrics(), names))}, second shows "
                f"{sorted(by_model(second.metrics(), names))}, of {names}\nfirst:\n"
                f"{first.tail()}\nsecond:\n{second.tail()}") from None

        assert second.stop() == 0, second.tail()
        second = None
        wait_for(lambda: by_model(first.metrics(), names) == before, 120,
                 f"the first worker did not show all four again\n{first.tail()}")
    finally:
        if second is not None:
            second.stop()
        assert first.stop() == 0, first.tail()
