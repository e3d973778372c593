"""Kinds for machine-written tokens rather than free text: base64 payloads, hex digests, closed
sets of values (`Enum`) and constants (`Const`). Part of the declaration vocabulary
(services.contracts.vocabulary), used by the events the services write (dead letters)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.contracts.kinds import Kind, Reader, _types
from services.streaming.event_fields import ErrorCode, child, fail, show

BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
"""Standard base64 (RFC 4648) with padding; the empty string included."""


@dataclass(frozen=True)
class Pattern(Kind):
    """A string matching `pattern` (a JSON Schema / Python regex anchored with ^...$);
    `content_encoding` is documentation (`base64`)."""

    pattern: str
    nullable: bool = False
    content_encoding: str | None = None

    def schema(self, owner: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": _types("string", self.nullable)}
        if self.content_encoding:
            out["contentEncoding"] = self.content_encoding
        out["pattern"] = self.pattern
        return out

    def reader(self, ascii_only: bool) -> Reader:
        compiled, nullable = re.compile(self.pattern), self.nullable

        def read(value: Any, parent: str, key: str | int) -> str | None:
            if value is None and nullable:
                return None
            if type(value) is not str:
                fail(child(parent, key), ErrorCode.WRONG_TYPE,
                     f"expected a string, got {show(value)}")
            if not compiled.search(value):
                fail(child(parent, key), ErrorCode.OUT_OF_RANGE,
                     f"{show(value)} does not match {self.pattern}")
            return value

        return read


BASE64 = Pattern(BASE64_PATTERN, content_encoding="base64")
SHA256_HEX = Pattern("^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Enum(Kind):
    """One of a closed, ordered set of JSON values (strings: a StrEnum's values)."""

    values: tuple[Any, ...]

    def schema(self, owner: str) -> dict[str, Any]:
        return {"enum": list(self.values)}

    def reader(self, ascii_only: bool) -> Reader:
        allowed = frozenset(self.values)

        def read(value: Any, parent: str, key: str | int) -> Any:
            if type(value) is str and value in allowed:
                return value
            code = ErrorCode.OUT_OF_RANGE if type(value) is str else ErrorCode.WRONG_TYPE
            fail(child(parent, key), code, f"{show(value)} is not one of {sorted(allowed)}")

        return read


@dataclass(frozen=True)
class Const(Kind):
    """A constant boolean flag that is either `value` or absent (`absent` decodes it)."""

    value: bool
    absent: Any = None

    def schema(self, owner: str) -> dict[str, Any]:
        return {"type": "boolean", "const": self.value}

    def reader(self, ascii_only: bool) -> Reader:
        expected = self.value

        def read(value: Any, parent: str, key: str | int) -> bool:
            if value is expected:
                return expected
            code = ErrorCode.OUT_OF_RANGE if type(value) is bool else ErrorCode.WRONG_TYPE
            fail(child(parent, key), code, f"expected {show(expected)}, got {show(value)}")

        return read
