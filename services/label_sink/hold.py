"""The label sink without a permission it needs (issue 20): it holds, says why, and goes on by
itself once the permission is granted. Never a crash loop.

- Before faust starts, `wait_until_permitted` asks the cluster what the sink may do
  (permissions.py). While something is missing the sink is not ready (`/readyz` answers 503
  with the line), logs the line once, counts it in `label_sink_holds_total`, and asks again
  every `HOLD_S` seconds. SIGTERM/SIGINT end the wait (exit 0).
- While faust runs, a refusal for want of an ACL (a record refused, a fetch or a commit denied)
  stops the faust worker: nothing is committed past the refused record's input (delivery.py).
  The process does not exit: it waits as above, then starts again in place (`restart_in_place`,
  `exec` of the same command line, same process id, so Kubernetes sees no restart), recovering
  its tables and reading again from the last commit, so no label is lost or counted twice.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from services.label_sink.app import SinkStatus
from services.label_sink.metrics import LabelSinkMetrics

log = logging.getLogger(__name__)

# How often a holding sink asks the cluster again: one cheap metadata round per period; an ACL
# granted is noticed within it.
HOLD_S = 5.0


class StopSignals:
    """SIGTERM/SIGINT set `stopping` while installed (outside faust, which has its own)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s received while holding: the sink stops", signal.Signals(signum).name)
        self.stopping.set()


def wait_until_permitted(missing: Callable[[], str | None], status: SinkStatus,
                         metrics: LabelSinkMetrics, signals: StopSignals,
                         reason: str | None = None) -> bool:
    """Block until `missing()` says nothing is missing (True), or a stop signal (False).
    `reason`: why the sink already holds (a refusal faust met, logged and counted by the
    caller); the first check then comes after one period, so a refusal the check cannot see
    is retried every `HOLD_S`, not in a loop."""
    held = reason  # the line last said; None while not holding
    status.held = reason
    if reason is not None and signals.stopping.wait(HOLD_S):
        return False
    while True:
        try:
            line = missing()
        except Exception as exc:  # the check is best effort (permissions.py)
            log.warning("could not ask the cluster for the sink's permissions (%r); going on",
                        exc)
            line = None
        if line is None:
            if held is not None:
                log.info("label sink: the permissions it needs are granted; going on")
            status.held = None
            return True
        if held is None:
            metrics.holds.inc()
        if line != held:
            log.error("label sink holds: %s; checking again every %g s", line, HOLD_S)
        status.held = held = line
        if signals.stopping.wait(HOLD_S):
            return False


def restart_in_place() -> None:
    """Replace this process with a fresh run of the same command line (same pid). Never
    returns."""
    log.info("label sink starts again in place")
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
