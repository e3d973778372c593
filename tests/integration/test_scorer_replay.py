"""The scorer's output is the in-process reference's, in one run, across SIGKILLs and when an
instance is lost: the request set stays exactly that of an uninterrupted run, and every
duplicate is byte-identical to its twin."""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
import pytest

from services.streaming.events import decode_annotation_request
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import http_get, metric, produce, read_all, wait_for
from tests.integration.scorer_support import (
    ScorerProcess,
    assert_same_requests_as_reference,
    consumed,
    private_loop,
    progress,
    reference_requests,
    reference_run,
    scorer_env,
    scorer_in_thread,
)
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

INPUT = "al.inference-events.v1"
REQUESTS = "al.annotation-requests.v1"


def test_requests_equal_what_the_core_selector_decides_in_process(broker: object) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    events = inference_events(3000, seed=1)
    env = scorer_env(bootstrap, prefix, f"g-{prefix}", batch_size=256)
    produce(bootstrap, prefix + "al.inference-events.v1", events[:1500])
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, 1500), 60, "first half not consumed")
        produce(bootstrap, prefix + "al.inference-events.v1", events[1500:])
        wait_for(lambda: consumed(scorer, 3000), 60, "second half not consumed")
    produced = [m.value() for m in read_all(bootstrap, prefix + "al.annotation-requests.v1")]
    expected, states = reference_run(bootstrap, prefix, partitions=2)
    assert len(expected) > 20, "the reference selected too little to compare anything"
    assert Counter(produced) == Counter(expected)
    # Per-class confidence gauges: the reference's final class stats, over both partitions.
    stats = [s.class_stats("digits", "v1") for s in states.values()]
    for name in stats[0]:
        count = sum(st[name]["count"] for st in stats)
        mean = sum(st[name]["count"] * st[name]["mean"] for st in stats) / count
        labels = {"model_id": "digits", "model_version": "v1", "class": name}
        got = scorer.registry.get_sample_value("scorer_class_confidence_mean_ratio", labels)
        assert got == pytest.approx(mean, rel=1e-12), name
        ready = [st[name]["threshold"] for st in stats if st[name]["threshold"] is not None]
        got = scorer.registry.get_sample_value("scorer_class_confidence_threshold_ratio", labels)
        assert got == (pytest.approx(sum(ready) / len(ready), rel=1e-12) if ready else None), name
    assert any(st[n]["threshold"] is not None for st in stats for n in st), "no class ready"
    for value in produced:
        request = decode_annotation_request(value)
        assert request.source.topic == prefix + "al.inference-events.v1"
    strategies = Counter(orjson.loads(v)["reason"]["strategy"] for v in produced)
    assert strategies["reservoir"] > 0 and len(strategies) >= 2, strategies


def _finish(proc: ScorerProcess, bootstrap: str, group: str, topic: str,
            ends: dict[int, int]) -> None:
    wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 120,
             f"input not fully committed; log:\n{proc.tail()}")
    assert proc.stop() == 0, proc.tail()


def test_sigkill_three_times_during_a_50k_event_run(broker: object) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic, group = prefix + INPUT, f"g-{prefix}"
    produce(bootstrap, topic, inference_events(50_000, seed=3, dt=0.05))
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    assert sum(ends.values()) == 50_000
    env = scorer_env(bootstrap, prefix, group, batch_size=200, checkpoint_every_events=3000)
    kill_at = sorted(random.Random(7).uniform(0.1, 0.85) for _ in range(3))
    for fraction in kill_at:
        proc = ScorerProcess(env).start()
        proc.wait_ready()
        wait_for(lambda f=fraction: progress(bootstrap, group, topic, ends) >= f, 120,
                 f"no progress to {fraction:.0%}; log:\n{proc.tail()}")
        proc.kill()
    proc = ScorerProcess(env).start()
    proc.wait_ready()
    _finish(proc, bootstrap, group, topic, ends)
    assert read_all(bootstrap, topic + ".dlq") == []
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    expected = reference_requests(bootstrap, prefix, partitions=2)
    assert len(expected) > 100
    assert_same_requests_as_reference(produced, expected)


