"""Reads class feedback (al.class-feedback.v1) for the scorer: the latest class weights per model.

The topic is small and compacted (key model_id), so every scorer instance reads all of it from
the beginning with `assign()` (no group: each instance needs every model's feedback).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from services.contracts.dead_letter import encode_dead_letter
from services.scorer.assigned import AssignedPartition
from services.scorer.metrics import ScorerMetrics
from services.scorer.partition import SERVICE, Output
from services.streaming.events import (
    FeedbackKind,
    InvalidEvent,
    decode_class_feedback,
)

log = logging.getLogger(__name__)

Weights = dict[str, dict[str, float]]  # model_id -> class -> weight

MAX_MODELS = 1024
"""Models whose latest weights are kept for partitions assigned later (least recently updated
dropped first): the topic's keys are whatever the label sink was given, so unbounded."""


class FeedbackReader:
    def __init__(self, config: dict[str, Any], topic: str, service_version: str) -> None:
        self.topic = topic
        self.service_version = service_version
        self._consumer = Consumer({**config, "enable.auto.commit": False})
        meta = self._consumer.list_topics(topic, timeout=30).topics[topic]
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                               for p in sorted(meta.partitions)])
        # Every model's latest weights seen so far, for partitions assigned later.
        self.latest: Weights = {}
        # Every model's latest tier inputs, class -> (state, agreement, labels_total), updated
        # with `latest` (services/core/tiers.py: the labels say how far to trust the agreement;
        # `state` arrives with the mastery work, None until then).
        self.tier_inputs: dict[str, dict[str, tuple[str | None, float | None, int | None]]] = {}
        # Dead letters of unusable feedback records, for the caller to produce to the .dlq.
        self.dead_letters: list[Output] = []
        self.invalid_codes: list[str] = []

    def poll(self) -> Weights:
        """New feedback since the last call, latest per model. Never blocks for long: the scorer
        calls it once per batch."""
        latest: Weights = {}
        for msg in self._consumer.consume(500, timeout=0):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("class feedback: %s", err)
                continue
            try:
                feedback = decode_class_feedback(msg.value() or b"")
            except InvalidEvent as exc:
                # Keep the old weights; the record goes to the .dlq with its reason.
                log.error("class feedback at %s/%d@%d unusable: %s", msg.topic(),
                          msg.partition(), msg.offset(), exc.reason)
                self.invalid_codes.append(str(exc.code))
                self.dead_letters.append(self._dead_letter(msg, exc))
                continue
            if feedback.kind is not FeedbackKind.FEEDBACK:  # a scorer's report (drift, stability)
                continue
            weights = {name: stats.weight for name, stats in feedback.classes.items()}
            latest[feedback.model_id] = weights
            self.latest.pop(feedback.model_id, None)  # most recently updated last
            self.latest[feedback.model_id] = weights
            self.tier_inputs.pop(feedback.model_id, None)
            self.tier_inputs[feedback.model_id] = {
                name: (getattr(stats, "state", None), stats.agreement, stats.labels_total)
                for name, stats in feedback.classes.items()}
            while len(self.latest) > MAX_MODELS:
                del self.latest[next(iter(self.latest))]
            while len(self.tier_inputs) > MAX_MODELS:
                del self.tier_inputs[next(iter(self.tier_inputs))]
        return latest

    def _dead_letter(self, msg: Any, exc: InvalidEvent) -> Output:
        letter = encode_dead_letter(msg.value(), topic=msg.topic(), partition=msg.partition(),
                             offset=msg.offset(), reason=exc.reason, code=str(exc.code),
                             service=SERVICE, service_version=self.service_version,
                             failed_at=msg.timestamp()[1] / 1000.0, key=msg.key())
        return Output(msg.key(), letter)

    def take_dead_letters(self) -> tuple[list[Output], list[str]]:
        """The dead letters (and their reason codes) collected since the last call."""
        out = (self.dead_letters, self.invalid_codes)
        self.dead_letters, self.invalid_codes = [], []
        return out

    def close(self) -> None:
        self._consumer.close()


class FeedbackBook:
    """Class feedback from `reader`, applied to the partitions at batch boundaries.

    Per partition: a partition restored after a crash takes feedback its checkpoint lacks only
    from its scorer's `feedback_from` on (past the replay and past the most the crashed instance
    can have processed, and produced output for, without that feedback), so the replayed batches
    decide as the crashed ones did. Fresh partitions, and those handed over with a final
    checkpoint, take it at once. Nothing is read when `enabled` is off."""

    def __init__(self, reader: FeedbackReader, metrics: ScorerMetrics, enabled: bool) -> None:
        self.reader = reader
        self.metrics = metrics
        self.enabled = enabled
        self.seq = 0  # feedback polls that brought something
        self._unannounced: dict[int, Weights] = {}  # received, applied to no partition yet

    def owe_latest(self, part: AssignedPartition) -> None:
        """A partition just (re)built owes every model's latest weights."""
        part.owed = {m: dict(w) for m, w in self.reader.latest.items()}
        part.owed_seq = self.seq

    def apply(self, parts: Iterable[AssignedPartition]) -> list[AssignedPartition]:
        """Poll, and apply what each restored partition is owed and may take now; returns the
        partitions changed, which the caller checkpoints at once, so any request a new weight
        influenced comes after a durable checkpoint that holds that weight."""
        if not self.enabled:
            return []
        parts = [part for part in parts if part.scorer is not None]
        new = self.reader.poll()
        if new:
            self.seq += 1
            self._unannounced[self.seq] = new
            for part in parts:
                part.owed.update(new)
                part.owed_seq = self.seq
        due = [part for part in parts
               if part.owed and part.live.next_offset >= part.live.feedback_from]
        for part in due:
            weights, seq = part.owed, part.owed_seq
            part.owed, part.owed_seq = {}, 0
            for model_id, classes in weights.items():
                part.live.state.set_class_weights(model_id, classes)
                router = part.live.tiers
                if router is not None and model_id in self.reader.tier_inputs:
                    # The latest record of the model, as the weights just applied (poll()
                    # updates both together).
                    router.set_classes(model_id, self.reader.tier_inputs[model_id])
            self._announce(seq)
        return due

    def _announce(self, upto: int) -> None:
        """Metrics for the feedback received up to `upto`, once it is applied anywhere."""
        for seq in sorted(s for s in self._unannounced if s <= upto):
            pending = self._unannounced.pop(seq)
            for model_id, weights in pending.items():
                labelled: dict[str, list[float]] = defaultdict(list)
                for name, weight in weights.items():
                    labelled[self.metrics.class_label(name)].append(weight)
                for label, values in labelled.items():  # __other__: their mean
                    self.metrics.class_weight.labels(model_id, label).set(
                        sum(values) / len(values))
            self.metrics.feedback.inc(len(pending))
