"""The label sink as a process: start-up checks, the faust worker, and a stop that always stops.

Exit codes: 0 after a clean stop (offsets committed up to what was processed, producer flushed);
70 when an agent crashed (a bug, a dead-letter ceiling, a partition whose next record the consumer
would not hand over) or the broker refused a record the sink produced (delivery.py); 75 when a
stop (SIGTERM/SIGINT, or the stop after a crash) did not finish within `stop_timeout_s` (broker
gone, faust stuck mid-rebalance): the process ends anyway, with one log line, and a restart
re-reads from the committed offsets. Start-up failures inside faust keep faust's non-zero code.

Why a watchdog: faust stops through several threads and services; measured on Apache Kafka, a
sink whose broker had gone away ignored SIGTERM for good (its consumer thread died in its own
shutdown and the main loop waited on it), and Kubernetes would wait out the whole grace period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
import time
from typing import Any

import faust
from confluent_kafka.admin import AdminClient

from services.label_sink import faust_guards
from services.label_sink.app import SinkStatus, build_app
from services.label_sink.changelogs import align_or_warn
from services.label_sink.cluster import SinkTopics, is_tansu, metadata_lists, partition_counts
from services.label_sink.hold import HOLD_S, StopSignals, restart_in_place, wait_until_permitted
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.permissions import Permissions
from services.label_sink.security import FaustSecurity, faust_security, is_security_key
from services.streaming.settings import LabelSinkSettings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASHED = 70  # EX_SOFTWARE
EXIT_STOP_TIMEOUT = 75  # EX_TEMPFAIL: stopped without finishing; a restart resumes

# After faust's worker returns, the interpreter still joins faust's non-daemon threads; one stuck
# in its broker's shutdown would hang the exit. This bounds that last step (it normally takes ms).
_EXIT_GRACE_S = 5.0


class Watchdog:
    """Ends the process (`os._exit`) at a deadline unless it exits first. `arm` may be called
    many times: the earliest deadline wins, with the code and reason given with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._code = EXIT_STOP_TIMEOUT
        self._why = ""
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, code: int, why: str) -> None:
        with self._lock:
            deadline = time.monotonic() + seconds
            if self._deadline is not None and self._deadline <= deadline:
                return
            self._deadline, self._code, self._why = deadline, code, why
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="stop-watchdog",
                                                daemon=True)
                self._thread.start()

    def _watch(self) -> None:
        while True:
            with self._lock:
                left = (self._deadline or 0.0) - time.monotonic()
                if left <= 0:
                    code, why = self._code, self._why
                    break
            time.sleep(min(left, 0.5))
        log.critical("label sink exits with code %d: %s", code, why)
        logging.shutdown()
        os._exit(code)


