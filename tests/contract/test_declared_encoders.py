"""Encoders from the declarations (`Event.encode`: typed object -> bytes) write byte for byte
what the services wrote before (`encode_event` of the hand-built dict), and what they write
validates against the generated schema. The one dead-letter helper gives the same record for
every service."""

from __future__ import annotations

import base64
from dataclasses import replace

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from bench import legacy_annotation_requests as legacy_requests
from bench import legacy_control_events as legacy_control
from services.contracts.annotation_request import ANNOTATION_REQUEST
from services.contracts.class_feedback import CLASS_FEEDBACK
from services.contracts.dead_letter import DEAD_LETTER, dead_letter_of, encode_dead_letter
from services.contracts.inference import INFERENCE
from services.contracts.label import LABEL
from services.contracts.retrain_trigger import RETRAIN_TRIGGER
from services.streaming.events import (
    ErrorCode,
    InvalidEvent,
    decode_annotation_request,
    decode_class_feedback,
    decode_inference_event,
    decode_label,
    decode_retrain_trigger,
    encode_event,
)
from tests.contract import strategies
from tests.contract.schema_support import example_files, example_id, validator

SOME = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SOME
@given(strategies.inference_events)
def test_inference_event_encoder_writes_the_old_bytes(instance: dict) -> None:
    event = decode_inference_event(orjson.dumps(instance))
    encoded = INFERENCE.encode(event)
    assert encoded == encode_event(event.to_dict())
    assert decode_inference_event(encoded) == event
    assert list(validator("inference-event").iter_errors(orjson.loads(encoded))) == []


@SOME
@given(strategies.labels)
def test_label_encoder_writes_the_old_bytes(instance: dict) -> None:
    label = decode_label(orjson.dumps(instance))
    encoded = LABEL.encode(label)
    assert encoded == encode_event(label.to_dict())
    assert decode_label(encoded) == label


@pytest.mark.parametrize("path", [p for p in example_files("valid-")
                                  if p.parent.name in ("inference-event", "label")],
                         ids=example_id)
def test_valid_examples_round_trip_through_the_encoders(path: object) -> None:
    data = path.read_bytes()  # type: ignore[attr-defined]
    event, decl = ((decode_inference_event(data), INFERENCE) if "inference" in str(path)
                   else (decode_label(data), LABEL))
    assert orjson.loads(decl.encode(event)) == event.to_dict()


COORDINATES = dict(topic="al.labels.v1", partition=2, offset=41, reason="$: not UTF-8 JSON",
                   code=ErrorCode.NOT_JSON, service="label-sink", service_version="0.1.0",
                   failed_at=1717243260.5)


@pytest.mark.parametrize("key", [None, b"asset-1"])
def test_one_dead_letter_helper_for_every_service(key: bytes | None) -> None:
    """The record (dead_letter_of) and its bytes (encode_dead_letter, which every service
    produces) are the same, and the record validates against the generated schema."""
    record = DEAD_LETTER.to_json(dead_letter_of(b"\xff{", key=key, **COORDINATES))  # type: ignore[arg-type]
    encoded = encode_dead_letter(b"\xff{", key=key, **COORDINATES)  # type: ignore[arg-type]
    assert encoded == encode_event(record)
    assert list(validator("dead-letter").iter_errors(orjson.loads(encoded))) == []
    assert base64.b64decode(record["original_b64"]) == b"\xff{"
    assert record["key_b64"] == (None if key is None else base64.b64encode(key).decode())
    assert set(record) == set(DEAD_LETTER.record.required)


def test_dead_letter_of_a_decoder_error_keeps_its_code_and_reason() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_label(b'{"schema_version": 2}')
    exc = caught.value
    letter = dead_letter_of(b'{"schema_version": 2}', **{**COORDINATES, "reason": exc.reason,
                                                         "code": exc.code})  # type: ignore[arg-type]
    assert (letter.code, letter.reason) == ("unknown_version", exc.reason)
    with pytest.raises(ValueError):
        dead_letter_of(b"", **{**COORDINATES, "code": "no_such_code"})  # type: ignore[arg-type]


# --- the services' output events -----------------------------------------------------------------

OUTPUTS = {
    "annotation-request": (ANNOTATION_REQUEST, decode_annotation_request,
                           legacy_requests.decode_annotation_request),
    "retrain-trigger": (RETRAIN_TRIGGER, decode_retrain_trigger,
                        legacy_control.decode_retrain_trigger),
    "class-feedback": (CLASS_FEEDBACK, decode_class_feedback, legacy_control.decode_class_feedback),
}


@pytest.mark.parametrize("path", [p for p in example_files("valid-") if p.parent.name in OUTPUTS],
                         ids=example_id)
def test_output_examples_round_trip_through_the_encoders(path: object) -> None:
    """decode -> encode -> decode is the identity, the bytes validate, and they hold what the
    hand `to_dict` held (one difference: a request's null `asset_uri` is left out, as the scorer
    always wrote it)."""
    decl, decode, legacy = OUTPUTS[path.parent.name]  # type: ignore[attr-defined]
    data = path.read_bytes()  # type: ignore[attr-defined]
    event = decode(data)
    encoded = decl.encode(event)
    assert decode(encoded) == event
    assert list(validator(decl.name).iter_errors(orjson.loads(encoded))) == []
    before = orjson.loads(orjson.dumps(legacy(data).to_dict(), default=dict))
    if before.get("asset_uri", "") is None:
        del before["asset_uri"]
    assert orjson.loads(encoded) == before
    assert encoded == encode_event(before)


