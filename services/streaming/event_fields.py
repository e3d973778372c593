"""Building blocks of the event decoders: the `InvalidEvent` error, its closed set of reason codes,
field paths, and checked readers for each JSON field type.

Import the public names from `services.streaming.events`; this module exists so the decoders stay
small. Every reader returns the checked value or raises `InvalidEvent` naming the field's path;
a reader gets the parent path and the key and joins them only when a check fails, so a valid
event pays for no path formatting beyond one `predictions[i]`-style prefix per list item.

Agreement with JSON Schema (draft 2020-12), which the contract tests check:
- a number is an int or float, never a bool; an integer is an int or an integral float (`1.0`);
- lengths count code points (Python `len` on str), like `minLength`/`maxLength`; a class name is
  also bounded in UTF-8 bytes (`x-max-utf8-bytes`), because the scorer keeps class names in its
  checkpointed state and a character bound lets 4-byte characters quadruple it;
- a bad object key is blamed on the object (like `propertyNames`), a bad value on its own path.

Beyond the schemas (they describe parsed JSON, where a repeated key is already gone): a payload
that repeats a key inside one object is rejected (`duplicate_key`). JSON leaves the meaning of a
repeated key open, so a gateway that reads the first value and a consumer that reads the last
(orjson) would disagree about the same bytes. `load_object` checks it first; the inference-event
decoders check it last, on an event otherwise valid, where its structure makes the check cheap
(`input_events.quote_count`).
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Any, NoReturn

import orjson

SCHEMA_VERSION = 1
"""The only `schema_version` the v1 contracts (and these decoders) accept."""
MAX_EVENT_BYTES = 256 * 1024
"""Byte limit of an input event (inference event, label); schemas' `x-max-bytes`."""
MAX_OUTPUT_EVENT_BYTES = 1024 * 1024
"""Byte limit of the events the services produce (requests, triggers, feedback)."""
SUM_TOLERANCE = 1e-3
"""Absolute tolerance of `sum(scores) == 1`; the schema's `x-sum-to.tolerance`."""
MIN_SCORE_CLASSES = 2
MAX_PREDICTIONS = 1000
MAX_ANNOTATIONS = 1000
MAX_EMBEDDING = 4096
MAX_ID_LENGTH = 256
"""Longest id or class name, in characters."""
MAX_CLASS_BYTES = 256
"""Longest class name in UTF-8 bytes (as well as MAX_ID_LENGTH characters); schemas'
`x-max-utf8-bytes`."""
MAX_METADATA_DEPTH = 8
"""Deepest nesting of `metadata` (the object itself is depth 1); schema's `x-max-depth`."""
MAX_METADATA_NODES = 1024
"""Most JSON values inside `metadata` (containers and scalars, not counting the object itself;
keys are not values); schema's `x-max-nodes`. With MAX_EVENT_BYTES this bounds the memory a
parsed `metadata` can take: measured, 256 KiB of nested empty objects parse to ~6.6 MB."""
MAX_SCORE_CELLS = 2**20
"""Most (prediction, class) pairs in one inference event: predictions x distinct class names
over all its predictions; schema's `x-max-cells`. The scorer lays a batch's distributions out
as one dense matrix (predictions x classes), so one event must not be able to make it huge."""
MAX_URI_LENGTH = 2048
MAX_TIMESTAMP = 1e10
"""Largest epoch-seconds value (year 2286): rejects milliseconds sent by mistake (~1.7e12)."""
MAX_TOPIC_LENGTH = 249
MAX_PARTITION = 2**31 - 1
MAX_OFFSET = 2**63 - 1
MAX_COUNT = 2**63 - 1

ROOT = "$"
"""Path of the whole payload, for problems that are not about one field (size, not JSON)."""

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_SHOWN_CHARS = 40


class ErrorCode(StrEnum):
    """Why an event was rejected: the closed set of `InvalidEvent.code` values (metric labels)."""

    NOT_JSON = "not_json"  # not UTF-8 JSON at all
    TOO_LARGE = "too_large"  # payload over the byte limit, rejected before parsing
    UNKNOWN_VERSION = "unknown_version"  # schema_version this decoder does not know
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"  # a number, length or item count outside its bounds
    NOT_NORMALISED = "not_normalised"  # scores do not sum to 1 within SUM_TOLERANCE
    EMPTY = "empty"  # empty string, list or object (or no record value at all)
    NOT_FINITE = "not_finite"  # a number that does not fit a finite double (e.g. 1e999)
    UNKNOWN_FIELD = "unknown_field"
    CONFLICT = "conflict"  # mutually exclusive fields both present (scores and label)
    DUPLICATE_KEY = "duplicate_key"  # an object repeats a key: ambiguous, never guessed
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # event time too far ahead of the stream


