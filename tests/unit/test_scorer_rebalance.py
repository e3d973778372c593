"""One object per assigned partition (services/scorer/assigned.py, rebalance.py): made on assign,
waiting paused when its state cannot be restored, checkpointed and dropped on a clean revoke,
dropped without a write when lost."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from services.core import SelectorPolicy, SelectorState
from services.scorer.assigned import AssignedPartition, Assignment
from services.scorer.metrics import ScorerMetrics
from services.scorer.partition import PartitionScorer
from services.scorer.rebalance import Rebalance


class _Consumer:
    def __init__(self) -> None:
        self.paused: set[int] = set()
        self.assigned: list[int] = []

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = [tp.partition for tp in tps]

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in tps}

    def seek(self, tp: TopicPartition) -> None:
        pass


class _Restorer:
    """Restores every partition unless `broken` (the state topic cannot be read)."""

    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.broken = False

    def restore(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        if self.broken:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        for tp in tps:
            part = self.assignment.setdefault(tp.partition, AssignedPartition("t", tp.partition))
            part.scorer = PartitionScorer("t", tp.partition,
                                          SelectorState.create(SelectorPolicy(), 1), 0,
                                          service_version="test", fetch=lambda offset: None)
            part.waiting = None
        return tps


class _Commits:
    def __init__(self) -> None:
        self.checkpoints: list[tuple[list[int], bool]] = []
        self.forgotten: list[int] = []

    def checkpoint(self, parts: list[AssignedPartition], final: bool = False) -> None:
        self.checkpoints.append(([part.partition for part in parts], final))

    def forget(self, partitions: list[int]) -> None:
        self.forgotten.extend(partitions)


def _rebalance() -> tuple[Rebalance, Any, Any, Any]:
    assignment = Assignment()
    consumer, restorer, commits = _Consumer(), _Restorer(assignment), _Commits()
    rebalance = Rebalance(consumer, "t", assignment, restorer, commits,  # type: ignore[arg-type]
                          ScorerMetrics(CollectorRegistry()), cooperative=False,
                          failed=lambda: False, beat=lambda: None)
    return rebalance, consumer, restorer, commits


def _tps(*partitions: int) -> list[TopicPartition]:
    return [TopicPartition("t", p) for p in partitions]


def test_a_partition_is_one_object_from_assign_to_revoke_or_loss() -> None:
    rebalance, consumer, restorer, commits = _rebalance()
    assignment = rebalance.assignment
    rebalance.on_assign(consumer, _tps(0, 1))
    assert sorted(assignment.live()) == [0, 1] and not consumer.paused
    held = assignment[0]
    held.owed = {"m": {"a": 2.0}}
    rebalance.on_revoke(consumer, _tps(0))
    assert commits.checkpoints == [([0], True)]  # the hand-over: a final checkpoint
    assert 0 not in assignment and held.scorer is not None  # gone whole, with what it owed

    restorer.broken = True
    rebalance.on_assign(consumer, _tps(2))
    assert assignment[2].scorer is None and assignment[2].waiting is not None
    assert consumer.paused == {2} and [p.partition for p in assignment.waiting()] == [2]
    restorer.broken = False
    rebalance._retry_at = 0.0  # the retry is due (RESTORE_RETRY_S later)
    rebalance.retry_restores()
    assert assignment[2].scorer is not None and not consumer.paused

    rebalance.on_lost(consumer, _tps(1, 2))
    assert assignment == {} and commits.checkpoints == [([0], True)]  # lost: nothing written
    # Nothing more of a partition that left is committed (its offsets not committed yet
    # would be another owner's to commit).
    assert commits.forgotten == [0, 1, 2]


def test_a_waiting_partition_is_revoked_without_a_checkpoint() -> None:
    rebalance, consumer, restorer, commits = _rebalance()
    restorer.broken = True
    rebalance.on_assign(consumer, _tps(3))
    rebalance.on_revoke(consumer, _tps(3))
    assert rebalance.assignment == {} and commits.checkpoints == []
