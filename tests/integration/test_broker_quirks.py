"""The embedded broker's measured quirks (docs/brokers.md), one test each.

Every test asserts the CURRENT, non-Kafka behaviour of Tansu 0.6.0 and says in its docstring what
Apache Kafka does instead. When a newer broker fixes a quirk its test fails: that is the signal to
revisit the workaround in docs/brokers.md, then update or delete the test.

Consumers use `assign()` (no group join, no waiting) unless the group itself is the subject, and
read until librdkafka's end-of-partition event, which this broker reports at the true end.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownError
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec

from services.streaming.embedded import EmbeddedBroker
from tests.conftest import TEST_GROUP_TIMINGS
from tests.integration.end_offsets import true_end_offsets

pytestmark = [pytest.mark.broker, pytest.mark.quirk]


@pytest.fixture(scope="session")
def broker(tansu: EmbeddedBroker) -> EmbeddedBroker:
    """Every test here is about the embedded broker, whichever broker the suite runs on."""
    return tansu

# Generous upper bound for anything that should take milliseconds on loopback; only a broken
# broker or a starved CI machine gets near it, and then the test fails instead of hanging.
IO_TIMEOUT_S = 15.0


# --- helpers ------------------------------------------------------------------------------------

def _admin(broker: EmbeddedBroker) -> AdminClient:
    """A fresh admin client. Keep it in a local while its futures are pending (one collected
    mid-request fails the request with _DESTROY) and let it go when done: it has no close(),
    and a client still connected when the session ends can delay the broker's exit by ~5 s
    (docs/brokers.md, "Shutdown")."""
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def _create(
    broker: EmbeddedBroker, name: str, partitions: int = 1,
    config: Mapping[str, str] | None = None,
) -> None:
    admin = _admin(broker)
    topic = NewTopic(name, partitions, 1, config=dict(config or {}))
    admin.create_topics([topic])[name].result(IO_TIMEOUT_S)


def _producer(broker: EmbeddedBroker, **extra: Any) -> Producer:
    # A long linger keeps everything produced before flush() in one batch per partition (flush
    # sends at once, it does not wait for linger), so the batch layout of each test is exact.
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1000,
                     "allow.auto.create.topics": False, **extra})


def _flush(producer: Producer) -> None:
    assert producer.flush(IO_TIMEOUT_S) == 0, "messages still queued after flush"


def _consumer(broker: EmbeddedBroker, **extra: Any) -> Consumer:
    # EOF is reported after an empty fetch, which the broker holds for fetch.wait.max.ms
    # (500 ms by default): 100 ms keeps each read-to-end short without busy polling.
    return Consumer({"bootstrap.servers": broker.bootstrap,
                     "group.id": f"quirks.{uuid.uuid4().hex[:8]}", "fetch.wait.max.ms": 100,
                     "enable.auto.commit": False, "enable.partition.eof": True, **extra})


def _read_to_eof(
    consumer: Consumer, starts: list[TopicPartition]
) -> tuple[list[Message], dict[int, int]]:
    """Assign `starts` and read until each partition reports EOF.

    Returns (records, {partition: offset of its EOF event})."""
    consumer.assign(starts)
    records: list[Message] = []
    eof: dict[int, int] = {}
    deadline = time.monotonic() + IO_TIMEOUT_S
    while len(eof) < len(starts):
        assert time.monotonic() < deadline, f"no EOF for {starts} after {len(records)} records"
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        err = msg.error()
        if err is None:
            records.append(msg)
        elif err.code() == KafkaError._PARTITION_EOF:
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            eof[partition] = offset
        else:
            raise KafkaException(err)
    return records, eof


def _read_topic(broker: EmbeddedBroker, topic: str, **extra: Any) -> list[Message]:
    with _consumer(broker, **extra) as consumer:
        records, _ = _read_to_eof(consumer, [TopicPartition(topic, 0, OFFSET_BEGINNING)])
    return records


def _partition_count(broker: EmbeddedBroker, topic: str) -> int | None:
    meta = _admin(broker).list_topics(timeout=IO_TIMEOUT_S).topics.get(topic)
    return None if meta is None else len(meta.partitions)


# --- 1. group join time ---------------------------------------------------------------------------

def _join_seconds(broker: EmbeddedBroker, topic: str, session_ms: int) -> float:
    """Seconds from subscribe() to the first assignment of a new one-member group."""
    joined: list[float] = []
    consumer = Consumer({"bootstrap.servers": broker.bootstrap,
                         "group.id": f"{topic}.session-{session_ms}",
                         "session.timeout.ms": session_ms, "heartbeat.interval.ms": 1000})
    try:
        start = time.monotonic()
        consumer.subscribe([topic], on_assign=lambda c, ps: joined.append(time.monotonic() - start))
        deadline = start + 2 * session_ms / 1000 + IO_TIMEOUT_S
        while not joined and time.monotonic() < deadline:
            consumer.poll(0.05)
    finally:
        consumer.close()
    assert joined, f"no assignment within {deadline - start:.0f}s (session {session_ms} ms)"
    return joined[0]


def test_group_join_takes_about_half_the_session_timeout(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: a new group's first join waits group.initial.rebalance.delay.ms (broker config,
    3 s by default, often 0 in dev setups) whatever the client's session.timeout.ms, so both
    joins would take about the same time. Tansu: join ~= session.timeout.ms / 2 (measured 3.0 s
    and 6.0 s), which is why tests use a 6 s session instead of the 45 s default (~23 s joins)."""
    _create(broker, unique_topic)
    short = _join_seconds(broker, unique_topic, 6000)
    long = _join_seconds(broker, unique_topic, 12000)
    # Wide bands around session/2; the claim under test is the proportionality.
    assert 0.25 * 6 <= short <= 0.9 * 6, f"join with 6 s session took {short:.2f}s"
    assert 0.25 * 12 <= long <= 0.9 * 12, f"join with 12 s session took {long:.2f}s"
    assert long - short >= 1.5, f"joins {short:.2f}s vs {long:.2f}s do not scale with session"


