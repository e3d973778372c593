"""The vocabulary added for the output events (issue 19 item 1), on toy records: a plain record
(decoded into a dict, optional fields left out or kept as null), the cross-field order check
(`less_or_equal`), the tag and its payloads (`Variants`), `IdOrIndex`, `Choice` and `ClassMap`,
each with the reason code and path it rejects with and the schema it writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from services.contracts.inference import CLASS_NAME, ID
from services.contracts.vocabulary import (
    Array,
    Bool,
    Choice,
    ClassMap,
    Event,
    Field,
    IdOrIndex,
    Integer,
    Number,
    Record,
    Variants,
    Version,
)
from services.streaming.events import InvalidEvent

PAIR = Record((
    Field("low", Integer(0, 10), "Low."),
    Field("high", Integer(0, 10), "High."),
    Field("note", Number(0.0, 1.0, nullable=True), "Optional.", required=False),
), plain=True, less_or_equal=("low", "high"))


@dataclass(frozen=True, slots=True)
class Toy:
    schema_version: int
    pair: dict[str, Any]
    ids: tuple[int | str, ...]
    flag: bool
    tag: str = "a"
    b: dict[str, Any] | None = None
    counts: Any = None


TOY = Event(name="toy", title="Toy", description="A toy event.", max_bytes=4096, record=Record((
    Field("schema_version", Version(1), "Version."),
    Field("pair", PAIR, "A pair."),
    Field("ids", Array(IdOrIndex(Integer(0, 9), ID), 0, 3), "Ids or indexes."),
    Field("flag", Bool(), "A flag."),
    Field("tag", Choice(("a", "b"), absent="a"), "The tag.", required=False),
    Field("b", Record((Field("x", Integer(0, 1), "x."),), plain=True), "Payload of b.",
          required=False),
    Field("counts", ClassMap(CLASS_NAME, Integer(0, 5)), "Counts.", required=False),
), cls=Toy, variants=Variants("tag", "a", ("b",), ("a", "b"))))

BASE = {"schema_version": 1, "pair": {"low": 1, "high": 2}, "ids": [0, "x"], "flag": True}


def reject(obj: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(InvalidEvent) as caught:
        TOY.decode(orjson.dumps(obj))
    return caught.value.field, str(caught.value.code)


def test_a_plain_record_decodes_to_its_json_and_encodes_back_as_given() -> None:
    toy = TOY.decode(orjson.dumps(BASE))
    assert toy.pair == {"low": 1, "high": 2} and type(toy.pair) is dict
    assert toy.ids == (0, "x") and toy.flag is True and toy.tag == "a"
    assert orjson.loads(TOY.encode(toy)) == BASE
    keep = Record(PAIR.fields, plain=True, keep_absent=True)
    assert keep.reader(False)({"low": 1, "high": 1}, "", "p") == {"low": 1, "high": 1,
                                                                   "note": None}


def test_less_or_equal_blames_the_upper_field() -> None:
    assert reject({**BASE, "pair": {"low": 3, "high": 2}}) == ("pair.high", "out_of_range")
    assert TOY.json_schema()["properties"]["pair"]["x-less-or-equal"] == ["low", "high"]


def test_variants_tie_each_payload_to_its_tag() -> None:
    assert reject({**BASE, "tag": "b"}) == ("b", "missing_field")
    assert reject({**BASE, "b": {"x": 1}}) == ("tag", "missing_field")
    assert reject({**BASE, "tag": "a", "b": {"x": 1}}) == ("tag", "out_of_range")
    assert reject({**BASE, "tag": 3}) == ("tag", "wrong_type")
    assert TOY.decode(orjson.dumps({**BASE, "tag": "b", "b": {"x": 1}})).b == {"x": 1}
    assert len(TOY.json_schema()["allOf"]) == 2


def test_id_or_index_choice_bool_and_class_map() -> None:
    assert reject({**BASE, "ids": [10]}) == ("ids[0]", "out_of_range")
    assert reject({**BASE, "ids": [""]}) == ("ids[0]", "empty")
    assert reject({**BASE, "ids": [True]}) == ("ids[0]", "wrong_type")
    assert reject({**BASE, "flag": 1}) == ("flag", "wrong_type")
    assert reject({**BASE, "tag": "c"}) == ("tag", "out_of_range")
    assert reject({**BASE, "counts": {"": 1}}) == ("counts", "empty")
    assert reject({**BASE, "counts": {"cat": 6}}) == ("counts.cat", "out_of_range")
    assert dict(TOY.decode(orjson.dumps({**BASE, "counts": {"cat": 2}})).counts) == {"cat": 2}
    schema = TOY.json_schema()["properties"]
    assert schema["ids"]["items"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 9}
    assert schema["tag"]["enum"] == ["a", "b"] and schema["flag"]["type"] == "boolean"
