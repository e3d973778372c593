"""The decoders built from the declarations (services/contracts) judge every input exactly as
the hand-written decoders they replaced (kept in bench/legacy_input_events.py for the
comparison): the same events accepted and decoded to equal values, and for every rejection the
same `InvalidEvent` field, code and detail. Over the contract examples and Hypothesis near-valid
events, so every reason code keeps its meaning.

One change, on labels only: the hand decoder checked the size of `annotations` before the ids
and the annotations' items after them; the declared one checks fields in declared order. So a
label with a bad `annotations` array *and* a bad id before it in the contract is now rejected for
the id (each is still rejected, for one of its real faults, with that fault's code)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from bench import legacy_input_events as legacy
from services.streaming.events import InvalidEvent, decode_inference_event, decode_label
from tests.contract import strategies
from tests.contract.schema_support import example_files, example_id

PAIRS: dict[str, tuple[Callable[[bytes], Any], Callable[[bytes], Any]]] = {
    "inference-event": (legacy.decode_inference_event, decode_inference_event),
    "label": (legacy.decode_label, decode_label),
}


def _outcome(decode: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return decode(data).to_dict()
    except InvalidEvent as exc:
        return (exc.field, str(exc.code), exc.detail)


def _assert_same(event: str, data: bytes) -> None:
    old, new = PAIRS[event]
    before, after = _outcome(old, data), _outcome(new, data)
    if event == "label" and before != after and before[0] == "annotations":
        assert after[0] in _BEFORE_ANNOTATIONS, (before, after)  # the one order change
        assert _outcome(old, _without(data, after[0])) == before
        return
    assert after == before


_BEFORE_ANNOTATIONS = ("label_id", "request_id", "asset_id", "model_id")


def _without(data: bytes, name: str) -> bytes:
    """The label with field `name` made valid: then the hand decoder's own verdict stands."""
    obj = orjson.loads(data)
    obj[name] = "x"
    return orjson.dumps(obj)


@pytest.mark.parametrize("path", [p for p in example_files() if p.parent.name in PAIRS],
                         ids=example_id)
def test_every_example_is_judged_as_before(path: Any) -> None:
    _assert_same(path.parent.name, path.read_bytes())


NEAR = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@NEAR
@given(strategies.near_valid(strategies.inference_events))
def test_near_valid_inference_events_are_judged_as_before(instance: dict) -> None:
    _assert_same("inference-event", orjson.dumps(instance))


@NEAR
@given(strategies.near_valid(strategies.labels))
def test_near_valid_labels_are_judged_as_before(instance: dict) -> None:
    _assert_same("label", orjson.dumps(instance))
