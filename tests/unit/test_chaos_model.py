"""The chaos soak's model service writes each input record exactly once when its producer fails
(bench/chaos_model.py): failed deliveries that did land, failed ones that did not, reports that
never come, a fatal error, a broker that does not answer the read-back. The producer is a fake
with those behaviours (the Kafka seams the actor takes); the soak runs it on Apache Kafka."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

import bench.chaos_model as chaos_model
from bench.chaos_input import Record
from bench.chaos_model import ModelService, reconcile


class Fatal:
    def fatal(self) -> bool:
        return True

    def __str__(self) -> str:
        return "fatal: out of order sequence number"


class FakeProducer:
    """Writes to `topic` (a list of keys) and reports on poll. `faults` maps a key to what
    happens to its first send: "landed-failed" (written, reported failed), "lost" (not written,
    reported failed), "silent" (never reported, not written), "fatal" (a fatal error on the
    error callback, then every produce() is refused)."""

    def __init__(self, topic: list[bytes], faults: dict[bytes, str],
                 on_error: Callable[[Any], None]) -> None:
        self.topic, self.faults, self.on_error = topic, faults, on_error
        self.reports: list[tuple[Callable[[Any, Any], None], Any]] = []
        self.silent: list[bytes] = []
        self.fatal = False

    def produce(self, topic: str, value: bytes | None, key: bytes, *,
                on_delivery: Callable[[Any, Any], None]) -> None:
        if self.fatal:
            raise KafkaException(KafkaError(KafkaError._FATAL))
        fault = self.faults.pop(key, None)
        if fault == "fatal":
            self.fatal = True
            self.on_error(Fatal())
            self.silent.append(key)
            return
        if fault == "silent":
            self.silent.append(key)
            return
        if fault != "lost":
            self.topic.append(key)
        self.reports.append((on_delivery, None if fault is None else KafkaError(
            KafkaError._MSG_TIMED_OUT)))

    def poll(self, timeout: float) -> int:
        reports, self.reports = self.reports, []
        for cb, err in reports:
            cb(err, None)
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return len(self.silent)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        pass  # the silent ones stay unreported: the actor must count them unknown anyway

    def __len__(self) -> int:
        return len(self.reports) + len(self.silent)


def records(n: int) -> list[Record]:
    return [Record(f"asset-{i}".encode(), b"{}", None, "m") for i in range(n)]


def run(recs: list[Record], faults: dict[bytes, str], *, answer_after: int = 0
        ) -> tuple[ModelService, list[bytes], list[FakeProducer]]:
    """Runs the actor's steps to the end on fakes; the read-back fails `answer_after` times
    first (the broker away)."""
    topic: list[bytes] = []
    made: list[FakeProducer] = []
    refusals = [answer_after]

    def make(on_error: Callable[[Any], None]) -> FakeProducer:
        made.append(FakeProducer(topic, faults if not made else {}, on_error))
        return made[-1]

    def read_keys() -> set[bytes]:
        if refusals[0] > 0:
            refusals[0] -= 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return set(topic)

    model = ModelService("unused:0", "events", recs, None, 4, make_producer=make,
                         read_keys=read_keys)
    for _ in range(1000):
        if model.halt.is_set():
            break
        model.step()
    model.close()
    return model, topic, made


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_model, "RETRY_S", 0.0)


def test_every_record_once_after_failed_deliveries_and_silent_ones() -> None:
    recs = records(50)
    faults = {b"asset-3": "landed-failed", b"asset-7": "lost", b"asset-11": "silent",
              b"asset-12": "landed-failed"}
    model, topic, made = run(recs, faults)
    assert model.halt.is_set()
    assert Counter(topic) == Counter(r.key for r in recs)  # each once, none missing
    assert model.delivered == len(recs) and not model.unresolved
    assert model.failed == 3 and len(made) >= 2 and model.replaced
    assert model.resent == 2  # asset-7 and asset-11: the ones that had not landed


def test_a_fatal_error_replaces_the_producer_and_resends_only_what_is_missing() -> None:
    recs = records(40)
    model, topic, made = run(recs, {b"asset-5": "landed-failed", b"asset-20": "fatal"})
    assert model.halt.is_set()
    assert Counter(topic) == Counter(r.key for r in recs)
    assert model.delivered == len(recs) and not model.unresolved
    assert any("fatal" in why or "refused" in why for why in model.replaced)


def test_the_read_back_waits_for_the_broker() -> None:
    recs = records(20)
    model, topic, _ = run(recs, {b"asset-2": "lost", b"asset-9": "landed-failed"},
                          answer_after=3)
    assert Counter(topic) == Counter(r.key for r in recs)
    assert model.delivered == len(recs) and not model.unresolved
    assert model.last_error is not None


def test_records_still_out_when_halted_are_named_unresolved() -> None:
    recs = records(10)
    topic: list[bytes] = []
    fake: list[FakeProducer] = []

    def make(on_error: Callable[[Any], None]) -> FakeProducer:
        fake.append(FakeProducer(topic, {b"asset-4": "silent"}, on_error))
        return fake[-1]

    model = ModelService("unused:0", "events", recs, None, 4, make_producer=make,
                         read_keys=lambda: set(topic))
    model.step()
    model.step()
    assert not model.halt.is_set()  # asset-4 was never reported: not done
    model.close()
    assert model.unresolved == {4}


def test_reconcile() -> None:
    recs = records(6)
    found, missing = reconcile({1, 2, 5}, recs, {b"asset-2", b"asset-0"})
    assert found == {2} and missing == [1, 5]
