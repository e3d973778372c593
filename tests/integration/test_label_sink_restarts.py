"""Issue 23: the label sink restarted mid-count, by SIGKILL and by SIGTERM, on a freshly started
Apache Kafka broker, counts every label exactly once, every trigger's manifest names exactly the
labels it counted, and after a graceful stop every input partition is committed to its end.

Why Apache Kafka, and a broker of this module's own: the skip this guards against (a restarted
worker passing over a block of label records) was measured in 7 of 22 runs on Apache Kafka 4.1,
and in 5 of 5 first runs on a freshly started broker. Each round is one app id (its first start
is a first start) restarted four times while labels keep arriving; the first round runs on the
fresh broker. 2 rounds = 8 restarts: an event that happens at 1 restart in 3 goes unseen with
probability (2/3)^8 = 4%. Printed: each round's time, and the holes and stalls each worker met.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import decode_class_feedback, decode_retrain_trigger
from tests.conftest import private_kafka
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import (
    SinkProcess,
    assert_manifests_exact,
    committed_and_ends,
    create_sink_topics,
    scenario,
)

pytestmark = pytest.mark.timeout(300)

MODELS = ("m-a", "m-b")
PER_MODEL = 150
N = 20  # trigger_min_labels: 7 triggers per model and 10 labels pending
CHUNK, PAUSE_S = 15, 0.8  # the labels arrive over ~18 s, through all four restarts
# A dead member's partitions wait out its session before a restarted worker gets them: the test
# broker allows a short one (Apache Kafka's minimum is 6 s by default), so a SIGKILL costs ~3 s.
SESSION = {"session_timeout_s": 3, "heartbeat_interval_s": 1}


@pytest.fixture(scope="module")
def fresh_kafka() -> Iterator[ApacheKafka]:
    with private_kafka({"group.min.session.timeout.ms": "1000"}) as broker:
        yield broker


@pytest.mark.parametrize("restarts", [("kill", "term") * 2, ("term", "kill") * 2],
                         ids=["kill-first", "term-first"])
def test_restarts_mid_count_count_each_label_once_and_manifests_equal_totals(
        fresh_kafka: ApacheKafka, restarts: tuple[str, str]) -> None:
    bootstrap = fresh_kafka.bootstrap
    tag = uuid.uuid4().hex[:8]
    prefix, started = f"lsr-{tag}.", time.monotonic()
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    labels_topic, requests_topic = prefix + topics.LABELS, prefix + topics.ANNOTATION_REQUESTS
    by_model = f"{app_id}-labels-by-model"
    sc = scenario(hash(restarts) % 1000, tag, MODELS, PER_MODEL)
    valid = len(sc.truth.model_of)

    def start() -> SinkProcess:
        return SinkProcess(bootstrap, app_id, prefix, trigger_min_labels=N, **SESSION).start()

    sink = start()
    sinks = [sink]
    try:
        sink.wait_ready(90)
        produce(bootstrap, requests_topic, sc.requests)
        # Every request in the requests table's changelog before any label: a restarted worker
        # then has them all (recovery precedes processing). A request re-read after a restart
        # could otherwise come after its label, which would then wait for it (early.py).
        changelog = f"{app_id}-requests-changelog"
        wait_for(lambda: sum(true_end_offsets({"bootstrap.servers": bootstrap}, changelog,
                                              range(4)).values()) == valid, 60,
                 "requests not stored")

        def feed() -> None:
            for i in range(0, len(sc.labels), CHUNK):
                produce(bootstrap, labels_topic, sc.labels[i:i + CHUNK])
                time.sleep(PAUSE_S)

        feeder = threading.Thread(target=feed)
        feeder.start()
        for kind in restarts:
            wait_for(lambda s=sink: metric(s.metrics(), "label_sink_label_records_total") >= 15,
                     60, f"no progress before the {kind}:\n{sink.tail()}")
            if kind == "kill":
                sink.kill()
            else:
                assert sink.stop() == 0, sink.tail()
            sink = start()
            sinks.append(sink)
            sink.wait_ready(90)
        feeder.join()

        def latest_feedback(model: str) -> Any:
            mine = [decode_class_feedback(m.value())
                    for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK)]
            mine = [f for f in mine if f.model_id == model]
            return mine[-1] if mine else None

        def counted(model: str) -> int:
            fb = latest_feedback(model)
            return sum(s.labels_total for s in fb.classes.values()) if fb else 0

        def complete(model: str) -> Any:
            return counted(model) == PER_MODEL and latest_feedback(model)

        for model in MODELS:
            try:
                wait_for(lambda m=model: complete(m), 90, "")
            except AssertionError:
                samples = {k: v for k, v in sink.metrics().items() if k[0].startswith(
                    ("label_sink_label_records", "label_sink_duplicate", "label_sink_out_of",
                     "label_sink_committed"))}
                raise AssertionError(f"{model}: {counted(model)} of {PER_MODEL} counted; "
                                     f"{samples}\n{sink.tail()}") from None
        feedback = {m: latest_feedback(m) for m in MODELS}
        triggers = [decode_retrain_trigger(m.value())
                    for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)]
        named: set[str] = set()
        for model in MODELS:
            fb = feedback[model]
            assert {c: s.labels_total for c, s in fb.classes.items()} == sc.truth.counts(model)
            assert {c: s.agreement for c, s in fb.classes.items()} == pytest.approx(
                sc.truth.agreement(model))
            assert sum(s.labels_since_trigger for s in fb.classes.values()) == PER_MODEL % N
            assert len({t.trigger_id for t in triggers if t.model_id == model}) == PER_MODEL // N
            named |= assert_manifests_exact(bootstrap, labels_topic, triggers, sc.truth, model, N)
        assert len(named) == (PER_MODEL // N) * N * len(MODELS)

        def dead() -> set[str]:
            letters = [orjson.loads(m.value())
                       for m in read_all(bootstrap, topics.dlq(labels_topic))]
            return {orjson.loads(base64.b64decode(r["original_b64"]))["label_id"]
                    for r in letters}

        # Orphans wait for their requests until the requests partition is read to its end
        # (early.py), then are dead-lettered: no valid label among them.
        wait_for(lambda: dead() == sc.truth.orphans, 60, "orphans not dead-lettered")
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()
    # After a graceful stop every input partition is committed up to what was processed.
    committed, ends = committed_and_ends(bootstrap, app_id, {labels_topic: 4, requests_topic: 4,
                                                             by_model: 4})
    behind = {tp: (committed[tp], end) for tp, end in ends.items()
              if committed[tp] != end and not (end == 0 and committed[tp] is None)}
    assert behind == {}, f"(committed, end) after a graceful stop: {behind}"
    logs = [s.log.read_text(errors="replace") for s in sinks]
    holes = [text.count("the consumer skipped records") for text in logs]
    stalls = [text.count("seeking back to") for text in logs]
    print(f"\n{'-'.join(restarts)}: {len(sc.labels)} label records through {len(restarts)} "
          f"restarts in {time.monotonic() - started:.1f}s; holes filled per worker: {holes}, "
          f"stalls sought back: {stalls}")