def test_a_crash_before_the_first_checkpoint_rebuilds_the_state_from_the_start(
        broker: object) -> None:
    """No checkpoint was ever written, but offsets were committed: the restarted scorer must
    replay the partition from its first record (without output) to rebuild the state, not start
    a fresh state at the committed offset (which decides differently from then on)."""
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic, group = prefix + INPUT, f"g-{prefix}"
    events = inference_events(6000, seed=8, dt=0.1)
    produce(bootstrap, topic, events[:3000])
    first_half = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    env = scorer_env(bootstrap, prefix, group, batch_size=100,
                     checkpoint_every_events=10**9, checkpoint_every_s=10**6)
    proc = ScorerProcess(env).start()
    proc.wait_ready()
    wait_for(lambda: progress(bootstrap, group, topic, first_half) >= 1.0, 120,
             f"first half not committed; log:\n{proc.tail()}")
    proc.kill()  # both partitions committed, no checkpoint: the case under test
    states = read_all(bootstrap, prefix + "al.scorer-state.v1")
    assert not [m for m in states if b"scorer-checkpoint" in (m.value() or b"")], \
        "a checkpoint was written before the kill: the case under test did not happen"
    produce(bootstrap, topic, events[3000:])
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    proc = ScorerProcess(env).start()
    proc.wait_ready()
    _finish(proc, bootstrap, group, topic, ends)
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    expected = reference_requests(bootstrap, prefix, partitions=2)
    assert len(expected) > 50
    assert_same_requests_as_reference(produced, expected)


def test_a_killed_instance_hands_its_partitions_and_state_to_the_survivor(broker: object) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=4)
    topic, group = prefix + INPUT, f"g-{prefix}"
    produce(bootstrap, topic, inference_events(20_000, seed=4, dt=0.1))
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1, 2, 3])
    env = scorer_env(bootstrap, prefix, group, batch_size=100, checkpoint_every_events=1000)
    # Two instances: two ids (one id is one static member: a second would replace the first).
    first = ScorerProcess({**env, "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"a-{prefix}"}).start()
    second = ScorerProcess({**env, "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"b-{prefix}"}).start()
    try:
        for proc in (first, second):
            proc.wait_ready()
        wait_for(lambda: all(metric(p.metrics(), "scorer_assigned_partitions") == 2
                             for p in (first, second)), 60, "partitions not split 2/2")
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 0.3, 120, "no progress")
        first.kill()
        wait_for(lambda: metric(second.metrics(), "scorer_assigned_partitions") == 4, 60,
                 f"survivor did not take over; log:\n{second.tail()}")
        _finish(second, bootstrap, group, topic, ends)
    finally:
        first.stop()
        second.stop()
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    expected = reference_requests(bootstrap, prefix, partitions=4)
    assert_same_requests_as_reference(produced, expected)


def test_exactly_once_mode_commits_requests_and_offsets_in_transactions(broker: object) -> None:
    """The transactional path runs end to end and produces the reference output. (What it adds
    over at_least_once, hiding an aborted batch from read_committed readers, cannot be shown on
    the embedded broker: docs/brokers.md, quirk 3.)"""
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic, group = prefix + INPUT, f"g-{prefix}"
    produce(bootstrap, topic, inference_events(2000, seed=8))
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    env = scorer_env(bootstrap, prefix, group, processing_guarantee="exactly_once",
                     instance_id=f"i-{prefix}", checkpoint_every_events=500)
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, 2000), 60, "events not consumed")
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 30,
                 "offsets not committed by the transactions")
        # A batch's transaction commits its offsets before the loop turn checkpoints (its own
        # transaction) and counts it: the count is waited for, not read at the commit.
        wait_for(lambda: (scorer.registry.get_sample_value("scorer_checkpoints_total") or 0) >= 2,
                 30, "fewer than 2 checkpoints written")
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert Counter(produced) == Counter(reference_requests(bootstrap, prefix, partitions=2))


def test_records_the_broker_refuses_hold_the_scorer_until_it_can_deliver_them(
        broker: object) -> None:
    """A refused record leaves librdkafka's queue with only an error report: `flush()` returns 0
    all the same. Deleting the requests topic mid-run makes every request refused; the scorer
    must hold (alive, not ready, the topic named) without committing past them, and once the
    topic is back resume by itself: the requests from before the deletion plus those after are
    exactly the uninterrupted run's."""
    from confluent_kafka.admin import AdminClient

    from services.streaming.topics import create_topics, loop_topics

    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    prefix = private_loop(bootstrap, partitions=1)
    topic, group, requests = prefix + INPUT, f"g-{prefix}", prefix + REQUESTS
    events = inference_events(4000, seed=11, dt=0.1)
    produce(bootstrap, topic, events[:2000])
    first_half = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0])
    env = scorer_env(bootstrap, prefix, group, batch_size=200)
    # The embedded broker still acknowledges (and drops) records for a deleted topic from a
    # producer that has not refreshed its metadata (docs/brokers.md): refresh often, so the
    # scorer's producer learns of the deletion and the records are refused, as on Apache Kafka.
    env["ACTIVE_STREAM_KAFKA_TOPIC_METADATA_REFRESH_INTERVAL_MS"] = "300"
    env["ACTIVE_STREAM_KAFKA_TOPIC_METADATA_PROPAGATION_MAX_MS"] = "2000"
    proc = ScorerProcess(env).start()
    proc.wait_ready()
    wait_for(lambda: progress(bootstrap, group, topic, first_half) >= 1.0, 120,
             f"first half not committed; log:\n{proc.tail()}")
    before = [m.value() for m in read_all(bootstrap, requests)]
    assert before, "nothing selected before the deletion: the case under test did not happen"
    admin.delete_topics([requests])[requests].result(15)
    wait_for(lambda: requests not in admin.list_topics(timeout=10).topics, 30, "not deleted")
    time.sleep(3)  # ten metadata refreshes of the scorer's producer
    produce(bootstrap, topic, events[2000:])
    status, why = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
        http_get(proc.port, "/readyz")), 120,
        f"the scorer stayed ready while its requests were refused; log:\n{proc.tail()}")
    assert "the broker refused records" in why and requests in why, why
    assert proc.alive(), proc.tail()
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0])
    time.sleep(2)
    assert progress(bootstrap, group, topic, ends) < 1.0, "offsets committed past refused output"

    create_topics(admin, [s for s in loop_topics(1, prefix=prefix) if s.name == requests])
    wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 120,
             f"the scorer did not resume by itself; log:\n{proc.tail()}")
    wait_for(lambda: http_get(proc.port, "/readyz")[0] == 200, 30, "not ready again")
    assert proc.stop() == 0, proc.tail()
    tail = proc.tail(400)
    assert "Traceback" not in tail and "CONFWARN" not in tail, tail
    after = [m.value() for m in read_all(bootstrap, requests)]
    expected = reference_requests(bootstrap, prefix, partitions=1)
    assert len(expected) > len(before) + 10
    assert_same_requests_as_reference(before + after, expected)


