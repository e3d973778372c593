"""Issue 14, item 1: delivery before commit. An output the broker refuses mid-run (here the
internal labels-by-model topic, made unwritable by a 1-byte `max.message.bytes`) stops the sink
without committing the labels whose forwards were refused; once the topic takes records again, a
restarted sink counts every label exactly once. Apache Kafka: Tansu does not enforce
`max.message.bytes` (docs/brokers.md).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from services.label_sink.worker import EXIT_CRASHED
from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import decode_class_feedback, decode_retrain_trigger
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import (
    SinkProcess,
    Truth,
    assert_manifests_exact,
    committed_and_ends,
    create_sink_topics,
    label,
)

pytestmark = pytest.mark.timeout(240)

MODEL, N = "m-d", 10


def set_max_message_bytes(bootstrap: str, topic: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry("max.message.bytes", value,
                        incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=15)


def test_a_refused_output_stops_the_sink_and_its_labels_are_counted_once_after(
        kafka: ApacheKafka) -> None:
    bootstrap, prefix = kafka.bootstrap, f"lsd-{uuid.uuid4().hex[:8]}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    labels_topic, by_model = prefix + topics.LABELS, f"{app_id}-labels-by-model"
    truth = Truth({}, {}, {}, set())
    batches: list[list[tuple[bytes, bytes]]] = []
    for b, size in enumerate((40, 30, 30)):
        batch = []
        for i in range(size):
            lid = f"d{b}-{i}"
            cls = ("cat", "dog")[i % 2]
            truth.model_of[lid], truth.classes[lid] = MODEL, cls
            batch.append((f"a-{lid}".encode(), label(lid, [cls], at=1000.0 + len(truth.classes),
                                                      model_id=MODEL, asset_id=f"a-{lid}")))
        batches.append(batch)

    def start() -> SinkProcess:
        return SinkProcess(bootstrap, app_id, prefix, trigger_min_labels=N,
                           stop_timeout_s=10).start()

    sink = start()
    try:
        sink.wait_ready(90)
        produce(bootstrap, labels_topic, batches[0])
        wait_for(lambda: metric(sink.metrics(), "label_sink_label_records_total") == 40, 60,
                 "first labels not counted")
        before = {tp: c for tp, c in committed_and_ends(bootstrap, app_id,
                                                        {labels_topic: 4})[1].items()}
        set_max_message_bytes(bootstrap, by_model, "1")  # no record fits: every forward refused
        produce(bootstrap, labels_topic, batches[1])
        assert sink.proc is not None
        code = sink.proc.wait(60)
        assert code == EXIT_CRASHED, sink.tail()
        log = sink.log.read_text(errors="replace")
        assert f"label sink stops: a record to {by_model} was refused" in log
        committed, _ = committed_and_ends(bootstrap, app_id, {labels_topic: 4})
        # Not one label of the outage is committed: each partition at most where it stood.
        assert all((committed[tp] or 0) <= before[tp] for tp in before), (committed, before)

        set_max_message_bytes(bootstrap, by_model, "1048588")  # the outage ends
        sink = start()
        sink.wait_ready(90)
        produce(bootstrap, labels_topic, batches[2])

        def feedback_total() -> Any:
            out = [decode_class_feedback(m.value())
                   for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK)]
            mine = [f for f in out if f.model_id == MODEL]
            total = sum(s.labels_total for s in mine[-1].classes.values()) if mine else 0
            return mine[-1] if total == 100 else None

        started = time.monotonic()
        feedback = wait_for(feedback_total, 60, f"not all counted\n{sink.tail()}")
        assert {c: s.labels_total for c, s in feedback.classes.items()} == {"cat": 50, "dog": 50}
        triggers = [decode_retrain_trigger(m.value())
                    for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)]
        assert len({t.trigger_id for t in triggers}) == 100 // N
        assert len(assert_manifests_exact(bootstrap, labels_topic, triggers, truth, MODEL,
                                          N)) == 100
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()
    print(f"\nrefused forwards: sink stopped (exit 70); after the outage all 100 labels counted "
          f"once, {time.monotonic() - started:.1f}s after the restart's first label")
