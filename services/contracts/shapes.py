"""The declaration of a closed JSON object, the vocabulary's lowest layer above the kinds:
`Field` (a property: name, kind, description, required), `Variants` (a tag field naming the
payload allowed with it) and `Shape` (the object: its fields and the rules between them, and the
JSON Schema they say). A `Shape` is data only: `services.contracts.codegen` compiles one into a
reader and an encoder, and `services.contracts.records.Record` is the shape with those attached.
Import these from `services.contracts.vocabulary`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.contracts.kinds import Kind, _types
from services.streaming.event_fields import ErrorCode, child, fail, show


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
class Shape(Kind):
    """A closed JSON object of `fields`, decoded to `cls(**fields)` (by `Record`, its compiled
    form). `together`: pairs of fields
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
