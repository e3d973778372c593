"""Splitting a request body into its events' own bytes (services/ingest/body.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.body import BodyError, split_events

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)
SPACE = st.text(" \t\r\n", max_size=3)


@settings(max_examples=300)
@given(st.lists(st.tuples(JSON_VALUES, SPACE, SPACE, st.booleans()), min_size=1, max_size=8),
       SPACE)
def test_array_items_come_out_as_their_own_text(items: list[Any], tail: str) -> None:
    texts = [json.dumps(value, indent=2 if pretty else None) for value, *_, pretty in items]
    body = "[" + ",".join(f"{a}{t}{b}" for t, (_, a, b, _) in zip(texts, items, strict=True))
    body += "]" + tail
    out = split_events(body.encode(), "application/json; charset=utf-8", 100)
    assert out == [t.encode() for t in texts]
    assert [json.loads(v) for v in out] == [value for value, *_ in items]


def test_ndjson_lines_are_kept_byte_for_byte_and_blank_lines_skipped() -> None:
    body = b'{"a": 1}\r\n\n  \n{"b":\t2}\nnot json\n'
    assert split_events(body, "application/x-ndjson", 10) == [b'{"a": 1}', b'{"b":\t2}',
                                                              b"not json"]


@pytest.mark.parametrize("body,ctype,status,code", [
    (b"[1,2,3]", "application/json", 413, "too_many_events"),
    (b"1\n2\n3\n", "application/ndjson", 413, "too_many_events"),
    (b"[]", "application/json", 400, "empty"),
    (b"\n \n", "application/jsonl", 400, "empty"),
    (b'{"a": 1}', "application/json", 400, "wrong_type"),
    (b"[1,]", "application/json", 400, "not_json"),
    (b"[1 2]", "application/json", 400, "not_json"),
    (b"[1] x", "application/json", 400, "not_json"),
    (b"[\xff]", "application/json", 400, "not_json"),
    (b"[" * 50_000, "application/json", 400, "not_json"),
    (b"[1]", "text/csv", 415, "unsupported_media_type"),
    (b"[1]", None, 415, "unsupported_media_type"),
])
def test_whole_body_problems(body: bytes, ctype: str | None, status: int, code: str) -> None:
    with pytest.raises(BodyError) as info:
        split_events(body, ctype, 2)
    assert (info.value.status, info.value.code) == (status, code)


def test_items_json_would_refuse_stay_items_for_the_decoder_to_judge() -> None:
    """NaN is not JSON, but only that item is wrong: the decoder rejects it, per event."""
    assert split_events(b'[NaN, {"a":1}]', "application/json", 10) == [b"NaN", b'{"a":1}']