def test_scorer_requests_encode_to_the_bytes_it_writes() -> None:
    """The requests of the pinned-bytes streams (test_request_bytes), decoded and encoded again
    through the declaration, are byte for byte what the scorer's dicts encode to."""
    from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
    from services.scorer.builders import build_request
    from services.streaming.annotation_requests import encode_annotation_request
    from tests.contract.test_request_bytes import _stream

    checked = 0
    for kind in ("classification", "detection"):
        events = [decode_inference_event(r) for r in _stream(kind, 600)]
        state = SelectorState.create(SelectorPolicy(), seed=3)
        sel = select(state, PredictionBatch.from_events(events, list(range(len(events)))))
        for s in sel.selected:
            written = encode_annotation_request(build_request(
                events[s.ref], s, "al.inference-events.v1", 0, s.ref, tier=("consensus", 3, 6.0)))
            assert ANNOTATION_REQUEST.encode(decode_annotation_request(written)) == written
            checked += 1
    assert checked > 10


# --- the compiled encoders (codegen.compile_encoder) ---------------------------------------------

DECODERS = {"inference-event": decode_inference_event, "label": decode_label,
            **{name: decode for name, (_, decode, _) in OUTPUTS.items()}}


def _reference(decl: object, obj: object) -> bytes:
    """What `Event.encode` wrote before it was compiled: the per-field `to_json`, then orjson."""
    return orjson.dumps(decl.to_json(obj), option=orjson.OPT_SORT_KEYS)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", [p for p in example_files("valid-") if p.parent.name in DECODERS],
                         ids=example_id)
def test_compiled_encoders_write_the_reference_bytes(path: object) -> None:
    decl = {d.name: d for d in (INFERENCE, LABEL, ANNOTATION_REQUEST, RETRAIN_TRIGGER,
                                CLASS_FEEDBACK)}[path.parent.name]  # type: ignore[attr-defined]
    event = DECODERS[decl.name](path.read_bytes())  # type: ignore[attr-defined]
    assert decl.encode(event) == _reference(decl, event)


@SOME
@given(strategies.inference_events)
def test_compiled_inference_encoder_writes_the_reference_bytes(instance: dict) -> None:
    event = decode_inference_event(orjson.dumps(instance))
    assert INFERENCE.encode(event) == _reference(INFERENCE, event)


@pytest.mark.parametrize("key", [None, b"k"])
def test_compiled_dead_letter_encoder_writes_the_reference_bytes(key: bytes | None) -> None:
    letter = dead_letter_of(b"\x00{", key=key, **COORDINATES)  # type: ignore[arg-type]
    assert DEAD_LETTER.encode(letter) == _reference(DEAD_LETTER, letter)
    redacted = replace(letter, original_b64="", key_b64=None, redacted=True,
                       original_sha256="0" * 64, original_size=2, key_sha256="1" * 64)
    encoded = DEAD_LETTER.encode(redacted)
    assert encoded == _reference(DEAD_LETTER, redacted)
    assert list(validator("dead-letter").iter_errors(orjson.loads(encoded))) == []


def _request_with(**changes: object) -> object:
    data = next(p for p in example_files("valid-") if p.parent.name == "annotation-request")
    return replace(decode_annotation_request(data.read_bytes()), **changes)


def test_a_plain_part_holding_a_dataclass_is_refused_not_written_by_attribute_names() -> None:
    """orjson writes a dataclass by its attribute names (`class_name`, not `class`): a typed
    object left inside a plain part must fail loudly, not reach the topic in the wrong shape."""
    request = _request_with(annotate={"instances": [], "cost": 1, "frames": [
        dead_letter_of(b"", **COORDINATES)]})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ANNOTATION_REQUEST.encode(request)


def test_a_plain_part_with_an_undeclared_key_is_refused() -> None:
    request = _request_with(annotate={"instances": [], "cost": 1, "colour": "red"})
    with pytest.raises(ValueError, match="colour"):
        ANNOTATION_REQUEST.encode(request)


def test_read_only_and_plain_mappings_encode_alike() -> None:
    """The decoders hand back read-only mappings; producers may build plain dicts."""
    from types import MappingProxyType

    data = next(p for p in example_files("valid-") if p.parent.name == "retrain-trigger")
    trigger = decode_retrain_trigger(data.read_bytes())
    plain = replace(trigger, counts=dict(trigger.counts))
    proxied = replace(trigger, counts=MappingProxyType(dict(trigger.counts)))
    assert RETRAIN_TRIGGER.encode(plain) == RETRAIN_TRIGGER.encode(proxied) == \
        _reference(RETRAIN_TRIGGER, trigger)


def test_encode_event_refuses_a_typed_event() -> None:
    """orjson would write a dataclass by its attribute names (`class_name`, nulls for absent
    fields): a typed event handed to encode_event is a bug, refused, at any depth."""
    request = _request_with()
    assert "class" in orjson.loads(ANNOTATION_REQUEST.encode(request))["reason"]  # type: ignore[arg-type]
    for value in (request, {"reason": request.reason}):  # type: ignore[attr-defined]
        with pytest.raises(TypeError) as caught:
            encode_event(value)  # type: ignore[arg-type]
        assert "declaration" in str(caught.value.__cause__)  # why, from encode_event's default


def test_the_encoder_benchmark_compares_ways_to_the_same_bytes() -> None:
    """bench/encoders.py times the hand-built dicts, the per-field plan (with the stock
    dataclass __init__) and the compiled encoder: each of its cases writes the same bytes."""
    from bench.encoders import _dropping_null_uri, cases

    for title, records, ways in cases():
        out = {name: way() for name, way in ways.items()}
        assert len(out["compiled"]) == records, title
        assert out["plan"] == out["compiled"], title
        assert [_dropping_null_uri(b) for b in out["hand"]] == out["compiled"], title