class InvalidEvent(Exception):
    """Bad input, not a bug: the shell dead-letters the original bytes with `reason` and counts
    `code`. `field` is the offending path (`predictions[0].scores.cat`, `$` for the payload)."""

    def __init__(self, field: str, code: ErrorCode, detail: str) -> None:
        self.field = field
        self.code = code
        self.detail = detail
        self.reason = f"{field}: {detail}"
        super().__init__(self.reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.code, self.detail))


def child(parent: str, key: str | int) -> str:
    """Path of `key` under `parent` ("" is the top-level object): `a.b`, `a[0]`, `a["odd key"]`."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{orjson.dumps(key).decode()}]"


def format_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """Path of a sequence of keys/indices from the root, as used in `InvalidEvent.field`."""
    path = ""
    for part in parts:
        path = child(path, part)
    return path or ROOT


def json_type(value: object) -> str:
    """JSON Schema's name for the type of a parsed JSON value."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer"}
    return names.get(type(value), "null" if value is None else "number")


def show(value: object) -> str:
    """Short rendering of a bad value for a reason: scalars verbatim (truncated), else the type."""
    if isinstance(value, str):
        text = orjson.dumps(value).decode()
        return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + '…"'
    if value is None or isinstance(value, int | float):
        return orjson.dumps(value).decode()
    return f"an {json_type(value)}"


def fail(path: str, code: ErrorCode, detail: str) -> NoReturn:
    raise InvalidEvent(path or ROOT, code, detail)


def load_object(data: bytes | None, max_bytes: int, unique_keys: bool = True
                ) -> dict[str, Any]:
    """Parse one record value into a JSON object, enforcing `max_bytes` before parsing and,
    unless the caller checks them itself, unique keys right after (`check_unique_keys`)."""
    if not data:
        fail(ROOT, ErrorCode.EMPTY, "record has no value (tombstone or empty payload)")
    if len(data) > max_bytes:
        fail(ROOT, ErrorCode.TOO_LARGE, f"payload is {len(data)} bytes, limit {max_bytes}")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson refuses numbers beyond a double (1e999) as a parse error; name that honestly.
        if "infinity" in str(exc):
            fail(ROOT, ErrorCode.NOT_FINITE, f"number too large for a double: {exc}")
        fail(ROOT, ErrorCode.NOT_JSON, f"not UTF-8 JSON: {exc}")
    if unique_keys:
        check_unique_keys(data, obj)
    if type(obj) is not dict:
        fail(ROOT, ErrorCode.WRONG_TYPE, f"expected an object, got {show(obj)}")
    return obj


def has_duplicate_keys(data: bytes, obj: Any, quotes: int | None = None) -> bool:
    """True when the JSON text `data`, which parsed to `obj`, repeats a key in some object.

    JSON text holds two quote characters per key and per string value, plus one per escaped
    quote (`\\"`) inside a string; so without a backslash in `data` its quote count equals twice
    the keys and strings of `obj` exactly when no key repeats (a repeat drops a key, and its
    value). `quotes`, when the caller knows it, is that count for `obj`; otherwise it is taken
    from orjson's re-encoding of `obj` (no escapes either: `obj`'s strings hold no quote, no
    backslash, no control character). With backslashes, the stdlib parser reports every key
    pair instead (~5x slower, exact)."""
    if b"\\" not in data:
        expected = orjson.dumps(obj).count(b'"') if quotes is None else quotes
        return data.count(b'"') != expected
    return repeated_key(data) is not None


def repeated_key(data: bytes) -> str | None:
    """The first key that repeats within an object of the (valid) JSON text `data`, or None."""
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if not found and len(out) != len(items):
            seen: set[str] = set()
            for key, _ in items:
                if key in seen:
                    found.append(key)
                    break
                seen.add(key)
        return out

    json.loads(data, object_pairs_hook=pairs)
    return found[0] if found else None


