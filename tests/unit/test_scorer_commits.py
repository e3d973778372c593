"""The scorer's write order is structure (services/scorer/commits.py): every unit goes output ->
durable -> (checkpoint -> durable) -> offsets, the offsets pointing at the checkpoint just made
durable, under either guarantee; and the two guarantees differ in one module (guarantees.py)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from confluent_kafka import Message, TopicPartition
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
    """Records what it is asked, in one log with the consumer's; a flush reports every queued
    record delivered at the next offset of its topic."""

    def __init__(self, config: dict[str, Any], log: list[tuple[Any, ...]]) -> None:
        self.report = config["on_delivery"]
        self.log = log
        self.queued: list[Message] = []
        self.ends: dict[str, int] = {}

    def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.log.append(("produce", topic, key))
        offset = self.ends[topic] = self.ends.get(topic, -1) + 1
        self.queued.append(Message(topic=topic, partition=0, offset=offset, key=key, value=value))

    def flush(self, timeout: float) -> int:
        self.log.append(("flush",))
        for msg in self.queued:
            self.report(None, msg)
        self.queued.clear()
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
    assert log == [("produce", STATE, b"g/t/0"), ("produce", STATE, b"g/t/1"), ("flush",),
                   ("flush",),  # the guarantee's own: the output of the unit is durable
                   ("commit", [(0, 30, "checkpoint@0:0"), (1, 20, "checkpoint@0:1")]),
                   ("checkpointed",)]
    assert [part.pointer for part in parts] == ["checkpoint@0:0", "checkpoint@0:1"]
    assert [part.checkpointed[0] for part in parts] == [30, 20]
    log.clear()
    commits.output([("requests", Output(b"a", b"{}"))], parts[:1])
    assert log == [("produce", "requests", b"a"), ("flush",),
                   ("commit", [(0, 30, "checkpoint@0:0")])]


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
