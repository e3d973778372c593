"""Decoder throughput on one core, and the hand decoders beside msgspec and pydantic v2 on speed
and on error reasons (issue 19, item 1: choose by the figures).

Run: .venv/bin/python bench/decoders.py [--seconds 1.0] [--no-typed] [--no-legacy]. Best of five
timed rounds, so background noise inflates nothing. The payloads are built here, compact JSON as a
producer would send it; the batch cases also use the shared stream (tests/synthetic_events.py). The
typed decoders (bench/typed_decoders.py, from the `bench` extra) are printed when installed:

- speed: per event shape, the hand decoder (`decode_inference_event`), msgspec and pydantic, each
  with the checks neither library can declare (bench/typed_decoders.py says which); per batch,
  the scorer's `decode_inference_batch` beside msgspec decoding the batch as one array;
- before/after: the decoders declared in services/contracts beside the hand-written ones they
  replaced (bench/legacy_input_events.py), per event and per batch (the batch decoder with its
  exact path swapped for the legacy one), and their reason codes (field, code, detail) over the
  contract examples and hostile payloads;
- error reasons: every contract example under schemas/examples/inference-event and a few hostile
  payloads, the hand decoder's reason code beside the code each library's error maps to (or
  "ACCEPTED" when it let the event through).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

# Run as `python bench/decoders.py`: the repository root holds tests/ and bench/, not installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.streaming import inference_batch  # noqa: E402
from services.streaming.events import (  # noqa: E402
    InvalidEvent,
    decode_inference_event,
    decode_label,
)
from services.streaming.inference_batch import decode_inference_batch  # noqa: E402
from tests.synthetic_events import event_bodies, inference_events, stamp  # noqa: E402


def _inference(classes: int, predictions: int, embedding: int = 0) -> bytes:
    share = 1.0 / classes
    prediction: dict = {"scores": {f"class-{i}": share for i in range(classes)}}
    if predictions > 1:
        prediction.update(instance_id="obj-1", bbox=[10.0, 20.5, 64.0, 128.0])
    if embedding:
        prediction["embedding"] = [0.001 * i for i in range(embedding)]
    event = {
        "schema_version": 1,
        "event_id": "0b7e4c1e-5a8f-4d5e-9a49-3b9b8c1d2e3f",
        "asset_id": "img-2024-06-01-000123",
        "asset_uri": "s3://shelf-cams/2024/06/01/000123.jpg",
        "model_id": "shelf-classifier",
        "model_version": "2024.06.1",
        "timestamp": 1717243200.125,
        "predictions": [prediction] * predictions,
        "metadata": {"camera": "aisle-7"},
    }
    return orjson.dumps(event)


def _label() -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "label_id": "lbl-0001",
            "request_id": "req-3f9a2c",
            "asset_id": "frame-000981",
            "model_id": "people-detector",
            "annotations": [{"label": "person", "instance_id": "obj-1", "bbox": [11, 20, 62, 130]}],
            "annotator_id": "annotator-42",
            "labeled_at": 1717246800.5,
        }
    )


INFERENCE_CASES: list[tuple[str, bytes]] = [
    ("inference: 10 classes, 1 prediction", _inference(10, 1)),
    ("inference: 1000 classes, 1 prediction", _inference(1000, 1)),
    ("inference: 10 classes, 20 detections", _inference(10, 20)),
    ("inference: 10 classes, 512-d embedding", _inference(10, 1, 512)),
]


def _batch(event: bytes, n: int = 1000) -> list[bytes]:
    """n copies of `event` with distinct ids (the decoder's fast shape keeps no per-event state
    beyond them)."""
    out = []
    for i in range(n):
        obj = orjson.loads(event)
        obj["event_id"], obj["asset_id"] = f"ev-{i}", f"asset-{i}"
        out.append(orjson.dumps(obj))
    return out


def _stream(n: int = 1000) -> list[bytes]:
    """The benchmarks' stream (bench/scorer.py's events): 10-class distributions."""
    return [b + stamp(1.7e9 + i) for i, (_, b) in
            enumerate(event_bodies(np.random.default_rng(3), 0, n))]


BATCH_CASES: list[tuple[str, list[bytes]]] = [
    ("batch: 10 classes, 1 prediction, metadata", _batch(_inference(10, 1))),
    ("batch: the bench stream (bench/scorer.py)", _stream()),
    ("batch: the tests' stream, 1 in 7 top-1", [v for _, v in inference_events(1000, seed=3)]),
    ("batch: 10 classes, 20 detections", _batch(_inference(10, 20))),
]


def _rate(decode: Callable[[Any], object], data: Any, seconds: float) -> float:
    n = 1
    while True:  # calibrate a batch size that takes about seconds / 5
        start = time.perf_counter()
        for _ in range(n):
            decode(data)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 5:
            break
        n *= 2
    best = elapsed
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(n):
            decode(data)
        best = min(best, time.perf_counter() - start)
    return n / best


def _line(name: str, size: int, rate: float, base: float | None = None) -> str:
    versus = f"  {rate / base:5.2f}x the hand decoder" if base else ""
    return f"{name:46s} {size:7d} B  {rate:12,.0f} events/s  {1e6 / rate:8.2f} µs/event{versus}"


# -- typed decoders: speed ------------------------------------------------------------------------

def typed_speed(seconds: float) -> None:
    from bench.typed_decoders import msgspec_decode, msgspec_decode_batch, pydantic_decode

    print("\nOur decoders (declared, services/contracts) vs typed decoders (each with the same "
          "post-checks; events/s, one core; 'the hand decoder' below means ours)")
    for name, data in INFERENCE_CASES:
        base = _rate(decode_inference_event, data, seconds)
        print(_line(name + " | ours", len(data), base))
        print(_line("    msgspec", len(data), _rate(msgspec_decode, data, seconds), base))
        print(_line("    pydantic v2", len(data), _rate(pydantic_decode, data, seconds), base))
    for name, values in BATCH_CASES:
        size = sum(map(len, values)) // len(values)
        base = _rate(decode_inference_batch, values, seconds) * len(values)
        print(_line(name + " | ours", size, base))
        rate = _rate(msgspec_decode_batch, values, seconds) * len(values)
        print(_line("    msgspec, the batch as one array", size, rate, base))
        loads = _rate(lambda vs: [orjson.loads(v) for v in vs], values, seconds) * len(values)
        print(_line("    orjson.loads alone (no checks)", size, loads, base))


# -- typed decoders: error reasons ----------------------------------------------------------------

# msgspec's errors are text; these patterns give the hand decoder's code for each kind it raises.
MSGSPEC_CODES = [
    (r"^Object missing required field", "missing_field"),
    (r"^Object contains unknown field", "unknown_field"),
    (r"^Invalid enum value .* at `\$\.schema_version`", "unknown_version"),
    (r"^Expected `\w+` of length >= 1\b", "empty"),
    (r"^Expected `[\w |]+`, got `\w+`", "wrong_type"),
    (r"^Expected `\w+` (<=|>=|of length)", "out_of_range"),
    (r"^Number out of range", "not_finite"),
    (r"^JSON is malformed|^Input data was truncated", "not_json"),
]
# pydantic's error types, mapped the same way (the first error of the list).
PYDANTIC_CODES = {
    "missing": "missing_field", "extra_forbidden": "unknown_field", "literal_error":
    "unknown_version", "string_too_short": "empty", "too_short": "out_of_range",
    "too_long": "out_of_range", "string_too_long": "out_of_range", "less_than_equal":
    "out_of_range", "greater_than_equal": "out_of_range", "json_invalid": "not_json",
    "float_type": "wrong_type", "string_type": "wrong_type", "dict_type": "wrong_type",
    "list_type": "wrong_type", "tuple_type": "wrong_type", "model_type": "wrong_type",
    "int_type": "wrong_type", "finite_number": "not_finite", "model_attributes_type":
    "wrong_type"}
# The post-checks' ValueError texts.
POST_CODES = [("both given", "conflict"), ("neither", "missing_field"),
              ("without confidence", "missing_field"), ("sum to 1", "not_normalised"),
              ("too large", "too_large")]


def _hostile() -> list[tuple[str, bytes]]:
    good = orjson.loads(_inference(3, 1))
    compact = orjson.dumps(good)
    return [
        ("hostile: a repeated key (event_id)",
         compact.replace(b'"event_id":', b'"event_id":"first","event_id":', 1)),
        ("hostile: bbox x = 1e999", orjson.dumps(
            {**good, "predictions": [{**good["predictions"][0], "bbox": [0, 0, 1, 1]}]})
         .replace(b'"bbox":[0,', b'"bbox":[1e999,')),
        ("hostile: bbox x = NaN (not JSON)", orjson.dumps(
            {**good, "predictions": [{**good["predictions"][0], "bbox": [0, 0, 1, 1]}]})
         .replace(b'"bbox":[0,', b'"bbox":[NaN,')),
        ("hostile: schema_version 1.0 (integral)", compact.replace(
            b'"schema_version":1', b'"schema_version":1.0')),
        ("hostile: timestamp as an integer", compact.replace(
            b'"timestamp":1717243200.125', b'"timestamp":1717243200')),
        ("hostile: not UTF-8", compact.replace(b"aisle-7", b"aisle-\xff")),
    ]


def _code(fn: Callable[[bytes], object], data: bytes) -> str:
    """The reason code `fn`'s error maps to; "ACCEPTED" if it raised none, "?" if unmapped."""
    import msgspec
    import pydantic

    try:
        fn(data)
    except InvalidEvent as exc:
        return str(exc.code)
    except msgspec.ValidationError as exc:
        return next((c for p, c in MSGSPEC_CODES if re.search(p, str(exc))), f"? {exc}")
    except msgspec.DecodeError as exc:
        known = ("malformed", "truncated", "UTF-8")
        return "not_json" if any(k in str(exc) for k in known) else f"? {exc}"
    except pydantic.ValidationError as exc:
        kind = exc.errors()[0]["type"]
        return PYDANTIC_CODES.get(kind, f"? {kind}")
    except (ValueError, UnicodeDecodeError) as exc:
        return next((c for p, c in POST_CODES if p in str(exc)), f"? {exc}")
    return "ACCEPTED"


