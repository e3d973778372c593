"""What one batch produces, in the order it is produced (commits.py makes it durable)."""

from __future__ import annotations

from collections.abc import Iterator

from services.scorer.feedback import FeedbackReader
from services.scorer.metrics import ScorerMetrics
from services.scorer.records import BatchResult, Output
from services.streaming import topics
from services.streaming.events import redact_dead_letter, redacted_key
from services.streaming.settings import ScorerSettings


def batch_outputs(results: dict[int, BatchResult], settings: ScorerSettings,
                  feedback: FeedbackReader, metrics: ScorerMetrics
                  ) -> Iterator[tuple[str, Output]]:
    """(topic, record) of a batch, in order: per partition its requests (and the tiers'
    copies), drift and stability feedback records, dead letters; then the dead letters of the
    class feedback read since the last batch (their reasons counted)."""
    for result in results.values():
        yield from ((settings.requests_topic, out) for out in result.requests)
        yield from result.tier_copies  # tiers: the copies their pools read
        yield from ((settings.feedback_topic, out) for out in result.drift_records)
        yield from ((settings.feedback_topic, out) for out in result.stability_records)
        # librdkafka copies what it is given: let each dead letter (up to ~4/3 of a 256 KiB
        # record) go as soon as it is queued, not when the batch is done.
        letters, result.dead_letters = result.dead_letters, []
        letters.reverse()
        while letters:
            yield topics.dlq(settings.input_topic), _letter(letters.pop(), settings)
    letters, codes = feedback.take_dead_letters()
    for out in letters:
        yield topics.dlq(settings.feedback_topic), _letter(out, settings)
    for code in codes:
        metrics.feedback_invalid.labels(code).inc()


def _letter(out: Output, settings: ScorerSettings) -> Output:
    """A dead letter as produced: redacted (hashes and sizes, no payload, key or quoted
    values) when ACTIVE_STREAM_SCORER_DEAD_LETTER_REDACT is set."""
    if not settings.dead_letter_redact:
        return out
    return Output(redacted_key(out.key), redact_dead_letter(out.value))
