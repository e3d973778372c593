"""The scorer under hostile input, on the real broker (issue 13): every kind of input that used to
break something, mixed into a good stream. Nothing is lost (every record is processed or
dead-lettered, once), the scorer stays up within a bounded peak RSS, and it selects exactly what it
selects from the good records alone; plus the broker-side halves of the other items (a changed
partition count, reading a held pick back, the per-partition ceiling, redaction, bounded metric
series)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import orjson
import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions
from prometheus_client import CollectorRegistry

from services.core import SelectorPolicy, SelectorState
from services.scorer import readback, stream_checks
from services.scorer.partition import (
    DeferredPickUnreadable,
    PartitionScorer,
    Record,
    partition_seed,
)
from services.scorer.service import Scorer
from services.streaming.partitioning import KEYED_PARTITIONER
from services.streaming.settings import ScorerSettings
from tests.integration.kafka_support import metric, produce, read_all, scrape, wait_for
from tests.integration.scorer_support import (
    ScorerProcess,
    committed,
    consumed,
    private_loop,
    scorer_env,
)
from tests.synthetic_events import hostile_record, inference_events, with_fields

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

BOMBS = 300  # the case: 300 events of 256 KB worst-case metadata
PARTITIONS = 2


def _hostile(template: bytes) -> list[tuple[str, bytes, bytes | None]]:
    """(expected dead-letter code, key, value) of every hostile kind (two of far timestamps),
    the 256-KB metadata bombs included."""
    kinds = [("far_timestamp", "far-1"), ("far_timestamp", "far-2"), ("duplicate_key", "dup-1"),
             ("class_name_bytes", "bytes-1"), ("deep_metadata", "deep-1"),
             ("score_cells", "cells-1"), ("not_json", "junk-1"), ("tombstone", "tomb-1"),
             ("wrong_type", "type-1")]
    kinds += [("metadata_bomb", f"bomb-{i}") for i in range(BOMBS)]
    out = []
    for kind, asset in kinds:
        code, value = hostile_record(template, kind, asset)
        out.append((code, asset.encode(), value))
    return out


def _produce_values(bootstrap: str, topic: str,
                    records: list[tuple[bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": KEYED_PARTITIONER,
                         "linger.ms": 20, "allow.auto.create.topics": False})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kb / 1024


def _reference(bootstrap: str, topic: str, skip: set[tuple[int, int]]) -> list[bytes]:
    """The requests of the good records alone (same offsets), computed without a broker."""
    by_partition: dict[int, list[Record]] = {}
    for msg in read_all(bootstrap, topic):
        if (msg.partition(), msg.offset()) not in skip:
            by_partition.setdefault(msg.partition(), []).append(
                Record(msg.offset(), msg.key(), msg.value(), msg.timestamp()[1] / 1000.0))
    out: list[bytes] = []
    for p, records in sorted(by_partition.items()):
        records.sort(key=lambda r: r.offset)
        state = SelectorState.create(SelectorPolicy().for_partition(p, PARTITIONS),
                                     partition_seed(0, p))
        scorer = PartitionScorer(topic, p, state, 0, service_version="ref",
                                 fetch={r.offset: r.value for r in records}.get)
        for lo in range(0, len(records), 1000):
            out += [o.value for o in scorer.process(records[lo:lo + 1000]).requests]
    return out


def test_hostile_input_loses_nothing_bounds_memory_and_leaves_selection_alone(
    broker: object,
) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=PARTITIONS)
    topic = prefix + "al.inference-events.v1"
    good = inference_events(6000, seed=13)
    hostile = _hostile(good[1][1])  # good[1]: a distribution (every 7th event is top-1)
    stream: list[tuple[bytes, bytes | None]] = list(good[:2000])
    for i, (_, key, value) in enumerate(hostile):  # spread through the middle of the stream
        stream.append((key, value))
        stream += good[2000 + i * 10:2000 + (i + 1) * 10]
    stream += good[2000 + len(hostile) * 10:]
    _produce_values(bootstrap, topic, stream)
    proc = ScorerProcess(scorer_env(bootstrap, prefix, f"g-{prefix}")).start()
    try:
        proc.wait_ready(60)
        wait_for(lambda: metric(proc.metrics(), "scorer_events_consumed_total") >= len(stream),
                 120, "the stream was not consumed")
        samples = proc.metrics()
        peak = _peak_rss_mib(proc.proc.pid)  # type: ignore[union-attr]
        healthy = proc._ready()
    finally:
        code = proc.stop()
    print(f"\nscorer peak RSS {peak:.0f} MiB over {len(stream)} records "
          f"({BOMBS} of 256 KB worst-case metadata)")
    assert code == 0 and healthy, proc.tail()
    assert peak < 1024, f"peak RSS {peak:.0f} MiB"

    # Nothing lost: each hostile record dead-lettered once, with its reason; no good one.
    letters = [orjson.loads(m.value()) for m in read_all(bootstrap, topic + ".dlq")]
    keys = [m.key() for m in read_all(bootstrap, topic + ".dlq")]
    expected = Counter(code for code, _, _ in hostile)
    assert Counter(letter["code"] for letter in letters) == expected
    assert sorted(k for k in keys) == sorted(key for _, key, _ in hostile)
    coords = {(x["source"]["partition"], x["source"]["offset"]) for x in letters}
    assert len(coords) == len(letters) == len(hostile)
    consumed_total = metric(samples, "scorer_events_consumed_total")
    invalid = sum(v for (name, _), v in samples.items() if name == "scorer_events_invalid_total")
    assert consumed_total == len(stream) and invalid == len(hostile)
    # consumed = processed + dead-lettered: every good record reached the selector.
    inputs = read_all(bootstrap, topic)
    assert len(inputs) == len(stream)
    assert len(inputs) - len(coords) == len(good)

    # Selection unharmed: exactly the requests of the good records alone, each id once.
    requests = [m.value() for m in read_all(bootstrap, prefix + "al.annotation-requests.v1")]
    ids = [orjson.loads(v)["request_id"] for v in requests]
    assert len(ids) == len(set(ids)) > 50
    reference = _reference(bootstrap, topic, coords)
    assert sorted(requests) == sorted(reference)


# -- the broker-side halves of the other items -------------------------------------------------


@contextmanager
def _running(env: dict[str, str]) -> Iterator[tuple[Scorer, list[object]]]:
    """A Scorer on a thread; yields it and a list that gets run()'s return value or error."""
    scorer = Scorer(ScorerSettings.from_env(env), registry=CollectorRegistry())
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(scorer.run())
        except BaseException as exc:  # looked at by the test
            outcome.append(exc)

    thread = threading.Thread(target=run, name="scorer", daemon=True)
    thread.start()
    try:
        yield scorer, outcome
    finally:
        scorer.stop()
        thread.join(60)
    assert not thread.is_alive(), "scorer did not stop within 60 s"


