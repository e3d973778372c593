"""`active-stream ingest` with a real HTTP client against the session's broker: per-event answers
with the scorer's reason codes, events read back from Kafka byte for byte with the loop's keys
and partitions, and the limits (401, 413, 415, 429, 503)."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import InvalidEvent, decode_inference_event
from services.streaming.partitioning import murmur2_partition
from tests.integration.ingest_support import TOKEN, IngestProcess, ingest_topic
from tests.integration.kafka_support import metric, read_all, wait_for
from tests.synthetic_events import inference_events

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "inference-event"
PARTITIONS = 3


@pytest.fixture(scope="module")
def ingest(broker: Any) -> Iterator[tuple[IngestProcess, str]]:
    prefix = ingest_topic(broker.bootstrap, PARTITIONS)
    # Small limits so the tests can pass them cheaply.
    service = IngestProcess(broker.bootstrap, prefix, max_body_bytes=2_000_000, max_events=500,
                            read_timeout_s=2)
    service.start()
    try:
        service.wait_ready(60)
        yield service, prefix
    finally:
        assert service.stop() == 0, service.tail()


def _expected(value: bytes) -> str | None:
    """The scorer's verdict on `value`: None (valid) or its reason code."""
    try:
        decode_inference_event(value)
    except InvalidEvent as exc:
        return exc.code.value
    return None


