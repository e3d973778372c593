"""A consumed record as the scorer's feedback reader sees it (`error()`, `value()`), for unit
tests that hand the reader records without a broker."""

from __future__ import annotations


class FeedbackMessage:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value
