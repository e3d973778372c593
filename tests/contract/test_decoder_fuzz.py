"""Any bytes in, an event or `InvalidEvent` out, never anything else; and the encoder is
deterministic and round-trips every decodable event."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.streaming import events
from services.streaming.events import ErrorCode, InvalidEvent
from tests.contract import strategies
from tests.contract.schema_support import example_files, example_id
from tests.contract.test_decoders import DECODERS

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL = list(DECODERS.values())


def _decodes_or_rejects(decode: Callable[[bytes], Any], data: bytes) -> None:
    try:
        decode(data)
    except InvalidEvent as exc:
        assert exc.code in set(ErrorCode)
        assert exc.reason.startswith(f"{exc.field}: ") and exc.field


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    for decode in ALL:
        _decodes_or_rejects(decode, data)


@FUZZ
@given(strategies.json_values)
def test_arbitrary_json(value: Any) -> None:
    data = orjson.dumps(value)
    for decode in ALL:
        _decodes_or_rejects(decode, data)


# Objects with the contract's field names but arbitrary values reach the checks past the first
# level, which random JSON almost never does.
_FIELDS = sorted(
    {
        "schema_version", "event_id", "asset_id", "asset_uri", "model_id", "model_version",
        "timestamp", "predictions", "metadata", "label_id", "request_id", "annotations",
        "annotator_id", "labeled_at", "reason", "priority", "source", "event_timestamp",
        "trigger_id", "rule", "detail", "counts", "total", "triggered_at", "manifest",
        "updated_at", "classes",
    }
)  # fmt: skip
_INNER = ["scores", "label", "confidence", "instance_id", "track_id", "bbox", "embedding",
          "strategy", "score", "class", "threshold", "instances", "inclusion_probability",
          "topic", "partition", "offset", "ranges", "start_offset", "end_offset",
          "labels_total", "labels_since_trigger", "agreement", "weight"]  # fmt: skip
_inner_objects = st.dictionaries(st.sampled_from(_INNER), strategies.json_values, max_size=5)
_field_values = st.one_of(
    strategies.json_values,
    st.lists(_inner_objects, max_size=3),
    _inner_objects,
    st.dictionaries(st.text(max_size=4), _inner_objects, max_size=3),
)
shaped = st.fixed_dictionaries(
    {"schema_version": st.sampled_from([1, 1.0, 2, True, "1", None])},
    optional={name: _field_values for name in _FIELDS if name != "schema_version"},
)


@FUZZ
@given(shaped)
def test_contract_shaped_objects(value: dict) -> None:
    data = orjson.dumps(value)
    for decode in ALL:
        _decodes_or_rejects(decode, data)


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"\xff\xfe",
        b"\xef\xbb\xbf{}",
        b"NaN",
        b'{"schema_version": Infinity}',
        b'{"schema_version": 1e999}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"schema_version": 18446744073709551616}',
        b'{"schema_version": 1, "timestamp": 99999999999999999999999}',
        b'"\\ud800"',
        b"1" * (events.MAX_EVENT_BYTES + 1),
        b"x" * 1_000_000,
    ],
    ids=lambda d: repr(d[:24]) if d else repr(d),
)
def test_hostile_payloads(data: bytes | None) -> None:
    for decode in ALL:
        _decodes_or_rejects(decode, data)  # type: ignore[arg-type]


def test_one_megabyte_is_too_large() -> None:
    with pytest.raises(InvalidEvent) as caught:
        events.decode_inference_event(b" " * 1_000_000 + b"{}")
    assert caught.value.code == ErrorCode.TOO_LARGE and caught.value.field == "$"


def test_tombstone_is_rejected_not_crashed() -> None:
    with pytest.raises(InvalidEvent) as caught:
        events.decode_label(None)  # type: ignore[arg-type]
    assert caught.value.code == ErrorCode.EMPTY


def test_invalid_event_pickles() -> None:
    import pickle

    error = InvalidEvent("timestamp", ErrorCode.WRONG_TYPE, "expected a number")
    again = pickle.loads(pickle.dumps(error))
    assert (again.field, again.code, again.reason) == (error.field, error.code, error.reason)


# --- encoding ---------------------------------------------------------------------------------


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {key: _shuffled(item, rng) for key, item in items}
    if isinstance(value, list):
        return [_shuffled(item, rng) for item in value]
    return value


@FUZZ
@given(st.dictionaries(st.text(max_size=6), strategies.json_values, max_size=6), st.randoms())
def test_encode_is_deterministic_whatever_the_key_order(obj: dict, rng: random.Random) -> None:
    encoded = events.encode_event(obj)
    assert events.encode_event(_shuffled(obj, rng)) == encoded
    assert orjson.loads(encoded) == obj


@FUZZ
@given(st.one_of(strategies.inference_events.map(lambda e: ("inference-event", e)),
                 strategies.labels.map(lambda e: ("label", e))))  # fmt: skip
def test_generated_event_round_trips(case: tuple[str, dict]) -> None:
    event, instance = case
    decode = DECODERS[event]
    decoded = decode(orjson.dumps(instance))
    encoded = events.encode_event(decoded.to_dict())
    assert decode(encoded) == decoded
    assert events.encode_event(decode(encoded).to_dict()) == encoded  # a fixed point


@pytest.mark.parametrize(
    "path", [p for p in example_files("valid-") if p.parent.name in DECODERS], ids=example_id
)
def test_valid_example_round_trips(path: Any) -> None:
    decode = DECODERS[path.parent.name]
    decoded = decode(path.read_bytes())
    encoded = events.encode_event(decoded.to_dict())
    assert decode(encoded) == decoded
