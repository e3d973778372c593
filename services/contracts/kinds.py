"""The declaration vocabulary's base and scalar kinds: `Kind` (what a field holds: its JSON
Schema, its reader, its inlined test, its JSON form), `Shared` definitions, and the scalars
(`Text`, `ClassName`, `Number`, `Integer`, `Flag`, `Version`). Import them from
`services.contracts.vocabulary`, which documents how an event is declared."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from services.streaming.event_fields import class_name, flag, integer, number, text

Reader = Callable[[Any, str, "str | int"], Any]
"""(value, parent path, key) -> the checked value; raises InvalidEvent."""
SCHEMA_BASE = "https://active-stream.dev/schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schema_id(event: str) -> str:
    """The versioned `$id` of an event's schema (`inference-event` -> .../inference-event/v1)."""
    return f"{SCHEMA_BASE}/{event}/v1.json"


def _json_number(value: float) -> float | int:
    """Integral floats as ints in schemas (`10000000000`, not `10000000000.0`)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def as_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping as a dict orjson writes (it writes no read-only mapping): a dict as it is, a
    read-only one (what the decoders return) copied in C by `copy()`, which is ~9x faster
    than `dict(proxy)`, any other mapping item by item. The encoders' converter for mappings."""
    kind = type(value)
    if kind is dict:
        return value  # type: ignore[return-value]
    if kind is MappingProxyType:
        return value.copy()  # type: ignore[attr-defined, no-any-return]
    return dict(value)


def _types(name: str, nullable: bool) -> str | list[str]:
    return [name, "null"] if nullable else name


class Kind:
    """What a field holds. `nullable`: null is accepted and decodes as `absent`."""

    nullable: bool = False
    absent: Any = None

    def schema(self, owner: str) -> dict[str, Any]:
        """This kind's JSON Schema inside the schema of event `owner`."""
        raise NotImplementedError

    def reader(self, ascii_only: bool) -> Reader:
        raise NotImplementedError

    def to_json(self, value: Any) -> Any:
        """A decoded (typed) value back as plain JSON values (lists, dicts: `to_dict()`)."""
        return value

    def json_form(self) -> Callable[[Any], Any] | None:
        """How a decoded value becomes its plain JSON form (`to_json`), compiled into a plain
        record's reader (`codegen`): None when it already is that form, else the converter."""
        return None if type(self).to_json is Kind.to_json else self.to_json

    def encoder(self) -> Callable[[Any], Any] | None:
        """How a typed value becomes what orjson writes as its JSON (`Event.encode`), compiled
        into a record's encoder: None when orjson writes the value itself exactly so (strings,
        numbers, booleans, null, and tuples of them, as arrays), else a converter. A
        converter is never given None (the compiled encoder writes null itself)."""
        return self.json_form()

    def inline(self, var: str) -> str | None:
        """A Python test of variable `var` that, when true, proves the value valid and equal
        to its decoded form (compiled into records' readers, `codegen`); None when there is
        none. False must only mean "ask the reader", never "invalid"."""
        return None


@dataclass(frozen=True)
class Shared(Kind):
    """A named definition (`$defs/<name>` of event `owner`'s schema), referenced elsewhere."""

    name: str
    kind: Kind
    owner: str
    description: str

    @property
    def nullable(self) -> bool:  # type: ignore[override]
        return self.kind.nullable

    @property
    def absent(self) -> Any:  # type: ignore[override]
        return self.kind.absent

    def ref(self, owner: str) -> str:
        local = f"#/$defs/{self.name}"
        return local if owner == self.owner else schema_id(self.owner) + local

    def schema(self, owner: str) -> dict[str, Any]:
        return {"$ref": self.ref(owner)}

    def inline(self, var: str) -> str | None:
        return self.kind.inline(var)

    def to_json(self, value: Any) -> Any:
        return self.kind.to_json(value)

    def json_form(self) -> Callable[[Any], Any] | None:
        return self.kind.json_form()

    def encoder(self) -> Callable[[Any], Any] | None:
        return self.kind.encoder()

    def definition(self) -> dict[str, Any]:
        return {"description": self.description, **self.kind.schema(self.owner)}

    def reader(self, ascii_only: bool) -> Reader:
        return self.kind.reader(ascii_only)


