"""The scorer against the embedded broker over real sockets."""

from __future__ import annotations

import base64
import gc
import time
from collections import Counter

import orjson
import pytest

from services.streaming.events import MAX_EVENT_BYTES, encode_event
from tests.integration.kafka_support import metric, produce, read_all, scrape, wait_for
from tests.integration.scorer_support import (
    consumed,
    private_loop,
    scorer_env,
    scorer_in_thread,
)
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]


def _bad_inputs(valid: bytes) -> dict[str, tuple[str, bytes]]:
    """name -> (expected reason code, payload)."""
    event = orjson.loads(valid)
    return {
        "garbage": ("not_json", bytes(range(256)) * 4),
        "not-json": ("not_json", b'{"schema_version": 1, "event_id": '),
        "nan": ("not_json", valid.replace(b'"timestamp":', b'"timestamp":NaN,"x":')),
        "wrong-type": ("wrong_type", encode_event({**event, "timestamp": "yesterday"})),
        "missing": ("missing_field", encode_event({k: v for k, v in event.items()
                                                  if k != "asset_id"})),
        "huge": ("too_large", b'{"pad": "' + b"x" * 1_000_000 + b'"}'),
        "version": ("unknown_version", encode_event({**event, "schema_version": 9})),
        "empty-predictions": ("empty", encode_event({**event, "predictions": []})),
        "tombstone": ("empty", b""),
    }


def test_bad_input_goes_to_the_dlq_while_good_events_flow_and_metrics_show_it(
    any_broker: object,
) -> None:
    """On both brokers (part of the embedded broker's smoke subset)."""
    bootstrap = any_broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    good = inference_events(400, seed=2)
    bad = _bad_inputs(good[0][1])
    assert len(bad["huge"][1]) > MAX_EVENT_BYTES
    stream = []
    for i, (name, (_, payload)) in enumerate(bad.items()):
        stream += good[i * 40:(i + 1) * 40] + [(f"bad-{name}".encode(), payload)]
    stream += good[len(bad) * 40:]
    produce_big(bootstrap, prefix + "al.inference-events.v1", stream)
    env = scorer_env(bootstrap, prefix, f"g-{prefix}")
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, len(stream)), 60, "stream not consumed")
        port = scorer.ops.port
        samples = scrape(port)
        health = scorer.health()
    assert health[0], health
    letters = {base64.b64decode(r["key_b64"]).decode(): r for r in
               (orjson.loads(m.value()) for m in
                read_all(bootstrap, prefix + "al.inference-events.v1.dlq"))}
    assert set(letters) == {f"bad-{name}" for name in bad}
    for name, (code, payload) in bad.items():
        letter = letters[f"bad-{name}"]
        assert letter["code"] == code, (name, letter["reason"])
        assert base64.b64decode(letter["original_b64"]) == payload
        assert letter["service"] == "scorer" and letter["source"]["offset"] >= 0
    assert letters["bad-missing"]["reason"].startswith("asset_id")
    assert letters["bad-wrong-type"]["reason"].startswith("timestamp")
    assert metric(samples, "scorer_events_consumed_total") == len(stream)
    by_code = Counter(code for code, _ in bad.values())
    for code, count in by_code.items():
        assert metric(samples, "scorer_events_invalid_total", reason=code) == count
    requests = read_all(bootstrap, prefix + "al.annotation-requests.v1")
    assert metric(samples, "scorer_requests_emitted_total") == len(requests) > 0
    selected = sum(v for (name, _), v in samples.items() if name == "scorer_selected_total")
    assert selected == len(requests)
    assert metric(samples, "scorer_assigned_partitions") == 2


def test_the_heap_at_start_is_left_out_of_full_collections_while_serving(broker: object) -> None:
    """heap.py: the loop freezes what exists at its start (no full collection walks it) and
    thaws it when it ends, so a process that outlives the scorer collects as usual."""
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=1)
    stream = inference_events(50, seed=3)
    produce(bootstrap, prefix + "al.inference-events.v1", stream)
    assert gc.get_freeze_count() == 0
    with scorer_in_thread(scorer_env(bootstrap, prefix, f"g-{prefix}")) as scorer:
        wait_for(lambda: consumed(scorer, len(stream)), 60, "stream not consumed")
        frozen = gc.get_freeze_count()
        assert frozen > 1000, frozen  # the interpreter's modules and classes at least
    assert gc.get_freeze_count() == 0


