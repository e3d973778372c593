"""The contract tests' view of schemas/: loading, a validator that also enforces our custom
keywords, the example files, and the field paths a schema blames.

The custom keywords state invariants JSON Schema cannot express; they are part of the contract and
this validator enforces them, independently of the decoders' code:
- `x-max-bytes: N` (root): the event's compact UTF-8 JSON encoding is at most N bytes. Measured on
  orjson's compact encoding of the parsed instance, i.e. exactly the bytes `encode_event` and the
  differential tests produce; a pretty-printed file may be larger on disk.
- `x-sum-to: {value, tolerance}` (object of numbers): |fsum(values) - value| <= tolerance.
- `x-less-or-equal: [a, b]` (object): instance[a] <= instance[b] when both are numbers.
- `x-max-utf8-bytes: N` (string): its UTF-8 encoding is at most N bytes.
- `x-max-depth: N` (object or array): containers nest at most N levels, the instance itself
  being level 1.
- `x-max-nodes: N` (object or array): at most N JSON values below the instance (containers and
  scalars; object keys are not values).
- `x-max-cells: N` (array of predictions): len(array) x the number of distinct class names over
  its items (`label` values and `scores` keys) is at most N.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator, ValidationError, validators
from referencing import Registry, Resource

from services.streaming.events import format_path

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
EXAMPLE_DIR = SCHEMA_DIR / "examples"
EVENTS = (
    "inference-event",
    "annotation-request",
    "label",
    "retrain-trigger",
    "class-feedback",
    "dead-letter",
)


def schema_id(event: str) -> str:
    return f"https://active-stream.dev/schemas/{event}/v1.json"


@functools.cache
def load_schema(event: str) -> dict[str, Any]:
    return orjson.loads((SCHEMA_DIR / f"{event}.schema.json").read_bytes())


@functools.cache
def registry() -> Registry:
    """All schemas by `$id`, so cross-schema `$ref`s resolve offline."""
    resources = [(schema_id(e), Resource.from_contents(load_schema(e))) for e in EVENTS]
    return Registry().with_resources(resources)


def _max_bytes(
    validator: Any, limit: int, instance: Any, schema: dict
) -> Iterator[ValidationError]:
    size = len(orjson.dumps(instance))
    if size > limit:
        yield ValidationError(f"encoded event is {size} bytes, over x-max-bytes {limit}")


def _sum_to(validator: Any, spec: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    values = list(instance.values())
    if all(validator.is_type(v, "number") for v in values):
        total = math.fsum(values)
        if abs(total - spec["value"]) > spec["tolerance"]:
            expected = f"{spec['value']} ± {spec['tolerance']}"
            yield ValidationError(f"values sum to {total}, not {expected}")


def _less_or_equal(
    validator: Any, keys: list[str], instance: Any, schema: dict
) -> Iterator[ValidationError]:
    low, high = keys
    if not validator.is_type(instance, "object") or low not in instance or high not in instance:
        return
    a, b = instance[low], instance[high]
    if validator.is_type(a, "number") and validator.is_type(b, "number") and a > b:
        yield ValidationError(f"{high} {b} is less than {low} {a}", path=[high])


def _max_utf8_bytes(
    validator: Any, limit: int, instance: Any, schema: dict
) -> Iterator[ValidationError]:
    if isinstance(instance, str) and len(instance.encode()) > limit:
        yield ValidationError(f"{len(instance.encode())} UTF-8 bytes, over {limit}")


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, list) else []


def _depth(value: Any) -> int:
    """Nesting levels of containers, `value` itself (a container) being 1."""
    inner = [_depth(child) for child in _children(value) if isinstance(child, dict | list)]
    return 1 + max(inner, default=0)


def _nodes(value: Any) -> int:
    return sum(1 + _nodes(child) for child in _children(value))


def _max_depth(validator: Any, limit: int, instance: Any, schema: dict
               ) -> Iterator[ValidationError]:
    if isinstance(instance, dict | list) and _depth(instance) > limit:
        yield ValidationError(f"nested {_depth(instance)} levels deep, over {limit}")


def _max_nodes(validator: Any, limit: int, instance: Any, schema: dict
               ) -> Iterator[ValidationError]:
    if isinstance(instance, dict | list) and _nodes(instance) > limit:
        yield ValidationError(f"holds {_nodes(instance)} values, over {limit}")


def _max_cells(validator: Any, limit: int, instance: Any, schema: dict
               ) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    names: set[str] = set()
    for item in instance:
        if isinstance(item, dict):
            if isinstance(item.get("label"), str):
                names.add(item["label"])
            if isinstance(item.get("scores"), dict):
                names.update(item["scores"])
    if len(instance) * len(names) > limit:
        yield ValidationError(f"{len(instance)} x {len(names)} cells, over {limit}")


ContractValidator = validators.extend(
    Draft202012Validator,
    {"x-max-bytes": _max_bytes, "x-sum-to": _sum_to, "x-less-or-equal": _less_or_equal,
     "x-max-utf8-bytes": _max_utf8_bytes, "x-max-depth": _max_depth, "x-max-nodes": _max_nodes,
     "x-max-cells": _max_cells},
)


@functools.cache
def validator(event: str) -> Any:
    return ContractValidator(load_schema(event), registry=registry())


def example_files(prefix: str = "") -> list[Path]:
    """Every example (or those whose name starts with `prefix`), as event/name paths."""
    return sorted(path for path in EXAMPLE_DIR.glob("*/*.json") if path.name.startswith(prefix))


def example_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def blamed_fields(errors: Iterable[ValidationError]) -> set[str]:
    """Every field path the schema's errors point at, in `InvalidEvent.field` notation.

    A `required`/`dependentRequired` error is reported on the object; it also blames each missing
    key. An `additionalProperties` error also blames each unexpected key. Sub-errors of
    `oneOf`/`anyOf` are included."""
    fields: set[str] = set()
    for error in errors:
        parts = list(error.absolute_path)
        fields.add(format_path(parts))
        instance = error.instance
        if isinstance(instance, dict):
            for key in _keys_blamed(error, instance):
                fields.add(format_path([*parts, key]))
        fields |= blamed_fields(error.context or ())
    return fields


def _keys_blamed(error: ValidationError, instance: dict) -> list[str]:
    if error.validator == "required":
        return [key for key in error.validator_value if key not in instance]
    if error.validator == "dependentRequired":
        return [
            need
            for key, needs in error.validator_value.items()
            if key in instance
            for need in needs
            if need not in instance
        ]
    if error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        return [key for key in instance if key not in known]
    return []
