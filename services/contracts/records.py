"""Records and events of the declaration vocabulary: `Field`, `Record` (a closed object of
fields, compiled into one reader by `codegen`) and `Event` (a top-level record with its schema's
prose and byte limit). Import them from `services.contracts.vocabulary`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.contracts.codegen import compile_record
from services.contracts.kinds import DRAFT, Kind, Reader, Shared, Version, _types, schema_id
from services.streaming.event_fields import (
    ErrorCode,
    check_version,
    child,
    fail,
    load_object,
    show,
)


@dataclass(frozen=True)
class Field:
    """One property of a record: its name, kind, description and whether it is required."""

    name: str
    kind: Kind
    description: str
    required: bool = True
    attr: str | None = None
    """The typed object's attribute when it differs from the JSON name (`class` -> class_name,
    a Python keyword)."""

    @property
    def attribute(self) -> str:
        return self.attr or self.name

    def __post_init__(self) -> None:
        # Readers join a field's path as `parent.name` without quoting (event_fields.child).
        assert child("a", self.name) == f"a.{self.name}", f"{self.name!r} needs quoting"


@dataclass(frozen=True)
class Variants:
    """A record whose tag field `tag` (absent: `default`) says which of `payloads` it carries:
    each payload field is named after the tag value that requires it, and is allowed with that
    value only (JSON Schema: if/then pairs). Checked right after the keys, before any field:
    the tag's own type and value first, then each payload in order: missing under its tag
    (missing_field, blamed on the payload), present under another (blamed on the tag:
    missing_field when the tag is absent, else out_of_range)."""

    tag: str
    default: str
    payloads: tuple[str, ...]
    values: tuple[str, ...]

    def schema(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self.payloads:
            out += [{"if": {"required": [self.tag], "properties": {self.tag: {
                        "description": f"A {name} record...", "const": name}}},
                     "then": {"required": [name]}},
                    {"if": {"required": [name]},
                     "then": {"required": [self.tag], "properties": {self.tag: {
                         "description": f"...is {self.tag} {name}.", "const": name}}}}]
        return out

    def check(self, raw: dict[str, Any], path: str) -> None:
        tag, allowed = raw.get(self.tag, self.default), frozenset(self.values)
        where = child(path, self.tag)
        if type(tag) is not str:
            fail(where, ErrorCode.WRONG_TYPE, f"expected a string, got {show(tag)}")
        if tag not in allowed:
            fail(where, ErrorCode.OUT_OF_RANGE, f"{show(tag)} is not one of {sorted(allowed)}")
        for name in self.payloads:
            if tag == name and name not in raw:
                fail(child(path, name), ErrorCode.MISSING_FIELD, "required field is missing")
            if tag != name and name in raw:
                if self.tag not in raw:
                    fail(where, ErrorCode.MISSING_FIELD, f"required with `{name}`")
                fail(where, ErrorCode.OUT_OF_RANGE, f"{show(tag)} with `{name}`: must be {name}")


@dataclass(frozen=True)
class Record(Kind):
    """A closed JSON object of `fields`, decoded to `cls(**fields)`. `together`: pairs of fields
    present both or neither (dependentRequired); `one_of`: exactly one of two fields present.
    Fields are checked after unknown and missing keys, in `check_order()`."""

    fields: tuple[Field, ...]
    cls: type | None = None
    together: tuple[str, str] | None = None
    one_of: tuple[str, str] | None = None
    nullable: bool = False
    depends: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(field, the fields it requires): dependentRequired beyond `together`."""
    check_first: tuple[str, ...] = ()
    """Fields whose values are checked before the others (the rest in declared order): which
    one an object with several bad fields is rejected for. Kept as the hand decoders had it."""
    required_order: tuple[str, ...] | None = None
    """The order missing required fields are looked for (which one an object missing several is
    rejected for); None: declared order. Kept as the hand decoders had it (often sorted)."""
    less_or_equal: tuple[str, str] | None = None
    """(a, b): two numeric fields with a <= b (`x-less-or-equal`), checked after every field,
    blaming b (out_of_range)."""
    variants: Variants | None = None
    """A tag field whose values name the payload fields allowed with them (see `Variants`)."""
    plain: bool = False
    """Decoded into a plain dict (JSON names, JSON-form values: lists, not tuples) rather than
    `cls`; an optional field left out when absent unless `keep_absent`. Encoded back as given."""
    keep_absent: bool = False

    def check_order(self) -> tuple[Field, ...]:
        first = [self.field(name) for name in self.check_first]
        return (*first, *(f for f in self.fields if f.name not in self.check_first))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def schema(self, owner: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _types("object", self.nullable)}
        if self.required:
            out["required"] = list(self.required)
        out["additionalProperties"] = False
        if self.together or self.depends:
            a, b = self.together or ("", "")
            pairs = [(a, (b,)), (b, (a,))] if self.together else []
            out["dependentRequired"] = {k: list(v) for k, v in [*pairs, *self.depends]}
        if self.one_of:
            out["oneOf"] = [{"required": [name]} for name in self.one_of]
        if self.variants:
            out["allOf"] = self.variants.schema()
        if self.less_or_equal:
            out["x-less-or-equal"] = list(self.less_or_equal)
        out["properties"] = {f.name: {"description": f.description, **f.kind.schema(owner)}
                             for f in self.fields}
        return out

    def to_json(self, value: Any) -> dict[str, Any] | None:
        """The typed object `value` (a `cls`) as the contract's JSON object: required fields
        always, optional ones unless they hold their kind's `absent` value (None, False). A
        plain record's dict keeps exactly the keys it holds (a null stays a null)."""
        if value is None:
            return None
        if self.plain:
            kinds = {f.name: f.kind for f in self.fields}
            return {name: kinds[name].to_json(item) for name, item in value.items()}
        out: dict[str, Any] = {}
        for name, attribute, required, absent, convert in self._encoding:
            item = getattr(value, attribute)
            if required or item is not absent:
                out[name] = item if convert is None else convert(item)
        return out

    @functools.cached_property
    def _encoding(self) -> tuple[tuple[str, str, bool, Any, Callable[[Any], Any] | None], ...]:
        """Per field: (name, attribute, required, absent value, its kind's `to_json` or None
        where that is the identity): the encoder pays one getattr per field rather than a call
        per field (the scorer's requests, built and encoded: 13.7 -> 10.3 us each)."""
        plan = []
        for f in self.fields:
            kind = f.kind
            while isinstance(kind, Shared):
                kind = kind.kind
            identity = type(kind).to_json is Kind.to_json
            plan.append((f.name, f.attribute, f.required, f.kind.absent,
                         None if identity else kind.to_json))
        return tuple(plan)

    def reader(self, ascii_only: bool) -> Reader:
        read_object = self.object_reader(ascii_only)
        if self.nullable:  # a required field that may be null (an optional one never gets here)
            return lambda v, p, k: None if v is None else read_object(v, child(p, k))
        return lambda v, p, k: read_object(v, child(p, k))

    def object_reader(self, ascii_only: bool) -> Callable[[Any, str], Any]:
        """(value, its own path) -> `cls(...)`; the shape shared by nested records and events."""
        assert self.cls is not None or self.plain, "a decoded record needs its class"
        return compile_record(self, ascii_only)


