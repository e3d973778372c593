"""Issue 14, item 2: labels produced before the requests they answer wait for them, survive a
SIGKILL of the sink while they wait, and are joined and counted once when the requests arrive;
labels whose request never comes are dead-lettered with the reason once the requests partition
has been read past where it would be. On Apache Kafka."""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections import Counter

import orjson
import pytest

from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import decode_class_feedback, decode_retrain_trigger
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import (
    CLASSES,
    SinkProcess,
    Truth,
    assert_manifests_exact,
    committed_and_ends,
    create_sink_topics,
    label,
    request,
)

pytestmark = pytest.mark.timeout(300)

MODEL, N, LABELS, NEVER = "m-early", 10, 30, 3
# Longer than the test needs between the labels and their requests (a restart included), so
# only the requests' arrival decides; short enough for the never-answered ones to go in time.
GRACE_S = 30


def waiting(sink: SinkProcess) -> float:
    try:
        return metric(sink.metrics(), "label_sink_early_labels")
    except OSError:
        return -1.0


def test_labels_before_their_requests_wait_survive_a_kill_and_are_counted_once(
        kafka: ApacheKafka) -> None:
    bootstrap, tag = kafka.bootstrap, uuid.uuid4().hex[:8]
    prefix = f"lse-{tag}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    rng = random.Random(14)
    truth = Truth({}, {}, {}, set())
    requests, labels = [], []
    for i in range(LABELS):
        asset, predicted, human = f"a-{tag}-{i}", rng.choice(CLASSES), rng.choice(CLASSES)
        requests.append((asset.encode(), request(f"r-{tag}-{i}", MODEL, predicted, at=100.0,
                                                 asset_id=asset, classes=CLASSES)))
        lid = f"l-{tag}-{i}"
        labels.append((asset.encode(), label(lid, [human], at=200.0 + i,
                                             request_id=f"r-{tag}-{i}", asset_id=asset)))
        truth.model_of[lid], truth.classes[lid], truth.agreed[lid] = MODEL, human, (
            predicted == human)
    for j in range(NEVER):
        lid = f"never-{tag}-{j}"
        labels.append((f"n-{lid}".encode(), label(lid, ["cat"], at=300.0,
                                                  request_id=f"none-{tag}-{j}")))
        truth.orphans.add(lid)

    def start() -> SinkProcess:
        return SinkProcess(bootstrap, app_id, prefix, trigger_min_labels=N, instance_id="w1",
                           early_label_grace_s=GRACE_S).start()

    sink = start()
    try:
        sink.wait_ready(90)
        produce(bootstrap, prefix + topics.LABELS, labels)  # every label before any request
        wait_for(lambda: waiting(sink) == LABELS + NEVER, 60, f"labels not held\n{sink.tail()}")
        assert metric(sink.metrics(), "label_sink_label_records_total") == 0
        # faust commits every ~2.8 s: after two periods, still nothing committed past them.
        time.sleep(6)
        committed, _ = committed_and_ends(bootstrap, app_id, {prefix + topics.LABELS: 4})
        assert all(offset in (None, 0) for offset in committed.values()), committed
        # Killed while they wait: the restart reads them again and holds them again.
        sink.kill()
        sink = start()
        wait_for(lambda: waiting(sink) == LABELS + NEVER, 60,
                 f"labels not held again after the restart\n{sink.tail()}")
        produce(bootstrap, prefix + topics.ANNOTATION_REQUESTS, requests)

        def counted() -> int:
            mine = [f for f in (decode_class_feedback(m.value())
                                for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK))
                    if f.model_id == MODEL]
            return sum(s.labels_total for s in mine[-1].classes.values()) if mine else 0

        wait_for(lambda: counted() == LABELS, 60, f"{counted()} counted\n{sink.tail()}")
        assert metric(sink.metrics(), "label_sink_early_labels_joined_total") == LABELS
        assert metric(sink.metrics(), "label_sink_joined_labels_total") == LABELS

        def dead() -> list[dict]:
            return [orjson.loads(m.value())
                    for m in read_all(bootstrap, topics.dlq(prefix + topics.LABELS))]

        # The never-answered ones go once the grace is over and the requests partitions read.
        letters = wait_for(lambda: (lambda d: d if len(d) >= NEVER else None)(dead()),
                           GRACE_S + 60, f"never-answered labels not dead-lettered\n"
                                         f"{sink.tail()}")
        assert {orjson.loads(base64.b64decode(r["original_b64"]))["label_id"]
                for r in letters} == truth.orphans
        assert all("answers no request in partition" in r["reason"] for r in letters), letters
        assert waiting(sink) == 0
        triggers = [decode_retrain_trigger(m.value())
                    for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)]
        assert len({t.trigger_id for t in triggers}) == LABELS // N
        named = assert_manifests_exact(bootstrap, prefix + topics.LABELS, triggers, truth,
                                       MODEL, N)
        assert named == set(truth.model_of)
        feedback = [f for f in (decode_class_feedback(m.value())
                                for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK))
                    if f.model_id == MODEL][-1]
        assert {c: s.labels_total for c, s in feedback.classes.items()} == Counter(
            truth.classes.values())
        assert {c: s.agreement for c, s in feedback.classes.items()} == pytest.approx(
            truth.agreement(MODEL))
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()