@dataclass(frozen=True)
class Text(Kind):
    """A string of 1..max_length code points."""

    max_length: int
    nullable: bool = False

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": _types("string", self.nullable), "minLength": 1,
                "maxLength": self.max_length}

    def inline(self, var: str) -> str | None:
        return f"type({var}) is str and 0 < len({var}) <= {self.max_length}"

    def reader(self, ascii_only: bool) -> Reader:
        limit = self.max_length
        if self.nullable:
            return lambda v, p, k: None if v is None else text(v, p, k, limit)
        return lambda v, p, k: text(v, p, k, limit)


@dataclass(frozen=True)
class ClassName(Kind):
    """A class name: 1..max_length code points and at most max_utf8_bytes UTF-8 bytes."""

    max_length: int
    max_utf8_bytes: int

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "maxLength": self.max_length,
                "x-max-utf8-bytes": self.max_utf8_bytes}

    def inline(self, var: str) -> str | None:
        if self.max_utf8_bytes < self.max_length:
            return None
        # An ASCII name's characters are its bytes, so the character bound is the byte bound.
        return f"type({var}) is str and 0 < len({var}) <= {self.max_length} and {var}.isascii()"

    def reader(self, ascii_only: bool) -> Reader:
        return class_name  # type: ignore[return-value]  # its keys are always field names


@dataclass(frozen=True)
class Number(Kind):
    """A finite number (never a bool) in [minimum, maximum]; `exclusive_minimum` opens the
    lower end."""

    minimum: float = -math.inf
    maximum: float = math.inf
    exclusive_minimum: bool = False
    nullable: bool = False

    def schema(self, owner: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _types("number", self.nullable)}
        if self.minimum > -math.inf:
            key = "exclusiveMinimum" if self.exclusive_minimum else "minimum"
            out[key] = _json_number(self.minimum)
        if self.maximum < math.inf:
            out["maximum"] = _json_number(self.maximum)
        return out

    def inline(self, var: str) -> str | None:
        # Only a float decodes to itself (an int becomes a float); orjson yields no NaN or inf.
        test = [f"type({var}) is float"]
        if self.minimum > -math.inf:
            test.append(f"{self.minimum!r} {'<' if self.exclusive_minimum else '<='} {var}")
        if self.maximum < math.inf:
            test.append(f"{var} <= {self.maximum!r}")
        return " and ".join(test)

    def reader(self, ascii_only: bool) -> Reader:
        low, high, low_open = self.minimum, self.maximum, self.exclusive_minimum
        if self.nullable:
            return lambda v, p, k: None if v is None else number(v, p, k, low, high, low_open)
        return lambda v, p, k: number(v, p, k, low, high, low_open)


@dataclass(frozen=True)
class Integer(Kind):
    """An integer in [minimum, maximum]; an integral float (3.0) counts, as in JSON Schema."""

    minimum: int
    maximum: int | None = None  # None: no upper bound

    def schema(self, owner: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out

    def reader(self, ascii_only: bool) -> Reader:
        low, high = self.minimum, self.maximum
        if high is None:
            return lambda v, p, k: integer(v, p, k, low, math.inf)  # type: ignore[arg-type]
        return lambda v, p, k: integer(v, p, k, low, high)


@dataclass(frozen=True)
class Flag(Kind):
    """An optional boolean: absent or null is False."""

    nullable: bool = True
    absent: Any = False

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": ["boolean", "null"]}

    def inline(self, var: str) -> str | None:
        return f"{var} is True or {var} is False"

    def reader(self, ascii_only: bool) -> Reader:
        return flag  # type: ignore[return-value]  # its keys are always field names


@dataclass(frozen=True)
class Version(Kind):
    """`schema_version`: checked first by the event's decoder (`check_version`)."""

    value: int

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": "integer", "const": self.value}

    def reader(self, ascii_only: bool) -> Reader:
        value = self.value
        return lambda v, p, k: value
