"""The scorer's one checkpoint/commit object: every write the scorer makes goes through `Commits`,
which owns the order of a unit -- output, made durable, then the state checkpoint, made durable,
then the offsets, which point at that checkpoint -- so commit order is structure, not a habit of
each caller. What `at_least_once` and `exactly_once` do at each step is the `Guarantee` chosen
at start (guarantees.py): a flush and a consumer commit, or one Kafka transaction.

A unit is one of: a batch's output with its partitions' offsets (`output`); partitions' offsets
alone (`offsets`, after skipping transaction markers); a checkpoint of partitions' state with
their offsets (`checkpoint`: the offsets do not move, their metadata, the pointer, does).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from services.scorer.assigned import AssignedPartition
from services.scorer.checkpoint_format import checkpoint_records
from services.scorer.checkpoint_store import pointer
from services.scorer.guarantees import Guarantee
from services.scorer.metrics import ScorerMetrics
from services.scorer.outbox import Outbox
from services.scorer.partition import Output
from services.streaming.settings import ScorerSettings


class Commits:
    """Not thread-safe: the loop's thread (and the rebalance callbacks it serves)."""

    def __init__(self, outbox: Outbox, guarantee: Guarantee, settings: ScorerSettings,
                 metrics: ScorerMetrics, state_key: Callable[[int], bytes],
                 on_checkpoint: Callable[[], None]) -> None:
        self.outbox = outbox
        self.guarantee = guarantee
        self.settings = settings
        self.metrics = metrics
        self.state_key = state_key
        self.on_checkpoint = on_checkpoint  # after every durable checkpoint (metrics)

    def output(self, records: Iterable[tuple[str, Output]],
               parts: Sequence[AssignedPartition]) -> None:
        """One batch: send `records` (topic, record), then commit `parts`' offsets once they
        are durable (under at_least_once perhaps after this returns: `settle`). Raises
        DeliveryFailed when the broker refused any, Fenced when the group refused an
        exactly_once transaction: then nothing of the unit is committed."""
        self.guarantee.begin()
        for topic, out in records:
            self.outbox.send(topic, out)
        self.guarantee.commit([part.position() for part in parts], wait=False)

    def settle(self) -> None:
        """Every turn of the loop: commit the units whose output has landed since (under
        at_least_once the loop does not wait for it; guarantees.py)."""
        self.guarantee.settle()

    def forget(self, partitions: list[int]) -> None:
        """These partitions were taken away or rewound: nothing more of theirs is committed."""
        self.guarantee.forget(partitions)

    def offsets(self, parts: Sequence[AssignedPartition]) -> None:
        """Commit `parts`' offsets, with no output."""
        self.output((), parts)

    def checkpoint(self, parts: Sequence[AssignedPartition], final: bool = False) -> None:
        """Write the state of `parts`, wait until it is durable, then commit their offsets with
        pointers to it (in the checkpoint's transaction under exactly_once, so a fenced zombie's
        checkpoint is aborted). `final`: the last one before this instance lets them go (the
        commit is then waited for).

        Output sent before (at_least_once: units not acknowledged yet) is made durable first,
        and a refusal of it raises DeliveryFailed before any state record is sent: a restore
        that finds no pointer takes the newest state record it reads, and one written past
        refused output would skip that output for good (seen: dead letters lost when a
        checkpoint fell in the turn whose dead letters the broker refused)."""
        self.guarantee.stage("output before the checkpoint")
        self.guarantee.begin()
        heads = self._send_chunks(parts, final)
        keys = [self.state_key(part.partition) for part in parts]
        landed = self.outbox.landed
        for part, key in zip(parts, keys, strict=True):
            landed.pop(key, None)
            self.outbox.send(self.settings.state_topic, heads[part.partition])
        self.outbox.flush("checkpoint not delivered within 60 s")
        self.outbox.check("checkpoint not written")
        previous = [part.pointer for part in parts]
        for part, key in zip(parts, keys, strict=True):
            if key in landed:
                part.pointer = pointer(*landed.pop(key))
        landed.clear()  # the chunks' positions (the heads point at them, not the commits)
        try:
            # The offsets are unchanged: a checkpoint is at the committed offset or, while
            # replaying, behind it; only their metadata (the pointer) moves.
            self.guarantee.commit([part.position() for part in parts], wait=final)
        except BaseException:
            for part, before in zip(parts, previous, strict=True):  # not committed
                part.pointer = before
            raise
        for part in parts:
            part.checkpointed = (part.live.next_offset, time.monotonic())
        self.metrics.checkpoints.inc(len(parts))
        self.on_checkpoint()

    def checkpoint_due(self, parts: Iterable[AssignedPartition]) -> None:
        """Checkpoint the partitions that moved checkpoint_every_events since their last one,
        or moved at all within checkpoint_every_s."""
        now = time.monotonic()
        every_n, every_s = self.settings.checkpoint_every_events, self.settings.checkpoint_every_s
        due = []
        for part in parts:
            offset, when = part.checkpointed
            moved = part.live.next_offset - offset
            if moved >= every_n or (moved > 0 and now - when >= every_s):
                due.append(part)
        if due:
            self.checkpoint(due)

    def flush_resets(self, parts: Iterable[AssignedPartition]) -> None:
        """Checkpoint the partitions just reset, and commit their new offsets with pointers to
        it, before anything else of them is committed: a restart must find the new log's
        state, not the old log's (which would be read as a regression again, and replayed
        output emitted twice)."""
        pending = sorted((part for part in parts if part.reset), key=lambda p: p.partition)
        for part in pending:
            part.reset = False
        if pending:
            self.checkpoint(pending)

    def _send_chunks(self, parts: Sequence[AssignedPartition],
                     final: bool) -> dict[int, Output]:
        """Send the chunks of the checkpoints too large for one record (checkpoint_format.py,
        `checkpoint_records`), durable before any head names them (`Guarantee.stage`); returns
        each partition's head (or whole checkpoint) record."""
        heads, chunked = {}, False
        for part in parts:
            groups, slot = checkpoint_records(self.state_key(part.partition),
                                              part.live.checkpoint(final), part.chunk_slot)
            for out in groups[0] if len(groups) > 1 else ():
                self.outbox.send(self.settings.state_topic, out)
                chunked = True
            heads[part.partition], part.chunk_slot = groups[-1][0], slot
        if chunked:
            self.guarantee.stage("checkpoint chunks")
        return heads
