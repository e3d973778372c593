"""The scorer where Apache Kafka enforces what the embedded broker does not: record size limits
(docs/brokers.md quirk 10) and transaction markers in its input (which move the end of a
partition past its last record).

- A record over its topic's `max.message.bytes` (a request, a dead letter, a checkpoint) is
  refused by the broker; the scorer stops with one line naming the topic and the broker's
  reason, commits nothing past the lost output, and once the limit is raised a restart
  produces exactly the uninterrupted run's requests.
- Input written by a transactional producer (markers, an aborted transaction) leaves the
  scorer's lag metric and the group's committed lag at 0 once everything is processed.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from services.streaming.apache_kafka import ApacheKafka
from services.streaming.partitioning import KEYED_PARTITIONER
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import http_get, metric, produce, read_all, wait_for
from tests.integration.scorer_support import (
    ScorerProcess,
    assert_same_requests_as_reference,
    committed,
    consumed,
    private_loop,
    progress,
    reference_requests,
    scorer_env,
    scorer_in_thread,
)
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

INPUT = "al.inference-events.v1"
REQUESTS = "al.annotation-requests.v1"
STATE = "al.scorer-state.v1"
DLQ = "al.inference-events.v1.dlq"


def set_limit(bootstrap: str, topic: str, max_message_bytes: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry("max.message.bytes", str(max_message_bytes),
                        incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(15)


@pytest.mark.parametrize(("output", "guarantee"), [
    (REQUESTS, "at_least_once"), (REQUESTS, "exactly_once"), (DLQ, "at_least_once"),
    (STATE, "at_least_once"), (STATE, "exactly_once"),
])
def test_a_record_over_the_topics_limit_holds_the_scorer_before_its_commit(
        kafka: ApacheKafka, output: str, guarantee: str) -> None:
    """The broker refuses the record; the scorer holds (alive, not ready, the topic and the
    broker's reason named), commits nothing past it, and resumes by itself once the limit is
    raised: the output is the uninterrupted run's and no dead letter is lost."""
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=1)
    topic, group, limited = prefix + INPUT, f"g-{prefix}", prefix + output
    events = inference_events(3000, seed=31, dt=0.1)
    # Invalid records for the dead-letter case: each letter is ~1.4 kB, over 600 bytes. They
    # sit just before offset 1,000, so the turn that holds them is due a checkpoint too (every
    # 1,000 events): its state must not be written past the refused letters.
    bad = [(b"bad-%d" % i, b'{"schema_version": 1, "pad": "' + b"x" * 600 + b'"}')
           for i in range(5)]
    stream = events[:990] + bad + events[990:]
    produce(bootstrap, topic, stream)
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0])
    # Records of the loop are ~1 kB: 600 bytes refuses every one (and every batch of them).
    set_limit(bootstrap, limited, 600)
    env = scorer_env(bootstrap, prefix, group, processing_guarantee=guarantee,
                     instance_id=f"i-{prefix}", batch_size=200, checkpoint_every_events=1000)
    proc = ScorerProcess(env).start()
    try:
        status, why = wait_for(lambda: (lambda r: r if r[0] == 503 and "refused" in r[1]
                                        else None)(readyz(proc)), 120,
                               f"the scorer did not hold while {limited} refused its records; "
                               f"log:\n{proc.tail()}")
        assert limited in why and "too large" in why.lower(), why
        assert proc.alive()
        time.sleep(2)
        assert progress(bootstrap, group, topic, ends) < 1.0, "committed past refused output"
        set_limit(bootstrap, limited, 8 * 1024 * 1024)
        wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 120,
                 f"input not fully committed after the limit was raised; log:\n{proc.tail()}")
        holds = metric(proc.metrics(), "scorer_holds_total")
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    assert holds >= 1
    assert "Traceback" not in proc.tail(400)
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    expected = reference_requests(bootstrap, prefix, partitions=1)
    assert len(expected) > 20
    if guarantee == "exactly_once":
        assert Counter(produced) == Counter(expected)
    else:
        assert_same_requests_as_reference(produced, expected)
    letters = read_all(bootstrap, prefix + DLQ)
    assert sorted({m.key() for m in letters}) == sorted(k for k, _ in bad)  # none lost


def readyz(proc: ScorerProcess) -> tuple[int, str]:
    try:
        return http_get(proc.port, "/readyz")
    except OSError:
        return 0, ""


