"""The stopping signal's prediction-stability branch through the real scorer and the real label
sink on Apache Kafka.

A model service sends, among ordinary events, a fixed probe set scored by version v1, then the
same probes scored by v2, which changes the predicted class of 1 of them. The scorer (two input
partitions, exactly_once) must keep the probes out of selection, publish one stability record
per partition on class feedback in its transactions (the bytes a run without Kafka gives), and
not take them for class weights. The sink must fold both partitions' records into the next
retrain trigger's `stopping.stable` (1 of 240 changed < 0.01: stopped) and its metrics.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition

from services.core import SelectorPolicy, SelectorState
from services.core.stability import ProbeBooks, StabilityPolicy
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.streaming import topics
from services.streaming.events import (
    FeedbackKind,
    decode_annotation_request,
    decode_class_feedback,
    decode_retrain_trigger,
    encode_event,
)
from tests.contract.schema_support import validator
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess, label, request
from tests.integration.scorer_support import consumed, private_loop, scorer_env, scorer_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

MODEL = "m-stable"
T0 = 1_700_000_000.0
PROBES, ORDINARY = 240, 600


def event(asset: str, version: str, top: str, at: float, probe: bool) -> bytes:
    other = "dog" if top == "cat" else "cat"
    body: dict[str, Any] = {"schema_version": 1, "event_id": f"{asset}-{version}",
                            "asset_id": asset, "model_id": MODEL, "model_version": version,
                            "timestamp": at, "predictions": [{"scores": {top: 0.7, other: 0.3}}]}
    if probe:
        body["probe"] = True
    return encode_event(body)


def stream() -> list[tuple[bytes, bytes]]:
    """Ordinary v1 events, v1's probes, ordinary v2 events, v2's probes (probe-7 flipped)."""
    out = []
    for i in range(ORDINARY):
        version = "v1" if i < ORDINARY // 2 else "v2"
        if i == ORDINARY // 2:
            out += [(f"probe-{j}".encode(), event(f"probe-{j}", "v1", "cat", T0 + i, True))
                    for j in range(PROBES)]
        out.append((f"a{i}".encode(), event(f"a{i}", version, "cat" if i % 3 else "dog",
                                            T0 + i, False)))
    out += [(f"probe-{j}".encode(), event(f"probe-{j}", "v2", "dog" if j == 7 else "cat",
                                          T0 + ORDINARY, True)) for j in range(PROBES)]
    return out


def without_kafka(bootstrap: str, prefix: str) -> list[bytes]:
    """The stability records a scorer gives each input partition's records, without Kafka."""
    by_partition: dict[int, list[Record]] = {}
    for m in read_all(bootstrap, prefix + topics.INFERENCE_EVENTS):
        by_partition.setdefault(m.partition(), []).append(
            Record(m.offset(), m.key(), m.value(), m.timestamp()[1] / 1000))
    out = []
    for p, records in sorted(by_partition.items()):
        scorer = PartitionScorer(prefix + topics.INFERENCE_EVENTS, p,
                                 SelectorState.create(SelectorPolicy(), partition_seed(0, p)),
                                 0, service_version="ref", fetch=lambda _: None,
                                 probes=ProbeBooks(StabilityPolicy(max_probes=4096)))
        out += [o.value for o in scorer.process(records).stability_records]
    return out


def test_probes_become_a_stability_record_per_partition_and_a_stopped_trigger(
        kafka: Any) -> None:
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=2)
    feedback_topic = prefix + topics.CLASS_FEEDBACK
    sink = SinkProcess(bootstrap, f"label-sink-{prefix}", prefix, trigger_min_labels=6,
                       mastery_stable_threshold=0.01, mastery_stable_min_probes=100).start()
    try:
        sink.wait_ready()
        events = stream()
        produce(bootstrap, prefix + topics.INFERENCE_EVENTS, events)
        env = scorer_env(bootstrap, prefix, f"g-{prefix}", processing_guarantee="exactly_once")
        with scorer_in_thread(env) as scorer:
            wait_for(lambda: consumed(scorer, len(events)), 120, "stream not consumed")
            records = wait_for(lambda: [m for m in read_all(bootstrap, feedback_topic)
                                        if m.key().startswith(b"stability\x1f")], 60,
                               "no stability record from the scorer")
            # The scorer reads its own records back: they must not become (empty) weights.
            ends = [TopicPartition(feedback_topic, p) for p in range(2)]
            wait_for(lambda: sum(max(0, tp.offset) for tp in
                                 scorer.feedback._consumer.position(ends)) >= len(records),
                     30, "the scorer's feedback reader did not read the records")
            registry = scorer.registry
            applied = registry.get_sample_value("scorer_feedback_applied_total")
            probes_seen = registry.get_sample_value("scorer_probe_events_total")
        assert applied == 0 and probes_seen == 2 * PROBES
        requested = [decode_annotation_request(m.value()).asset_id
                     for m in read_all(bootstrap, prefix + topics.ANNOTATION_REQUESTS)]
        assert requested and not [a for a in requested if a.startswith("probe-")]

        # One record per input partition (committed: read_committed), the bytes a run without
        # Kafka gives, under the contract; together 240 probes, 1 changed.
        assert sorted(m.value() for m in records) == sorted(without_kafka(bootstrap, prefix))
        notices = []
        for m in records:
            assert list(validator("class-feedback").iter_errors(orjson.loads(m.value()))) == []
            found = decode_class_feedback(m.value())
            assert found.kind is FeedbackKind.STABILITY and found.stability is not None
            notices.append(found.stability)
        assert sorted(n.partition for n in notices) == [0, 1]
        assert {(n.model_version, n.previous_version) for n in notices} == {("v2", "v1")}
        assert sum(n.probes for n in notices) == PROBES and sum(n.changed for n in notices) == 1

        # The sink folds them; the next trigger carries the branch.
        wait_for(lambda: metric(sink.metrics(), "label_sink_stability_records_total",
                                outcome="applied") == 2.0, 60,
                 f"the sink did not apply the records\n{sink.tail()}")
        reqs = [(f"r{i}".encode(), request(f"r{i}", MODEL, "cat", at=T0 + i, asset_id=f"r{i}"))
                for i in range(6)]
        produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, reqs)
        produce(bootstrap, prefix + topics.LABELS,
                [(f"r{i}".encode(), label(f"l{i}", ["cat"], at=T0 + 10 + i, request_id=f"r{i}",
                                          asset_id=f"r{i}")) for i in range(6)])
        triggers = wait_for(lambda: [decode_retrain_trigger(m.value()) for m in
                                     read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)],
                            90, f"no trigger\n{sink.tail()}")
        stopping = triggers[0].stopping
        assert stopping is not None and stopping["stopped"] is True
        assert dict(stopping["stable"]) == {
            "stopped": True, "model_version": "v2", "probes": PROBES, "changed": 1,
            "share": 1 / PROBES, "partitions": 2, "threshold": 0.01, "min_probes": 100}
        samples = sink.metrics()
        assert metric(samples, "label_sink_stopping_signal", model_id=MODEL) == 1.0
        assert metric(samples, "label_sink_probe_changed_ratio", model_id=MODEL) == 1 / PROBES
    finally:
        assert sink.stop() == 0, sink.tail()