# --- 2. high watermark ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batched_topic(broker: EmbeddedBroker) -> Iterator[str]:
    """3 partitions: [0] one 25-record batch; [1] empty; [2] a 10-record then a 7-record batch."""
    topic = f"test.quirks.batched.{uuid.uuid4().hex[:8]}"
    _create(broker, topic, 3)
    with _producer(broker) as producer:
        for i in range(10):
            producer.produce(topic, b"first-%d" % i, partition=2)
        _flush(producer)
        for i in range(7):
            producer.produce(topic, b"second-%d" % i, partition=2)
        for i in range(25):
            producer.produce(topic, b"v%d" % i, b"k%d" % i, partition=0)
        _flush(producer)
    yield topic


def test_high_watermark_is_first_offset_of_last_batch_plus_one(
    broker: EmbeddedBroker, batched_topic: str
) -> None:
    """Kafka: the high watermark (ListOffsets latest) is the offset after the last record: 25,
    0 and 17 here. Tansu: the first offset of the last batch + 1: 1, 0 and 11."""
    with _consumer(broker) as consumer:
        reported = {p: consumer.get_watermark_offsets(
            TopicPartition(batched_topic, p), timeout=IO_TIMEOUT_S)[1] for p in range(3)}
        records, eof = _read_to_eof(
            consumer, [TopicPartition(batched_topic, p, OFFSET_BEGINNING) for p in range(3)])
    assert reported == {0: 1, 1: 0, 2: 11}
    counts = {p: sum(1 for m in records if m.partition() == p) for p in range(3)}
    assert counts == {0: 25, 1: 0, 2: 17}
    assert eof == {0: 25, 1: 0, 2: 17}  # end-of-partition fires at the true end

    admin = _admin(broker)
    admin_end = admin.list_offsets(
        {TopicPartition(batched_topic, 0): OffsetSpec.latest()}, request_timeout=IO_TIMEOUT_S)
    assert admin_end[TopicPartition(batched_topic, 0)].result(IO_TIMEOUT_S).offset == 1


