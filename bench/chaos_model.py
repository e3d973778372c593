"""The chaos soak's model service (bench/chaos.py): streams the input records to the inference
events topic and makes sure each one is written exactly once, across a broker restart.

Why it cannot simply trust its idempotent producer: in the 30-minute run the producer never
delivered again after the broker restart, and nothing told the soak (no exception from
produce(), no failed delivery counted before the drain gave up). Idempotence only removes the
duplicates of a retry inside one producer id; once a producer fails a delivery, raises a fatal
error or is replaced, whether a record reached the topic is unknown. So:

- every record is tracked by its index; a failed delivery, a fatal error (error_cb) or a
  refused produce() marks the producer broken;
- a broken producer is purged and dropped; then the topic is read back and every record whose
  outcome is unknown is looked up by its key (keys are unique in the input): found, it counts
  as delivered; missing, it is sent again, by a new producer;
- `unresolved` names the records still unknown when the actor stops (the soak reports them).

A write that lands after the read-back (a request of the dropped producer still queued in the
broker) would be a duplicate: the soak's events check counts the topic's records against
`delivered`, so it would show, not pass silently."""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Collection
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from bench.chaos_actors import QUIET, Actor, consumer, ends, read_topic
from bench.chaos_input import Record
from services.streaming.partitioning import KEYED_PARTITIONER

# How long a record may wait in the producer before librdkafka fails it (default 300 s). The
# broker restart took 59 s in the 30-minute run; a producer wedged past this is failed and
# replaced (module doc) while the drain (240 s) can still finish.
MESSAGE_TIMEOUT_MS = 120_000
RETRY_S = 2.0  # pause before another read-back while the broker does not answer


class ProducerLike(Protocol):
    def produce(self, topic: str, value: bytes | None, key: bytes, *,
                on_delivery: Callable[[Any, Any], None]) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None: ...
    def __len__(self) -> int: ...


def model_producer(bootstrap: str, on_error: Callable[[Any], None]) -> Producer:
    # Idempotent: a broker restart makes the client retry, and a retried send must not be
    # written twice within one producer id.
    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                     "linger.ms": 5, "partitioner": KEYED_PARTITIONER,
                     "allow.auto.create.topics": False,
                     "message.timeout.ms": MESSAGE_TIMEOUT_MS, "error_cb": on_error, **QUIET})


def topic_keys(bootstrap: str, topic: str, partitions: int) -> set[bytes]:
    """The keys of every record in `topic` up to the ends asked first. Raises KafkaException
    when the broker does not answer or the read stops short (read_topic gives up after its
    deadline): a partial read would make records present look missing, sent twice."""
    reader = consumer(bootstrap)
    try:
        want = ends(reader, topic, partitions)
    finally:
        reader.close()
    last: dict[int, int] = {}
    keys = set()
    for m in read_topic(bootstrap, topic, partitions):
        p, off = m.partition() or 0, m.offset() or 0
        last[p] = max(last.get(p, -1), off)
        keys.add(m.key() or b"")
    short = {p: e for p, e in want.items() if e > 0 and last.get(p, -1) < e - 1}
    if short:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                        f"read-back of {topic} stopped short: {short}"))
    return keys


def reconcile(unknown: Collection[int], records: list[Record],
              in_topic: Collection[bytes]) -> tuple[set[int], list[int]]:
    """Of the record indices whose outcome is unknown: those whose key is in the topic (written)
    and those to send again, in input order."""
    found = {i for i in unknown if records[i].key in in_topic}
    return found, sorted(set(unknown) - found)


class ModelService(Actor):
    """Streams `records` to `topic` at `rate` records/s (None: as fast as it can), each once
    (module doc). `make_producer(on_error)` and `read_keys()` (the keys in the topic; raises
    KafkaException while the broker does not answer) are the Kafka seams."""

    def __init__(self, bootstrap: str, topic: str, records: list[Record], rate: float | None,
                 partitions: int, *,
                 make_producer: Callable[[Callable[[Any], None]], ProducerLike] | None = None,
                 read_keys: Callable[[], set[bytes]] | None = None) -> None:
        super().__init__("model-service")
        self.topic, self.records, self.rate = topic, records, rate
        self._make = make_producer or functools.partial(model_producer, bootstrap)
        self._read_keys = read_keys or functools.partial(topic_keys, bootstrap, topic,
                                                         partitions)
        self.producer = self._make(self._on_error)
        self.sent = 0  # input records handed to a producer at least once (in order)
        self.delivered = 0  # distinct records known to be in the topic
        self.failed = 0  # failed delivery reports (each then reconciled)
        self.last_error: str | None = None
        self.replaced: list[str] = []  # why each broken producer was replaced
        self.resent = 0
        self.unresolved: set[int] = set()  # indices whose outcome is unknown (module doc)
        self._inflight: set[int] = set()  # handed to the current producer, not yet reported
        self._resend: collections.deque[int] = collections.deque()
        self._broken: str | None = None
        self.started = time.monotonic()

    def _on_error(self, err: Any) -> None:
        # Transport errors (the broker is away) are retried by librdkafka; a fatal one means
        # this producer will never deliver again.
        if err.fatal():
            self._broken = self._broken or f"fatal error: {err}"

    def _report(self, i: int, err: Any, _msg: Any) -> None:
        self._inflight.discard(i)
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            self.last_error = str(err)
            self.unresolved.add(i)
            self._broken = self._broken or f"delivery failed: {err}"

    def step(self) -> None:
        if self._broken is not None and not self._replace():
            time.sleep(RETRY_S)
            return
        due = len(self.records) if self.rate is None else min(
            len(self.records), int((time.monotonic() - self.started) * self.rate))
        while self._broken is None and (self._resend or self.sent < due):
            i = self._resend[0] if self._resend else self.sent
            r = self.records[i]
            try:
                self.producer.produce(self.topic, r.value, r.key,
                                      on_delivery=functools.partial(self._report, i))
            except BufferError:  # the client's queue is full (the broker is away): wait
                break
            except KafkaException as exc:  # refused: after a fatal error, every produce is
                self.last_error = str(exc)
                self._broken = f"produce refused: {exc}"
                break
            self._inflight.add(i)
            if self._resend:
                self._resend.popleft()
                self.resent += 1
            else:
                self.sent += 1
        self.producer.poll(0.05)
        if (self.sent == len(self.records) and not self._resend and self._broken is None
                and not self._inflight):
            self.halt.set()

    def _replace(self) -> bool:
        """Drop the broken producer, look up every unknown record in the topic, queue the
        missing ones for a new producer. False (and nothing changed but the purge) while the
        broker does not answer the read-back."""
        old = self.producer
        old.purge(in_queue=True, in_flight=True, blocking=False)
        old.poll(0)  # the purged records' reports: they join `unresolved`
        # Reports that have not come yet never will (the producer is dropped): unknown too.
        self.unresolved |= self._inflight
        self._inflight.clear()
        try:
            keys = self._read_keys()
        except KafkaException as exc:
            self.last_error = f"read-back: {exc}"
            return False
        found, missing = reconcile(self.unresolved, self.records, keys)
        self.delivered += len(found)
        self.unresolved -= found
        pending = set(self._resend)
        self._resend.extend(i for i in missing if i not in pending)
        self.unresolved -= set(missing)
        self.replaced.append(self._broken or "?")
        self._broken = None
        self.producer = self._make(self._on_error)
        return True

    def close(self) -> None:
        # Records still queued or in flight when the actor is halted: their outcome is unknown.
        self.unresolved |= set(self._resend) | self._inflight
