"""The dead-letter ceiling: stop loudly when most recent input is invalid.

A bad deploy upstream (wrong schema, wrong serializer) turns every event invalid. Dead-lettering
them all would look healthy while nothing is scored, so a service checks the share of invalid
events over its last `window` events and stops with a clear error past `max_invalid_share`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DeadLetterCeilingExceeded(RuntimeError):
    """More than the allowed share of recent input was invalid; the message gives the figures."""


@dataclass(frozen=True)
class DeadLetterCeiling:
    """`window` events; `max_invalid_share` in (0, 1]; judged only once `window` events are seen,
    so a few bad events at start-up do not stop the service."""

    window: int = 1000
    max_invalid_share: float = 0.5

    def __post_init__(self) -> None:
        if self.window < 1 or not 0 < self.max_invalid_share <= 1:
            raise ValueError(f"bad ceiling: window={self.window}, share={self.max_invalid_share}")


class DeadLetterWindow:
    """Ring buffer of the last `ceiling.window` outcomes (True = invalid)."""

    def __init__(self, ceiling: DeadLetterCeiling) -> None:
        self.ceiling = ceiling
        self._ring = np.zeros(ceiling.window, dtype=bool)
        self._seen = 0

    def record(self, invalid: np.ndarray) -> None:
        """Append one batch of outcomes in input order (bool array, True = invalid)."""
        outcomes = np.asarray(invalid, dtype=bool)
        tail = outcomes[-self.ceiling.window:]  # older ones would be overwritten anyway
        start = self._seen + outcomes.size - tail.size
        self._ring[(start + np.arange(tail.size)) % self.ceiling.window] = tail
        self._seen += outcomes.size

    def record_counts(self, valid: int, invalid: int) -> None:
        """Append a batch known only by its counts (the order inside a batch does not matter to
        the share)."""
        self.record(np.repeat([False, True], [valid, invalid]))

    def invalid_share(self) -> float:
        """Share of invalid events among the last min(seen, window) events (0 before any)."""
        filled = min(self._seen, self.ceiling.window)
        return float(self._ring[:filled].sum() / filled) if filled else 0.0

    def check(self) -> None:
        """Raise DeadLetterCeilingExceeded when the window is full and over the ceiling."""
        if self._seen < self.ceiling.window:
            return
        share = self.invalid_share()
        if share > self.ceiling.max_invalid_share:
            raise DeadLetterCeilingExceeded(
                f"{share:.0%} of the last {self.ceiling.window} events were invalid "
                f"(ceiling {self.ceiling.max_invalid_share:.0%}): is the producer upstream "
                "sending the right schema? See the .dlq topic for reasons."
            )
