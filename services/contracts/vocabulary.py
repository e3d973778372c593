"""The declaration vocabulary: field kinds with their limits, records of fields, and events.

An event is declared once, as an `Event` holding a `Record` of `Field`s, each field a `Kind`
(`Text`, `ClassName`, `Number`, `Integer`, `Flag`, `Version`, `Array`, `BBox`, `Distribution`,
`FreeForm`, a nested `Record`, or a `Shared` definition of one of these). From that one value
come, with nothing restated:

- its JSON Schema (`Event.json_schema()`, written to schemas/ by `services.contracts.schemas`),
  `Shared` kinds becoming `$defs` of the event that owns them and `$ref`s everywhere else;
- its decoder's checks (`Kind.reader`): closures over the limits, built once at import, that
  call the checked readers of `services.streaming.event_fields` and so raise the same
  `InvalidEvent` (field path, `ErrorCode`, detail) the hand-written decoders raised;
- the field sets and limits other code reads (`Record.names`, `Record.required`, a kind's
  attributes), e.g. the scorer's batch decoder.

A `Reader` takes (value, parent path, key) and returns the checked value or raises
`InvalidEvent`; it joins the path only when a check fails, so a valid event pays for no path
formatting. A reader is built per `ascii_only` (the payload was ASCII, so string lengths are
UTF-8 sizes and class names need no byte count).

Adding to this vocabulary is fine; changing what an existing kind means is not: other events'
declarations (and their checked-in schemas) rely on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from services.contracts.codegen import compile_record
from services.streaming.event_fields import (
    ErrorCode,
    array,
    check_free_form,
    check_version,
    child,
    class_key,
    class_name,
    fail,
    flag,
    integer,
    load_object,
    mapping,
    number,
    show,
    text,
)

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
        """A decoded (typed) value back as plain JSON values, for the encoder."""
        return value

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


@dataclass(frozen=True)
class Array(Kind):
    """A list of min_items..max_items `items`, decoded to a tuple. `max_cells`: items are
    predictions, and their count times the distinct class names they mention is bounded
    (`check`, given the decoded tuple, enforces it)."""

    items: Kind
    min_items: int
    max_items: int
    nullable: bool = False
    max_cells: int | None = None
    check: Callable[[tuple[Any, ...]], None] | None = None

    def schema(self, owner: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _types("array", self.nullable)}
        if self.min_items:
            out["minItems"] = self.min_items
        out["maxItems"] = self.max_items
        if self.max_cells is not None:
            out["x-max-cells"] = self.max_cells
        out["items"] = self.items.schema(owner)
        return out

    def reader(self, ascii_only: bool) -> Reader:
        low, high, check = self.min_items, self.max_items, self.check
        if isinstance(self.items, Number) and self.items == Number():
            return self._numbers_reader()
        record = self.items.kind if isinstance(self.items, Shared) else self.items
        if isinstance(record, Record):  # objects: each read at its own path, `where[i]`
            read_object = record.object_reader(ascii_only)

            def read(value: Any, parent: str, key: str | int) -> tuple[Any, ...]:
                raw = array(value, parent, key, low, high)  # type: ignore[arg-type]
                where = f"{parent}.{key}" if parent else key  # a declared field name: plain
                out = tuple([read_object(x, f"{where}[{i}]") for i, x in enumerate(raw)])
                if check is not None:
                    check(out)
                return out

            return read
        item = self.items.reader(ascii_only)

        def read_items(value: Any, parent: str, key: str | int) -> tuple[Any, ...]:
            raw = array(value, parent, key, low, high)  # type: ignore[arg-type]
            where = child(parent, key)
            out = tuple([item(x, where, i) for i, x in enumerate(raw)])
            if check is not None:
                check(out)
            return out

        return read_items

    def to_json(self, value: Any) -> Any:
        if value is None:
            return None
        item = self.items.to_json
        return [item(x) for x in value]

    def _numbers_reader(self) -> Reader:
        """Any finite numbers (an embedding): one C-level pass over the item types."""
        low, high = self.min_items, self.max_items

        def read(value: Any, parent: str, key: str | int) -> tuple[float, ...]:
            values = array(value, parent, key, low, high)  # type: ignore[arg-type]
            kinds = set(map(type, values))
            if kinds == {float}:
                return tuple(values)
            if not kinds <= {float, int}:
                where = child(parent, key)
                for i, x in enumerate(values):
                    number(x, where, i, -math.inf, math.inf)
            return tuple(map(float, values))

        return read


_NUMBER_TYPES = frozenset({float, int})  # exact types: bool, a subclass of int, is not a number


@dataclass(frozen=True)
class BBox(Kind):
    """[x, y, width, height], width and height >= 0; decoded to a tuple of floats."""

    nullable: bool = True
    item_descriptions: tuple[str, str, str, str] = ("", "", "", "")

    def schema(self, owner: str) -> dict[str, Any]:
        items: list[dict[str, Any]] = [{"description": d, "type": "number"}
                                       for d in self.item_descriptions]
        for item in items[2:]:
            item["minimum"] = 0
        return {"type": _types("array", self.nullable), "prefixItems": items,
                "minItems": 4, "maxItems": 4}

    def to_json(self, value: Any) -> Any:
        return None if value is None else list(value)

    def reader(self, ascii_only: bool) -> Reader:
        inf = math.inf

        def read(raw: Any, parent: str, key: str | int) -> tuple[float, ...] | None:
            if raw is None:
                return None
            if type(raw) is list and len(raw) == 4:  # fast path, no per-number calls
                x, y, w, h = raw
                if {type(x), type(y), type(w), type(h)} <= _NUMBER_TYPES and w >= 0 and h >= 0:
                    return float(x), float(y), float(w), float(h)
            box = array(raw, parent, key, 4, 4)  # type: ignore[arg-type]
            where = child(parent, key)
            return (number(box[0], where, 0, -inf, inf), number(box[1], where, 1, -inf, inf),
                    number(box[2], where, 2, 0.0, inf), number(box[3], where, 3, 0.0, inf))

        return read


@dataclass(frozen=True)
class Distribution(Kind):
    """class name -> probability in [0, 1], at least `min_classes` classes, summing to `total`
    within `tolerance` (math.fsum, exact); decoded to a read-only mapping of floats."""

    names: Shared
    probability: Shared
    min_classes: int
    total: float
    tolerance: float

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": "object", "minProperties": self.min_classes,
                "propertyNames": self.names.schema(owner),
                "additionalProperties": self.probability.schema(owner),
                "x-sum-to": {"value": _json_number(self.total), "tolerance": self.tolerance}}

    def to_json(self, value: Any) -> Any:
        return dict(value)

    def reader(self, ascii_only: bool) -> Reader:
        assert isinstance(self.names.kind, ClassName)
        max_len = self.names.kind.max_length
        minimum, total, tolerance = self.min_classes, self.total, self.tolerance

        def read(raw: Any, parent: str, key: str | int) -> Mapping[str, float]:
            path = f"{parent}.{key}" if parent else str(key)  # a declared field name: plain
            if type(raw) is not dict:
                fail(path, ErrorCode.WRONG_TYPE, f"expected class -> probability, got {show(raw)}")
            if len(raw) < minimum:
                code = ErrorCode.EMPTY if not raw else ErrorCode.OUT_OF_RANGE
                fail(path, code, f"{len(raw)} class(es), a distribution needs {minimum} or more")
            has_ints = False
            for name, p in raw.items():  # measured faster than C-level passes up to 1000
                kind = type(p)
                if kind is float and 0.0 <= p <= 1.0 and 0 < len(name) <= max_len:
                    continue
                if kind is int and 0 <= p <= 1 and 0 < len(name) <= max_len:
                    has_ints = True
                    continue
                class_key(name, path, max_len)
                number(p, path, name, 0.0, 1.0)
            if not ascii_only:  # a name's UTF-8 size, counted once for the whole distribution
                for name in raw:
                    if not name.isascii():
                        class_key(name, path, max_len)
            checked = {name: float(p) for name, p in raw.items()} if has_ints else raw
            found = math.fsum(checked.values())  # exact, like the schema's x-sum-to validator
            if abs(found - total) > tolerance:
                fail(path, ErrorCode.NOT_NORMALISED,
                     f"probabilities sum to {found:.6g}, not {total:g} within {tolerance:g}")
            return MappingProxyType(checked)

        return read


@dataclass(frozen=True)
class FreeForm(Kind):
    """A free-form JSON object (`metadata`), passed through read-only, within `max_depth`
    levels (itself the first) and `max_nodes` values."""

    max_depth: int
    max_nodes: int
    nullable: bool = True

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": _types("object", self.nullable), "x-max-depth": self.max_depth,
                "x-max-nodes": self.max_nodes}

    def to_json(self, value: Any) -> Any:
        return None if value is None else dict(value)

    def reader(self, ascii_only: bool) -> Reader:
        def read(raw: Any, parent: str, key: str | int) -> Mapping[str, Any] | None:
            if raw is None:
                return None
            value = mapping(raw, parent, key)
            if value:
                check_free_form(value, parent, key)  # type: ignore[arg-type]
            return MappingProxyType(value)

        return read


@dataclass(frozen=True)
class Field:
    """One property of a record: its name, kind, description and whether it is required."""

    name: str
    kind: Kind
    description: str
    required: bool = True

    def __post_init__(self) -> None:
        # Readers join a field's path as `parent.name` without quoting (event_fields.child).
        assert child("a", self.name) == f"a.{self.name}", f"{self.name!r} needs quoting"


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
        out["properties"] = {f.name: {"description": f.description, **f.kind.schema(owner)}
                             for f in self.fields}
        return out

    def to_json(self, value: Any) -> dict[str, Any] | None:
        """The typed object `value` (a `cls`) as the contract's JSON object: required fields
        always, optional ones unless they hold their kind's `absent` value (None, False)."""
        if value is None:
            return None
        out: dict[str, Any] = {}
        for f in self.fields:
            item = getattr(value, f.name)
            if f.required or item is not f.kind.absent:
                out[f.name] = f.kind.to_json(item)
        return out

    def reader(self, ascii_only: bool) -> Reader:
        read_object = self.object_reader(ascii_only)
        return lambda v, p, k: read_object(v, child(p, k))

    def object_reader(self, ascii_only: bool) -> Callable[[Any, str], Any]:
        """(value, its own path) -> `cls(...)`; the shape shared by nested records and events."""
        assert self.cls is not None, "a decoded record needs its class"
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