class SinkWorker(faust.Worker):  # type: ignore[misc]
    """faust's worker, with the watchdog armed as soon as a stop signal arrives."""

    def __init__(self, app: faust.App, watchdog: Watchdog, stop_timeout_s: float,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._watchdog = watchdog
        self._stop_timeout_s = stop_timeout_s

    def _schedule_shutdown(self, signum: signal.Signals) -> None:
        self._watchdog.arm(self._stop_timeout_s, EXIT_STOP_TIMEOUT,
                           f"{signum.name} received and the graceful stop did not finish within "
                           f"{self._stop_timeout_s:g}s (stop_timeout_s)")
        super()._schedule_shutdown(signum)


def run(settings: LabelSinkSettings) -> int:
    """Run the label sink in the foreground until SIGTERM/SIGINT; returns the exit code (module
    docstring). The process always ends within `stop_timeout_s` of a stop signal or a crash.
    Without a permission it needs it holds instead, and goes on by itself (hold.py)."""
    from prometheus_client import CollectorRegistry

    from services.streaming.ops import OpsAccess, OpsServer

    # Before any network call: a security setting faust cannot apply stops start-up right here.
    security = faust_security(settings.kafka.client_config)
    registry = CollectorRegistry()
    metrics = LabelSinkMetrics(registry)
    status = SinkStatus()
    signals = StopSignals()
    ops = OpsServer(registry, settings.metrics_host, settings.metrics_port,
                    health=status.health, ready=status.ready,
                    access=OpsAccess.of(settings)).start()
    try:
        signals.install()
        permitted = wait_until_permitted(Permissions(settings).missing, status, metrics, signals)
        signals.uninstall()
        if not permitted:
            return EXIT_OK
        code = _run_worker(settings, security, metrics, status, ops.port)
        if status.held is None:
            return code
        signals.install()  # faust's handlers went with its event loop
        if wait_until_permitted(Permissions(settings).missing, status, metrics, signals,
                                reason=status.held):
            ops.stop()
            restart_in_place()
        Watchdog().arm(_EXIT_GRACE_S, EXIT_OK, "stopped while holding but a thread of the "
                       "stopped worker kept the process alive")
        return EXIT_OK
    finally:
        ops.stop()


def _run_worker(settings: LabelSinkSettings, security: FaustSecurity, metrics: LabelSinkMetrics,
                status: SinkStatus, ops_port: int) -> int:
    """Start-up checks, then the faust worker until it stops; the exit code (module docstring).
    `status.held` is set when a missing permission stopped it."""
    names = SinkTopics.with_prefix(settings.topic_prefix)
    partitions = partition_counts(settings, names)
    tansu = settings.broker_compat == "tansu" or is_tansu(settings)
    compat = settings.broker_compat == "tansu" or (settings.broker_compat == "auto" and tansu)
    if tansu and settings.static_membership:
        # Measured on Tansu 0.6: a static member's JoinGroup succeeds but its SyncGroup never
        # does, and it re-joins every few seconds, never ready. The embedded broker serves one
        # worker on one machine, where the takeover figure does not matter.
        log.info("static membership off: the embedded broker does not complete a static "
                 "member's join")
        settings = dataclasses.replace(settings, static_membership=False)
    if not tansu:
        # Changelogs created before their configuration changed keep the old one: faust
        # never alters an existing topic (changelogs.py; the embedded broker never compacts).
        align_or_warn(AdminClient(settings.kafka.client(role="admin")), settings.app_id)
    faust_guards.install(topic_visible=metadata_lists(settings))
    faust_guards.leave_group_on_stop(settings.leave_group_on_stop)
    if compat:
        from services.label_sink.faust_compat import patch_faust_highwaters

        patch_faust_highwaters()
    if security.unused:
        log.warning("Kafka security properties unused with security.protocol=%s (as in "
                    "librdkafka): %s", security.protocol, list(security.unused))
    ignored = sorted(k for k in settings.kafka.client_config if not is_security_key(k))
    if ignored:
        # Tuning keys (client.id, linger.ms...) reach the sink's admin client, not faust.
        log.warning("librdkafka properties not applied to the faust client: %s", ignored)
    watchdog = Watchdog()
    holder: dict[str, Any] = {}

    def stop_worker() -> None:
        # Called from faust's event loop or from its consumer thread (guard 5): schedule the
        # stop on the worker's own loop either way.
        worker = holder.get("worker")
        if worker is not None:
            loop = worker.loop
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(worker.stop(), loop=loop))

    def on_crash(exc: BaseException) -> None:
        watchdog.arm(settings.stop_timeout_s, EXIT_CRASHED,
                     f"an agent crashed ({exc!r}) and the stop did not finish within "
                     f"{settings.stop_timeout_s:g}s (stop_timeout_s)")
        stop_worker()

    def on_denied(line: str) -> None:
        if status.held is not None or status.crashed is not None:
            return
        status.held = line
        metrics.holds.inc()
        log.error("label sink holds: %s; its worker stops, nothing is committed past the refused "
                  "record, and it starts again once the permission is granted (checked every "
                  "%g s)", line, HOLD_S)
        watchdog.arm(settings.stop_timeout_s, EXIT_STOP_TIMEOUT,
                     f"a permission is missing ({line}) and the stop did not finish within "
                     f"{settings.stop_timeout_s:g}s (stop_timeout_s)")
        stop_worker()

    app = build_app(settings, metrics, status, partitions=partitions,
                    on_crash=on_crash, security=security, on_denied=on_denied)
    order = status.order
    assert order is not None
    early = status.early
    assert early is not None

    def commit_at(tp: tuple[str, int]) -> int | None:
        # Never past a label still waiting for its request (early.py): a restart reads it again.
        frontier, waiting = order.frontier(tp), early.oldest(tp)
        return frontier if frontier is None or waiting is None else min(frontier, waiting)

    faust_guards.set_commit_source((order.topics, commit_at))
    delivery = status.delivery
    assert delivery is not None
    faust_guards.refuse_commits_if(lambda: delivery.refused is not None)
    faust_guards.report_denials_to(on_denied)
    worker = SinkWorker(app, watchdog, settings.stop_timeout_s, loglevel="INFO",
                        override_logging=False)
    holder["worker"] = worker
    log.info("label sink %s: ops on %s:%d, broker compat %s, Kafka security %s, internal topic "
             "replication %d", settings.app_id, settings.metrics_host, ops_port,
             "tansu" if compat else "off", security, settings.topic_replication_factor)
    code = EXIT_OK
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if status.crashed is not None:
        code = EXIT_CRASHED
    if status.held is None:
        watchdog.arm(_EXIT_GRACE_S, code, "the worker stopped but a thread kept the process "
                     "alive")
    return code