def produce_big(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Like produce(), but lets a 1 MB record through the client's own size limit."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "allow.auto.create.topics": False,
                         "message.max.bytes": 4 * 1024 * 1024, "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0
    time.sleep(0)


def test_class_feedback_sets_the_class_weights_and_bad_feedback_is_dead_lettered(
    broker: object,
) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    weights = {"c0": 3.0, "c1": 0.5}
    feedback = encode_event({
        "schema_version": 1, "model_id": "digits", "updated_at": 1_700_000_100.0,
        "classes": {name: {"labels_total": 40, "labels_since_trigger": 5, "agreement": 0.5,
                           "weight": w} for name, w in weights.items()},
    })
    env = scorer_env(bootstrap, prefix, f"g-{prefix}")
    produce(bootstrap, prefix + "al.inference-events.v1", inference_events(200, seed=6))
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, 200), 60, "events not consumed")
        produce(bootstrap, prefix + "al.class-feedback.v1",
                [(b"digits", feedback), (b"digits", b"{oops")])
        produce(bootstrap, prefix + "al.inference-events.v1",
                inference_events(10, seed=7, t0=1_700_001_000.0))
        registry = scorer.registry
        wait_for(lambda: registry.get_sample_value("scorer_feedback_applied_total") == 1
                 and registry.get_sample_value("scorer_feedback_invalid_total",
                                               {"reason": "not_json"}) == 1,
                 30, "feedback not applied, or the bad record not dead-lettered")
        applied = {p: s.state.class_weights("digits") for p, s in scorer.partitions.live().items()}
        samples = scrape(scorer.ops.port)
    assert set(applied) == {0, 1}
    for got in applied.values():
        assert {k: got[k] for k in weights} == weights
    assert metric(samples, "scorer_feedback_invalid_total", reason="not_json") == 1
    for name, w in weights.items():  # ops see where the budget goes
        assert metric(samples, "scorer_class_weight", model_id="digits", **{"class": name}) == w
    letters = read_all(bootstrap, prefix + "al.class-feedback.v1.dlq")
    assert [base64.b64decode(orjson.loads(m.value())["original_b64"]) for m in letters] == [
        b"{oops"]


def test_missing_topics_are_one_line_not_a_traceback(broker: object) -> None:
    import os
    import subprocess
    import sys

    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    env = {**os.environ, **scorer_env(bootstrap, "never-created.", "g-missing")}
    result = subprocess.run([sys.executable, "-m", "services.cli", "scorer"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "topic never-created.al.inference-events.v1 does not exist" in result.stderr
    assert "active-stream topics create" in result.stderr



def test_a_record_refused_after_produce_accepted_it_stops_the_batch_before_its_commit(
    broker: object,
) -> None:
    """A record refused by the broker after `produce()` queued it shows only in librdkafka's
    delivery report; `flush()` returns 0 all the same. The batch must end in DeliveryFailed
    before any offset is committed. A topic that never existed, which the scorer's producer has
    no metadata for, is refused that way (unknown topic) once the propagation wait is over."""
    from services.scorer.partition import Output
    from services.scorer.service import DeliveryFailed

    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=1)
    env = scorer_env(bootstrap, prefix, f"g-{prefix}")
    env["ACTIVE_STREAM_KAFKA_TOPIC_METADATA_PROPAGATION_MAX_MS"] = "1000"
    produce(bootstrap, prefix + "al.inference-events.v1", inference_events(50, seed=6))
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, 50), 60, "events not consumed")
    nowhere = prefix + "never-created"
    # Queued: no metadata says the topic is missing.
    scorer.outbox.send(nowhere, Output(b"k", b"v"))
    # The loop does not wait for a batch's acknowledgements (guarantees.py): the refusal
    # surfaces at a later turn, and nothing past it is committed before.
    with pytest.raises(DeliveryFailed, match=f"1 to {nowhere} .*not committing offsets"):
        scorer.guarantee.commit([], wait=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            scorer.guarantee.settle()
            time.sleep(0.05)
    assert scorer.registry.get_sample_value("scorer_delivery_failures_total",
                                            {"topic": nowhere}) == 1
