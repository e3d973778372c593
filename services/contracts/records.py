"""Records and events of the declaration vocabulary: `Record` (a `Shape`, i.e. a closed object
of fields, with the reader and encoder `codegen` compiles from it) and `Event` (a top-level
record with its schema's prose and byte limit). Import them from
`services.contracts.vocabulary`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.contracts.codegen import compile_encoder, compile_record
from services.contracts.kinds import DRAFT, Kind, Reader, Shared, Version, schema_id
from services.contracts.shapes import Shape
from services.streaming.event_fields import check_version, child, load_object

_ENCODE_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


@dataclass(frozen=True)
class Record(Shape):
    """A `Shape` with its compiled reader (`object_reader`) and encoder (`encoder`)."""

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
        where that is the identity). `to_json` serves `to_dict()` and tests; the services'
        bytes come from the compiled `encoder`, which writes the same JSON."""
        plan = []
        for f in self.fields:
            kind = f.kind
            while isinstance(kind, Shared):
                kind = kind.kind
            identity = type(kind).to_json is Kind.to_json
            plan.append((f.name, f.attribute, f.required, f.kind.absent,
                         None if identity else kind.to_json))
        return tuple(plan)

    def json_form(self) -> Callable[[Any], Any] | None:
        return None if self.plain else self.to_json  # a plain record decodes to its JSON form

    def encoder(self) -> Callable[[Any], Any]:
        return self._encoder

    @functools.cached_property
    def _encoder(self) -> Callable[[Any], Any]:
        return compile_encoder(self)

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
        the same content (`to_json`), so a crash replay reproduces identical output. Through
        the record's compiled encoder (`codegen.compile_encoder`). A dataclass left anywhere
        in a plain or free-form part raises TypeError: orjson would otherwise write it by its
        attribute names, which are not the contract's."""
        return orjson.dumps(self._encode(event), option=_ENCODE_OPTIONS)

    @functools.cached_property
    def _encode(self) -> Callable[[Any], Any]:
        return self.record.encoder()

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