def _to_partition(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=f"k{i}".encode(), partition=partition)
    assert producer.flush(15) == 0


def test_a_new_partition_stops_the_scorer_gracefully_to_divide_the_budget_anew(
    broker: object,
) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic = prefix + "al.inference-events.v1"
    produce(bootstrap, topic, inference_events(200, seed=21))
    checks = mock.patch.object(stream_checks, "PARTITIONS_CHECK_S", 2.0)  # not 30 s here
    with checks, _running(scorer_env(bootstrap, prefix, f"g-{prefix}")) as (scorer, outcome):
        wait_for(lambda: consumed(scorer, 200), 60, "not consumed")
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(30)
        _to_partition(bootstrap, topic, 2, [v for _, v in inference_events(20, seed=22)])
        wait_for(lambda: outcome, 90, "the scorer did not notice the new partition")
    assert outcome == [3]
    assert scorer.registry.get_sample_value("scorer_partition_count_changes_total") == 1
    assert scorer.registry.get_sample_value("scorer_input_partitions") == 3
    done = committed(bootstrap, f"g-{prefix}", topic, 3)
    ends = Counter(m.partition() for m in read_all(bootstrap, topic))
    assert done[0] == ends[0] and done[1] == ends[1]  # the graceful stop committed them
    assert done[2] <= 0  # nothing of the new partition was processed under the old division


