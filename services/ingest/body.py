"""A request body as the events it holds, each as the exact bytes the client sent (pure).

Two formats, chosen by Content-Type: a JSON array (`application/json`) or NDJSON (one event per
line: `application/x-ndjson`, `application/ndjson`, `application/jsonl`). Each event keeps its
own bytes, so the scorer's decoder judges exactly what is produced, and what is produced is what
the client sent, byte for byte (a re-serialised event could hide what the decoder rejects, such
as a repeated key). Problems with the body as a whole raise `BodyError` (one status for the
request); problems with one event are that event's business (the decoder's reason codes).
"""

from __future__ import annotations

import json
import re

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
MEDIA_TYPES = JSON_TYPES | NDJSON_TYPES

_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class BodyError(Exception):
    """The body cannot be taken at all: `status` (400, 413, 415), a stable `code`, a `detail`."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, lower-cased, parameters dropped ("" if none)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def split_events(body: bytes, content_type: str | None, max_events: int) -> list[bytes]:
    """The events of `body`, in order, each as its own bytes. Raises BodyError: 415 for another
    media type, 400 when the body is not a non-empty JSON array / has no NDJSON line, 413 for
    more than `max_events` events."""
    kind = media_type(content_type)
    if kind in JSON_TYPES:
        events = _array_items(body, max_events)
    elif kind in NDJSON_TYPES:
        events = _lines(body, max_events)
    else:
        allowed = ", ".join(sorted(MEDIA_TYPES))
        raise BodyError(415, "unsupported_media_type",
                        f"Content-Type {kind or '(none)'!r} is not one of {allowed}")
    if not events:
        raise BodyError(400, "empty", "the body holds no event")
    return events


def _too_many(max_events: int) -> BodyError:
    return BodyError(413, "too_many_events", f"more than {max_events} events in one request")


def _lines(body: bytes, max_events: int) -> list[bytes]:
    events: list[bytes] = []
    for line in body.split(b"\n"):
        line = line.strip(b" \t\r")
        if line:  # blank lines (a trailing newline, say) are not events
            if len(events) == max_events:
                raise _too_many(max_events)
            events.append(line)
    return events


def _array_items(body: bytes, max_events: int) -> list[bytes]:
    """The items of a JSON array as the byte slices they occupy in `body`. The stdlib scanner
    finds where each item ends (C code; ~9 ms per 1,000 events of 240 bytes, measured, the same
    as parsing with orjson and re-serialising); orjson then decodes each slice once more in the
    decoder. A body that is not one well-formed array is a 400."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, "not_json", f"body is not UTF-8: {exc}") from None
    pos = _SPACE.match(text).end()  # type: ignore[union-attr]  # matches the empty string
    if not text.startswith("[", pos):
        raise BodyError(400, "wrong_type", "expected a JSON array of inference events")
    spans: list[tuple[int, int]] = []
    pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
    try:
        if text.startswith("]", pos):
            pos += 1
        else:
            while True:
                if len(spans) == max_events:
                    raise _too_many(max_events)
                _, end = _DECODER.raw_decode(text, pos)
                spans.append((pos, end))
                pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
                if text.startswith(",", pos):
                    pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
                elif text.startswith("]", pos):
                    pos += 1
                    break
                else:
                    raise ValueError(f"expected ',' or ']' at character {pos}")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise BodyError(400, "not_json", f"body is not a well-formed JSON array: {exc}") from None
    if _SPACE.match(text, pos).end() != len(text):  # type: ignore[union-attr]
        raise BodyError(400, "not_json", f"text after the array at character {pos}")
    return [text[start:end].encode("utf-8") for start, end in spans]
