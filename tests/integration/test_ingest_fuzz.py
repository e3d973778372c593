"""Schemathesis fuzzes `active-stream ingest` from the OpenAPI document it serves: generated
batches (JSON and NDJSON, valid and not) against the real service on the session's broker. Every
answer must conform to the document (status, headers, body schema), no request may get a 5xx,
every event must get exactly one result, and at the end the topic must hold exactly the events
answered `accepted`: nothing accepted is lost, nothing rejected is produced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from services.ingest.app import openapi_document
from services.streaming import topics
from services.streaming.events import InvalidEvent, decode_inference_event
from tests.integration.ingest_support import TOKEN, IngestProcess, ingest_topic
from tests.integration.kafka_support import read_all

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

MAX_EVENTS = 50
NDJSON = ("application/x-ndjson", "application/ndjson", "application/jsonl")


@schemathesis.serializer(*NDJSON)
def _ndjson(ctx: Any, value: Any) -> bytes:
    """A batch as NDJSON: one event per line (an item that is not a list is one line)."""
    items = value if isinstance(value, list) else [value]
    return b"\n".join(json.dumps(item).encode() for item in items)


_ACCEPTED: list[int] = []  # events answered `accepted`, over every generated request


@pytest.fixture(scope="module")
def fuzzed(broker: Any) -> Iterator[tuple[IngestProcess, str]]:
    prefix = ingest_topic(broker.bootstrap, 2)
    service = IngestProcess(broker.bootstrap, prefix, max_events=MAX_EVENTS,
                            max_body_bytes=2_000_000)
    service.start()
    try:
        service.wait_ready(60)
        yield service, prefix
    finally:
        assert service.stop() == 0, service.tail()


# The document the service serves (with its batch limit; tests/contract/test_ingest_openapi.py
# checks it against the committed one); built at import: schemathesis parametrizes at collection.
schema = schemathesis.openapi.from_dict(orjson.loads(openapi_document(MAX_EVENTS)))


@schema.parametrize()
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_fuzzed_requests_get_conforming_answers(case: Any,
                                               fuzzed: tuple[IngestProcess, str]) -> None:
    service, _ = fuzzed
    assert service.post(b"[]")[0] == 400  # alive (a crash would fail here, not as a timeout)
    # A schema-violating event is refused in a 200 answer, per event (the batch's valid events
    # are stored), and a schema-valid batch can still pass the byte limits (413): so not
    # schemathesis' negative_data_rejection and positive_data_acceptance, but the check below,
    # which is stricter -- each event's result is the scorer's own verdict on it.
    response = case.call_and_validate(
        base_url=service.url, headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[negative_data_rejection, positive_data_acceptance])
    assert response.status_code < 500, response.text
    if case.path == "/v1/inference-events" and response.status_code == 200:
        answer = response.json()
        sent = case.body if isinstance(case.body, list) else [case.body]
        assert len(answer["results"]) == len(sent)
        for item, result in zip(sent, answer["results"], strict=True):
            assert result["status"] == _verdict(item), (item, result)
        _ACCEPTED.append(answer["accepted"])


def _verdict(item: Any) -> str:
    try:
        # As schemathesis writes a JSON body (json.dumps: any integer, unlike orjson).
        decode_inference_event(json.dumps(item).encode())
    except InvalidEvent:
        return "rejected"
    return "accepted"


def test_the_topic_holds_exactly_the_accepted_events(broker: Any,
                                                     fuzzed: tuple[IngestProcess, str]) -> None:
    """Runs after the fuzzing above (same module, same service)."""
    _, prefix = fuzzed
    assert sum(_ACCEPTED) > 0, "the fuzzer sent no event the scorer accepts"
    stored = read_all(broker.bootstrap, prefix + topics.INFERENCE_EVENTS)
    assert len(stored) == sum(_ACCEPTED)
