"""ACTIVE_STREAM_SCORER_CLASS_FEEDBACK=false: the scorer reads no class feedback, so every class
weight stays 1 and its requests depend on the input alone (the chaos soak relies on it)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from services.scorer.feedback import FeedbackBook
from services.scorer.metrics import ScorerMetrics
from services.streaming.settings import ScorerSettings

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092"}


class _Feedback:
    """A feedback reader that records whether it was polled."""

    def __init__(self) -> None:
        self.polled = 0
        self.latest: dict[str, Any] = {}

    def poll(self) -> dict[str, dict[str, float]]:
        self.polled += 1
        return {}


def _scorer(env: dict[str, str]) -> tuple[FeedbackBook, _Feedback, ScorerSettings]:
    # The scorer's feedback book, as the scorer makes it: no broker is needed to see whether it
    # reads feedback.
    settings = ScorerSettings.from_env(env)
    feedback = _Feedback()
    book = FeedbackBook(feedback, ScorerMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                        settings.class_feedback)
    return book, feedback, settings


def test_class_feedback_is_read_by_default_and_not_when_turned_off() -> None:
    on, reader_on, on_settings = _scorer(BASE)
    off, reader_off, off_settings = _scorer(BASE | {"ACTIVE_STREAM_SCORER_CLASS_FEEDBACK": "false"})
    assert on_settings.class_feedback and not off_settings.class_feedback
    on.apply([])
    off.apply([])
    assert (reader_on.polled, reader_off.polled) == (1, 0)