@dataclass(frozen=True)
class Event:
    """A top-level event: its schema's name and prose, its payload byte limit, its record of
    fields (the first one `schema_version`) and the definitions its schema owns."""

    name: str
    title: str
    description: str
    max_bytes: int | None
    """Byte limit of the payload (`x-max-bytes`); None: none declared."""
    record: Record
    defs: tuple[Shared, ...] = field(default=())

    def reader(self, ascii_only: bool) -> Callable[[dict[str, Any]], Any]:
        """(object parsed from at most `max_bytes` of JSON) -> the decoded event: the version
        first (so a v2 event says so plainly), then the record's checks."""
        version = self.record.fields[0].kind
        assert isinstance(version, Version), "an event's first field is schema_version"
        read_record, value = self.record.object_reader(ascii_only), version.value

        def read(obj: dict[str, Any]) -> Any:
            check_version(obj, value)
            return read_record(obj, "")

        return read

    def decode(self, data: bytes | None) -> Any:
        """One record value -> the decoded event; raises InvalidEvent (only) for bad input,
        a repeated key included (checked right after parsing)."""
        assert self.max_bytes is not None, f"{self.name} declares no byte limit to decode under"
        obj = load_object(data, self.max_bytes)
        return self._readers[data.isascii()](obj)  # type: ignore[union-attr]

    @functools.cached_property
    def _readers(self) -> dict[bool, Callable[[dict[str, Any]], Any]]:
        return {False: self.reader(False), True: self.reader(True)}

    def to_json(self, event: Any) -> dict[str, Any]:
        """The typed event as plain JSON values (see `Record.to_json`)."""
        out = self.record.to_json(event)
        assert out is not None
        return out

    def encode(self, event: Any) -> bytes:
        """The typed event's bytes: deterministic JSON (keys sorted at every level, no
        whitespace), byte for byte what `services.streaming.events.encode_event` writes for
        the same content, so a crash replay reproduces identical output."""
        return orjson.dumps(self.to_json(event), option=orjson.OPT_SORT_KEYS)

    def json_schema(self) -> dict[str, Any]:
        body = self.record.schema(self.name)
        out: dict[str, Any] = {"$schema": DRAFT, "$id": schema_id(self.name),
                               "title": self.title, "description": self.description}
        if self.max_bytes is not None:
            out["x-max-bytes"] = self.max_bytes
        out.update(body)
        if self.defs:
            out["$defs"] = {d.name: d.definition() for d in self.defs}
        return out
