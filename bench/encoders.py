"""The output events' encoders, before and after they were compiled, beside the hand-built dicts
they replaced: microseconds per record, one process, interleaved rounds.

Run: .venv/bin/python bench/encoders.py [--rounds 7] [--seconds 0.05]

Per case, three ways to the same bytes (checked equal before timing):

- `hand`: the dict the service built by hand before issue 19 item 1 (bench/legacy_encoders.py,
  bench/legacy_control_events.py) written by `encode_event`;
- `plan`: the declared encoder as it was, walking the record's per-field plan
  (`orjson.dumps(DECL.to_json(x))`, which `Event.encode` did before it was compiled), and,
  where building is timed, the typed classes with the dataclass's own `__init__` (stock twins);
- `compiled`: `Event.encode` now (services/contracts/codegen.py `compile_encoder`), the typed
  classes built by their `compiled_init` (services/contracts/typed.py).

The `built + encoded` cases time what the service does per record, building included (the
scorer's `build_request` + encode; `dead_letter_of` + encode); the `encoded` cases encode typed
objects already built (the scorer's requests decoded back, contract examples), the hand way
being the typed object's old hand `to_dict()` + `encode_event`.
Each round times every way once (`timeit`, about `--seconds` each) in turn; the best round of
each is printed, so the machine's background load inflates nothing it can avoid.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

# Run as `python bench/encoders.py`: the repository root holds tests/ and bench/, not installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import legacy_annotation_requests as legacy_requests  # noqa: E402
from bench import legacy_control_events as legacy_control  # noqa: E402
from bench.legacy_encoders import build_request_dict, dead_letter_dict  # noqa: E402
from services.contracts import dead_letter  # noqa: E402
from services.contracts.annotation_request import (  # noqa: E402
    ANNOTATION_REQUEST,
    AnnotationRequest,
    SelectionReason,
    Source,
)
from services.contracts.class_feedback import CLASS_FEEDBACK  # noqa: E402
from services.contracts.dead_letter import DEAD_LETTER, dead_letter_of  # noqa: E402
from services.contracts.retrain_trigger import RETRAIN_TRIGGER  # noqa: E402
from services.contracts.vocabulary import Event  # noqa: E402
from services.core import PredictionBatch, SelectorPolicy, SelectorState, select  # noqa: E402
from services.scorer import builders  # noqa: E402
from services.scorer.builders import build_request  # noqa: E402
from services.streaming.events import (  # noqa: E402
    decode_annotation_request,
    decode_class_feedback,
    decode_inference_event,
    decode_retrain_trigger,
    encode_event,
)
from tests.contract.test_request_bytes import _stream  # noqa: E402

EXAMPLES = ROOT / "schemas" / "examples"
Way = Callable[[], list[bytes]]


def _plan(decl: Event, obj: Any) -> bytes:
    """`Event.encode` before it was compiled: the per-field plan, then orjson."""
    return orjson.dumps(decl.to_json(obj), option=orjson.OPT_SORT_KEYS)


def _stock(cls: type) -> type:
    """A twin of `cls` with the dataclass's own `__init__`: the typed classes as they were
    before `compiled_init` (the encoders read attributes, so the twin encodes alike)."""
    namespace = {"__annotations__": cls.__annotations__, "__module__": cls.__module__,
                 **{f.name: f.default for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING}}
    return dataclasses.dataclass(frozen=True, slots=True)(type(cls.__name__, (), namespace))


def _before(module: ModuleType, names: tuple[str, ...], build: Way) -> Way:
    """`build` run with `module` building the stock twins of its typed classes `names` (made
    once, here): the way before, building included."""
    saved = {name: getattr(module, name) for name in names}
    twins = {name: _stock(cls) for name, cls in saved.items()}

    def run() -> list[bytes]:
        vars(module).update(twins)
        try:
            return build()
        finally:
            vars(module).update(saved)

    return run


def request_case(kind: str) -> tuple[str, int, dict[str, Way]]:
    """The scorer's requests on the pinned-bytes stream (tests/contract/test_request_bytes):
    built from the decoded event and the selection, then encoded, as `PartitionScorer` does."""
    events = [decode_inference_event(r) for r in _stream(kind, 600)]
    state = SelectorState.create(SelectorPolicy(), seed=3)
    picks = select(state, PredictionBatch.from_events(events, list(range(len(events))))).selected
    topic = "al.inference-events.v1"
    ways: dict[str, Way] = {
        "hand": lambda: [encode_event(build_request_dict(events[s.ref], s, topic, 0, s.ref))
                         for s in picks],
        "plan": _before(builders, ("AnnotationRequest", "SelectionReason", "Source"),
                        lambda: [_plan(ANNOTATION_REQUEST, build_request(
                            events[s.ref], s, topic, 0, s.ref)) for s in picks]),
        "compiled": lambda: [ANNOTATION_REQUEST.encode(build_request(events[s.ref], s, topic, 0,
                                                                     s.ref)) for s in picks],
    }
    return f"request, {kind} (built + encoded)", len(picks), ways


def requests_encoded(kind: str) -> tuple[str, int, dict[str, Way]]:
    """The same requests, typed objects given: the encoder alone (the hand way: the typed
    request's old hand `to_dict()`, bench/legacy_annotation_requests.py)."""
    _, _, ways = request_case(kind)
    return encoded_case(ANNOTATION_REQUEST, decode_annotation_request,
                        legacy_requests.decode_annotation_request, ways["compiled"](),
                        f"request, {kind} (encoded)")


def encoded_case(decl: Event, decode: Callable[[bytes], Any], legacy: Callable[[bytes], Any],
                 data: list[bytes], title: str) -> tuple[str, int, dict[str, Way]]:
    objs, olds = [decode(d) for d in data], [legacy(d) for d in data]
    ways: dict[str, Way] = {
        "hand": lambda: [encode_event(old.to_dict()) for old in olds],
        "plan": lambda: [_plan(decl, obj) for obj in objs],
        "compiled": lambda: [decl.encode(obj) for obj in objs],
    }
    return title, len(data), ways


def example_case(decl: Event, decode: Callable[[bytes], Any], legacy: Callable[[bytes], Any],
                 name: str) -> tuple[str, int, dict[str, Way]]:
    data = (EXAMPLES / decl.name / name).read_bytes()
    return encoded_case(decl, decode, legacy, [data], f"{decl.name}: {name} (encoded)")


def dead_letter_case() -> tuple[str, int, dict[str, Way]]:
    args: dict[str, Any] = dict(
        topic="al.inference-events.v1", partition=3, service="scorer",
        reason="predictions[0].scores.cat: probability 1.3 outside [0, 1]",
        code="out_of_range", service_version="0.1.0", failed_at=1717243260.5,
        key=b"img-2024-06-01-000123")
    original = b'{"schema_version": 1, "event_id": "e1", "asset_id": "a1"}' * 4
    offsets = range(1234567, 1234567 + 20)
    ways: dict[str, Way] = {
        "hand": lambda: [encode_event(dead_letter_dict(original, offset=n, **args))
                         for n in offsets],
        "plan": _before(dead_letter, ("DeadLetter", "DeadLetterSource"), lambda: [
            _plan(DEAD_LETTER, dead_letter_of(original, offset=n, **args)) for n in offsets]),
        "compiled": lambda: [DEAD_LETTER.encode(dead_letter_of(original, offset=n, **args))
                             for n in offsets],
    }
    return "dead letter (built + encoded)", len(offsets), ways


def cases() -> list[tuple[str, int, dict[str, Way]]]:
    trigger = (RETRAIN_TRIGGER, decode_retrain_trigger, legacy_control.decode_retrain_trigger)
    feedback = (CLASS_FEEDBACK, decode_class_feedback, legacy_control.decode_class_feedback)
    return [request_case("classification"), requests_encoded("classification"),
            request_case("detection"), requests_encoded("detection"),
            example_case(*trigger, "valid-label-count.json"),
            example_case(*trigger, "valid-stopping-stable.json"),
            example_case(*feedback, "valid-three-classes.json"),
            example_case(*feedback, "valid-drift.json"),
            dead_letter_case()]


def _dropping_null_uri(data: bytes) -> bytes:
    """The old hand `to_dict()` of a request wrote a null `asset_uri`; the scorer never did."""
    obj = orjson.loads(data)
    if obj.get("asset_uri", "") is None:
        del obj["asset_uri"]
        return encode_event(obj)
    return data


def measure(ways: dict[str, Way], records: int, rounds: int, seconds: float) -> dict[str, float]:
    """Best µs per record of each way over `rounds` interleaved rounds."""
    calls = {name: max(1, round(seconds / (timeit.timeit(way, number=3) / 3)))
             for name, way in ways.items()}
    best = {name: float("inf") for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            elapsed = timeit.timeit(way, number=calls[name])
            best[name] = min(best[name], elapsed / calls[name] / records * 1e6)
    return best


def construction(rounds: int, seconds: float) -> None:
    """Building the typed objects alone: the dataclass's own `__init__` (a stock twin) vs
    `compiled_init`, per object, arguments by keyword as the producers pass them."""
    source = Source("al.inference-events.v1", 3, 1234567)
    reason = SelectionReason("fixed", 0.62, "c3", 0.55, (0,), None)
    request = AnnotationRequest(1, "0" * 32, "a1", None, "e1", "m", "v1", 1.7e9, reason, 0.62,
                                (), source)
    letter = dead_letter_of(b"{", topic="t", partition=0, offset=1, reason="r",
                            code="not_json", service="scorer", service_version="0.1.0",
                            failed_at=1.7e9)
    print("\nbuilding one typed object (µs, best of rounds): dataclass __init__ vs compiled_init")
    for obj in (source, reason, request, letter.source, letter):
        cls, fields = type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        twin = _stock(cls)
        best = measure({"stock": lambda: [twin(**fields)],  # noqa: B023  # called right here
                        "compiled": lambda: [cls(**fields)]}, 1, rounds, seconds)  # noqa: B023
        print(f"  {cls.__name__:20s} {best['stock']:6.2f} {best['compiled']:6.2f}  "
              f"{best['stock'] / best['compiled']:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.05, help="per way and round")
    args = parser.parse_args()
    print(f"{'case':52s} {'records':>7s} {'hand':>8s} {'plan':>8s} {'compiled':>8s}  "
          "(µs per record, best of rounds)  compiled vs hand, vs plan")
    for title, records, ways in cases():
        outputs = {name: way() for name, way in ways.items()}
        assert outputs["plan"] == outputs["compiled"], title
        assert [_dropping_null_uri(b) for b in outputs["hand"]] == outputs["compiled"], title
        best = measure(ways, records, args.rounds, args.seconds)
        hand, plan, compiled = best["hand"], best["plan"], best["compiled"]
        print(f"{title:52s} {records:7d} {hand:8.2f} {plan:8.2f} {compiled:8.2f}  "
              f"{hand / compiled:5.2f}x  {plan / compiled:5.2f}x")
    construction(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
