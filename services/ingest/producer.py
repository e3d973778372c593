"""A Kafka producer whose deliveries are awaited from asyncio, with a bound on what is in flight.

confluent-kafka reports each delivery through a callback run by `poll()`; a daemon thread polls,
and the callback resolves the asyncio future of that record on the event loop. `in_flight` counts
records produced and not yet reported (success or failure) so that the HTTP layer can refuse a
request that would pass its bound (429) instead of letting librdkafka's queue fill mid-request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, Message, Producer

# The poll thread waits at most this long per poll: it only bounds how fast close() is noticed,
# since a delivery report wakes poll() at once.
_POLL_S = 0.1


class Delivered(NamedTuple):
    """Where the broker stored a record it acknowledged."""

    partition: int
    offset: int


class AckingProducer:
    """Produce from the event loop thread; `produce` returns a future resolved on delivery with
    `Delivered` or with the KafkaException that failed it. Thread-safe counters are kept on the
    event loop only (callbacks hop there), so no lock is needed."""

    def __init__(self, config: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self._producer = Producer(dict(config))
        self._loop = loop
        self.in_flight = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="ingest-producer-poll",
                                        daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(_POLL_S)

    def produce(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Delivered]:
        """Queue one record. Raises BufferError when librdkafka's own queue is full (nothing
        queued then) and KafkaException for a record it refuses outright."""
        future: asyncio.Future[Delivered] = self._loop.create_future()

        def report(err: KafkaError | None, msg: Message) -> None:  # on the poll thread
            result = (KafkaException(err) if err is not None
                      else Delivered(msg.partition() or 0, msg.offset() or 0))
            try:
                self._loop.call_soon_threadsafe(self._settle, future, result)
            except RuntimeError:  # the loop is closed: the process is exiting, nobody waits
                pass

        self._producer.produce(topic, value=value, key=key, on_delivery=report)
        self.in_flight += 1
        return future

    def _settle(self, future: asyncio.Future[Delivered], result: Any) -> None:
        self.in_flight -= 1
        if future.done():  # the request was cancelled (client went away): nothing to tell
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def partitions(self, topic: str, timeout_s: float) -> int:
        """The topic's partition count (metadata request); raises KafkaException when the
        broker cannot be reached or the topic does not exist."""
        meta = self._producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(meta.error if meta is not None else "no metadata")
        return len(meta.partitions)

    def close(self, timeout_s: float) -> int:
        """Flush what is queued (up to `timeout_s`), stop polling; returns records not flushed."""
        left = self._producer.flush(timeout_s)
        self._closed.set()
        self._thread.join(timeout=5)
        return int(left)
