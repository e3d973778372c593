"""The declaration vocabulary on a toy record: what no declared event uses yet (a JSON name that
is a Python keyword, a required field that may be null), and the shape of what it builds."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from services.contracts.vocabulary import Event, Field, Number, Record, Text, Version
from services.streaming.events import InvalidEvent


@dataclass(frozen=True, slots=True)
class Toy:
    schema_version: int
    class_name: str | None
    threshold: float | None
    note: str | None = None


TOY = Event(
    name="toy", title="Toy", description="A toy event.", max_bytes=1024,
    record=Record((
        Field("schema_version", Version(1), "Version."),
        Field("class", Text(8, nullable=True), "A class, or null.", attr="class_name"),
        Field("threshold", Number(0.0, 1.0, nullable=True), "A bar in [0, 1], or null."),
        Field("note", Text(4), "Optional.", required=False),
    ), cls=Toy))


def test_a_json_name_maps_to_its_attribute_both_ways() -> None:
    toy = TOY.decode(b'{"schema_version": 1, "class": "cat", "threshold": 0.5}')
    assert toy == Toy(1, "cat", 0.5)
    assert TOY.encode(toy) == b'{"class":"cat","schema_version":1,"threshold":0.5}'
    assert TOY.json_schema()["properties"]["class"]["maxLength"] == 8


def test_a_required_nullable_field_must_be_present_and_may_be_null() -> None:
    assert TOY.decode(b'{"schema_version":1,"class":null,"threshold":null}') == Toy(1, None, None)
    assert TOY.encode(Toy(1, None, None)) == b'{"class":null,"schema_version":1,"threshold":null}'
    with pytest.raises(InvalidEvent) as caught:
        TOY.decode(b'{"schema_version":1,"class":null}')
    assert (caught.value.field, caught.value.code) == ("threshold", "missing_field")


@pytest.mark.parametrize(("payload", "field", "code"), [
    ({"class": "a" * 9, "threshold": 0.1}, "class", "out_of_range"),
    ({"class": "", "threshold": 0.1}, "class", "empty"),
    ({"class": "a", "threshold": 1.5}, "threshold", "out_of_range"),
    ({"class": "a", "threshold": True}, "threshold", "wrong_type"),
    ({"class": "a", "threshold": 0.1, "note": None}, "note", "wrong_type"),
    ({"class": "a", "threshold": 0.1, "extra": 1}, "extra", "unknown_field"),
])
def test_each_fault_has_its_field_and_code(payload: dict, field: str, code: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        TOY.decode(orjson.dumps({"schema_version": 1, **payload}))
    assert (caught.value.field, caught.value.code) == (field, code)