def test_fetching_from_reported_end_minus_one_reaches_the_true_end(
    broker: EmbeddedBroker, batched_topic: str
) -> None:
    """Kafka: a fetch from HW-1 returns the last record, so the end is HW. Tansu: it returns the
    whole last batch, which ends at the true end; `true_end_offsets` relies on that and is right
    on both."""
    with _consumer(broker) as consumer:
        starts = []
        for p in (0, 2):
            _, high = consumer.get_watermark_offsets(
                TopicPartition(batched_topic, p), timeout=IO_TIMEOUT_S)
            starts.append(TopicPartition(batched_topic, p, high - 1))
        records, eof = _read_to_eof(consumer, starts)
    assert [tp.offset for tp in starts] == [0, 10]
    assert eof == {0: 25, 2: 17}
    assert sorted((m.partition(), m.offset()) for m in records) == (
        [(0, o) for o in range(25)] + [(2, o) for o in range(10, 17)])

    ends = true_end_offsets({"bootstrap.servers": broker.bootstrap}, batched_topic, range(3))
    assert ends == {0: 25, 1: 0, 2: 17}


def test_fetch_responses_carry_the_true_high_watermark(
    broker: EmbeddedBroker, batched_topic: str
) -> None:
    """Kafka: the queried and the fetch-reported high watermark agree. Tansu: only ListOffsets
    is wrong; a consumer that has fetched caches the right one (librdkafka's statistics
    `hi_offset` / `consumer_lag` come from the same fetch responses)."""
    partition = TopicPartition(batched_topic, 0)
    with _consumer(broker) as consumer:
        _read_to_eof(consumer, [TopicPartition(batched_topic, 0, OFFSET_BEGINNING)])
        cached = consumer.get_watermark_offsets(partition, cached=True)
        queried = consumer.get_watermark_offsets(partition, timeout=IO_TIMEOUT_S)
    assert cached == (0, 25)
    assert queried == (0, 1)


def test_lag_from_the_reported_high_watermark_goes_negative(
    broker: EmbeddedBroker, batched_topic: str
) -> None:
    """Kafka: lag = HW - committed is 0 for a group that consumed everything. Tansu: a group
    that committed 25 sees a reported HW of 1, lag -24; it still resumes at 25 (no reset)."""
    partition = TopicPartition(batched_topic, 0)
    with _consumer(broker) as consumer:
        _read_to_eof(consumer, [TopicPartition(batched_topic, 0, OFFSET_BEGINNING)])
        consumer.commit(offsets=[TopicPartition(batched_topic, 0, 25)], asynchronous=False)
        committed = consumer.committed([partition], timeout=IO_TIMEOUT_S)[0].offset
        _, high = consumer.get_watermark_offsets(partition, timeout=IO_TIMEOUT_S)
        resumed, eof = _read_to_eof(consumer, [partition])  # no offset: the committed one
    assert (committed, high, high - committed) == (25, 1, -24)
    assert resumed == [] and eof == {0: 25}


def test_a_new_group_reading_from_latest_rereads_the_tail_of_the_last_batch(
    broker: EmbeddedBroker, batched_topic: str
) -> None:
    """Kafka: a group with no committed offset and auto.offset.reset=latest starts at the end and
    reads nothing old. Tansu: it starts at the reported HW (1) and re-reads offsets 1..24."""
    with _consumer(broker, **{"auto.offset.reset": "latest"}) as consumer:
        records, eof = _read_to_eof(consumer, [TopicPartition(batched_topic, 0)])
        with _consumer(broker) as other:
            explicit, _ = _read_to_eof(other, [TopicPartition(batched_topic, 0, OFFSET_END)])
    assert [m.offset() for m in records] == list(range(1, 25)) and eof == {0: 25}
    assert [m.offset() for m in explicit] == list(range(1, 25))


# --- 3. aborted transactions ----------------------------------------------------------------------

