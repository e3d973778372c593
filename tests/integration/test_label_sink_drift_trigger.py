"""A drift that reopens a mastered class fires a retrain trigger with rule `drift`, through the
real label sink on Apache Kafka: at once, with the model's labels since its last trigger,
exactly once across a SIGKILL and a resent copy of the drift record, and never without labels
to carry (services/label_sink/drift_trigger.py; docs/mastery.md, "Retrain trigger on drift").
The drift records are the scorer's wire form, produced here directly (the scorer's side is
tests/integration/test_label_sink_drift.py). Rule of this sink: lower bounds >= 0.8 over >= 10
labels (Wilson: 16 straight hits); a label_count trigger every 25 labels."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from services.streaming import topics
from services.streaming.events import decode_label, decode_retrain_trigger, encode_event
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess, create_sink_topics, label

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

MODEL = "m-drift-trigger"
POLICY = {"trigger_min_labels": 25, "mastery_master_at": 0.8, "mastery_min_labels": 10}


def control_request(i: int) -> tuple[bytes, bytes]:
    return f"a-{i}".encode(), encode_event({
        "schema_version": 1, "request_id": f"r-{i}", "asset_id": f"a-{i}", "asset_uri": None,
        "event_id": f"ev-{i}", "model_id": MODEL, "model_version": "v1",
        "event_timestamp": 100.0,
        "reason": {"strategy": "random_control", "score": 0.5, "class": None, "threshold": None,
                   "instances": [0], "inclusion_probability": 0.05},
        "priority": 0.5, "predictions": [{"scores": {"shoulder": 0.8, "elbow": 0.2}}],
        "source": {"topic": "al.inference-events.v1", "partition": 0, "offset": 0},
    })


def labels(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    """Shoulders the model got right, labeled at 1000 + i."""
    return [(f"a-{i}".encode(), label(f"l-{i}", ["shoulder"], at=1000.0 + i,
                                      request_id=f"r-{i}", asset_id=f"a-{i}"))
            for i in range(start, stop)]


def drift(detected_at: float) -> tuple[bytes, bytes]:
    """The scorer's drift record of the shoulders (services/contracts/class_feedback.py)."""
    return b"drift\x1f" + MODEL.encode() + b"\x1fshoulder", encode_event({
        "schema_version": 1, "model_id": MODEL, "updated_at": detected_at, "classes": {},
        "kind": "drift",
        "drift": {"class": "shoulder", "model_version": "v1", "partition": 0, "distance": 0.3,
                  "critical": 0.1, "recent_count": 300, "reference_count": 900,
                  "detected_at": detected_at, "boost": 2.0, "boost_until": detected_at + 3600},
    })


def test_a_drift_reopening_fires_one_drift_trigger_with_the_waiting_labels(kafka: Any) -> None:
    bootstrap = kafka.bootstrap
    prefix = f"dt-{uuid.uuid4().hex[:8]}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    feedback_topic, labels_topic = prefix + topics.CLASS_FEEDBACK, prefix + topics.LABELS

    def triggers() -> dict[str, Any]:
        """Published triggers by trigger_id (a copy republished after a crash counts once)."""
        found = (decode_retrain_trigger(m.value())
                 for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS))
        return {t.trigger_id: t for t in found}

    def mastery_state(sink: SinkProcess, state: str) -> float:
        return metric(sink.metrics(), "label_sink_mastery_state", model_id=MODEL,
                      **{"class": "shoulder"}, state=state)

    produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, [control_request(i)
                                                             for i in range(45)])
    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    try:
        sink.wait_ready()
        produce(bootstrap, labels_topic, labels(0, 20))  # mastered at 16; 20 < 25: no trigger
        wait_for(lambda: mastery_state(sink, "mastered") == 1.0, 90,
                 f"shoulder not mastered\n{sink.tail()}")
        assert triggers() == {}
        produce(bootstrap, feedback_topic, [drift(5000.0)])
        (first,) = wait_for(lambda: list(triggers().values()), 60,
                            f"no trigger on the drift\n{sink.tail()}")
        sink.kill()  # SIGKILL right after: what was not committed is replayed
    finally:
        sink.stop()
    assert str(first.rule) == "drift" and first.total == 20
    assert dict(first.counts) == {"shoulder": 20}
    assert "reopened on drift of v1" in first.detail and first.triggered_at == 1019.0
    assert first.mastery is not None and first.mastery["classes"]["shoulder"] == "reopened"
    assert [(c["to"], c["at"]) for c in first.mastery["changes"]][-1] == ("reopened", 5000.0)

    sink = SinkProcess(bootstrap, app_id, prefix, instance_id="w-1", **POLICY).start()
    try:
        sink.wait_ready()
        produce(bootstrap, labels_topic, labels(20, 23))
        wait_for(lambda: metric(sink.metrics(), "label_sink_label_records_total") == 3, 60,
                 f"labels not counted\n{sink.tail()}")
        # A resent copy of the report, with 3 labels waiting: applied once, fires nothing.
        produce(bootstrap, feedback_topic, [drift(5000.0)])
        wait_for(lambda: metric(sink.metrics(), "label_sink_drift_reports_total",
                                outcome="kept") >= 1, 60, f"copy not read\n{sink.tail()}")
        produce(bootstrap, labels_topic, labels(23, 45))  # mastered again; label_count at 25
        wait_for(lambda: len(triggers()) == 2, 90, f"no label_count trigger\n{sink.tail()}")
        assert mastery_state(sink, "mastered") == 1.0
        # A second drift once every label went to a trigger: reopened, and no trigger.
        produce(bootstrap, feedback_topic, [drift(9000.0)])
        wait_for(lambda: mastery_state(sink, "reopened") == 1.0, 60,
                 f"not reopened again\n{sink.tail()}")
        time.sleep(3)  # a wrongly fired trigger would be delivered within this
        assert metric(sink.metrics(), "label_sink_triggers_total", rule="drift") == 0
    finally:
        assert sink.stop() == 0, sink.tail()

    published = triggers()
    assert sorted((str(t.rule), t.total) for t in published.values()) == [
        ("drift", 20), ("label_count", 25)]
    # Every label in exactly one of the two manifests.
    ids = {(m.partition(), m.offset()): decode_label(m.value()).label_id
           for m in read_all(bootstrap, labels_topic)}
    named = [ids[(r.partition, o)] for t in published.values() for r in t.manifest.ranges
             for o in range(r.start_offset, r.end_offset)]
    assert sorted(named) == sorted(f"l-{i}" for i in range(45))
    (drift_trigger,) = [t for t in published.values() if str(t.rule) == "drift"]
    assert drift_trigger == first
