"""Why the scorer is holding, if it is: the broker refused its output, or a permission it needs
(to read the input or the group, to commit) is missing. A hold is never fatal: the scorer is not
ready meanwhile, and resumes by itself once the cause is fixed (docs/scorer.md)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException, Message

from services.scorer.errors import authorization, raise_if_replaced
from services.scorer.metrics import ScorerMetrics
from services.streaming import connection

log = logging.getLogger(__name__)

HOLD_S = 5.0
"""How long the loop holds, paused, after the broker refused its output, before it tries again."""
DENIED_QUIET_S = 10.0
"""A refused read or commit (a missing ACL) counts as fixed after this long without another."""


class Hold:
    """The hold's state: `reason` (None: not holding) and until when the partitions stay paused.
    Not thread-safe (the loop's thread; `ready` only reads)."""

    def __init__(self, metrics: ScorerMetrics) -> None:
        self.metrics = metrics
        self.reason: str | None = None
        self.until = 0.0
        self.denied_at = 0.0  # when the group or the input was last refused to this reader

    def refused(self, reason: str) -> None:
        """The broker refused output: hold for HOLD_S, then try again (`resume_due`)."""
        if self.reason != reason:
            log.error("holding: %s; nothing is committed past the refused output; retrying "
                      "every %.0f s", reason, HOLD_S)
        self.reason = reason
        self.until = time.monotonic() + HOLD_S
        self.metrics.holds.inc()

    def denied(self, reason: str) -> None:
        """A permission the reader needs is missing: not ready until no refusal has been seen
        for a while (librdkafka keeps retrying; nothing is committed past what was processed)."""
        if self.reason != reason:
            log.error("holding: %s; waiting for the permission", reason)
            self.metrics.holds.inc()
        self.reason = reason
        self.until = float("inf")
        self.denied_at = time.monotonic()

    def resume_due(self) -> bool:
        """True once a refusal's hold is over: the caller resumes its partitions, and the hold
        lasts until a batch's output is accepted (`accepted`). A permission's hold ends by itself
        after DENIED_QUIET_S without a refusal."""
        if self.reason is None:
            return False
        if self.denied_at and time.monotonic() - self.denied_at > DENIED_QUIET_S:
            log.info("no refusal for %.0f s: the permission is back (%s)", DENIED_QUIET_S,
                     self.reason)
            self.reason, self.denied_at = None, 0.0
            return False
        if time.monotonic() < self.until:
            return False
        self.until = float("inf")
        return True

    def accepted(self) -> None:
        """A batch's output was accepted: a hold resumed already (`resume_due`) is over."""
        if self.reason is not None and self.until == float("inf"):
            log.info("the broker accepts the output again: resuming (%s)", self.reason)
            self.reason = None


def records_of(messages: list[Message], hold: Hold, errors: connection.Errors,
               group_id: str) -> list[Message]:
    """The records among consumed `messages`. A missing permission (to read the input topic, or
    the group) is held, not fatal: librdkafka keeps asking, and once the ACL is there the records
    flow again. Any other error but end-of-partition raises (InstanceReplaced, SessionLost or
    KafkaException)."""
    if not any(map(Message.error, messages)):
        return messages
    for msg in messages:
        err = msg.error()
        if err is None or err.code() == KafkaError._PARTITION_EOF:
            continue
        kind = authorization(err)
        if kind is None:
            raise_if_replaced(err, errors)
            raise KafkaException(err)
        hold.denied(f"not authorized to READ {kind} "
                    f"{msg.topic() if kind == 'topic' else group_id} ({err.str()})")
    return [msg for msg in messages if msg.error() is None]
