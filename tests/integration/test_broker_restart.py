"""The loop across a broker crash: Apache Kafka is SIGKILLed mid-run and started again on the
same log directory and ports. The scorer and the label sink must ride it out on their own (no
restart of theirs), lose nothing, and duplicate only byte-identically: the requests are the
uninterrupted run's, and every label is counted exactly once, in exactly one trigger.

A private broker (not the session's): the test kills it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest

from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import decode_retrain_trigger
from tests.conftest import private_kafka
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess, label
from tests.integration.scorer_support import (
    ScorerProcess,
    assert_same_requests_as_reference,
    private_loop,
    progress,
    reference_requests,
    scorer_env,
)
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

INPUT = "al.inference-events.v1"
REQUESTS = "al.annotation-requests.v1"
LABELS = "al.labels.v1"
TRIGGERS = "al.retrain-triggers.v1"


@pytest.fixture
def own_kafka(kafka: ApacheKafka) -> Iterator[ApacheKafka]:
    """A broker of this test's own (`kafka` only makes the test need Apache Kafka)."""
    with private_kafka() as broker:
        bootstrap, pid = broker.bootstrap, broker.pid
        # start() on a running broker is a no-op, not a second JVM fighting for its log dir.
        assert broker.start() == bootstrap and broker.pid == pid
        yield broker


def answer(bootstrap: str, prefix: str, done: set[str]) -> int:
    """Label every request not labeled yet; returns how many. The labels name a model of their
    own instead of the request: joined to the scorer's model, they would send it class
    feedback, and its decisions would then depend on when that arrives (the reference run has
    none)."""
    out = []
    for msg in read_all(bootstrap, prefix + REQUESTS):
        request = orjson.loads(msg.value())
        if request["request_id"] in done:
            continue
        done.add(request["request_id"])
        out.append((request["asset_id"].encode(),
                    label(f"l-{request['request_id']}", [request["reason"]["class"] or "c0"],
                          at=request["event_timestamp"] + 1, model_id="labels-only",
                          asset_id=request["asset_id"])))
    produce(bootstrap, prefix + LABELS, out)
    return len(out)


def test_scorer_and_sink_ride_out_a_broker_crash(own_kafka: ApacheKafka) -> None:
    bootstrap = own_kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=2)
    topic, group = prefix + INPUT, f"g-{prefix}"
    events = inference_events(30_000, seed=41, dt=0.05)
    produce(bootstrap, topic, events)
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    scorer = ScorerProcess(scorer_env(bootstrap, prefix, group, batch_size=200)).start()
    sink = SinkProcess(bootstrap, f"sink-{prefix}", prefix, trigger_min_labels=25).start()
    labeled: set[str] = set()
    try:
        scorer.wait_ready()
        sink.wait_ready(90)
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 0.3, 120, "no progress")
        first = answer(bootstrap, prefix, labeled)
        assert first > 25, "too few labels before the crash to matter"
        own_kafka.kill()
        time.sleep(3)  # clients see the broker gone: connections refused, retries
        own_kafka.start()
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 240,
                 f"the scorer did not finish after the broker came back; log:\n{scorer.tail()}")
        answer(bootstrap, prefix, labeled)
        wait_for(lambda: metric(sink.metrics(), "label_sink_label_records_total")
                 >= len(labeled), 120,
                 f"the sink did not count every label; log:\n{sink.tail()}")
        time.sleep(2)  # room for a late duplicate count or trigger to show
        samples = sink.metrics()
        scorer_alive, sink_alive = scorer.alive(), sink.alive()
    finally:
        scorer_code, sink_code = scorer.stop(), sink.stop()
    assert scorer_alive and sink_alive, "a service died with the broker"
    assert (scorer_code, sink_code) == (0, 0), (scorer.tail(), sink.tail())
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert_same_requests_as_reference(produced, reference_requests(bootstrap, prefix, 2))
    assert metric(samples, "label_sink_label_records_total") == len(labeled)
    counted = sum(v for (name, _), v in samples.items() if name == "label_sink_labels_total")
    assert counted == len(labeled)
    triggers = [decode_retrain_trigger(m.value()) for m in read_all(bootstrap, prefix + TRIGGERS)]
    by_id = {t.trigger_id: t for t in triggers}  # a republished trigger repeats its id
    assert sum(t.total for t in by_id.values()) <= len(labeled)
    assert len(labeled) - sum(t.total for t in by_id.values()) < 25  # the untriggered rest
