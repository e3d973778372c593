"""The ingest service's settings: one frozen object from `ACTIVE_STREAM_INGEST_*` variables (the
cluster from `KAFKA_BOOTSTRAP_SERVERS` / `ACTIVE_STREAM_KAFKA_*`, as for the other services)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.streaming import topics
from services.streaming.settings import (
    KafkaSettings,
    Secret,
    SettingsError,
    _check_metrics_auth,
    _require_positive,
    _service_fields,
)


@dataclass(frozen=True)
class IngestSettings:
    """Env prefix `ACTIVE_STREAM_INGEST_` (e.g. `..._TOKEN`). `token` is required: every request
    must carry `Authorization: Bearer <token>`."""

    kafka: KafkaSettings
    host: str = "0.0.0.0"
    port: int = 9320
    token: Secret = Secret("")
    # One request: at most this many body bytes (413 beyond, before the body is read) and this
    # many events (413 beyond). 16 MiB holds 10,000 events of the usual ~1 KB with room to spare.
    max_body_bytes: int = 16 * 1024 * 1024
    max_events: int = 10_000
    # Events produced but not yet acknowledged by the broker, over all requests: a request that
    # would pass this bound is answered 429 with Retry-After, and nothing of it is produced.
    max_in_flight_events: int = 100_000
    retry_after_s: int = 1
    # How long the broker may take to acknowledge an event (librdkafka's message.timeout.ms):
    # past it the event is answered `failed` (503) so the client retries; never dropped silently.
    delivery_timeout_s: float = 30.0
    # A client gets this long to send its whole request (headers and body).
    read_timeout_s: float = 30.0
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9321
    # Who may read /metrics, /healthz and /readyz: as for the scorer (docs/scorer.md).
    metrics_auth: str = "none"
    metrics_user: str = ""
    metrics_password: Secret = Secret("")
    metrics_token: Secret = Secret("")
    metrics_auth_scope: str = "all"
    # Prepended to the topic written (tests isolate themselves with it).
    topic_prefix: str = ""

    PREFIX = "ACTIVE_STREAM_INGEST_"

    @property
    def topic(self) -> str:
        return self.topic_prefix + topics.INFERENCE_EVENTS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> IngestSettings:
        """Raises SettingsError naming the variable when a setting is missing or malformed."""
        settings = cls(KafkaSettings.from_env(environ), **_service_fields(cls, environ, cls.PREFIX))
        if not settings.token.reveal():
            raise SettingsError(f"{cls.PREFIX}TOKEN is required: clients send it as "
                                f"`Authorization: Bearer <token>`")
        _require_positive(cls.PREFIX, max_body_bytes=settings.max_body_bytes,
                          max_events=settings.max_events,
                          max_in_flight_events=settings.max_in_flight_events,
                          retry_after_s=settings.retry_after_s)
        if settings.max_events > settings.max_in_flight_events:
            raise SettingsError(f"{cls.PREFIX}MAX_EVENTS={settings.max_events} exceeds "
                                f"{cls.PREFIX}MAX_IN_FLIGHT_EVENTS={settings.max_in_flight_events}"
                                f": a full request could never be accepted")
        for name in ("delivery_timeout_s", "read_timeout_s"):
            if not getattr(settings, name) > 0:
                raise SettingsError(f"{cls.PREFIX}{name.upper()}={getattr(settings, name)}: "
                                    f"expected a number > 0")
        _check_metrics_auth(cls.PREFIX, settings)
        return settings
