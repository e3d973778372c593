"""What the scorer's metrics say about its batches and its partitions' state (metrics.py holds
the metrics themselves). Reads only: nothing here changes a decision."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from services.scorer.assigned import Assignment
from services.scorer.metrics import ScorerMetrics
from services.scorer.records import BatchResult

CLASSES_EVERY_S = 5.0
"""Per-class gauges are computed at checkpoints and at most this often: the class quantiles of
every partition per batch would cost more than they tell."""


class Observer:
    """Not thread-safe: the loop's thread."""

    def __init__(self, metrics: ScorerMetrics, consumer: Consumer, topic: str,
                 assignment: Assignment) -> None:
        self.metrics = metrics
        self.consumer = consumer
        self.topic = topic
        self.assignment = assignment
        self._class_series: set[tuple[str, str, str]] = set()
        self._threshold_series: set[tuple[str, str, str]] = set()
        self._drift_series: set[tuple[str, str]] = set()
        self._version_series: set[tuple[str, str]] = set()  # scorer_threshold_ratio's
        self._classes_observed = 0.0

    def batch(self, results: dict[int, BatchResult], consumed: int, seconds: float) -> None:
        """One batch's figures (`consumed` records in `seconds`)."""
        m = self.metrics
        m.batch_seconds.observe(seconds)
        m.consumed.inc(consumed)
        now = time.time()
        for result in results.values():
            for code in result.invalid_codes:
                m.invalid.labels(code).inc()
            for sel in result.selected:
                m.selected.labels(sel.strategy, m.class_label(sel.class_name or "")).inc()
            for tier in result.request_tiers:
                m.requests_by_tier.labels(tier).inc()
            m.tier_withheld.inc(result.withheld)
            if result.requests:
                m.requests.inc(len(result.requests))
                for sel in result.selected:
                    m.latency.observe(max(0.0, now - sel.event_time))
            m.replayed.inc(result.suppressed)
            m.lost_deferred.inc(result.lost_deferred)
            for drift in result.drift:
                m.drift.labels(drift.model_id, m.class_label(drift.class_name)).inc()
            m.probes.inc(result.probes)
            for model_id, record in result.stability:
                m.probe_changed.labels(model_id).set(record.share)
            for reason, count in result.redundant.items():
                m.redundant.labels(reason).inc(count)

    def state(self) -> list[int]:
        """Budget and threshold gauges of the restored partitions, their classes now and then,
        and their lag (`lag`: returns the partitions whose log went backwards)."""
        if time.monotonic() - self._classes_observed >= CLASSES_EVERY_S:
            self.classes()
        m, scorers = self.metrics, self.assignment.live()
        for lane in ("exploit", "explore"):
            m.budget.labels(lane).set(sum(s.state.budget_remaining(lane)
                                          for s in scorers.values()))
        thresholds: dict[tuple[str, str], float] = {}
        for scorer in scorers.values():
            thresholds.update(scorer.state.thresholds())
        for key, value in thresholds.items():
            m.threshold.labels(*key).set(value)
        for key in self._version_series - set(thresholds):  # versions no partition holds
            m.threshold.remove(*key)
        self._version_series = set(thresholds)
        return self.lag()

    def classes(self) -> None:
        """Per-class confidence gauges from every restored partition's stats. Series of versions
        no longer held are removed."""
        self._classes_observed = time.monotonic()
        weighted: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        thresholds: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for scorer in self.assignment.live().values():
            for model_id, version in scorer.state.versions:
                for name, stats in scorer.state.class_stats(model_id, version).items():
                    key = (model_id, version, self.metrics.class_label(name))
                    weighted[key][0] += stats["count"] * stats["mean"]
                    weighted[key][1] += stats["count"]
                    if stats["threshold"] is not None:
                        thresholds[key].append(stats["threshold"])
        self._drift()
        means = {k: total / count for k, (total, count) in weighted.items() if count > 0}
        mean_thresholds = {k: sum(v) / len(v) for k, v in thresholds.items()}
        m = self.metrics
        for gauge, values, held in ((m.class_confidence, means, self._class_series),
                                    (m.class_threshold, mean_thresholds, self._threshold_series)):
            for key, value in values.items():
                gauge.labels(*key).set(value)
            for key in held - set(values):
                gauge.remove(*key)
            held.clear()
            held.update(values)

    def _drift(self) -> None:
        """The drift boost per (model, class) from every restored partition's model books; a
        series whose boost ended goes back to 1 (kept: the class labels are bounded)."""
        boosts: dict[tuple[str, str], float] = {}
        for scorer in self.assignment.live().values():
            for model_id, book in scorer.state.books.items():
                for c in np.flatnonzero(book.boost != 1.0).tolist():
                    key = (model_id, self.metrics.class_label(book.names[c]))
                    boosts[key] = max(boosts.get(key, 1.0), float(book.boost[c]))
        for key in self._drift_series - set(boosts):
            self.metrics.drift_boost.labels(*key).set(1.0)
        for key, value in boosts.items():
            self.metrics.drift_boost.labels(*key).set(value)
        self._drift_series = set(boosts)

    def lag(self) -> list[int]:
        """Per partition: the high watermark the last fetch reported minus the next offset to
        process (what a group-offsets tool shows once that offset is committed), and when its
        next offset last moved (a partition with lag that does not move is stalled). Costs a
        lookup in librdkafka's cache per partition. Returns the idle partitions whose log went
        backwards (their high watermark is below their next offset)."""
        now = time.time()
        regressed: list[int] = []
        for part in self.assignment.restored():
            p, scorer = part.partition, part.live
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                          cached=True)
            if high >= 0:
                self.metrics.lag.labels(str(p)).set(max(0, high - scorer.next_offset))
            if 0 <= high < scorer.next_offset:
                regressed.append(p)
            if part.progress != scorer.next_offset:
                part.progress = scorer.next_offset
                self.metrics.progress.labels(str(p)).set(now)
        return regressed