def check_unique_keys(data: bytes, obj: Any, quotes: int | None = None) -> None:
    """Raise InvalidEvent(duplicate_key) when `data` repeats a key (`has_duplicate_keys`)."""
    if has_duplicate_keys(data, obj, quotes):
        key = repeated_key(data) or "?"
        shown = key if len(key) <= _SHOWN_CHARS else key[:_SHOWN_CHARS] + "…"
        fail(ROOT, ErrorCode.DUPLICATE_KEY,
             f"key {orjson.dumps(shown).decode()} appears twice in one object: ambiguous")


def check_version(obj: dict[str, Any], version: int) -> int:
    """`schema_version` must equal `version`; checked first so a v2 event says so plainly."""
    if "schema_version" not in obj:
        fail("schema_version", ErrorCode.MISSING_FIELD, "required field is missing")
    value = obj["schema_version"]
    is_number = type(value) is int or type(value) is float
    if is_number and value == version:
        return version
    if is_number:
        fail("schema_version", ErrorCode.UNKNOWN_VERSION, f"{show(value)} is not {version}")
    fail("schema_version", ErrorCode.WRONG_TYPE, f"expected an integer, got {show(value)}")


def check_keys(
    obj: dict[str, Any], allowed: frozenset[str], required: tuple[str, ...], path: str
) -> None:
    """No key outside `allowed` (unknown_field), every key of `required` present."""
    if not allowed.issuperset(obj):
        extra = min(key for key in obj if key not in allowed)
        if len(extra) > _SHOWN_CHARS:  # keep reasons short: the key is attacker-sized
            extra = extra[:_SHOWN_CHARS] + "…"
        fail(child(path, extra), ErrorCode.UNKNOWN_FIELD, "field is not in the contract")
    for key in required:
        if key not in obj:
            fail(child(path, key), ErrorCode.MISSING_FIELD, "required field is missing")


def text(value: Any, path: str, key: str | int, max_len: int) -> str:
    """A string of 1..max_len code points."""
    if type(value) is str and 0 < len(value) <= max_len:
        return value
    where = child(path, key)
    if type(value) is not str:
        fail(where, ErrorCode.WRONG_TYPE, f"expected a string, got {show(value)}")
    if not value:
        fail(where, ErrorCode.EMPTY, "string is empty")
    fail(where, ErrorCode.OUT_OF_RANGE, f"string of {len(value)} characters, limit {max_len}")


def optional_text(value: Any, path: str, key: str, max_len: int) -> str | None:
    """Like `text`, but an absent field or null gives None."""
    return None if value is None else text(value, path, key, max_len)


def flag(value: Any, path: str, key: str) -> bool:
    """An optional boolean: absent or null is False; anything but true/false is wrong_type
    (1 and "true" are not booleans)."""
    if value is None or value is False or value is True:
        return value is True
    fail(child(path, key), ErrorCode.WRONG_TYPE, f"expected a boolean, got {show(value)}")


def number(
    value: Any, path: str, key: str | int, low: float, high: float, low_open: bool = False
) -> float:
    """A finite number in [low, high] (or (low, high] when `low_open`)."""
    kind = type(value)
    if (kind is float or kind is int) and low <= value <= high and not (low_open and value == low):
        return float(value)
    where = child(path, key)
    if kind is not float and kind is not int:
        fail(where, ErrorCode.WRONG_TYPE, f"expected a number, got {show(value)}")
    if not math.isfinite(value):
        fail(where, ErrorCode.NOT_FINITE, f"{show(value)} is not finite")
    if high == math.inf:
        relation = ">" if low_open else ">="
        fail(where, ErrorCode.OUT_OF_RANGE, f"{show(value)} must be {relation} {low:g}")
    bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    fail(where, ErrorCode.OUT_OF_RANGE, f"{show(value)} outside {bounds}")


def optional_number(value: Any, path: str, key: str, low: float, high: float) -> float | None:
    return None if value is None else number(value, path, key, low, high)


