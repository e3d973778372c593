"""Reading a held reservoir pick back after a restore (services/scorer/readback.py):
a look-up that fails at once is asked again within its try instead of spending every try in a
millisecond. Right after a broker restart librdkafka answers `Unknown partition` in microseconds
for a while; the chaos soak's scorer stopped (exit 2) on that before (bench/chaos.py)."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from services.scorer import readback
from services.scorer.partition import DeferredPickUnreadable
from services.scorer.readback import ReadBack


class _Record:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"the pick"


class _Fetcher:
    """Answers `Unknown partition` at once for its first `failures` look-ups, then serves."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.asked = 0
        self.tp: TopicPartition | None = None

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return 0, 100

    def assign(self, tps: list[TopicPartition]) -> None:
        self.tp = tps[0]

    def poll(self, timeout: float) -> Any:
        assert self.tp is not None
        return _Record(self.tp.offset)


def _scorer(fetcher: _Fetcher) -> ReadBack:
    return ReadBack("in", fetcher, mock.Mock())  # type: ignore[arg-type]  # no broker needed


@pytest.fixture(autouse=True)
def _short_tries() -> Any:
    with mock.patch.object(readback, "FETCH_TIMEOUT_S", 1.0), \
            mock.patch.object(readback, "FETCH_RETRY_S", 0.05):
        yield


def test_a_look_up_that_fails_at_once_is_asked_again_within_its_try() -> None:
    fetcher = _Fetcher(failures=5)
    scorer = _scorer(fetcher)
    assert scorer.fetch_from(0)(7) == b"the pick"
    assert fetcher.asked == 6
    assert scorer.metrics.deferred_read_failures.inc.call_count == 0  # within the first try


def test_a_pick_that_never_becomes_readable_still_stops_after_its_tries() -> None:
    scorer = _scorer(_Fetcher(failures=10**9))
    with pytest.raises(DeferredPickUnreadable, match="not committing"):
        scorer.fetch_from(0)(7)
    assert scorer.metrics.deferred_read_failures.inc.call_count == readback.FETCH_ATTEMPTS
