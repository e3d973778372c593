"""Issue 23, item 4: a stop always stops. SIGTERM ends the label sink within its stop timeout
whatever state it is in (mid-rebalance, broker gone), and a crashed agent ends the process with a
non-zero code. On a broker of this module's own, since one test kills it (so that test runs
last). Measured before the fix: a sink whose broker had gone ignored SIGTERM until SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from services.label_sink.worker import EXIT_CRASHED, EXIT_STOP_TIMEOUT
from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from tests.conftest import private_kafka
from tests.integration.kafka_support import produce
from tests.integration.label_sink_support import SinkProcess, create_sink_topics

pytestmark = pytest.mark.timeout(240)

STOP_TIMEOUT_S = 5
# The bound a test allows: the stop timeout, plus the watchdog's poll and the interpreter's exit.
BOUND_S = STOP_TIMEOUT_S + 5
OPTIONS = {"stop_timeout_s": STOP_TIMEOUT_S, "session_timeout_s": 3, "heartbeat_interval_s": 1}


@pytest.fixture(scope="module")
def own_kafka() -> Iterator[ApacheKafka]:
    with private_kafka({"group.min.session.timeout.ms": "1000"}) as broker:
        yield broker


def new_sink(bootstrap: str) -> tuple[SinkProcess, str]:
    prefix = f"lss-{uuid.uuid4().hex[:8]}."
    create_sink_topics(bootstrap, prefix)
    return SinkProcess(bootstrap, f"label-sink-{prefix}", prefix, **OPTIONS), prefix


def exit_code_within(sink: SinkProcess, seconds: float) -> tuple[int, float]:
    """(exit code, seconds taken); fails if the process is still running after `seconds`."""
    assert sink.proc is not None
    started = time.monotonic()
    try:
        code = sink.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {seconds:.0f}s later\n{sink.tail()}") from None
    return code, time.monotonic() - started


def test_a_crashed_agent_ends_the_process_with_a_non_zero_code(own_kafka: ApacheKafka) -> None:
    sink, prefix = new_sink(own_kafka.bootstrap)
    sink.start()
    try:
        sink.wait_ready(90)
        # A broken producer upstream: past the dead-letter ceiling (over half of the last 1,000
        # labels invalid, once 1,000 were seen) the label reader raises, which must stop the
        # whole worker.
        produce(own_kafka.bootstrap, prefix + topics.LABELS,
                [(f"k{i}".encode(), b"{not json") for i in range(1100)])
        code, took = exit_code_within(sink, 60 + BOUND_S)
    finally:
        sink.kill()
    assert code == EXIT_CRASHED, sink.tail()
    assert "DeadLetterCeilingExceeded" in sink.log.read_text()
    print(f"\ncrashed agent: exit {code} {took:.1f}s after the bad labels were sent")


def test_sigterm_mid_rebalance_stops_within_the_timeout(own_kafka: ApacheKafka) -> None:
    first, prefix = new_sink(own_kafka.bootstrap)
    first.start()
    second = SinkProcess(own_kafka.bootstrap, f"label-sink-{prefix}", prefix, **OPTIONS)
    try:
        first.wait_ready(90)
        second.start()  # its join makes the group rebalance: `first` stops being ready

        def rebalancing() -> bool:
            try:
                from services.evaluation.processes import http_get

                return http_get(first.port, "/readyz")[0] != 200
            except OSError:
                return False

        deadline = time.monotonic() + 60
        while not rebalancing():
            assert time.monotonic() < deadline, "no rebalance seen"
            time.sleep(0.02)
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        code, took = exit_code_within(first, BOUND_S)
    finally:
        first.kill()
        second.stop()
    assert code in (0, EXIT_STOP_TIMEOUT), first.tail()
    print(f"\nSIGTERM mid-rebalance: exit {code} after {took:.1f}s")


def test_sigterm_with_the_broker_gone_stops_within_the_timeout(own_kafka: ApacheKafka) -> None:
    """Last in this module: it kills the module's broker."""
    sink, _ = new_sink(own_kafka.bootstrap)
    sink.start()
    try:
        sink.wait_ready(90)
        own_kafka.kill()
        time.sleep(2)  # let the sink notice: its connections fail and it starts retrying
        assert sink.proc is not None
        sink.proc.send_signal(signal.SIGTERM)
        code, took = exit_code_within(sink, BOUND_S)
    finally:
        sink.kill()
    assert code in (0, EXIT_STOP_TIMEOUT), sink.tail()
    if code == EXIT_STOP_TIMEOUT:
        assert "did not finish within 5s (stop_timeout_s)" in sink.log.read_text()
    print(f"\nSIGTERM with the broker gone: exit {code} after {took:.1f}s")