def typed_reasons() -> None:
    from bench.typed_decoders import msgspec_decode, pydantic_decode

    cases = []
    for path in sorted((ROOT / "schemas/examples/inference-event").glob("*.json")):
        raw = path.read_bytes()
        try:  # compact, as a producer sends it; the oversize example stays as it is
            raw = raw if len(raw) > 200_000 else orjson.dumps(orjson.loads(raw))
        except orjson.JSONDecodeError:
            pass
        cases.append((path.stem, raw))
    cases += _hostile()
    print(f"\nError reasons: {'case':<44} {'hand':<16} {'msgspec':<16} {'pydantic v2':<16}")
    same = {"msgspec": 0, "pydantic": 0}
    passed = {"msgspec": 0, "pydantic": 0}
    for name, data in cases:
        hand = _code(decode_inference_event, data)
        typed = {"msgspec": _code(msgspec_decode, data), "pydantic": _code(pydantic_decode, data)}
        for lib, code in typed.items():
            same[lib] += code == hand
            passed[lib] += code == "ACCEPTED" and hand != "ACCEPTED"
        mark = "" if typed["msgspec"] == typed["pydantic"] == hand else "  <-"
        print(f"  {name:<58} {hand:<16} {typed['msgspec'][:16]:<16} "
              f"{typed['pydantic'][:16]:<16}{mark}")
    for lib in same:
        print(f"  {lib}: the hand decoder's outcome in {same[lib]} of {len(cases)} cases; "
              f"let through {passed[lib]} that the hand decoder rejects")


