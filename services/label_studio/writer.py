"""Producing the bridge's records and waiting for each delivery: labels (keyed by asset_id, the
loop's partitioning: `KafkaSettings.client(role="producer")`) and dead letters.

One producer serves the webhook threads and the main loop; a daemon thread polls it, and each
writer waits on its own record's delivery report. `LabelWriter` remembers the label ids it
produced (a bounded memory), so a replayed webhook, or the reconciliation pass finding an
annotation a webhook brought already, produces nothing twice while the bridge runs; across
restarts the tasks' `meta` marks (bridge.py) and the label sink's dedupe by label_id cover it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

# The poll thread's wait: a delivery report wakes poll() at once; this only bounds how fast
# close() is noticed.
_POLL_S = 0.1
# Label ids remembered (~100 bytes each): a day of a large labeling team's output.
REMEMBERED = 100_000


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a record in time."""


class RecordWriter:
    """A producer whose `write` returns once the broker acknowledged the record."""

    def __init__(self, config: Mapping[str, Any], timeout_s: float) -> None:
        self._producer = Producer(dict(config))
        self._timeout_s = timeout_s
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bridge-producer-poll",
                                        daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(_POLL_S)

    def write(self, topic: str, value: bytes, key: bytes | None) -> None:
        """Produce and wait for the acknowledgement; raises DeliveryFailed."""
        done = threading.Event()
        outcome: list[KafkaError | None] = []

        def report(err: KafkaError | None, _: Message) -> None:
            outcome.append(err)
            done.set()

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=report)
        except (BufferError, KafkaException) as exc:
            raise DeliveryFailed(f"{topic}: {exc}") from None
        # librdkafka reports every record by message.timeout.ms (= timeout_s); the extra 5 s
        # only guards against a report that never comes (a bug).
        if not done.wait(self._timeout_s + 5):
            raise DeliveryFailed(f"{topic}: no delivery report")
        if outcome[0] is not None:
            raise DeliveryFailed(f"{topic}: {outcome[0]}")

    def close(self) -> None:
        self._producer.flush(self._timeout_s)
        self._closed.set()
        self._thread.join(timeout=5)


class LabelWriter:
    """Labels to `topic`, each label_id at most once while this object lives."""

    def __init__(self, records: RecordWriter, topic: str, remembered: int = REMEMBERED) -> None:
        self._records = records
        self._topic = topic
        self._remembered = remembered
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, label_id: str) -> bool:
        with self._lock:
            return label_id in self._seen

    def write(self, label_id: str, asset_id: str, value: bytes) -> bool:
        """Produce the label unless its id was produced (or is being produced) already; True
        when produced now. Raises DeliveryFailed, and then forgets the id (so a later attempt,
        e.g. the reconciliation pass, produces it)."""
        with self._lock:
            if label_id in self._seen:
                self._seen.move_to_end(label_id)
                return False
            self._seen[label_id] = None
            while len(self._seen) > self._remembered:
                self._seen.popitem(last=False)
        try:
            self._records.write(self._topic, value, asset_id.encode())
        except DeliveryFailed:
            with self._lock:
                self._seen.pop(label_id, None)
            raise
        return True
