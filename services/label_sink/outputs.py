"""What the label sink publishes and exports beyond its agents: retrain-trigger events and
class-feedback records (typed, encoded through their declarations in services/contracts), the
trigger policy from the settings, request pruning and the committed-offset lag gauge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from services.core.triggers import Decision, TriggerPolicy
from services.label_sink.broker_offsets import BrokerOffsets
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.ordering import InOrder
from services.streaming.control_events import (
    ClassFeedback,
    ClassStats,
    ControlEstimate,
    Interval,
    Manifest,
    OffsetRange,
    RetrainTrigger,
    TriggerRule,
)
from services.streaming.events import SCHEMA_VERSION
from services.streaming.settings import LabelSinkSettings, SettingsError

log = logging.getLogger(__name__)


async def export_committed_lag(order: InOrder, broker: BrokerOffsets,
                               metrics: LabelSinkMetrics) -> dict[tuple[str, int], int]:
    """Set the committed-offset lag gauges (per input topic and per owned partition: the records
    past the group's committed offsets, or the log start, in the partitions this worker owns);
    returns the high watermarks it read. Raises KafkaException/TimeoutError when the broker
    does not answer."""
    tps = sorted(order.assigned())
    starts = await asyncio.to_thread(broker.start_offsets, tps)
    ends = await asyncio.to_thread(broker.high_watermarks, tps)
    lag = dict.fromkeys(order.topics, 0)
    series: set[tuple[str, str]] = set()
    for tp in tps:
        behind = max(0, ends[tp] - starts[tp])
        lag[tp[0]] += behind
        key = (tp[0], str(tp[1]))
        metrics.partition_lag.labels(*key).set(behind)
        series.add(key)
    for key in metrics.lag_series - series:  # revoked since: its owner exports it now
        metrics.partition_lag.remove(*key)
    metrics.lag_series = series
    for topic, value in lag.items():
        metrics.committed_lag.labels(topic).set(value)
    return ends


def trigger_policy(settings: LabelSinkSettings) -> TriggerPolicy:
    """The trigger policy the settings describe; SettingsError for an inconsistent combination."""
    try:
        return TriggerPolicy(
            min_labels=settings.trigger_min_labels,
            min_labels_per_class=settings.trigger_min_labels_per_class or None,
            max_label_age_s=settings.trigger_max_label_age_s or None,
            max_disagreement=(settings.trigger_max_disagreement
                              if settings.trigger_max_disagreement < 1.0 else None),
            min_disagreement_labels=settings.trigger_min_disagreement_labels,
            cooldown_s=settings.trigger_cooldown_s,
            cost=settings.trigger_cost,
        )
    except ValueError as exc:
        raise SettingsError(f"{settings.PREFIX}TRIGGER_*: {exc}") from None


def trigger_event(tid: str, model_id: str, topic: str, decision: Decision, *,
                  mastery: Mapping[str, Any] | None = None,
                  stopping: Mapping[str, Any] | None = None) -> RetrainTrigger:
    """The retrain trigger (schemas/retrain-trigger.schema.json) for `decision`; `mastery` and
    `stopping` are its optional plain parts (`Mastery.trigger_field`, `Mastery.at_trigger`).
    Write it with `encode_retrain_trigger`."""
    return RetrainTrigger(
        schema_version=SCHEMA_VERSION, trigger_id=tid, model_id=model_id,
        rule=TriggerRule(decision.rule), detail=decision.detail[:1024],
        counts=dict(decision.counts), total=decision.total,
        triggered_at=decision.triggered_at,
        manifest=Manifest(topic, tuple(OffsetRange(r.partition, r.start_offset, r.end_offset)
                                       for r in decision.ranges)),
        mastery=mastery, stopping=stopping)


def feedback_event(model_id: str, updated_at: float,
                   classes: Mapping[str, Mapping[str, Any]]) -> ClassFeedback:
    """The class-feedback record (kind feedback) of `model_id`: `classes` maps each class to
    its statistics as `Mastery.feedback_classes` gives them. Write it with
    `encode_class_feedback`."""
    return ClassFeedback(SCHEMA_VERSION, model_id, updated_at,
                         {name: class_stats(stats) for name, stats in classes.items()})


def class_stats(stats: Mapping[str, Any]) -> ClassStats:
    """One class's statistics (the keys of the contract's `class_stats`) as the typed form."""
    control = stats.get("control")
    return ClassStats(
        labels_total=stats["labels_total"], labels_since_trigger=stats["labels_since_trigger"],
        agreement=stats["agreement"], weight=stats["weight"], state=stats.get("state"),
        state_changed_at=stats.get("state_changed_at"),
        control=None if control is None else ControlEstimate(
            model_version=control["model_version"], labels=control["labels"],
            accuracy=_interval(control["accuracy"]), agreement=_interval(control["agreement"])))


def _interval(value: Mapping[str, float] | None) -> Interval | None:
    return None if value is None else Interval(value["estimate"], value["low"], value["high"])


def prune(requests: Any, partition: int, cutoff: float) -> None:
    """Delete the expired requests of `partition` (the current event's partition, so each
    tombstone goes to the changelog partition the row came from)."""
    expired = [k for k, v in requests.items() if v["q"] == partition and v["t"] < cutoff]
    for key in expired:
        del requests[key]
    if expired:
        log.info("pruned %d expired requests of partition %d", len(expired), partition)
