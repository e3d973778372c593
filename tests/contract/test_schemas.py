"""Every schema is a valid draft 2020-12 schema with its versioned `$id`, and every example in
schemas/examples validates or fails (custom keywords included) exactly as its filename says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.contract.schema_support import (
    EVENTS,
    EXAMPLE_DIR,
    SCHEMA_DIR,
    example_files,
    example_id,
    load_schema,
    schema_id,
    validator,
)

INPUT_EVENTS = ("inference-event", "label")
CUSTOM_KEYWORDS = {"x-max-bytes", "x-sum-to", "x-less-or-equal", "x-max-utf8-bytes",
                   "x-max-depth", "x-max-nodes", "x-max-cells"}


@pytest.mark.parametrize("event", EVENTS)
def test_schema_is_valid_draft_2020_12_with_versioned_id(event: str) -> None:
    schema = load_schema(event)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == schema_id(event)


@pytest.mark.parametrize("event", EVENTS)
def test_every_event_carries_schema_version_1(event: str) -> None:
    schema = load_schema(event)
    assert "schema_version" in schema["required"]
    assert schema["properties"]["schema_version"] == {
        "description": schema["properties"]["schema_version"]["description"],
        "type": "integer",
        "const": 1,
    }


def _subschemas(node: Any, path: str = "#") -> list[tuple[str, dict]]:
    found = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _subschemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _subschemas(value, f"{path}/{i}")
    return found


@pytest.mark.parametrize("event", EVENTS)
def test_every_field_is_described_and_objects_are_closed(event: str) -> None:
    for path, node in _subschemas(load_schema(event)):
        if path.endswith("/properties"):
            for name, field in node.items():
                assert "description" in field, f"{event}: {path}/{name} has no description"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{event}: {path} is open"
        for keyword in node:
            if keyword.startswith("x-"):
                assert keyword in CUSTOM_KEYWORDS, f"{event}: {path} uses unknown {keyword}"


def test_only_known_event_schemas_and_example_dirs() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(
        f"{e}.schema.json" for e in EVENTS
    )
    assert sorted(p.name for p in EXAMPLE_DIR.iterdir()) == sorted(EVENTS)


@pytest.mark.parametrize("event", EVENTS)
def test_enough_examples(event: str) -> None:
    names = [p.name for p in (EXAMPLE_DIR / event).iterdir()]
    assert all(n.startswith(("valid-", "invalid-")) and n.endswith(".json") for n in names)
    valid = sum(n.startswith("valid-") for n in names)
    invalid = sum(n.startswith("invalid-") for n in names)
    if event in INPUT_EVENTS:
        assert valid >= 2 and invalid >= 6
    else:
        assert valid >= 1 and invalid >= 2


def _instance(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


@pytest.mark.parametrize("path", example_files("valid-"), ids=example_id)
def test_valid_example_validates(path: Path) -> None:
    errors = [e.message for e in validator(path.parent.name).iter_errors(_instance(path))]
    assert errors == []


@pytest.mark.parametrize("path", example_files("invalid-"), ids=example_id)
def test_invalid_example_fails(path: Path) -> None:
    assert list(validator(path.parent.name).iter_errors(_instance(path))), "validated"


@pytest.mark.parametrize("event", INPUT_EVENTS)
def test_too_large_example_fails_only_on_size(event: str) -> None:
    """The oversize examples are otherwise valid, so they test exactly the byte limit."""
    example = EXAMPLE_DIR / event / "invalid-payload-too-large.json"
    errors = list(validator(event).iter_errors(_instance(example)))
    assert [e.validator for e in errors] == ["x-max-bytes"]