def test_aborted_transaction_is_visible_to_read_committed_readers(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: a read_committed consumer skips aborted records (the fetch response lists aborted
    transactions) and sees only the 3 committed ones. Tansu: it sees all 10 aborted ones too."""
    _create(broker, unique_topic)
    with _producer(broker, **{"transactional.id": f"{unique_topic}.txn"}) as producer:
        producer.init_transactions(IO_TIMEOUT_S)
        producer.begin_transaction()
        for i in range(10):
            producer.produce(unique_topic, b"aborted-%d" % i, partition=0)
        _flush(producer)  # on the broker before the abort (abort purges what is still queued)
        producer.abort_transaction(IO_TIMEOUT_S)
        producer.begin_transaction()
        for i in range(3):
            producer.produce(unique_topic, b"committed-%d" % i, partition=0)
        producer.commit_transaction(IO_TIMEOUT_S)
    seen = [m.value() for m in _read_topic(broker, unique_topic,
                                           **{"isolation.level": "read_committed"})]
    assert seen == [b"aborted-%d" % i for i in range(10)] + [b"committed-%d" % i for i in range(3)]


# --- 4. compaction and retention ------------------------------------------------------------------

def test_compaction_and_retention_settings_are_accepted_but_nothing_is_removed(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: the log cleaner keeps only the newest value per key of a compacted topic, and
    retention deletes records older than retention.ms, both in closed segments and on the
    cleaner's schedule (log.cleaner.backoff.ms 15 s, log.retention.check.interval.ms 5 min), so
    this short test cannot catch a fix by itself: test_compacted_topic_accepts_records_without
    _a_key is the quick tripwire. Tansu: the configs are stored and echoed, nothing is ever
    removed (the research saw 10,002 of 10,002 records after 70 s)."""
    compacted, expiring = f"{unique_topic}.compact", f"{unique_topic}.expire"
    eager = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"}
    _create(broker, compacted, config={"cleanup.policy": "compact", "delete.retention.ms": "100",
                                       **eager})
    _create(broker, expiring, config={"cleanup.policy": "delete", "retention.ms": "100", **eager})
    with _producer(broker) as producer:
        for i in range(50):
            producer.produce(compacted, b"%d" % i, b"same-key", partition=0)
            producer.produce(expiring, b"%d" % i, partition=0)
        _flush(producer)
    time.sleep(3)  # 30x retention.ms; long enough to show the settings do not act at once

    admin = _admin(broker)
    policy = admin.describe_configs([ConfigResource("topic", compacted)])
    entries = next(iter(policy.values())).result(IO_TIMEOUT_S)
    assert entries["cleanup.policy"].value == "compact"
    assert [m.value() for m in _read_topic(broker, compacted)] == [b"%d" % i for i in range(50)]
    assert len(_read_topic(broker, expiring)) == 50


def test_compacted_topic_accepts_records_without_a_key(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: a compacted topic rejects a record with a null key (INVALID_RECORD, "Compacted
    topic cannot accept message without key"). Tansu: it is stored and read back."""
    _create(broker, unique_topic, config={"cleanup.policy": "compact"})
    reports: list[KafkaError | None] = []
    with _producer(broker) as producer:
        producer.produce(unique_topic, b"no key", partition=0,
                         on_delivery=lambda err, msg: reports.append(err))
        _flush(producer)
    assert reports == [None]
    assert [(m.key(), m.value()) for m in _read_topic(broker, unique_topic)] == [(None, b"no key")]


def test_describe_configs_returns_only_explicitly_set_keys(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: describe_configs on a topic lists every topic config, defaults included (dozens).
    Tansu: only the keys given at creation; a default such as retention.ms is absent."""
    _create(broker, unique_topic, config={"cleanup.policy": "compact"})
    admin = _admin(broker)
    result = admin.describe_configs([ConfigResource("topic", unique_topic)])
    entries = next(iter(result.values())).result(IO_TIMEOUT_S)
    assert {name: entry.value for name, entry in entries.items()} == {"cleanup.policy": "compact"}


# --- 5. aiokafka idempotence / transactions -------------------------------------------------------

@pytest.mark.parametrize("option", [{"enable_idempotence": True},
                                    {"transactional_id": "quirks.aiokafka"}],
                         ids=["idempotent", "transactional"])
def test_aiokafka_idempotent_and_transactional_producers_fail_to_start(
    broker: EmbeddedBroker, option: dict[str, Any]
) -> None:
    """Kafka: both start (InitProducerId gives them a producer id). Tansu: aiokafka sends
    InitProducerId v0 and the broker answers UNKNOWN_SERVER_ERROR, so start() raises
    UnknownError. A plain aiokafka producer starts, and confluent-kafka's idempotent and
    transactional producers work (see the aborted-transaction test)."""

    async def start(**kwargs: Any) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap,
                                    request_timeout_ms=int(IO_TIMEOUT_S * 1000), **kwargs)
        try:
            await producer.start()
        finally:
            await producer.stop()

    asyncio.run(start())  # the control: the same producer without the option starts
    with pytest.raises(UnknownError) as raised:
        asyncio.run(start(**option))
    assert raised.value.errno == -1  # UNKNOWN_SERVER_ERROR


# --- 6. auto-created topics -----------------------------------------------------------------------

def test_auto_created_topic_gets_four_partitions_unless_the_producer_forbids_it(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: auto.create.topics.enable=true (the default) creates the topic with num.partitions
    (default 1); Redpanda and most managed clusters do not auto-create. Tansu: a producer with
    librdkafka's default allow.auto.create.topics=true creates a 4-partition topic. With it
    false the message fails with UNKNOWN_TOPIC_OR_PART and no topic appears."""
    created, forbidden = f"{unique_topic}.auto", f"{unique_topic}.forbidden"
    reports: dict[str, KafkaError | None] = {}

    def note(err: KafkaError | None, msg: Message) -> None:
        reports[str(msg.topic())] = err

    with Producer({"bootstrap.servers": broker.bootstrap}) as producer:
        producer.produce(created, b"x", on_delivery=note)
        _flush(producer)
    # topic.metadata.propagation.max.ms: how long librdkafka waits for an unknown topic to
    # appear before failing its messages (30 s default); half a second is plenty on loopback.
    with _producer(broker, **{"topic.metadata.propagation.max.ms": 500}) as producer:
        producer.produce(forbidden, b"x", on_delivery=note)
        _flush(producer)

    assert reports[created] is None
    assert _partition_count(broker, created) == 4
    forbidden_error = reports[forbidden]
    assert forbidden_error is not None
    assert forbidden_error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert _partition_count(broker, forbidden) is None


# --- other admin and group quirks -----------------------------------------------------------------

def test_validate_only_topic_creation_creates_the_topic(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: create_topics(validate_only=True) checks the request and creates nothing.
    Tansu: it creates the topic."""
    admin = _admin(broker)
    admin.create_topics([NewTopic(unique_topic, 3, 1)], validate_only=True)[unique_topic].result(
        IO_TIMEOUT_S)
    assert _partition_count(broker, unique_topic) == 3


def test_group_description_lists_no_members(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: a stable one-member group is described with that member and the assignor's name
    ("range") and is listed as Stable. Tansu: state STABLE but no members, the assignor field
    holds the leader's member id, and list_consumer_groups shows the group only once it has
    committed an offset, with state UNKNOWN."""
    _create(broker, unique_topic)
    admin = _admin(broker)
    group = f"{unique_topic}.group"
    assigned: list[int] = []
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                         "enable.auto.commit": False, **TEST_GROUP_TIMINGS})
    try:
        consumer.subscribe([unique_topic], on_assign=lambda c, ps: assigned.append(len(ps)))
        deadline = time.monotonic() + 2 * IO_TIMEOUT_S
        while not assigned and time.monotonic() < deadline:
            consumer.poll(0.05)
        assert assigned == [1]
        described = admin.describe_consumer_groups([group])[group].result(IO_TIMEOUT_S)
        listed_before = _listed_groups(admin)
        consumer.commit(offsets=[TopicPartition(unique_topic, 0, 0)], asynchronous=False)
        listed_after = _listed_groups(admin)
        member_id = consumer.memberid()
    finally:
        consumer.close()
    assert described.state == ConsumerGroupState.STABLE
    assert described.members == []
    assert described.partition_assignor == member_id
    assert group not in listed_before
    assert listed_after[group] == ConsumerGroupState.UNKNOWN


def _listed_groups(admin: AdminClient) -> dict[str, ConsumerGroupState]:
    listing = admin.list_consumer_groups(request_timeout=IO_TIMEOUT_S).result(IO_TIMEOUT_S)
    return {g.group_id: g.state for g in listing.valid}


def test_offsets_for_times_always_answers_offset_zero(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: offsets_for_times gives the first offset whose record timestamp is >= the query
    (2 for 2,500 ms here) and -1 (end) for a time after every record. Tansu: always 0; it
    ignores record timestamps."""
    _create(broker, unique_topic)
    with _producer(broker) as producer:
        for i, ts in enumerate((1000, 2000, 3000)):
            producer.produce(unique_topic, b"%d" % i, partition=0, timestamp=ts)
        _flush(producer)
    with _consumer(broker) as consumer:
        answers = [consumer.offsets_for_times([TopicPartition(unique_topic, 0, ts)],
                                              timeout=IO_TIMEOUT_S)[0].offset
                   for ts in (500, 2500, 10**13)]
    assert answers == [0, 0, 0]



# --- 8. a waiting fetch is held for fetch.wait.max.ms ---------------------------------------------

def _idle_delivery_ms(broker: EmbeddedBroker, topic: str, wait_ms: int) -> float:
    """Median ms from producing one record to a waiting consumer receiving it (8 tries)."""
    latencies = []
    with _producer(broker, **{"linger.ms": 0}) as producer:
        consumer = _consumer(broker, **{"fetch.wait.max.ms": wait_ms,
                                        "fetch.queue.backoff.ms": 10,
                                        "enable.partition.eof": False})
        try:
            consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
            consumer.poll(1.0)  # the consumer is now parked in a fetch
            for i in range(8):
                time.sleep(0.13 * (i % 3 + 1))  # land at different points of the wait
                started = time.monotonic()
                producer.produce(topic, b"ping", partition=0)
                _flush(producer)
                msg = None
                while msg is None or msg.error():
                    msg = consumer.poll(IO_TIMEOUT_S)
                latencies.append((time.monotonic() - started) * 1000)
        finally:
            consumer.close()
    return statistics.median(latencies)


def test_a_waiting_fetch_is_not_answered_when_records_arrive(
    broker: EmbeddedBroker, unique_topic: str
) -> None:
    """Kafka: a fetch waiting for data returns as soon as fetch.min.bytes (1) is there, so an idle
    consumer sees a new record within milliseconds whatever fetch.wait.max.ms is. Tansu: the fetch
    is held for fetch.wait.max.ms, so librdkafka's 500 ms default adds up to half a second of
    latency (measured: median ~120 ms with 500 ms against ~4 ms with 10 ms)."""
    _create(broker, unique_topic)
    slow = _idle_delivery_ms(broker, unique_topic, 500)
    fast = _idle_delivery_ms(broker, unique_topic, 10)
    assert slow >= 40, (slow, fast)
    assert slow > 5 * fast, (slow, fast)


# --- 9. a deleted topic keeps acknowledging --------------------------------------------------

def test_a_deleted_topic_still_acknowledges_records_that_then_vanish(
        broker: EmbeddedBroker) -> None:
    """Kafka: once a topic is deleted, a produce to it fails (UNKNOWN_TOPIC_OR_PART, or the
    producer's refreshed metadata refuses it at produce()). Tansu: a producer that wrote to the
    topic before the deletion keeps getting acknowledgements, with offsets, for records nobody
    can read: the topic is gone from metadata and no delivery report carries an error."""
    name = f"quirk-deleted-{uuid.uuid4().hex[:8]}"
    _create(broker, name)
    reports: list[tuple[KafkaError | None, int | None]] = []
    producer = _producer(broker, **{"linger.ms": 0, "on_delivery": lambda err, msg: reports.append(
        (err, msg.offset()))})
    producer.produce(name, b"before")
    _flush(producer)
    admin = _admin(broker)
    admin.delete_topics([name])[name].result(IO_TIMEOUT_S)
    assert _partition_count(broker, name) is None
    for _ in range(3):
        producer.produce(name, b"after")
    _flush(producer)
    assert [err for err, _ in reports] == [None] * 4  # acknowledged, no error
    assert all(offset is not None and offset >= 0 for _, offset in reports), reports
    assert _partition_count(broker, name) is None  # and nowhere to read them from


# --- 10. max.message.bytes is not enforced --------------------------------------------------

def test_a_topics_max_message_bytes_is_not_enforced(broker: EmbeddedBroker) -> None:
    """Kafka: a record batch over the topic's max.message.bytes is refused
    (MSG_SIZE_TOO_LARGE). Tansu: a 1,000-byte limit accepts 5 kB and 2 MB records."""
    name = f"quirk-size-{uuid.uuid4().hex[:8]}"
    _create(broker, name, config={"max.message.bytes": "1000"})
    errors: list[KafkaError] = []
    producer = _producer(broker, **{"message.max.bytes": 4_000_000,
                                    "on_delivery": lambda err, _msg: errors.append(err)})
    producer.produce(name, b"x" * 5000)
    producer.produce(name, b"y" * 2_000_000)
    _flush(producer)
    assert errors == [None, None]
    assert [len(m.value() or b"") for m in _read_topic(broker, name)] == [5000, 2_000_000]
