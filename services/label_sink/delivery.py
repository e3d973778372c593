"""Delivery before commit (issue 14, item 1): a record the sink produced that the broker refused
stops the worker, and no offset is committed after it.

faust hands every produced record to aiokafka and, when the broker refuses one (an oversized
record, NOT_ENOUGH_REPLICAS past the retries, an ACL), only logs a warning; its next commit
(which flushes the producer first) then committed the offset of the input that produced it, so a
forwarded label, a table row, a trigger, feedback or a dead letter was lost without a trace.

`DeliveryGuard` is a faust sensor: faust reports every refused record to `on_send_error`. The
first refusal is kept; `faust_guards` then refuses every commit (the flush before a commit lets
the refusal of any record sent before it arrive first), and the worker stops (exit 70) with one
line naming the topic and the error. A restart re-reads from the last commit, made before the
refused record's input was processed, so the records of the outage are processed again, once.

A refusal for want of an ACL (issue 20) blocks commits the same way, but goes to `on_denied`
instead: the sink then holds until the permission is back rather than exit (worker.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust

from services.label_sink.faust_guards import denial

log = logging.getLogger(__name__)


class DeliveryRefused(RuntimeError):
    """The broker refused a record the sink produced."""


class DeliveryGuard(faust.Sensor):  # type: ignore[misc]
    """`on_refused(exc)` is called once, at the first refusal; `on_denied(line)` instead when
    that refusal is an authorization error (`line` names the permission)."""

    def __init__(self, on_refused: Callable[[DeliveryRefused], None],
                 on_denied: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refused: DeliveryRefused | None = None
        self._on_refused = on_refused
        self._on_denied = on_denied

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                          valsize: int) -> Any:
        return topic  # the state faust hands back to on_send_error

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        if self.refused is not None:
            return
        self.refused = DeliveryRefused(f"a record to {state} was refused: {exc!r}; nothing is "
                                       "committed past its input")
        line = denial(exc, "WRITE")
        if line is not None and self._on_denied is not None:
            self._on_denied(line)
            return
        log.critical("label sink stops: %s", self.refused)
        self._on_refused(self.refused)