# -- before/after: the declared decoders vs the hand-written ones they replaced -------------------

def _legacy_batch(values: list[bytes]) -> object:
    """The batch decoder with its exact path (every event of a shape the fast check does not
    take, every failing run) running the legacy hand readers."""
    from bench import legacy_input_events as legacy

    saved = (inference_batch.read_inference_event, inference_batch.decode_inference_event,
             inference_batch.quote_count)
    inference_batch.read_inference_event = legacy.read_inference_event
    inference_batch.decode_inference_event = legacy.decode_inference_event
    inference_batch.quote_count = legacy.quote_count
    try:
        return decode_inference_batch(values)
    finally:
        (inference_batch.read_inference_event, inference_batch.decode_inference_event,
         inference_batch.quote_count) = saved


def _alternating(old: Callable[[Any], object], new: Callable[[Any], object], data: Any,
                 seconds: float) -> tuple[float, float]:
    """Best rate of each over seven alternating rounds: on a shared machine, load that comes and
    goes then falls on both alike (fewer rounds measured +-40% on a loaded 2-core machine)."""
    rates = [(_rate(old, data, seconds / 7), _rate(new, data, seconds / 7)) for _ in range(7)]
    return max(r[0] for r in rates), max(r[1] for r in rates)


def _outcome(fn: Callable[[bytes], object], data: bytes) -> tuple[str, str, str]:
    try:
        fn(data)
    except InvalidEvent as exc:
        return str(exc.code), exc.field, exc.detail
    return ("ACCEPTED", "", "")


