"""The bridge's Prometheus metrics (`label_studio_bridge_<noun>_<unit>`), on a registry passed in.
Label values from closed sets are pre-created so a dashboard shows zeros, not gaps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.streaming.events import ErrorCode

# What became of a webhook call.
WEBHOOK_OUTCOMES = ("produced", "duplicate", "cancelled", "empty", "foreign", "ignored",
                    "invalid", "unauthorized", "failed")
OPERATIONS = ("health", "get_project", "update_project", "list_webhooks", "create_webhook",
              "update_webhook", "find_tasks", "import_tasks", "annotated_tasks", "expired_tasks",
              "get_task", "update_task", "delete_task")
LABEL_SOURCES = ("webhook", "reconcile")
# Label Studio answers in 15-75 ms when well (measured); the top buckets catch a struggling one.
_API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("label_studio_bridge_requests_consumed_total",
                                "Annotation-request records consumed (valid or not).",
                                registry=registry)
        self.invalid = Counter("label_studio_bridge_requests_invalid_total",
                               "Annotation requests dead-lettered, by reason code.", ["reason"],
                               registry=registry)
        self.created = Counter("label_studio_bridge_tasks_created_total",
                               "Label Studio tasks created from annotation requests.",
                               registry=registry)
        self.existing = Counter("label_studio_bridge_tasks_existing_total",
                                "Requests whose task existed already (redelivered requests).",
                                registry=registry)
        self.expired = Counter("label_studio_bridge_tasks_expired_total",
                               "Unannotated tasks removed because their request expired.",
                               registry=registry)
        self.webhooks = Counter("label_studio_bridge_webhooks_total",
                                "Webhook calls, by outcome.", ["outcome"], registry=registry)
        self.labels = Counter("label_studio_bridge_labels_produced_total",
                              "Label events produced (first time for their label_id), by what "
                              "brought the annotation.", ["source"], registry=registry)
        self.api_seconds = Histogram("label_studio_bridge_api_duration_seconds",
                                     "Label Studio API call latency, by operation.",
                                     ["operation"], buckets=_API_BUCKETS, registry=registry)
        self.api_errors = Counter("label_studio_bridge_api_errors_total",
                                  "Label Studio API calls that failed, by operation.",
                                  ["operation"], registry=registry)
        self.up = Gauge("label_studio_bridge_label_studio_up",
                        "1 when the last Label Studio call succeeded, else 0.", registry=registry)
        self.lag = Gauge("label_studio_bridge_consumer_lag_messages",
                         "Requests not yet turned into tasks, per partition (high watermark "
                         "minus next offset).", ["partition"], registry=registry)
        self.reconciles = Counter("label_studio_bridge_reconcile_passes_total",
                                  "Completed reconciliation passes over the API.",
                                  registry=registry)
        for code in ErrorCode:
            self.invalid.labels(code.value)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome)
        for operation in OPERATIONS:
            self.api_seconds.labels(operation)
            self.api_errors.labels(operation)
        for source in LABEL_SOURCES:
            self.labels.labels(source)

    def observe_api(self, operation: str, seconds: float, ok: bool) -> None:
        """The API client's observer."""
        self.api_seconds.labels(operation).observe(seconds)
        self.up.set(1 if ok else 0)
        if not ok:
            self.api_errors.labels(operation).inc()
