"""What the scorer's Kafka clients report, in the scorer's words: the exceptions its loop acts
on, and how a librdkafka error is told apart (a fence, a missing permission, a replaced id)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message

from services.streaming import connection


class ScorerUnavailable(RuntimeError):
    """The scorer cannot start (e.g. its topics are missing); the message says what to do."""


class DeliveryFailed(RuntimeError):
    """The broker refused records the scorer produced (a topic deleted, an ACL, a record over
    the topic's size limit). `flush()` returning 0 does not mean delivered: a refused record
    leaves the queue with an error report. Nothing past the last durable output is committed;
    the loop holds (hold.py): not ready, its partitions rewound to their last checkpoint and
    paused, and it tries again every few seconds until the broker accepts the output."""


class InstanceReplaced(RuntimeError):
    """Another process joined with this instance's id (its group.instance.id or transactional.id),
    so the group and the transaction coordinator now talk to it: this one must stop. That is
    the point when it is this instance's own restart; otherwise two instances share an id."""


class SessionLost(InstanceReplaced):
    """This instance's own rejoin fenced it: its group session timed out on its side (the
    coordinator was unreachable past session.timeout.ms, as while a broker restarts), librdkafka
    joined again under the same group.instance.id with a new member id, and the broker fenced
    the old one, which is fatal to the consumer. Or, under exactly_once, this instance stalled
    (frozen, paused) inside a transaction past transaction.timeout.ms: the broker aborted it and
    bumped the producer's epoch, so ending it fails with the same fence a newer instance would
    cause (guarantees.py). Nobody else has the id: a new consumer (a new Scorer, restoring from
    the checkpoints as a restart would) carries on (services/cli.py)."""


class Fenced(Exception):
    """exactly_once: the group refused a transaction's offsets (this member was frozen or cut
    off past its session, or a rebalance moved its generation on), so the transaction was
    aborted. `partitions` are those whose in-memory state had moved past what is now
    committed: the loop forgets that state and restores them from their checkpoints."""

    def __init__(self, reason: str, partitions: list[int]) -> None:
        super().__init__(reason)
        self.partitions = partitions


# Errors that mean this member's generation or membership is over: a zombie's commit.
FENCED_CODES = frozenset({
    KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION, KafkaError.FENCED_INSTANCE_ID,
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError._FENCED, KafkaError.STALE_MEMBER_EPOCH,
    KafkaError.FENCED_MEMBER_EPOCH,
})
# How long after its own session timeout a fence is taken for a self-fence (SessionLost): the
# rejoin that causes it follows the timeout within a few seconds.
SELF_FENCE_WINDOW_S = 60.0

_AUTHORIZATION = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "topic",
    KafkaError.GROUP_AUTHORIZATION_FAILED: "group",
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED: "transactional id",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "cluster",
}


def authorization(err: KafkaError) -> str | None:
    """The kind of resource an authorization error is about, or None for another error."""
    return _AUTHORIZATION.get(err.code())


def reason(exc: BaseException) -> str:
    """One line for a log: a KafkaError's own words, else the exception's."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc)


def id_fenced(err: KafkaError) -> bool:
    """Whether `err` is librdkafka's fatal report of a static member or a transactional producer
    fenced (by a newer one with the same id, or by the broker's own epoch bump)."""
    if err.code() in (KafkaError.FENCED_INSTANCE_ID, KafkaError.PRODUCER_FENCED,
                      KafkaError._FENCED, KafkaError.UNRELEASED_INSTANCE_ID):
        return True
    # A consumer's fatal error arrives as _FATAL with the broker's words in the text.
    text = err.str().lower()
    return err.code() == KafkaError._FATAL and ("fenced" in text or "instance id" in text)


def raise_if_replaced(err: KafkaError, errors: connection.Errors | None = None) -> None:
    """librdkafka reports a static member or a transactional producer fenced by a newer one with
    the same id as a fatal error; say it in one line. With `errors` (the client's error log), a
    fence right after this instance's own session timed out is told apart: SessionLost."""
    if not id_fenced(err):
        return
    if errors is not None and errors.session_lost_within(SELF_FENCE_WINDOW_S):
        raise SessionLost(
            f"the group session expired while the coordinator was unreachable and the "
            f"rejoin fenced this instance's earlier membership ({err.str()})")
    raise InstanceReplaced(
        f"another process joined with this instance's id ({err.str()}): stopping. Expected "
        "when this instance was restarted; otherwise give every instance its own "
        "ACTIVE_STREAM_SCORER_INSTANCE_ID")


def without_eof(messages: list[Message]) -> list[Message]:
    """The records among `messages`; raises InstanceReplaced when another process took this
    instance's place, KafkaException for any other error but partition EOF."""
    for msg in messages:
        err = msg.error()
        if err is not None and err.code() != KafkaError._PARTITION_EOF:
            raise_if_replaced(err)
            raise KafkaException(err)
    return [msg for msg in messages if msg.error() is None]