def produce_in_transactions(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                            per_transaction: int, abort_every: int) -> list[tuple[bytes, bytes]]:
    """Write `records` in transactions of `per_transaction`, aborting every `abort_every`-th
    one; returns the records of the committed transactions."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}",
                         "partitioner": KEYED_PARTITIONER, "allow.auto.create.topics": False})
    producer.init_transactions(30)
    kept = []
    for n, start in enumerate(range(0, len(records), per_transaction)):
        chunk = records[start:start + per_transaction]
        producer.begin_transaction()
        for key, value in chunk:
            producer.produce(topic, value, key)
        if (n + 1) % abort_every == 0:
            producer.flush(30)  # on the broker, then aborted: offsets a reader never sees
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
            kept.extend(chunk)
    return kept


def test_lag_is_zero_when_a_transactional_producer_writes_the_input(kafka: ApacheKafka) -> None:
    """Each transaction ends with a marker, an offset with no record for any reader; the last
    one sits after the partition's last record. The scorer must count the partition as done
    (metric and committed offset at its end), not one behind forever."""
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=2)
    topic, group = prefix + INPUT, f"g-{prefix}"
    kept = produce_in_transactions(bootstrap, topic, inference_events(2000, seed=32),
                                   per_transaction=250, abort_every=3)
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    env = scorer_env(bootstrap, prefix, group, batch_size=300)
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, len(kept)), 60, "input not consumed")

        def caught_up() -> bool:
            return all(scorer.registry.get_sample_value(
                "scorer_consumer_lag_messages", {"partition": str(p)}) == 0 for p in (0, 1))
        wait_for(caught_up, 30, "the lag metric never reached 0")
        wait_for(lambda: committed(bootstrap, group, topic, 2) == ends, 30,
                 f"committed {committed(bootstrap, group, topic, 2)}, partition ends {ends}")
    assert len(kept) < 2000  # the aborted transactions were really there
    assert sum(ends.values()) > 2000  # ... and so were the markers
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert len(produced) > 10
    assert_same_requests_as_reference(produced, reference_requests(bootstrap, prefix, 2))


def set_configs(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in configs.items()]
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(15)


def test_the_state_topic_compacts_and_a_restore_reads_one_record_per_partition(
        kafka: ApacheKafka) -> None:
    """Thousands of checkpoints later, the compacted state topic holds a few records, and a
    restore reads exactly one per partition (the one its committed offset points at). Without
    pointers (offsets committed by hand, as an older version would have), it scans the topic:
    still only the few records compaction left. Either way the restored state decides the rest
    of the stream exactly as an uninterrupted run does."""
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=2)
    topic, group, state = prefix + INPUT, f"g-{prefix}", prefix + STATE
    # Small segments and an eager cleaner, so compaction happens within the test.
    set_configs(bootstrap, state, {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
                                   "min.compaction.lag.ms": "0", "delete.retention.ms": "100"})
    events = inference_events(48_000, seed=33, dt=0.05)
    produce(bootstrap, topic, events[:40_000])
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    # A dynamic member: a stopped one leaves the group at once, so the test can commit by hand.
    # Turns of at most 20 records (batches of 5, up to 4 of them when behind: batching.py).
    env = scorer_env(bootstrap, prefix, group, batch_size=5, checkpoint_every_events=20,
                     static_membership="false")

    def restore_reads() -> float:
        proc = ScorerProcess(env).start()
        proc.wait_ready()
        records = metric(proc.metrics(), "scorer_restore_records_read_total")
        assert proc.stop() == 0, proc.tail()
        return records

    proc = ScorerProcess(env).start()
    proc.wait_ready()
    wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 240,
             f"input not fully committed; log:\n{proc.tail()}")
    written = metric(proc.metrics(), "scorer_checkpoints_total")
    assert proc.stop() == 0, proc.tail()
    assert written >= 1500, f"only {written} checkpoints: not the case under test"

    def compacted() -> int | None:
        left = len(read_all(bootstrap, state, committed_only=False))
        return left if left <= 20 else None
    left = wait_for(compacted, 120, "the state topic was never compacted")
    print(f"\n{written:.0f} checkpoints written, {left} state records left after compaction")

    assert restore_reads() == 2  # one pointed-at record per partition
    # Offsets committed without pointers: the restore must scan, and finds only what is left.
    plain = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "enable.auto.commit": False})
    plain.commit(offsets=[TopicPartition(topic, p, ends[p]) for p in (0, 1)], asynchronous=False)
    plain.close()
    scanned = restore_reads()
    print(f"a restore without pointers read {scanned:.0f} state records")
    assert 2 <= scanned <= 40

    produce(bootstrap, topic, events[40_000:])
    ends = true_end_offsets({"bootstrap.servers": bootstrap}, topic, [0, 1])
    proc = ScorerProcess(env).start()
    proc.wait_ready()
    wait_for(lambda: progress(bootstrap, group, topic, ends) >= 1.0, 120,
             f"the rest not committed; log:\n{proc.tail()}")
    assert proc.stop() == 0, proc.tail()
    produced = [m.value() for m in read_all(bootstrap, prefix + REQUESTS)]
    assert_same_requests_as_reference(produced, reference_requests(bootstrap, prefix, 2))
