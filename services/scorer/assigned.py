"""One object per input partition this instance is assigned: all of that partition's state in
the shell, made on assign (rebalance.py) and dropped with it on revoke, loss or a halt.

Its selection state, offsets and held reservoir picks are its `scorer` (partition.py); beside
it here: where its latest durable checkpoint is (the pointer every commit carries, the chunk
slot), when it was last checkpointed, the class feedback it is owed, whether its state was just
reset after its log went backwards, and, while its restore failed, the position it waits at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from services.scorer.partition import PartitionScorer

Weights = dict[str, dict[str, float]]  # model_id -> class -> weight


@dataclass
class AssignedPartition:
    """`scorer` is None while the partition's restore has failed (`waiting`: its position,
    paused; retried). Not thread-safe: the loop's thread only."""

    topic: str
    partition: int
    scorer: PartitionScorer | None = None
    waiting: TopicPartition | None = None
    # The commit metadata naming its latest durable checkpoint (checkpoint_store.py), and the
    # chunk slot that checkpoint's head names (checkpoint_format.checkpoint_records).
    pointer: str | None = None
    chunk_slot: str | None = None
    # The next offset and the monotonic time of its latest checkpoint.
    checkpointed: tuple[int, float] = (0, 0.0)
    # Class feedback not applied yet: weights and the newest feedback seq in them (feedback.py).
    owed: Weights = field(default_factory=dict)
    owed_seq: int = 0
    # Its state was reset (its log went backwards): checkpointed before anything of it is
    # committed (commits.py, `Commits.flush_resets`).
    reset: bool = False
    # The next offset when its progress gauge was last set (observe.py).
    progress: int | None = None

    @property
    def live(self) -> PartitionScorer:
        """The scorer of a restored partition (callers only ask restored ones)."""
        assert self.scorer is not None, f"partition {self.partition} is not restored"
        return self.scorer

    def position(self) -> TopicPartition:
        """What to commit: the next offset, but never below the offset the group had committed
        when this instance restored it. While it replays up to there (without output) its next
        offset is behind, and committing it would move the group's offset back: a second crash
        would then emit the replayed stretch again. The metadata points at the partition's
        latest durable checkpoint, for the next restore."""
        offset = max(self.live.next_offset, self.live.suppress_below)
        if self.pointer is None:
            return TopicPartition(self.topic, self.partition, offset)
        return TopicPartition(self.topic, self.partition, offset, metadata=self.pointer)


class Assignment(dict[int, AssignedPartition]):
    """This instance's assigned partitions by number, restored or not."""

    def live(self) -> dict[int, PartitionScorer]:
        """The scorers of the restored partitions, by partition."""
        return {p: part.scorer for p, part in self.items() if part.scorer is not None}

    def restored(self) -> list[AssignedPartition]:
        return [part for part in self.values() if part.scorer is not None]

    def waiting(self) -> list[AssignedPartition]:
        """Those whose restore failed: paused, retried (rebalance.py)."""
        return [part for part in self.values() if part.scorer is None]
