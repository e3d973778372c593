"""The label sink's Prometheus metrics, all in one place (`label_sink_<noun>_<unit>`).

Built on a registry passed in (tests use a private `CollectorRegistry`). Label values from closed
sets (invalid reasons, trigger rules) are pre-created so a dashboard shows zeros, not gaps; class
and model names come from the data and appear when first seen.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.core.tiers import TIERS
from services.core.triggers import RULES
from services.streaming.events import ErrorCode

# Labels come back minutes to days after the request: buckets from 10 s to a week.
TURNAROUND_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400,
                      7 * 86400)


class LabelSinkMetrics:
    """Every metric the sink exports. Counters count first occurrences only (after dedupe)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.labels = Counter(
            "label_sink_labels_total",
            "Annotations counted (deduplicated labels), by model and human class.",
            ["model_id", "class"], registry=registry)
        self.label_records = Counter(
            "label_sink_label_records_total", "Label records counted (deduplicated).",
            registry=registry)
        self.duplicates = Counter(
            "label_sink_duplicate_labels_total",
            "Label records skipped because their label_id was already counted (redelivery or "
            "resubmission).", registry=registry)
        self.invalid = Counter(
            "label_sink_invalid_labels_total", "Label records dead-lettered, by reason code.",
            ["reason"], registry=registry)
        self.tier_cost = Counter(
            "label_sink_tier_cost_units_total",
            "Cost units spent on counted labels whose request had a tier, by model, tier and "
            "class (docs/tiers.md).", ["model_id", "tier", "class"], registry=registry)
        self.tier_labels = Counter(
            "label_sink_tier_labels_total", "Counted labels whose request had a tier, by tier.",
            ["tier"], registry=registry)
        self.consensus = Counter(
            "label_sink_consensus_decisions_total",
            "Consensus requests decided: `agreed` (a quorum gave one answer) or `escalated` (an "
            "expert request was produced), by model and the request's class (bounded like "
            "label_sink_labels_total: past the model's class cap, `__other__`).",
            ["model_id", "class", "outcome"], registry=registry)
        for tier in TIERS:
            self.tier_labels.labels(tier)
        self.invalid_requests = Counter(
            "label_sink_invalid_requests_total",
            "Annotation requests dead-lettered, by reason code.", ["reason"], registry=registry)
        self.unattributed = Counter(
            "label_sink_unattributed_labels_total",
            "Labels with neither a model_id nor a known request (dead-lettered, not counted).",
            registry=registry)
        self.requests = Counter(
            "label_sink_requests_total", "Annotation requests stored for the label join.",
            registry=registry)
        self.joined = Counter(
            "label_sink_joined_labels_total",
            "Labels matched to the annotation request they answer.", registry=registry)
        self.agreement = Gauge(
            "label_sink_agreement_ratio",
            "Share of compared human annotations of a class the model agreed with (all-time).",
            ["model_id", "class"], registry=registry)
        self.triggers = Counter(
            "label_sink_triggers_total", "Retrain triggers published, by rule.", ["rule"],
            registry=registry)
        self.feedback = Counter(
            "label_sink_feedback_events_total", "Class-feedback events published.",
            registry=registry)
        self.turnaround = Histogram(
            "label_sink_turnaround_seconds",
            "Request to label time: labeled_at minus the requested inference event's timestamp.",
            buckets=TURNAROUND_BUCKETS, registry=registry)
        self.out_of_order = Counter(
            "label_sink_out_of_order_records_total",
            "Input records out of order, by topic and outcome: `replayed` (already processed: a "
            "redelivery, skipped), `not_assigned` (a partition this worker does not own, "
            "skipped), `hole_filled` (records the consumer skipped, read from the broker and "
            "processed), `empty_hole` (a jump over offsets without records), "
            "`stall_sought_back` (no progress for a check period with records left: the "
            "consumer was sought back).",
            ["topic", "outcome"], registry=registry)
        self.committed_lag = Gauge(
            "label_sink_committed_offset_lag_records",
            "Records of an input topic past the committed offset of this worker's group, summed "
            "over the partitions this worker owns (the records a restart would re-read or read).",
            ["topic"], registry=registry)
        self.partition_lag = Gauge(
            "label_sink_partition_committed_lag_records",
            "Records of an input partition this worker owns past its group's committed offset "
            "(the series goes when the partition is revoked). With the progress timestamp, it "
            "tells a stalled partition from an idle one (ActiveStreamLabelSinkPartitionStalled).",
            ["topic", "partition"], registry=registry)
        self.lag_series: set[tuple[str, str]] = set()  # the partition_lag series set now
        self.progress = Gauge(
            "label_sink_partition_progress_timestamp_seconds",
            "Unix time this worker last processed a record of an input partition it owns (set "
            "when it takes the partition; the series goes when the partition is revoked). With "
            "committed lag, time() minus this is how long the partition has been stalled.",
            ["topic", "partition"], registry=registry)
        self.early_waiting = Gauge(
            "label_sink_early_labels",
            "Labels read before the request they answer, waiting for it (in memory; their "
            "partition's commit waits for them).", registry=registry)
        self.early_joined = Counter(
            "label_sink_early_labels_joined_total",
            "Labels that waited for their request and were joined when it arrived.",
            registry=registry)
        self.table_rows = Gauge(
            "label_sink_table_rows",
            "Rows this worker holds in a table: `requests` (the requests younger than their "
            "TTL), `labels` (the labels in the dedupe window plus a state row per model).",
            ["table"], registry=registry)
        self.holds = Counter(
            "label_sink_holds_total",
            "Times the sink held (not ready, nothing committed past a refused record) because a "
            "permission it needs is missing; it checks again every 5 s and goes on by itself.",
            registry=registry)
        # Control-arm estimates and mastery (services/label_sink/mastery.py; docs/mastery.md).
        self.control_labels = Counter(
            "label_sink_control_labels_total",
            "Annotations of control-arm labels (uniform random requests with a known inclusion "
            "probability) counted into the unbiased estimates, by model and human class.",
            ["model_id", "class"], registry=registry)
        self.control_estimate = Gauge(
            "label_sink_control_estimate_ratio",
            "Control-arm (Hajek, 1/pi-weighted) estimate of a class's `accuracy` (share of its "
            "annotations the model got right) or `agreement` (share of its predictions humans "
            "confirmed) on the whole stream, for the model's newest version: `bound` is "
            "`estimate`, `low` or `high` (the Wilson interval at the mastery confidence).",
            ["model_id", "class", "rate", "bound"], registry=registry)
        self.mastery_state = Gauge(
            "label_sink_mastery_state",
            "1 for the state a class is in (learning, mastered, reopened), 0 for the others.",
            ["model_id", "class", "state"], registry=registry)
        self.mastery_changes = Counter(
            "label_sink_mastery_changes_total",
            "Changes of a class's mastery state, by model, class and new state (the classes of "
            "the model's mastery book: at most MasteryPolicy.max_classes).",
            ["model_id", "class", "state"], registry=registry)
        self.control_model_accuracy = Gauge(
            "label_sink_control_model_accuracy_ratio",
            "Control-arm estimate of the model's accuracy over all classes (its newest version), "
            "as of its latest retrain trigger.", ["model_id"], registry=registry)
        self.stopping = Gauge(
            "label_sink_stopping_signal",
            "1 when labels have stopped paying for the model: its last model versions bought no "
            "measurable control-arm accuracy, or its newest version changed the predicted class "
            "of too few probes (docs/mastery.md, \"Stopping signal\").",
            ["model_id"], registry=registry)
        self.stopping_branch = Gauge(
            "label_sink_stopping_branch_signal",
            "Which branch of the stopping signal is raised for the model (1) or not (0): "
            "`control` (its last model versions bought no measurable control-arm accuracy) or "
            "`stability` (its newest version changed the predicted class of too few probes). "
            "label_sink_stopping_signal is 1 when either is.",
            ["model_id", "branch"], registry=registry)
        self.drift_reports = Counter(
            "label_sink_drift_reports_total",
            "Scorer drift reports (kind drift on class feedback) applied to class mastery: "
            "`reopened` a mastered class, or `kept` its state (not mastered, stale, a repeat).",
            ["outcome"], registry=registry)
        for outcome in ("reopened", "kept"):
            self.drift_reports.labels(outcome)
        self.stability_records = Counter(
            "label_sink_stability_records_total",
            "Scorer stability records (kind stability on class feedback): `applied` to the "
            "model's stopping signal, or `kept` (a repeat, or an input partition past the bound).",
            ["outcome"], registry=registry)
        for outcome in ("applied", "kept"):
            self.stability_records.labels(outcome)
        self.probe_changed = Gauge(
            "label_sink_probe_changed_ratio",
            "Share of the probes whose predicted class the model's newest version changed, over "
            "the input partitions that compared it (the stopping signal's stability branch).",
            ["model_id"], registry=registry)
        for code in ErrorCode:
            self.invalid.labels(code.value)
            self.invalid_requests.labels(code.value)
        for rule in (*RULES, "drift"):  # drift: label_sink/drift_trigger.py
            self.triggers.labels(rule)
