"""The ingest service's Prometheus metrics (`ingest_<noun>_<unit>`), on a registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.streaming.events import ErrorCode

# Every status the endpoint answers with: pre-created so a dashboard shows zeros, not gaps.
STATUSES = ("200", "400", "401", "408", "413", "415", "429", "503")
# Whole-request problems (services/ingest/body.py codes and the HTTP-level ones).
REQUEST_ERRORS = ("not_json", "wrong_type", "empty", "too_many_events", "too_large",
                  "unsupported_media_type", "unauthorized", "backpressure", "timeout")
# A request is parsed, checked and produced in milliseconds; the broker's acknowledgement
# dominates, up to the delivery timeout (30 s by default).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("ingest_requests_total",
                                "POST /v1/inference-events requests answered, by HTTP status.",
                                ["status"], registry=registry)
        self.request_errors = Counter("ingest_request_errors_total",
                                      "Requests refused as a whole, by reason.", ["reason"],
                                      registry=registry)
        self.accepted = Counter("ingest_events_accepted_total",
                                "Events the broker acknowledged.", registry=registry)
        self.rejected = Counter("ingest_events_rejected_total",
                                "Events refused by the scorer's contract, by reason code.",
                                ["reason"], registry=registry)
        self.failed = Counter("ingest_events_failed_total",
                              "Valid events the broker did not acknowledge (answered `failed`, "
                              "for the client to retry).", registry=registry)
        self.duration = Histogram("ingest_request_duration_seconds",
                                  "From the request's arrival to its answer (delivery "
                                  "included).", buckets=_DURATION_BUCKETS, registry=registry)
        self.in_flight = Gauge("ingest_in_flight_events",
                               "Events produced and not yet acknowledged by the broker.",
                               registry=registry)
        for status in STATUSES:
            self.requests.labels(status)
        for reason in REQUEST_ERRORS:
            self.request_errors.labels(reason)
        for code in ErrorCode:
            self.rejected.labels(code.value)
