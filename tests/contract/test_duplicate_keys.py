"""A payload that repeats a key inside one object is rejected as `duplicate_key`, by every decoder
and by the batch decoder alike, and nothing else is: escapes, whitespace and quotes inside strings
never look like a repeat. (JSON leaves a repeated key's meaning open: a gateway that reads the
first value and orjson, which keeps the last, would disagree about the same bytes.)"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.streaming.event_fields import has_duplicate_keys
from services.streaming.events import (
    ErrorCode,
    InvalidEvent,
    decode_class_feedback,
    decode_inference_event,
    decode_label,
)
from services.streaming.inference_batch import decode_inference_batch
from tests.contract import strategies


def _event(i: int = 0, **changes: Any) -> dict[str, Any]:
    event = {"schema_version": 1, "event_id": f"e{i}", "asset_id": f"a{i}", "model_id": "m",
             "model_version": "v1", "timestamp": 1.7e9 + i,
             "predictions": [{"scores": {"cat": 0.25, "dog": 0.75}}]}
    return {**event, **changes}


# Repeats in each kind of object, written as a producer's serializer might: compact, with spaces,
# pretty-printed, with escapes nearby. The last value is the valid one (what orjson keeps).
REPEATED = {
    "top-level timestamp": b'{"timestamp":99e99,' + orjson.dumps(_event())[1:],
    "class in scores": orjson.dumps(_event()).replace(b'{"cat":0.25', b'{"cat":0.9,"cat":0.25'),
    "prediction field": orjson.dumps(_event()).replace(b'[{"scores"', b'[{"scores":{},"scores"'),
    "metadata key": orjson.dumps(_event(metadata={"k": 1})).replace(b'{"k":1}',
                                                                     b'{"k":0,"k":1}'),
    "nested metadata": orjson.dumps(_event(metadata={"k": {"a": 1}})).replace(
        b'{"a":1}', b'{"a":1,"a":1}'),
    "space before colon": json.dumps(_event(), indent=1).replace(
        '"timestamp":', '"timestamp" : 5, "timestamp" :').encode(),
    "escaped quote nearby": orjson.dumps(_event(asset_uri='say "hi"')).replace(
        b'"asset_id"', b'"asset_id":"x","asset_id"'),
    "escaped key": b'{"asset\\u005fid":"x",' + orjson.dumps(_event())[1:],
    "backslash-ended key": b'{"model_id":"x","model\\u005fid":"y",' + orjson.dumps(
        {k: v for k, v in _event().items() if k != "model_id"})[1:],
}

# Payloads whose strings hold quotes, backslashes, escapes and colons: never repeats.
DISTINCT = {
    "quotes in strings": orjson.dumps(_event(asset_uri='a"b":"c', metadata={'k"': 'v":"'})),
    "string ends in a backslash": orjson.dumps(_event(asset_uri="a\\", metadata={"b\\": "\\"})),
    "unicode escapes": json.dumps(_event(asset_id="café", metadata={"ü": "ö"})).encode(),
    "escaped quote as \\u0022": b'{"asset_uri":"a\\u0022b",' + orjson.dumps(_event())[1:],
    "pretty-printed": json.dumps(_event(metadata={"a": [1, {"b": "c"}]}), indent=2).encode(),
    "same key in different objects": orjson.dumps(_event(metadata={"cat": {"cat": 1}})),
}


@pytest.mark.parametrize("name", sorted(REPEATED))
def test_a_repeated_key_is_dead_lettered_by_both_decoders(name: str) -> None:
    data = REPEATED[name]
    json.loads(data)  # valid JSON, just ambiguous
    with pytest.raises(InvalidEvent) as caught:
        decode_inference_event(data)
    assert caught.value.code == ErrorCode.DUPLICATE_KEY and caught.value.field == "$"
    batch = [orjson.dumps(_event(i)) for i in range(40)]
    batch[23] = data
    got = decode_inference_batch(batch)
    assert [(i, e.code) for i, e in got.errors] == [(23, "duplicate_key")]
    assert got.index == [i for i in range(40) if i != 23]


@pytest.mark.parametrize("name", sorted(DISTINCT))
def test_quotes_and_escapes_are_not_mistaken_for_a_repeat(name: str) -> None:
    data = DISTINCT[name]
    decode_inference_event(data)
    assert not has_duplicate_keys(data, orjson.loads(data))
    got = decode_inference_batch([data] * 20 + [orjson.dumps(_event(i)) for i in range(20)])
    assert not got.errors


def test_the_reason_names_the_repeated_key() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_inference_event(REPEATED["class in scores"])
    assert '"cat"' in caught.value.reason


def test_labels_and_feedback_refuse_repeated_keys_too() -> None:
    label = {"schema_version": 1, "label_id": "l", "asset_id": "a", "annotator_id": "h",
             "labeled_at": 1.7e9, "annotations": [{"label": "cat"}]}
    feedback = {"schema_version": 1, "model_id": "m", "updated_at": 1.7e9, "classes": {
        "cat": {"labels_total": 3, "labels_since_trigger": 1, "agreement": 0.5, "weight": 2.0}}}
    for decode, obj, key in ((decode_label, label, b'"asset_id"'),
                             (decode_class_feedback, feedback, b'"model_id"')):
        decode(orjson.dumps(obj))
        with pytest.raises(InvalidEvent) as caught:
            decode(orjson.dumps(obj).replace(key, key + b':"x",' + key, 1))
        assert caught.value.code == ErrorCode.DUPLICATE_KEY


def _repeat_one_key(draw: st.DrawFn, event: dict[str, Any]) -> bytes:
    """`event` as JSON with a key of one of its objects written twice (first value: a string).
    The chosen object's serialisation is spliced with a copy that starts with the repeat (an
    identical object met earlier gets it instead: a repeat all the same)."""
    ascii_only = draw(st.booleans())
    target = draw(st.sampled_from([o for o in _objects(event) if o]))
    key = draw(st.sampled_from(sorted(target)))
    plain = json.dumps(target, ensure_ascii=ascii_only)
    doubled = "{" + json.dumps({key: "first"}, ensure_ascii=ascii_only)[1:-1] + ", " + plain[1:]
    whole = json.dumps(event, ensure_ascii=ascii_only)
    assert plain in whole
    return whole.replace(plain, doubled, 1).encode()


def _objects(value: Any) -> list[dict[str, Any]]:
    found = [value] if isinstance(value, dict) else []
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) \
        else []
    for child in children:
        found += _objects(child)
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_repeated_key_of_a_generated_event_is_found(data: st.DataObject) -> None:
    event = data.draw(strategies.inference_events)
    payload = _repeat_one_key(data.draw, event)
    assert has_duplicate_keys(payload, orjson.loads(payload))
    original = json.dumps(event, ensure_ascii=data.draw(st.booleans())).encode()
    assert not has_duplicate_keys(original, orjson.loads(original))
