"""ACTIVE_STREAM_SCORER_CLASS_FEEDBACK=false: the scorer reads no class feedback, so every class
weight stays 1 and its requests depend on the input alone (the chaos soak relies on it)."""

from __future__ import annotations

from typing import Any

from services.scorer.service import Scorer
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


def _scorer(env: dict[str, str]) -> tuple[Scorer, _Feedback]:
    # Only what _apply_feedback touches: no broker is needed to see whether it reads feedback.
    scorer = Scorer.__new__(Scorer)
    scorer.settings = ScorerSettings.from_env(env)
    feedback = _Feedback()
    scorer.feedback = feedback  # type: ignore[assignment]
    scorer.partitions = {}
    scorer._owed = {}
    scorer._unannounced = {}
    scorer._feedback_seq = 0
    return scorer, feedback


def test_class_feedback_is_read_by_default_and_not_when_turned_off() -> None:
    on, reader_on = _scorer(BASE)
    off, reader_off = _scorer(BASE | {"ACTIVE_STREAM_SCORER_CLASS_FEEDBACK": "false"})
    assert on.settings.class_feedback and not off.settings.class_feedback
    on._apply_feedback()
    off._apply_feedback()
    assert (reader_on.polled, reader_off.polled) == (1, 0)