def legacy_comparison(seconds: float) -> None:
    from bench import legacy_input_events as legacy

    print("\nDeclared decoders (services/contracts) vs the hand-written ones they replaced")
    cases = [(name, legacy.decode_inference_event, decode_inference_event, data)
             for name, data in INFERENCE_CASES]
    cases.append(("label: 1 annotation with bbox", legacy.decode_label, decode_label, _label()))
    for name, old, new, data in cases:
        base, rate = _alternating(old, new, data, seconds)
        print(_line(name + " | before", len(data), base))
        print(_line("    declared", len(data), rate, base))
    for name, values in BATCH_CASES:
        size = sum(map(len, values)) // len(values)
        base, rate = _alternating(_legacy_batch, decode_inference_batch, values, seconds)
        print(_line(name + " | before", size, base * len(values)))
        print(_line("    declared", size, rate * len(values), base * len(values)))
    pairs = [(legacy.decode_inference_event, decode_inference_event, data)
             for _, data in _reason_cases("inference-event") + _hostile()]
    pairs += [(legacy.decode_label, decode_label, data) for _, data in _reason_cases("label")]
    codes = sum(_outcome(old, d)[:2] == _outcome(new, d)[:2] for old, new, d in pairs)
    exact = sum(_outcome(old, d) == _outcome(new, d) for old, new, d in pairs)
    print(f"  reasons over {len(pairs)} cases (contract examples + hostile): same code and field "
          f"in {codes}, same detail too in {exact}")
    for old, new, data in pairs:
        if _outcome(old, data) != _outcome(new, data):
            print(f"    differs: {_outcome(old, data)} -> {_outcome(new, data)}")


def output_comparison(seconds: float) -> None:
    """The services' output events (annotation request, retrain trigger, class feedback):
    declared decoders beside the hand ones they replaced, on the contract's valid examples."""
    from bench import legacy_annotation_requests as legacy_requests
    from bench import legacy_control_events as legacy_control
    from services.streaming.events import (
        decode_annotation_request,
        decode_class_feedback,
        decode_retrain_trigger,
    )

    decoders = {
        "annotation-request": (legacy_requests.decode_annotation_request,
                               decode_annotation_request),
        "retrain-trigger": (legacy_control.decode_retrain_trigger, decode_retrain_trigger),
        "class-feedback": (legacy_control.decode_class_feedback, decode_class_feedback),
    }
    print("\nOutput events: declared decoders vs the hand-written ones they replaced")
    pairs = []
    for event, (old, new) in decoders.items():
        for name, data in _reason_cases(event):
            pairs.append((old, new, data))
            if name.startswith("valid-"):
                base, rate = _alternating(old, new, data, seconds)
                print(_line(f"{event}: {name} | before", len(data), base))
                print(_line("    declared", len(data), rate, base))
    codes = sum(_outcome(old, d)[:2] == _outcome(new, d)[:2] for old, new, d in pairs)
    exact = sum(_outcome(old, d) == _outcome(new, d) for old, new, d in pairs)
    print(f"  reasons over {len(pairs)} contract examples: same code and field in {codes}, "
          f"same detail too in {exact}")


def _reason_cases(event: str) -> list[tuple[str, bytes]]:
    cases = []
    for path in sorted((ROOT / "schemas/examples" / event).glob("*.json")):
        raw = path.read_bytes()
        try:  # compact, as a producer sends it; the oversize example stays as it is
            raw = raw if len(raw) > 200_000 else orjson.dumps(orjson.loads(raw))
        except orjson.JSONDecodeError:
            pass
        cases.append((path.stem, raw))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="rough time per case")
    parser.add_argument("--no-legacy", dest="legacy", action="store_false",
                        help="skip the comparison with the hand decoders before issue 19")
    parser.add_argument("--no-typed", dest="typed", action="store_false",
                        help="only the hand decoders (no msgspec / pydantic)")
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[bytes], object], bytes]] = [
        (name, decode_inference_event, data) for name, data in INFERENCE_CASES]
    cases.append(("label: 1 annotation with bbox", decode_label, _label()))
    for name, decode, data in cases:
        print(_line(name, len(data), _rate(decode, data, args.seconds)))
    for name, values in BATCH_CASES:
        size = sum(map(len, values)) // len(values)
        print(_line(name, size, _rate(decode_inference_batch, values, args.seconds) * len(values)))
    if args.legacy:
        legacy_comparison(args.seconds)
        output_comparison(args.seconds)
    if not args.typed:
        return
    try:
        import msgspec  # noqa: F401
        import pydantic  # noqa: F401
    except ImportError:
        print("\nmsgspec / pydantic not installed: pip install -e '.[bench-decoders]' for the "
              "comparison")
        return
    typed_speed(args.seconds)
    typed_reasons()


if __name__ == "__main__":
    main()
