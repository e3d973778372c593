"""Kinds for the services' output events (annotation request, retrain trigger, class feedback):
a required boolean (`Bool`), a closed set of strings whose decoded form may be a StrEnum and
whose rejection reads as the hand decoders' did (`Choice`), an "index or id" union (`IdOrIndex`)
and a class-name-keyed map (`ClassMap`). Part of the declaration vocabulary
(services.contracts.vocabulary); additions, no existing kind changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from services.contracts.kinds import ClassName, Integer, Kind, Reader, Shared, Text, as_dict
from services.streaming.event_fields import (
    ErrorCode,
    child,
    class_key,
    fail,
    integer,
    mapping,
    show,
    text,
)


@dataclass(frozen=True)
class Bool(Kind):
    """A required boolean: true or false, nothing else (1 and "true" are wrong_type)."""

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": "boolean"}

    def inline(self, var: str) -> str | None:
        return f"{var} is True or {var} is False"

    def reader(self, ascii_only: bool) -> Reader:
        def read(value: Any, parent: str, key: str | int) -> bool:
            if value is True or value is False:
                return value
            fail(child(parent, key), ErrorCode.WRONG_TYPE, f"expected a boolean, got {show(value)}")

        return read


@dataclass(frozen=True)
class Choice(Kind):
    """One string of a closed set `values` (the schema's `enum`, in this order). Decoded through
    `convert` (a StrEnum, say; None keeps the string). A non-string is wrong_type, a string
    outside the set out_of_range, the reason listing `listed` (default: the values sorted).
    `unknown`: instead, anything outside the set is out_of_range, reading "unknown <unknown> x"
    (a list of tags: `reason.track.signals`). `nullable`: null decodes as `absent`."""

    values: tuple[str, ...]
    convert: Callable[[str], Any] | None = None
    listed: tuple[str, ...] | None = None
    unknown: str | None = None
    nullable: bool = False
    absent: Any = None

    def schema(self, owner: str) -> dict[str, Any]:
        return {"enum": [*self.values, *([None] if self.nullable else [])]}

    def to_json(self, value: Any) -> Any:
        return None if value is None else str(value)

    def json_form(self) -> Callable[[Any], Any] | None:
        return None if self.convert is None else self.to_json

    def reader(self, ascii_only: bool) -> Reader:
        allowed, convert, unknown = frozenset(self.values), self.convert, self.unknown
        listed = list(self.listed) if self.listed is not None else sorted(allowed)
        nullable, absent = self.nullable, self.absent

        def read(value: Any, parent: str, key: str | int) -> Any:
            if type(value) is str and value in allowed:
                return value if convert is None else convert(value)
            if value is None and nullable:
                return absent
            where = child(parent, key)
            if unknown is not None:
                fail(where, ErrorCode.OUT_OF_RANGE, f"unknown {unknown} {show(value)}")
            if type(value) is not str:
                fail(where, ErrorCode.WRONG_TYPE, f"expected a string, got {show(value)}")
            fail(where, ErrorCode.OUT_OF_RANGE, f"{show(value)} is not one of {listed}")

        return read


@dataclass(frozen=True)
class IdOrIndex(Kind):
    """Either an index (`index`, an `Integer`) or an id (`id`, a `Shared` text): a string is
    read as the id, anything else as the index (so a bool or null is the index's wrong_type)."""

    index: Integer
    id: Shared

    def schema(self, owner: str) -> dict[str, Any]:
        return {"anyOf": [self.index.schema(owner), self.id.schema(owner)]}

    def reader(self, ascii_only: bool) -> Reader:
        assert isinstance(self.id.kind, Text) and self.index.maximum is not None
        length, low, high = self.id.kind.max_length, self.index.minimum, self.index.maximum

        def read(value: Any, parent: str, key: str | int) -> int | str:
            if type(value) is str:
                return text(value, parent, key, length)
            return integer(value, parent, key, low, high)

        return read


@dataclass(frozen=True)
class ClassMap(Kind):
    """A JSON object from class names (`names`, a `Shared` ClassName; a bad name is blamed on the
    object, like `propertyNames`) to `values`; decoded to a read-only mapping, name by name
    (each name checked, then its value)."""

    names: Shared
    values: Kind

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": "object", "propertyNames": self.names.schema(owner),
                "additionalProperties": self.values.schema(owner)}

    def to_json(self, value: Any) -> Any:
        item = self.values.to_json
        return {name: item(v) for name, v in value.items()}

    def json_form(self) -> Callable[[Any], Any] | None:
        return dict if self.values.json_form() is None else self.to_json

    def encoder(self) -> Callable[[Any], Any] | None:
        item = self.values.encoder()
        if item is None:
            return as_dict
        return lambda value: {name: item(v) for name, v in value.items()}

    def reader(self, ascii_only: bool) -> Reader:
        assert isinstance(self.names.kind, ClassName)
        limit, read_value = self.names.kind.max_length, self.values.reader(ascii_only)

        def read(value: Any, parent: str, key: str | int) -> MappingProxyType[str, Any]:
            raw = mapping(value, parent, key)
            where = child(parent, key)
            out = {}
            for name, item in raw.items():
                class_key(name, where, limit)
                out[name] = read_value(item, where, name)
            return MappingProxyType(out)

        return read
