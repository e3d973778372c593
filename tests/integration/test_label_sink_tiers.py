"""Tiers through the real label sink on Apache Kafka: a consensus request whose two labels
disagree is escalated to exactly one expert request, on the requests topic, also after the
labels are replayed and the sink is restarted (its `tiers` table comes back from its changelog);
a consensus that agrees escalates nothing; cost is counted per tier and class; a consensus
request counts as one decided label (its votes are in the trigger's manifest only)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.label_sink.consensus import expert_request_id
from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import (
    decode_annotation_request,
    decode_class_feedback,
    decode_retrain_trigger,
    encode_event,
)
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess, create_sink_topics

pytestmark = pytest.mark.timeout(300)


def _request(rid: str, asset: str, tier: dict[str, Any] | None,
             scores: dict[str, float] | None = None) -> bytes:
    event: dict[str, Any] = {
        "schema_version": 1, "request_id": rid, "asset_id": asset, "event_id": f"e-{rid}",
        "model_id": "tiered", "model_version": "v1", "event_timestamp": 100.0,
        "reason": {"strategy": "reservoir", "score": 0.9, "class": "cat", "threshold": None,
                   "instances": [0], "inclusion_probability": None},
        "priority": 0.9, "predictions": [{"scores": scores or {"cat": 0.55, "dog": 0.45}}],
        "source": {"topic": "in", "partition": 0, "offset": 1},
    }
    if tier is not None:
        event["tier"] = tier
    return encode_event(event)


def _label(lid: str, rid: str, asset: str, who: str, cls: str) -> tuple[bytes, bytes]:
    return asset.encode(), encode_event({
        "schema_version": 1, "label_id": lid, "request_id": rid, "asset_id": asset,
        "annotations": [{"label": cls}], "annotator_id": who, "labeled_at": 200.0})


def test_disagreeing_consensus_is_escalated_to_one_expert_request(kafka: ApacheKafka) -> None:
    bootstrap = kafka.bootstrap
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"tiers-{tag}.", f"sink-tiers-{tag}"
    create_sink_topics(bootstrap, prefix, partitions=2)
    requests_topic, labels_topic = prefix + topics.ANNOTATION_REQUESTS, prefix + topics.LABELS
    consensus = {"name": "consensus", "annotators": 2, "cost": 6.0}
    produce(bootstrap, requests_topic, [
        (b"a-split", _request("r-split", "a-split", consensus)),
        (b"a-agree", _request("r-agree", "a-agree", consensus)),
        (b"a-plain", _request("r-plain", "a-plain", None)),
    ])
    split = [_label("l1", "r-split", "a-split", "ann-a", "dog"),
             _label("l2", "r-split", "a-split", "ann-b", "cat")]
    agree = [_label("l3", "r-agree", "a-agree", "ann-a", "dog"),
             _label("l4", "r-agree", "a-agree", "ann-b", "dog")]
    plain = [_label("l5", "r-plain", "a-plain", "ann-a", "cat")]

    def experts() -> list[Any]:
        out = [decode_annotation_request(m.value()) for m in read_all(bootstrap, requests_topic)]
        return [r for r in out if r.tier is not None and r.tier.name == "expert"]

    def counted() -> dict[str, int]:
        feedback = [decode_class_feedback(m.value())
                    for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK)]
        mine = [f for f in feedback if f.model_id == "tiered"]
        return {c: s.labels_total for c, s in mine[-1].classes.items()} if mine else {}

    sink = SinkProcess(bootstrap, app_id, prefix, trigger_min_labels=3).start()
    try:
        sink.wait_ready(90)
        produce(bootstrap, labels_topic, split + agree + plain)
        wait_for(lambda: metric(sink.metrics(), "label_sink_label_records_total") >= 5, 90,
                 f"labels not counted\n{sink.tail()}")
        wait_for(lambda: experts(), 60, f"no expert request\n{sink.tail()}")
        samples = sink.metrics()
        # By model and the request's class, counted once where the model's labels are.
        decided = {"model_id": "tiered", "class": "cat"}
        assert metric(samples, "label_sink_consensus_decisions_total", **decided,
                      outcome="escalated") == 1
        assert metric(samples, "label_sink_consensus_decisions_total", **decided,
                      outcome="agreed") == 1
        assert metric(samples, "label_sink_tier_cost_units_total", model_id="tiered",
                      tier="consensus", **{"class": "cat"}) == 12.0  # 4 labels at 3 units
        (expert,) = experts()
        assert expert.request_id == expert_request_id("r-split")
        assert expert.tier is not None and expert.tier.escalated_from == "r-split"
        assert expert.asset_id == "a-split" and expert.model_id == "tiered"

        # The expert's label joins the expert request (read back by the sink) and is counted.
        produce(bootstrap, labels_topic,
                [_label("l6", expert.request_id, "a-split", "referee", "dog")])
        wait_for(lambda: metric(sink.metrics(), "label_sink_tier_cost_units_total",
                                model_id="tiered", tier="expert", **{"class": "cat"}) == 8.0,
                 60, f"expert label not counted\n{sink.tail()}")
        # Six labels, three decided labels: r-agree by l4 (dog), r-split by the expert (dog),
        # r-plain (cat). The trigger fires on the third and its manifest holds all six.
        wait_for(lambda: counted() == {"dog": 2, "cat": 1}, 60,
                 f"decided labels not counted once: {counted()}\n{sink.tail()}")
        # label_sink_labels_total counts the decided labels too, never the votes (which were
        # counted under __other__, their classes unknown to the model's counts then).
        labels_total = {key[1]: v for key, v in sink.metrics().items()
                        if key[0] == "label_sink_labels_total"}
        assert labels_total == {(("class", "cat"), ("model_id", "tiered")): 1.0,
                                (("class", "dog"), ("model_id", "tiered")): 2.0}
        (trigger,) = [decode_retrain_trigger(m.value())
                      for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)]
        assert trigger.total == 3 and dict(trigger.counts) == {"dog": 2, "cat": 1}
        assert sum(r.end_offset - r.start_offset for r in trigger.manifest.ranges) == 6
        assert sink.stop() == 0, sink.tail()

        # Restart, then replay every label: the table remembers both decisions.
        sink = SinkProcess(bootstrap, app_id, prefix).start()
        sink.wait_ready(90)
        produce(bootstrap, labels_topic, split + agree + plain)
        wait_for(lambda: metric(sink.metrics(), "label_sink_duplicate_labels_total") >= 5, 90,
                 f"replayed labels not seen as duplicates\n{sink.tail()}")
        samples = sink.metrics()
        assert metric(samples, "label_sink_consensus_decisions_total", **decided,
                      outcome="escalated") == 0
        assert len(experts()) == 1
    finally:
        sink.stop()


def test_a_reviewed_label_is_counted_but_not_compared(kafka: ApacheKafka) -> None:
    # A review shows the annotator the pre-label, so its answer says little about whether the
    # model was right: the class's labels count it, its human-model agreement does not (the
    # tier rule widens the review band of classes whose agreement is high: reviews counted
    # there would feed that loop). dog: a review that confirmed a "dog" pre-label and a plain
    # annotation of "dog" where the model said "cat" -> 2 labels, agreement 0 (1/2 with the
    # review counted). An untiered request's label is compared as always (cat: 1/1).
    bootstrap = kafka.bootstrap
    tag = uuid.uuid4().hex[:8]
    prefix, app_id = f"tiers-rev-{tag}.", f"sink-tiers-rev-{tag}"
    create_sink_topics(bootstrap, prefix, partitions=1)
    requests_topic, labels_topic = prefix + topics.ANNOTATION_REQUESTS, prefix + topics.LABELS
    review = _request("r-rev", "a-rev", {"name": "review", "annotators": 1, "cost": 1.0},
                      {"cat": 0.45, "dog": 0.55})
    produce(bootstrap, requests_topic, [
        (b"a-rev", review),
        (b"a-ann", _request("r-ann", "a-ann", {"name": "annotate", "annotators": 1,
                                               "cost": 3.0})),
        (b"a-plain", _request("r-plain", "a-plain", None)),
    ])

    def dog_and_cat() -> dict[str, tuple[int, float | None]]:
        feedback = [decode_class_feedback(m.value())
                    for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK)]
        mine = [f for f in feedback if f.model_id == "tiered"]
        return {c: (s.labels_total, s.agreement) for c, s in mine[-1].classes.items()} \
            if mine else {}

    sink = SinkProcess(bootstrap, app_id, prefix).start()
    try:
        sink.wait_ready(90)
        produce(bootstrap, labels_topic, [_label("l1", "r-rev", "a-rev", "ann-a", "dog"),
                                          _label("l2", "r-ann", "a-ann", "ann-a", "dog"),
                                          _label("l3", "r-plain", "a-plain", "ann-a", "cat")])
        wait_for(lambda: sum(v[0] for v in dog_and_cat().values()) == 3, 90,
                 f"labels not counted: {dog_and_cat()}\n{sink.tail()}")
        assert dog_and_cat() == {"dog": (2, 0.0), "cat": (1, 1.0)}
        assert metric(sink.metrics(), "label_sink_tier_cost_units_total", model_id="tiered",
                      tier="review", **{"class": "cat"}) == 1.0
    finally:
        sink.stop()
