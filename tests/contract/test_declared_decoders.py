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
from hypothesis import strategies as st

from bench import legacy_annotation_requests as legacy_requests
from bench import legacy_control_events as legacy_control
from bench import legacy_input_events as legacy
from services.streaming.events import (
    InvalidEvent,
    decode_annotation_request,
    decode_class_feedback,
    decode_inference_event,
    decode_label,
    decode_retrain_trigger,
)
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


# --- the services' output events: annotation request, retrain trigger, class feedback ----------
#
# Their hand decoders are kept in bench/legacy_annotation_requests.py and
# bench/legacy_control_events.py. Where the hand decoder checked the size of a list before
# other fields and its items after them (the request's `predictions`, `reason.track.frames`),
# the declared one checks the list whole, in its place: an event with bad items there *and* a
# bad field the hand decoder read in between is now rejected for one or the other (each is
# still rejected, for one of its real faults, with that fault's code). One fix: a
# `reason.track.signals` item that is a list or an object crashed the hand decoder (TypeError:
# unhashable); it is now out_of_range like any unknown signal.

OUTPUT_PAIRS: dict[str, tuple[Callable[[bytes], Any], Callable[[bytes], Any]]] = {
    "annotation-request": (legacy_requests.decode_annotation_request, decode_annotation_request),
    "retrain-trigger": (legacy_control.decode_retrain_trigger, decode_retrain_trigger),
    "class-feedback": (legacy_control.decode_class_feedback, decode_class_feedback),
}
# (event, field the hand decoder blamed) -> fields the declared one may blame instead (above).
_REORDERED = {
    ("annotation-request", "predictions"): ("request_id", "asset_id", "asset_uri", "event_id",
                                            "model_id", "model_version", "event_timestamp",
                                            "reason", "priority"),
    ("annotation-request", "reason.track.frames"): ("reason.track.track_id",
                                                    "reason.track.score"),
}


def _judged(decode: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        # JSON form: lists, not tuples; read-only mappings (the hand decoders') as dicts
        return orjson.loads(orjson.dumps(decode(data).to_dict(), default=dict))
    except InvalidEvent as exc:
        return (exc.field, str(exc.code), exc.detail)
    except TypeError as exc:  # the hand request decoder's one crash (see above)
        return ("crash", str(exc))


def _assert_output_same(event: str, data: bytes) -> None:
    old, new = OUTPUT_PAIRS[event]
    before, after = _judged(old, data), _judged(new, data)
    if before == after:
        return
    if event == "annotation-request" and isinstance(before, tuple) and before[0] == "crash":
        assert after[1] == "out_of_range" and ".signals[" in after[0], after
        return
    if event == "annotation-request" and isinstance(before, dict):  # asset_uri: null
        assert {**before, "asset_uri": None} == {**after, "asset_uri": None}
        assert before["asset_uri"] is None and "asset_uri" not in after
        return
    assert isinstance(before, tuple) and isinstance(after, tuple), (before, after)
    blamed = before[0].split("[")[0] if before[0].startswith("predictions[") else before[0]
    allowed = _REORDERED.get((event, blamed), ())
    assert any(after[0] == f or after[0].startswith(f + ".") or after[0].startswith(f + "[")
               for f in allowed), (before, after)


@pytest.mark.parametrize("path", [p for p in example_files() if p.parent.name in OUTPUT_PAIRS],
                         ids=example_id)
def test_every_output_example_is_judged_as_before(path: Any) -> None:
    before = _judged(OUTPUT_PAIRS[path.parent.name][0], path.read_bytes())
    _assert_output_same(path.parent.name, path.read_bytes())
    assert path.name.startswith("valid-") == isinstance(before, dict)


def _output_examples() -> list[tuple[str, Any]]:
    return [(p.parent.name, orjson.loads(p.read_bytes()))
            for p in example_files("valid-") if p.parent.name in OUTPUT_PAIRS]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_output_examples()).flatmap(
    lambda pair: strategies.near_valid(st.just(pair[1])).map(lambda inst: (pair[0], inst))
))  # fmt: skip
def test_near_valid_output_events_are_judged_as_before(case: tuple[str, dict]) -> None:
    event, instance = case
    _assert_output_same(event, orjson.dumps(instance))


def test_the_hand_request_decoders_crash_is_now_a_reason() -> None:
    """The one behaviour changed on purpose: an unhashable signal is out_of_range."""
    path = next(p for p in example_files("valid-track"))
    obj = orjson.loads(path.read_bytes())
    obj["reason"]["track"]["signals"] = [["class_flip"]]
    with pytest.raises(TypeError):
        legacy_requests.decode_annotation_request(orjson.dumps(obj))
    with pytest.raises(InvalidEvent) as caught:
        decode_annotation_request(orjson.dumps(obj))
    assert (caught.value.field, caught.value.code) == ("reason.track.signals[0]", "out_of_range")


@pytest.mark.parametrize("extra", [{"probe": ""}, {"sequence_id": ""}])
def test_a_bad_timestamp_is_named_before_a_bad_probe_or_sequence_id(extra: dict) -> None:
    """Found by the near-valid test: the hand decoder read sequence_id and probe last."""
    event = {"schema_version": 1, "event_id": "e", "asset_id": "a", "model_id": "m",
             "model_version": "v", "timestamp": "", "predictions": [
                 {"label": "x", "confidence": 0.5}], **extra}
    _assert_same("inference-event", orjson.dumps(event))