def test_a_held_pick_that_cannot_be_read_back_raises_and_a_removed_one_is_gone(
    broker: object,
) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic = prefix + "al.inference-events.v1"
    values = [v for _, v in inference_events(10, seed=23)]
    _to_partition(bootstrap, topic, 0, values)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 5)]).values():
        future.result(30)
    scorer = Scorer(ScorerSettings.from_env(scorer_env(bootstrap, prefix, f"g-{prefix}")),
                    registry=CollectorRegistry())
    try:
        fetch = scorer.readback.fetch_from(0)
        assert fetch(7) == values[7]
        started = time.monotonic()
        assert fetch(2) is None  # below the log start: removed, gone for good
        assert time.monotonic() - started < 10
        with mock.patch.object(readback, "FETCH_TIMEOUT_S", 1.0):
            with pytest.raises(DeferredPickUnreadable, match="not committing"):
                scorer.readback.fetch_from(7)(0)  # a partition that does not exist: never readable
        failures = scorer.registry.get_sample_value("scorer_deferred_pick_read_failures_total")
        assert failures == readback.FETCH_ATTEMPTS
    finally:
        scorer.consumer.close()
        scorer.readback.close()
        scorer.feedback.close()


def test_a_flooded_partition_stops_alone_before_its_commit(broker: object) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic = prefix + "al.inference-events.v1"
    _to_partition(bootstrap, topic, 0, [b'{"not": "an event"}'] * 1200)
    _to_partition(bootstrap, topic, 1, [v for _, v in inference_events(1500, seed=24)])
    with _running(scorer_env(bootstrap, prefix, f"g-{prefix}")) as (scorer, outcome):
        wait_for(lambda: committed(bootstrap, f"g-{prefix}", topic, 2)[1] == 1500, 60,
                 "partition 1 was not committed")
        wait_for(lambda: 0 not in scorer.partitions, 60, "partition 0 was not stopped")
        samples = scrape(scorer.ops.port)
        assert not outcome, outcome  # still running
        assert 0 not in scorer.partitions and 1 in scorer.partitions
    assert metric(samples, "scorer_halted_partitions") == 1
    assert metric(samples, "scorer_dead_letter_ceiling_trips_total", partition="0") == 1
    # The batch that crossed the ceiling was neither committed nor produced; what was
    # committed before it, while its window was filling, was dead-lettered.
    done = max(0, committed(bootstrap, f"g-{prefix}", topic, 2)[0])
    assert done < 1200 and len(read_all(bootstrap, topic + ".dlq")) == done


def test_redacted_dead_letters_carry_no_payload(broker: object) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic = prefix + "al.inference-events.v1"
    secret = b'{"asset_id": "patient-0042.dcm", "timestamp": "yesterday"}'
    produce(bootstrap, topic, [*inference_events(100, seed=25), (b"patient-0042", secret)])
    env = scorer_env(bootstrap, prefix, f"g-{prefix}", dead_letter_redact="true")
    with _running(env) as (scorer, _):
        wait_for(lambda: consumed(scorer, 101), 60, "not consumed")
    letters = read_all(bootstrap, topic + ".dlq")
    assert len(letters) == 1
    assert b"patient" not in letters[0].value() and b"patient" not in (letters[0].key() or b"")
    letter = orjson.loads(letters[0].value())
    assert letter["redacted"] and letter["original_size"] == len(secret)


def test_retired_model_versions_leave_the_threshold_metric(broker: object) -> None:
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=2)
    topic = prefix + "al.inference-events.v1"
    records = []
    for v in range(6):  # six versions in turn; the state keeps two (LRU)
        for key, value in inference_events(60, seed=30 + v, t0=1.7e9 + v * 100):
            asset = key.decode() + f"-v{v}"
            records.append((key, with_fields(value, asset, model_version=f"v{v}")))
    produce(bootstrap, topic, records)
    env = scorer_env(bootstrap, prefix, f"g-{prefix}",
                     policy='{"max_model_versions": 2}')
    with _running(env) as (scorer, _):
        wait_for(lambda: consumed(scorer, len(records)), 60, "not consumed")
        wait_for(lambda: {dict(labels)["model_version"] for (name, labels) in
                          scrape(scorer.ops.port) if name == "scorer_threshold_ratio"}
                 <= {"v4", "v5"}, 30, "retired versions' threshold series remain")