def _state(pid: int | None) -> str:
    """The process state letter from /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _records(bootstrap: str, prefix: str) -> dict[bytes, Any]:
    return {msg.value(): msg for msg in read_all(bootstrap, prefix + topics.INFERENCE_EVENTS)}


def test_every_event_is_answered_with_the_scorers_verdict_and_the_valid_ones_are_in_kafka(
    broker: Any, ingest: tuple[IngestProcess, str],
) -> None:
    service, prefix = ingest
    # An item's bytes are its JSON text: the whitespace around it is not part of it.
    examples = [p.read_bytes().strip() for p in sorted(EXAMPLES.glob("*.json"))]
    synthetic = [value for _, value in inference_events(60, seed=5)]
    values = synthetic[:30] + examples + synthetic[30:]
    verdicts = [_expected(v) for v in values]
    assert verdicts.count(None) >= 60 and len(set(verdicts)) >= 8  # the mix is really mixed
    # JSON array of the events' exact bytes (pretty-printed examples included).
    status, _, answer = service.post(b"[" + b",\n ".join(values) + b"]")
    assert status == 200, answer
    assert [r["index"] for r in answer["results"]] == list(range(len(values)))
    for result, verdict in zip(answer["results"], verdicts, strict=True):
        if verdict is None:
            assert result["status"] == "accepted", result
        else:
            assert (result["status"], result["code"]) == ("rejected", verdict), result
    assert answer["accepted"] == verdicts.count(None)
    assert answer["rejected"] == len(values) - verdicts.count(None)

    stored = _records(broker.bootstrap, prefix)
    valid = [v for v, verdict in zip(values, verdicts, strict=True) if verdict is None]
    assert set(stored) == set(valid)  # byte for byte, nothing invalid, nothing missing
    for value, result in zip(values, answer["results"], strict=True):
        if result["status"] != "accepted":
            continue
        msg = stored[value]
        asset = orjson.loads(value)["asset_id"]
        assert msg.key() == asset.encode()
        assert msg.partition() == murmur2_partition(asset.encode(), PARTITIONS)
        assert (msg.partition(), msg.offset()) == (result["partition"], result["offset"])

    samples = service.metrics()
    assert metric(samples, "ingest_events_accepted_total") == len(valid)
    assert metric(samples, "ingest_events_rejected_total", reason="not_normalised") == \
        verdicts.count("not_normalised")


def test_ndjson_lines_are_events_and_produced_as_sent(
    broker: Any, ingest: tuple[IngestProcess, str],
) -> None:
    service, prefix = ingest
    values = [value for _, value in inference_events(40, seed=6)]
    lines = values[:20] + [b"   ", b'{"schema_version": 1}'] + values[20:]
    status, _, answer = service.post(b"\r\n".join(lines) + b"\n", "application/x-ndjson")
    assert status == 200, answer
    assert (answer["accepted"], answer["rejected"]) == (40, 1)  # the blank line is no event
    assert answer["results"][20]["code"] == "missing_field"
    stored = _records(broker.bootstrap, prefix)
    assert all(value in stored for value in values)


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_no_token_no_entry(ingest: tuple[IngestProcess, str], token: str | None) -> None:
    service, _ = ingest
    before = metric(service.metrics(), "ingest_events_accepted_total")
    body = b"[" + inference_events(1, seed=7)[0][1] + b"]"
    status, headers, answer = service.post(body, token=token)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer", answer
    assert metric(service.metrics(), "ingest_events_accepted_total") == before


def test_over_the_limits_is_413_and_other_media_types_415(
    ingest: tuple[IngestProcess, str],
) -> None:
    service, _ = ingest
    status, _, answer = service.post(b"[" + b" " * 2_000_001 + b"]")
    assert (status, answer["error"]) == (413, "too_large")
    # Chunked, so no Content-Length to judge by: the limit holds while the body is read.
    status, _, answer = service.post(iter([b"[", b" " * 2_000_001, b"]"]))  # type: ignore[arg-type]
    assert (status, answer["error"]) == (413, "too_large")
    one = inference_events(1, seed=8)[0][1]
    status, _, answer = service.post(b"[" + b",".join([one] * 501) + b"]")
    assert (status, answer["error"]) == (413, "too_many_events")
    status, _, answer = service.post(b"\n".join([one] * 501), "application/x-ndjson")
    assert (status, answer["error"]) == (413, "too_many_events")
    status, _, answer = service.post(one, "text/plain")
    assert (status, answer["error"]) == (415, "unsupported_media_type")
    for body, code in [(b"{}", "wrong_type"), (b"[1,", "not_json"), (b"[]", "empty"),
                       (b"[" * 100_000, "not_json")]:
        status, _, answer = service.post(body)
        assert (status, answer["error"]) == (400, code), body[:10]


def test_a_body_that_stalls_gets_408_within_the_read_timeout(
    ingest: tuple[IngestProcess, str],
) -> None:
    service, _ = ingest
    with socket.create_connection(("127.0.0.1", service.api_port), timeout=30) as sock:
        sock.sendall(b"POST /v1/inference-events HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[")
        answer = sock.recv(65536)  # the rest of the body never comes
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_backpressure_is_429_and_an_unacknowledged_event_is_a_503_never_a_silent_drop() -> None:
    """A private broker, frozen (SIGSTOP) while a request's events are in flight: a second
    request finds the in-flight bound taken (429, nothing of it produced); the first is answered
    503 with every event `failed` once the delivery timeout passes. Thawed, the same request is
    stored: nothing was dropped silently."""
    with ApacheKafka() as kafka:  # started by `with`
        prefix = ingest_topic(kafka.bootstrap, 1)
        service = IngestProcess(kafka.bootstrap, prefix, max_events=8, max_in_flight_events=10,
                                delivery_timeout_s=5, retry_after_s=3)
        service.start()
        try:
            service.wait_ready(60)
            events = [value for _, value in inference_events(8, seed=9)]
            body = b"[" + b",".join(events) + b"]"
            first: dict[str, Any] = {}
            os.kill(kafka.pid, signal.SIGSTOP)  # type: ignore[arg-type]
            try:
                wait_for(lambda: _state(kafka.pid) == "T", 10, "the broker did not stop")
                thread = threading.Thread(target=lambda: first.update(zip(
                    ("status", "headers", "answer"), service.post(body), strict=True)))
                thread.start()
                wait_for(lambda: metric(service.metrics(), "ingest_in_flight_events") == 8, 10,
                         "the first request's events are not in flight")
                status, headers, answer = service.post(body)
                assert (status, answer["error"], headers["Retry-After"]) == \
                    (429, "backpressure", "3")
                thread.join(30)
            finally:
                os.kill(kafka.pid, signal.SIGCONT)  # type: ignore[arg-type]
            assert first["status"] == 503, first
            assert first["headers"]["Retry-After"] == "3"
            assert first["answer"]["failed"] == 8
            assert {r["code"] for r in first["answer"]["results"]} == {"not_delivered"}
            samples = service.metrics()
            assert metric(samples, "ingest_events_failed_total") == 8
            assert metric(samples, "ingest_requests_total", status="429") == 1
            assert metric(samples, "ingest_in_flight_events") == 0
            status, _, answer = service.post(body)  # the client's retry
            assert (status, answer["accepted"]) == (200, 8), answer
            # `failed` means "not acknowledged": the frozen broker may still have stored some of
            # the first attempt (at least once); every event is there after the retry.
            stored = _records(kafka.bootstrap, prefix)
            assert set(events) <= set(stored)
        finally:
            assert service.stop() == 0, service.tail()