def test_feedback_that_arrived_during_the_crashed_batch_does_not_change_its_replay(
        broker: object) -> None:
    """The crash this covers: an instance consumed a batch past its last commit, produced the
    batch's requests, and died before committing; class feedback arrived meanwhile, so it never
    applied it. Its successor reads that feedback at once, but must decide the replayed batch as
    the crashed instance did, without it: the successor's first requests must be byte-identical
    to the crashed batch's. The crash is laid out by hand: a checkpoint and a commit at offset
    1,000 (the reference PartitionScorer's state there), the feedback published, and the batch
    the crashed instance was in (records 1,000-1,499) computed by the same reference."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from services.core import SelectorPolicy, SelectorState
    from services.scorer.partition import PartitionScorer, Record, partition_seed
    from services.streaming.events import encode_event

    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=1)
    topic, group = prefix + INPUT, f"g-{prefix}"
    from services.scorer.batching import DRAIN_BATCHES
    from services.scorer.guarantees import MAX_UNITS_OUTSTANDING

    batch = 500
    # The successor holds the feedback back for what the crashed instance may have processed
    # past its commit (restore.py): the stream runs to where it applies.
    held = (MAX_UNITS_OUTSTANDING + 1) * DRAIN_BATCHES * batch
    produce(bootstrap, topic, inference_events(1000 + held, seed=12, dt=0.1))
    records = [Record(m.offset(), m.key(), m.value(), m.timestamp()[1] / 1000.0)
               for m in read_all(bootstrap, topic)]
    state = SelectorState.create(SelectorPolicy().scaled(1.0), partition_seed(0, 0))
    crashed = PartitionScorer(topic, 0, state, 0, service_version="crashed",
                              fetch={r.offset: r.value for r in records}.get)
    crashed.process(records[:1000])
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(prefix + "al.scorer-state.v1", crashed.checkpoint(),
                     f"{group}/{topic}/0".encode())
    assert producer.flush(15) == 0
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                          "enable.auto.commit": False})
    committer.commit(offsets=[TopicPartition(topic, 0, 1000)], asynchronous=False)
    committer.close()
    in_flight = [o.value for o in crashed.process(records[1000:1000 + batch]).requests]
    assert len(in_flight) >= 5, "the crashed batch selected too little to compare"
    # Feedback that moves the budget to the easy classes: it changes what a window grants.
    weights = {f"c{i}": (0.2 if i < 3 else 5.0) for i in range(10)}  # the clip range's ends
    produce(bootstrap, prefix + "al.class-feedback.v1", [(b"digits", encode_event({
        "schema_version": 1, "model_id": "digits", "updated_at": 1_700_000_000.0,
        "classes": {name: {"labels_total": 40, "labels_since_trigger": 5, "agreement": 0.5,
                           "weight": w} for name, w in weights.items()}}))])

    env = scorer_env(bootstrap, prefix, group, batch_size=batch)
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, 2000), 60, "input not consumed")
        wait_for(lambda: scorer.registry.get_sample_value(
            "scorer_class_weight", {"model_id": "digits", "class": "c0"}) == 0.2, 30,
            "the feedback was never applied")
        applied = scorer.partitions[0].live.state.class_weights("digits")
    assert {name: applied[name] for name in weights} == weights
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert produced[:len(in_flight)] == in_flight
