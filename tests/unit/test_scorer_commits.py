"""The scorer's write order is structure (services/scorer/commits.py): every unit goes output ->
durable -> (checkpoint -> durable) -> offsets, the offsets pointing at the checkpoint just made
durable, under either guarantee; and the two guarantees differ in one module (guarantees.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka import KafkaError, Message, TopicPartition
from prometheus_client import CollectorRegistry

from services.core import SelectorPolicy, SelectorState
from services.scorer import outbox as outbox_module
from services.scorer.assigned import AssignedPartition
from services.scorer.commits import Commits
from services.scorer.guarantees import AtLeastOnce, ExactlyOnce, Guarantee
from services.scorer.hold import Hold
from services.scorer.metrics import ScorerMetrics
from services.scorer.outbox import Outbox
from services.scorer.partition import Output, PartitionScorer, Record, partition_seed
from services.streaming import connection
from services.streaming.settings import ScorerSettings
from tests.synthetic_events import inference_events

SETTINGS = ScorerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092"})
STATE = SETTINGS.state_topic


class _Producer:
    """Records what it is asked, in one log with the consumer's. The broker acknowledges queued
    records only when told (`acknowledge`, or a flush: every queued record delivered at the next
    offset of its topic, or refused when its topic is in `refusing`)."""

    def __init__(self, config: dict[str, Any], log: list[tuple[Any, ...]]) -> None:
        self.report = config["on_delivery"]
        self.log = log
        self.queued: list[tuple[Message, Any]] = []
        self.ends: dict[str, int] = {}
        self.refusing: set[str] = set()

    def produce(self, topic: str, value: bytes, key: bytes | None,
                on_delivery: Any = None) -> None:
        self.log.append(("produce", topic, key))
        offset = self.ends[topic] = self.ends.get(topic, -1) + 1
        msg = Message(topic=topic, partition=0, offset=offset, key=key, value=value)
        self.queued.append((msg, on_delivery or self.report))

    def acknowledge(self, count: int | None = None) -> None:
        """The broker answers the `count` oldest queued records (all by default)."""
        done = self.queued[:count]
        del self.queued[:len(done)]
        for msg, report in done:
            refused = msg.topic() in self.refusing
            report(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED) if refused else None, msg)

    def poll(self, timeout: float) -> int:
        return 0  # acknowledgements come only when the test says so

    def flush(self, timeout: float) -> int:
        self.log.append(("flush",))
        self.acknowledge()
        return 0

    def begin_transaction(self) -> None:
        self.log.append(("begin",))

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], meta: object,
                                    timeout: float) -> None:
        self.log.append(("offsets", [(tp.partition, tp.offset, tp.metadata) for tp in offsets]))

    def commit_transaction(self, timeout: float) -> None:
        self.flush(timeout)
        self.log.append(("commit_transaction",))


class _Consumer:
    def __init__(self, log: list[tuple[Any, ...]], fail: bool = False) -> None:
        self.log = log
        self.fail = fail

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.fail:
            raise RuntimeError("the commit did not happen")
        self.log.append(("commit", [(tp.partition, tp.offset, tp.metadata) for tp in offsets]))

    def consumer_group_metadata(self) -> object:
        return object()


def _commits(kind: type[Guarantee], fail: bool = False
             ) -> tuple[Commits, list[tuple[Any, ...]]]:
    log: list[tuple[Any, ...]] = []
    metrics = ScorerMetrics(CollectorRegistry())
    with mock.patch.object(outbox_module, "Producer", lambda config: _Producer(config, log)):
        outbox = Outbox({}, metrics, STATE)
    guarantee = kind(outbox, _Consumer(log, fail), metrics, Hold(metrics),  # type: ignore[arg-type]
                     SETTINGS, connection.Errors())
    return Commits(outbox, guarantee, SETTINGS, metrics, lambda p: f"g/t/{p}".encode(),
                   on_checkpoint=lambda: log.append(("checkpointed",))), log


def _part(p: int, events: int) -> AssignedPartition:
    scorer = PartitionScorer("t", p, SelectorState.create(SelectorPolicy(), partition_seed(0, p)),
                             0, service_version="test", fetch=lambda offset: None)
    scorer.process([Record(i, k, v, 1.7e9 + i)
                    for i, (k, v) in enumerate(inference_events(events, p))])
    return AssignedPartition("t", p, scorer, pointer="checkpoint@0:999")


def test_at_least_once_checkpoint_then_offsets_that_point_at_it() -> None:
    commits, log = _commits(AtLeastOnce)
    parts = [_part(0, 30), _part(1, 20)]
    commits.checkpoint(parts)
    # The first flush makes earlier output durable before any state record is sent.
    assert log == [("flush",), ("produce", STATE, b"g/t/0"), ("produce", STATE, b"g/t/1"),
                   ("flush",),
                   ("commit", [(0, 30, "checkpoint@0:0"), (1, 20, "checkpoint@0:1")]),
                   ("checkpointed",)]
    assert [part.pointer for part in parts] == ["checkpoint@0:0", "checkpoint@0:1"]
    assert [part.checkpointed[0] for part in parts] == [30, 20]
    log.clear()
    commits.output([("requests", Output(b"a", b"{}"))], parts[:1])
    # The loop goes on: the unit's offsets wait for its record's acknowledgement.
    assert log == [("produce", "requests", b"a")]
    commits.settle()
    assert log == [("produce", "requests", b"a")]
    commits.guarantee.outbox.producer.acknowledge()  # type: ignore[attr-defined]
    commits.settle()
    assert log == [("produce", "requests", b"a"), ("commit", [(0, 30, "checkpoint@0:0")])]


def test_a_checkpoint_is_not_written_past_output_the_broker_refused() -> None:
    """A batch's dead letters refused, its offsets not committed yet, and a checkpoint due in the
    same turn: the refusal stops the checkpoint before any state record is sent. A restore that
    finds no pointer takes the newest state record it reads; one written past the refused
    letters made the scorer resume after them, and they were lost (seen on Apache Kafka)."""
    from services.scorer.errors import DeliveryFailed

    commits, log = _commits(AtLeastOnce)
    producer = commits.guarantee.outbox.producer
    producer.refusing.add("dlq")  # type: ignore[attr-defined]
    parts = [_part(0, 30)]
    commits.output([("dlq", Output(b"bad", b"{}"))], parts)
    with pytest.raises(DeliveryFailed, match="output before the checkpoint not written"):
        commits.checkpoint(parts)
    assert not [entry for entry in log if entry[0] == "produce" and entry[1] == STATE]
    assert not [entry for entry in log if entry[0] == "commit"]


def test_at_least_once_commits_units_in_order_once_all_their_output_has_landed() -> None:
    commits, log = _commits(AtLeastOnce)
    parts = [_part(0, 30), _part(1, 20)]
    producer = commits.guarantee.outbox.producer
    commits.output([("requests", Output(b"a", b"{}"))], parts[:1])
    commits.output([("requests", Output(b"b", b"{}"))], parts[1:])
    commits.output([], parts[:1])  # a unit with no output waits for the units before it
    producer.queued.reverse()  # the second unit's record is answered first
    producer.acknowledge(1)  # type: ignore[attr-defined]
    commits.settle()
    assert [entry for entry in log if entry[0] == "commit"] == []
    producer.acknowledge()  # type: ignore[attr-defined]
    commits.settle()
    # One commit of the three units, the latest offset of each partition.
    assert [entry for entry in log if entry[0] == "commit"] == [
        ("commit", [(0, 30, "checkpoint@0:999"), (1, 20, "checkpoint@0:999")])]


def test_at_least_once_never_commits_past_a_refused_record() -> None:
    from services.scorer.errors import DeliveryFailed

    commits, log = _commits(AtLeastOnce)
    producer = commits.guarantee.outbox.producer
    producer.refusing.add("requests")  # type: ignore[attr-defined]
    part = _part(0, 30)
    commits.output([("requests", Output(b"a", b"{}"))], [part])
    producer.acknowledge()  # type: ignore[attr-defined]
    with pytest.raises(DeliveryFailed, match="not committing offsets"):
        commits.settle()
    commits.guarantee.abort()  # as the loop's hold does (service.py)
    commits.settle()
    assert [entry for entry in log if entry[0] == "commit"] == []


def test_at_least_once_waits_when_too_many_units_are_outstanding() -> None:
    from services.scorer.guarantees import MAX_UNITS_OUTSTANDING

    commits, log = _commits(AtLeastOnce)
    part = _part(0, 30)
    for i in range(MAX_UNITS_OUTSTANDING):
        commits.output([("requests", Output(b"%d" % i, b"{}"))], [part])
    assert ("flush",) not in log
    commits.output([("requests", Output(b"last", b"{}"))], [part])
    assert log[-2:] == [("flush",), ("commit", [(0, 30, "checkpoint@0:999")])]


def test_forgotten_partitions_are_not_committed() -> None:
    commits, log = _commits(AtLeastOnce)
    parts = [_part(0, 30), _part(1, 20)]
    commits.output([("requests", Output(b"a", b"{}"))], parts)
    commits.forget([1])  # revoked or rewound meanwhile
    commits.guarantee.outbox.producer.acknowledge()  # type: ignore[attr-defined]
    commits.settle()
    assert [entry for entry in log if entry[0] == "commit"] == [
        ("commit", [(0, 30, "checkpoint@0:999")])]


def test_exactly_once_is_one_transaction_per_unit() -> None:
    commits, log = _commits(ExactlyOnce)
    parts = [_part(0, 30)]
    commits.checkpoint(parts)
    assert log == [("begin",), ("produce", STATE, b"g/t/0"), ("flush",),
                   ("offsets", [(0, 30, "checkpoint@0:0")]), ("flush",),
                   ("commit_transaction",), ("checkpointed",)]
    log.clear()
    commits.output([("requests", Output(b"a", b"{}"))], parts)
    assert log == [("begin",), ("produce", "requests", b"a"),
                   ("offsets", [(0, 30, "checkpoint@0:0")]), ("flush",),
                   ("commit_transaction",)]


def test_a_checkpoint_whose_offsets_were_not_committed_keeps_the_old_pointer() -> None:
    commits, log = _commits(AtLeastOnce, fail=True)
    part = _part(0, 30)
    with pytest.raises(RuntimeError):
        commits.checkpoint([part], final=True)
    assert part.pointer == "checkpoint@0:999" and part.checkpointed == (0, 0.0)
    assert ("checkpointed",) not in log


def test_only_guarantees_py_knows_the_two_guarantees_apart() -> None:
    """No other module of the scorer's shell asks which guarantee is on, or drives a
    transaction or a consumer commit itself (docstrings and comments may speak of them)."""
    telling = {"processing_guarantee", "eos", "begin_transaction", "commit_transaction",
               "abort_transaction", "send_offsets_to_transaction", "init_transactions",
               "ExactlyOnce", "AtLeastOnce"}
    root = Path(__file__).resolve().parents[2] / "services" / "scorer"
    found = {}
    for path in sorted(root.glob("*.py")):
        if path.name == "guarantees.py":
            continue
        tree = ast.parse(path.read_text())
        names = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        names |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  for alias in node.names}
        commits = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                   and isinstance(node.func, ast.Attribute) and node.func.attr == "commit"
                   and "consumer" in ast.unparse(node.func.value)]
        if names & telling or commits:
            found[path.name] = sorted(names & telling) + ["consumer.commit"] * bool(commits)
    assert found == {}


@pytest.mark.parametrize("error, open_s, raised", [
    ("fenced", 9.0, "InstanceReplaced"), ("fenced", 10.5, "SessionLost"),
    ("timed out", 9.0, "KafkaException"), ("timed out", 10.5, "SessionLost")])
def test_exactly_once_tells_its_own_expired_transaction_from_a_replacement(
        error: str, open_s: float, raised: str) -> None:
    """A fence when the transaction ends: within transaction.timeout.ms (10 s) another process
    took the transactional.id (stop); past it, the broker aborted this instance's own stalled
    transaction and bumped its epoch (rejoin: SessionLost, which the CLI serves with a new
    Scorer). Seen on Apache Kafka: a scorer frozen ~20 s inside a transaction exited as
    "replaced" when its session-timeout notice came a millisecond after the fence; frozen 5 s
    with a 2 s timeout, the end of its transaction timed out instead and it crashed. A time-out
    within the timeout stays an error (a restart replays the batch)."""
    from confluent_kafka import KafkaException

    from services.scorer.errors import InstanceReplaced, SessionLost

    commits, log = _commits(ExactlyOnce)
    guarantee = commits.guarantee
    now = [100.0]
    guarantee.clock = lambda: now[0]  # type: ignore[attr-defined]
    producer = guarantee.outbox.producer
    failure = {"fenced": KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True),
               "timed out": KafkaError(KafkaError._TIMED_OUT, "Failed to add offsets to "
                                       "transaction: Timed out", retriable=True)}[error]

    def fails(timeout: float) -> None:
        now[0] += open_s  # the transaction was open this long when it ended
        raise KafkaException(failure)

    producer.commit_transaction = fails  # type: ignore[method-assign]
    producer.abort_transaction = lambda timeout: None  # type: ignore[attr-defined]
    expected = {"InstanceReplaced": InstanceReplaced, "SessionLost": SessionLost,
                "KafkaException": KafkaException}[raised]
    with pytest.raises(expected) as caught:
        commits.output([("requests", Output(b"a", b"{}"))], [_part(0, 30)])
    assert type(caught.value) is expected  # SessionLost is an InstanceReplaced: exactly this