def integer(value: Any, path: str, key: str | int, low: int, high: int) -> int:
    """An integer in [low, high]; an integral float such as 3.0 counts (as in JSON Schema)."""
    kind = type(value)
    if kind is int and low <= value <= high:
        return value
    where = child(path, key)
    if kind is float and math.isfinite(value) and value.is_integer():
        if low <= value <= high:
            return int(value)
    elif kind is not int:
        fail(where, ErrorCode.WRONG_TYPE, f"expected an integer, got {show(value)}")
    fail(where, ErrorCode.OUT_OF_RANGE, f"{show(value)} outside [{low}, {high}]")


def array(value: Any, path: str, key: str, min_items: int, max_items: int) -> list[Any]:
    """A list of min_items..max_items items (items are checked by the caller)."""
    if type(value) is list and min_items <= len(value) <= max_items:
        return value
    where = child(path, key)
    if type(value) is not list:
        fail(where, ErrorCode.WRONG_TYPE, f"expected an array, got {show(value)}")
    if not value:
        fail(where, ErrorCode.EMPTY, f"array is empty, needs at least {min_items} item(s)")
    expected = min_items if min_items == max_items else f"{min_items}..{max_items}"
    fail(where, ErrorCode.OUT_OF_RANGE, f"{len(value)} items, expected {expected}")


def mapping(value: Any, path: str, key: str | int) -> dict[str, Any]:
    """A JSON object (its keys and values are checked by the caller)."""
    if type(value) is dict:
        return value
    fail(child(path, key), ErrorCode.WRONG_TYPE, f"expected an object, got {show(value)}")


def class_key(name: str, where: str, max_len: int) -> None:
    """A class name used as an object key; a bad one is blamed on the object (`where`)."""
    if not 0 < len(name) <= max_len:
        code = ErrorCode.EMPTY if not name else ErrorCode.OUT_OF_RANGE
        fail(where, code, f"class name {show(name)} must have 1..{max_len} characters")
    if not name.isascii() and len(name.encode()) > MAX_CLASS_BYTES:
        fail(where, ErrorCode.OUT_OF_RANGE,
             f"class name {show(name)} is {len(name.encode())} UTF-8 bytes, limit "
             f"{MAX_CLASS_BYTES}")


def class_name(value: Any, path: str, key: str) -> str:
    """A class name as a value (a top-1 `label`): 1..MAX_ID_LENGTH characters and at most
    MAX_CLASS_BYTES UTF-8 bytes."""
    name = text(value, path, key, MAX_ID_LENGTH)
    if not name.isascii() and len(name.encode()) > MAX_CLASS_BYTES:
        fail(child(path, key), ErrorCode.OUT_OF_RANGE,
             f"{len(name.encode())} UTF-8 bytes, limit {MAX_CLASS_BYTES}")
    return name


def check_free_form(value: dict[str, Any], path: str, key: str) -> None:
    """A free-form object (`metadata`) within MAX_METADATA_DEPTH levels (itself the first) and
    MAX_METADATA_NODES values. Walks level by level and stops at the first bound crossed, so a
    hostile value costs at most MAX_METADATA_NODES steps; scalars are only counted, by type in
    C-level passes."""
    if len(value) <= MAX_METADATA_NODES:  # the usual metadata: flat and small
        kinds = list(map(type, value.values()))
        if not (kinds.count(dict) or kinds.count(list)):
            return
    nodes, depth, level = 0, 1, [value]
    while level:
        deeper: list[Any] = []
        for container in level:
            items = container.values() if type(container) is dict else container
            nodes += len(items)
            if nodes > MAX_METADATA_NODES:
                fail(child(path, key), ErrorCode.OUT_OF_RANGE,
                     f"holds more than {MAX_METADATA_NODES} values")
            kinds = list(map(type, items))
            if kinds.count(dict) or kinds.count(list):
                deeper.extend(x for x in items if type(x) is dict or type(x) is list)
        if deeper and depth == MAX_METADATA_DEPTH:
            fail(child(path, key), ErrorCode.OUT_OF_RANGE,
                 f"nested deeper than {MAX_METADATA_DEPTH} levels")
        level, depth = deeper, depth + 1


def not_greater(obj: dict[str, Any], path: str, low_key: str, high_key: str) -> None:
    """Cross-field order: obj[low_key] <= obj[high_key] (the schemas' x-less-or-equal)."""
    if obj[low_key] > obj[high_key]:
        detail = f"{obj[high_key]} is less than {low_key} {obj[low_key]}"
        fail(child(path, high_key), ErrorCode.OUT_OF_RANGE, detail)
