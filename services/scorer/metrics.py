"""The scorer's Prometheus metrics, all in one place: `scorer_<noun>_<unit>`, counters `_total`,
seconds as the unit, label values pre-created where the set is closed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.core.redundancy import REASONS as REDUNDANCY_REASONS
from services.core.registry import OTHER_CLASS
from services.core.tiers import SCORER_TIERS
from services.streaming.events import ErrorCode

MAX_CLASS_LABELS = 256
"""Distinct class names the metrics label by; the classes met after them report as
`__other__` (the class names come from the input stream: without a cap, a stream of invented
names would grow every per-class series without bound)."""


class ClassLabels:
    """The class label values in use: the first MAX_CLASS_LABELS names met keep their own,
    any later one is reported as `__other__`. Bounded; never forgets (so a series never
    changes meaning)."""

    def __init__(self, limit: int = MAX_CLASS_LABELS) -> None:
        self.limit = limit
        self._names: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self._names:
            return name
        if len(self._names) < self.limit:
            self._names.add(name)
            return name
        return OTHER_CLASS

# Event-to-request latency spans milliseconds (hot stream) to hours (replay, reservoir windows).
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400)


class ScorerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter("scorer_events_consumed_total",
                                "Inference-event records consumed (valid or not).",
                                registry=registry)
        self.invalid = Counter("scorer_events_invalid_total",
                               "Records dead-lettered, by reason code.", ["reason"],
                               registry=registry)
        for code in ErrorCode:
            self.invalid.labels(code.value)
        self.selected = Counter("scorer_selected_total",
                                "Assets selected for annotation, by strategy and class.",
                                ["strategy", "class"], registry=registry)
        self.requests = Counter("scorer_requests_emitted_total",
                                "Annotation requests produced (replayed ones not counted).",
                                registry=registry)
        self.requests_by_tier = Counter("scorer_requests_by_tier_total",
                                        "Annotation requests produced per labeling tier (only "
                                        "with a tier policy; docs/tiers.md).", ["tier"],
                                        registry=registry)
        for tier in SCORER_TIERS:
            self.requests_by_tier.labels(tier)
        self.tier_withheld = Counter("scorer_tier_withheld_total",
                                     "Selections withheld because the cost budget could not "
                                     "afford even a review (docs/tiers.md).", registry=registry)
        self.redundant = Counter("scorer_redundant_suppressed_total",
                                 "Exploit-lane candidates skipped as redundant (near-duplicate "
                                 "embedding, sequence cap), by reason.", ["reason"],
                                 registry=registry)
        for reason in REDUNDANCY_REASONS:
            self.redundant.labels(reason)
        self.replayed = Counter("scorer_events_replayed_total",
                                "Records re-processed after a restore to rebuild state, "
                                "without producing output.", registry=registry)
        self.lost_deferred = Counter("scorer_deferred_picks_lost_total",
                                     "Reservoir picks whose record is gone for good (removed "
                                     "by retention before its window closed).",
                                     registry=registry)
        self.deferred_read_failures = Counter(
            "scorer_deferred_pick_read_failures_total",
            "Failed tries to read a reservoir pick's record back after a restore; after 3 the "
            "scorer stops before committing the batch.", registry=registry)
        self.threshold = Gauge("scorer_threshold_ratio",
                               "Current variable-uncertainty threshold (uncertainty units).",
                               ["model_id", "model_version"], registry=registry)
        self.budget = Gauge("scorer_budget_remaining_labels",
                            "Selections the budget could still grant now, by lane, summed over "
                            "this instance's partitions.", ["lane"], registry=registry)
        self.batch_seconds = Histogram("scorer_batch_duration_seconds",
                                       "Wall time to process one consumed batch.",
                                       registry=registry)
        self.latency = Histogram("scorer_event_to_request_seconds",
                                 "Wall clock at produce minus the event's timestamp.",
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.lag = Gauge("scorer_consumer_lag_messages",
                         "High watermark minus next offset, per partition (clamped at 0; "
                         "unreliable on the embedded broker, see docs/brokers.md).",
                         ["partition"], registry=registry)
        self.checkpoints = Counter("scorer_checkpoints_total", "State checkpoints written.",
                                   registry=registry)
        self.partitions = Gauge("scorer_assigned_partitions",
                                "Input partitions this instance owns.", registry=registry)
        self.feedback = Counter("scorer_feedback_applied_total",
                                "Class-feedback events applied to the selector.",
                                registry=registry)
        self.class_weight = Gauge("scorer_class_weight",
                                  "Budget weight per class from the latest class feedback "
                                  "applied (1 = neutral, > 1 = a weak class gets more).",
                                  ["model_id", "class"], registry=registry)
        self.drift = Counter("scorer_class_drift_total",
                             "Times a class's confidence distribution began drifting (a "
                             "two-window KS test on the scorer's rolling histograms; one per "
                             "input partition that saw it; docs/drift.md).",
                             ["model_id", "class"], registry=registry)
        self.drift_boost = Gauge("scorer_class_drift_boost_ratio",
                                 "Weight multiplier a drifting class gets now (1 = none), the "
                                 "largest over this instance's partitions.",
                                 ["model_id", "class"], registry=registry)
        self.probes = Counter("scorer_probe_events_total",
                              "Probe events (`probe: true`) consumed: kept out of selection, "
                              "statistics, budgets and drift (docs/mastery.md).",
                              registry=registry)
        self.probe_changed = Gauge("scorer_probe_changed_ratio",
                                   "Share of the probes whose predicted class the model's "
                                   "newest version changed against the version before it, "
                                   "as of the last comparison an input partition completed.",
                                   ["model_id"], registry=registry)
        self.feedback_invalid = Counter("scorer_feedback_invalid_total",
                                        "Class-feedback records dead-lettered, by reason code.",
                                        ["reason"], registry=registry)
        self.class_confidence = Gauge(
            "scorer_class_confidence_mean_ratio",
            "Rolling (EWMA) mean top-1 confidence per class of a model version, over this "
            "instance's partitions weighted by their prediction counts.",
            ["model_id", "model_version", "class"], registry=registry)
        self.class_threshold = Gauge(
            "scorer_class_confidence_threshold_ratio",
            "Per class: the class-relative confidence threshold (its weighted low quantile of "
            "top-1 confidence; below it a prediction counts as weak), mean over this instance's "
            "partitions where the class's stats are ready.",
            ["model_id", "model_version", "class"], registry=registry)
        self.delivery_failures = Counter("scorer_delivery_failures_total",
                                         "Records the broker did not accept (requests, dead "
                                         "letters, checkpoints), by topic: the scorer stops "
                                         "without committing.", ["topic"], registry=registry)
        self.input_partitions = Gauge("scorer_input_partitions",
                                      "Partitions of the input topic (the budget is divided by "
                                      "the count read at start).", registry=registry)
        self.partition_count_changes = Counter(
            "scorer_partition_count_changes_total",
            "Times the input topic's partition count was found changed while running (the "
            "scorer stops, exit 3, to divide the budget anew).", registry=registry)
        self.offset_regressions = Counter(
            "scorer_offset_regressions_total",
            "Times an input partition's log was found ending before an offset the group had "
            "processed (topic recreated or truncated): its state is reset, or the scorer "
            "stops (ACTIVE_STREAM_SCORER_ON_OFFSET_REGRESSION).", ["partition"],
            registry=registry)
        self.redelivered = Counter(
            "scorer_redelivered_records_total",
            "Records delivered again below a partition's next offset while its log still "
            "holds that offset (skipped: they were processed already).", ["partition"],
            registry=registry)
        self.ceiling_trips = Counter(
            "scorer_dead_letter_ceiling_trips_total",
            "Partitions stopped because most of their recent records were invalid (their batch "
            "is neither produced nor committed).", ["partition"], registry=registry)
        self.halted = Gauge("scorer_halted_partitions",
                            "Partitions this instance stopped at the dead-letter ceiling.",
                            registry=registry)
        self.class_label = ClassLabels()
        for lane in ("exploit", "explore"):
            self.budget.labels(lane)
        self.fenced = Counter("scorer_fenced_commits_total",
                              "Commits the consumer group refused because it had moved on "
                              "without this instance (a zombie's): the batch's output was "
                              "aborted or duplicated byte for byte, its partitions restored.",
                              registry=registry)
        self.restore_records = Counter("scorer_restore_records_read_total",
                                       "State-topic records read to restore partitions (one "
                                       "per partition with a checkpoint pointer; the whole "
                                       "topic without one).", registry=registry)
        self.restore_seconds = Histogram("scorer_restore_duration_seconds",
                                         "Wall time to find and read assigned partitions' "
                                         "checkpoints.", registry=registry)
        self.commit_failures = Counter("scorer_commit_failures_total",
                                       "Offset commits that failed for another reason than a "
                                       "refusal by the group (e.g. the coordinator unreachable); "
                                       "the next commit covers them.", registry=registry)
        self.progress = Gauge("scorer_partition_progress_timestamp_seconds",
                              "Per partition: Unix time at which its next offset last moved "
                              "(set when this instance takes it). With lag, time() minus this "
                              "is how long it has been stalled.", ["partition"],
                              registry=registry)
        self.holds = Counter("scorer_holds_total",
                             "Times the scorer held (not ready, partitions paused) because the "
                             "broker refused its output or a permission is missing; it retries "
                             "by itself.", registry=registry)
