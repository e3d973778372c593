"""Container kinds of the declaration vocabulary: `Array`, `BBox`, `Distribution` (class ->
probability) and `FreeForm` (passed-through metadata). Import them from
`services.contracts.vocabulary`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from services.contracts.kinds import (
    ClassName,
    Kind,
    Number,
    Reader,
    Shared,
    _json_number,
    _types,
    as_dict,
)
from services.contracts.records import Record
from services.streaming.event_fields import (
    ErrorCode,
    array,
    check_free_form,
    child,
    class_key,
    fail,
    mapping,
    number,
    show,
)


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

    def json_form(self) -> Callable[[Any], Any] | None:
        return _as_list if self.items.json_form() is None else self.to_json

    def encoder(self) -> Callable[[Any], Any] | None:
        item = self.items.encoder()
        if item is None:  # orjson writes a tuple as an array
            return None
        return lambda value: [item(x) for x in value]

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

    def encoder(self) -> Callable[[Any], Any] | None:
        return None  # orjson writes the tuple as an array

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

    def encoder(self) -> Callable[[Any], Any] | None:
        return as_dict

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

    def encoder(self) -> Callable[[Any], Any] | None:
        return as_dict

    def reader(self, ascii_only: bool) -> Reader:
        def read(raw: Any, parent: str, key: str | int) -> Mapping[str, Any] | None:
            if raw is None:
                return None
            value = mapping(raw, parent, key)
            if value:
                check_free_form(value, parent, key)  # type: ignore[arg-type]
            return MappingProxyType(value)

        return read


def _as_list(value: Any) -> list[Any] | None:
    return None if value is None else list(value)
