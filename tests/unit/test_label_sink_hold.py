"""The label sink's hold on a missing permission (services/label_sink/hold.py), without a broker:
what it reports, when it asks again, how it ends. The real broker: test_label_sink_acls.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from services.label_sink import hold
from services.label_sink.app import SinkStatus
from services.label_sink.faust_guards import denial
from services.label_sink.metrics import LabelSinkMetrics

LINE = "not authorized to READ topic al.labels.v1"


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(hold, "HOLD_S", 0.01)
    yield


def checks(*answers: str | None) -> tuple[list[int], object]:
    calls = [0]
    answers_iter = iter(answers)

    def missing() -> str | None:
        calls[0] += 1
        return next(answers_iter)

    return calls, missing


def test_nothing_missing_starts_at_once_and_holds_nothing() -> None:
    status, metrics = SinkStatus(), LabelSinkMetrics(CollectorRegistry())
    calls, missing = checks(None)
    assert hold.wait_until_permitted(missing, status, metrics, hold.StopSignals())  # type: ignore[arg-type]
    assert calls == [1] and status.held is None
    assert metrics.holds._value.get() == 0


def test_a_missing_permission_holds_not_ready_until_granted(caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    status, metrics = SinkStatus(), LabelSinkMetrics(CollectorRegistry())
    seen: list[tuple[bool, str]] = []
    answers = iter([LINE, LINE, LINE, None])

    def missing() -> str | None:
        seen.append(status.ready())
        return next(answers)

    assert hold.wait_until_permitted(missing, status, metrics, hold.StopSignals())
    assert seen[1] == (False, f"holding: {LINE}")  # not ready while it holds, with the line
    assert status.held is None and metrics.holds._value.get() == 1
    said = [r.getMessage() for r in caplog.records if "holds" in r.getMessage()]
    assert len(said) == 1 and LINE in said[0]  # said once, not every check


def test_a_stop_signal_ends_the_hold() -> None:
    status, metrics = SinkStatus(), LabelSinkMetrics(CollectorRegistry())
    signals = hold.StopSignals()
    calls = [0]

    def missing() -> str | None:
        calls[0] += 1
        if calls[0] == 3:
            signals.stopping.set()
        return LINE

    done = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: (result.append(hold.wait_until_permitted(
        missing, status, metrics, signals)), done.set()))
    thread.start()
    assert done.wait(10)
    assert result == [False] and calls[0] == 3


def test_a_refusal_met_while_running_waits_a_period_before_asking() -> None:
    status, metrics = SinkStatus(), LabelSinkMetrics(CollectorRegistry())
    signals = hold.StopSignals()
    signals.stopping.set()  # a stop during that first period: no check at all
    calls, missing = checks(None)
    assert not hold.wait_until_permitted(missing, status, metrics, signals,  # type: ignore[arg-type]
                                         reason=LINE)
    assert calls == [0] and status.held == LINE


def test_a_failing_check_does_not_hold_the_sink() -> None:
    status, metrics = SinkStatus(), LabelSinkMetrics(CollectorRegistry())

    def missing() -> str | None:
        raise TimeoutError("no answer")

    assert hold.wait_until_permitted(missing, status, metrics, hold.StopSignals())


def test_authorization_errors_name_the_permission() -> None:
    import aiokafka.errors as errors

    assert denial(errors.TopicAuthorizationFailedError("t"), "WRITE") == (
        "not authorized to WRITE to topic t")
    assert denial(errors.TopicAuthorizationFailedError({"b", "a"}), "READ") == (
        "not authorized to READ topic a, b")
    assert denial(errors.GroupAuthorizationFailedError("g"), "READ") == (
        "not authorized to READ group g")
    assert denial(errors.NotLeaderForPartitionError(), "READ") is None
    assert denial(ValueError("x"), "READ") is None
