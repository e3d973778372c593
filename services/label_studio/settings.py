"""The bridge's settings: one frozen object from `ACTIVE_STREAM_LABEL_STUDIO_*` variables (the
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
class BridgeSettings:
    """Env prefix `ACTIVE_STREAM_LABEL_STUDIO_` (e.g. `..._URL`, `..._TOKEN`)."""

    kafka: KafkaSettings
    # Label Studio: its base URL, an API token (legacy `Token` auth: Organization > Access Token
    # Settings, or `--enable-legacy-api-token`) and the project the tasks go to.
    url: str = ""
    token: Secret = Secret("")
    project_id: int = 0
    # Each API call gets this long; Label Studio answers in 15-75 ms when well (measured).
    api_timeout_s: float = 10.0
    # Label Studio down or slow: retry after 0.5 s, doubling up to this, never dropping a request.
    retry_max_s: float = 30.0
    # Set the project up for the bridge at start: pre-labels shown (model_version,
    # show_collab_predictions) and tasks served lowest prediction score first ("Uncertainty
    # sampling"), i.e. highest priority first (a task's prediction score is 1 - priority).
    configure_project: bool = True
    # The model_version Label Studio shows on pre-labels (the request's own model and version
    # are in the task's data).
    model_version: str = "active-stream"
    # Where Label Studio's webhooks arrive, and the secret they must carry in the
    # X-Active-Stream-Secret header. With WEBHOOK_URL set (the address Label Studio can reach),
    # the bridge registers (or updates) the project's webhook itself.
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 9330
    webhook_secret: Secret = Secret("")
    webhook_url: str = ""
    # Webhooks can be lost (Label Studio sends each once, with a 1 s timeout): a pass over the
    # API this often produces the labels of annotations no webhook brought.
    reconcile_interval_s: float = 30.0
    # A task whose request is older than this (event time) and still unannotated is removed:
    # the label sink would no longer join its label (ACTIVE_STREAM_LABEL_SINK_REQUEST_TTL_S).
    request_ttl_s: float = 7 * 86400.0
    # An annotation with no result labels nothing, unless this class is set (e.g. `background`).
    empty_class: str = ""
    # Frame size for pre-label boxes when the inference event's metadata has none (0 = unknown:
    # boxes are then left out of the pre-labels, the class still shown).
    frame_width: int = 0
    frame_height: int = 0
    group_id: str = "active-stream-label-studio"
    batch_size: int = 100
    # How long one consume may wait to fill a batch: bounds request-to-task latency at low load.
    batch_timeout_s: float = 1.0
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9331
    metrics_auth: str = "none"
    metrics_user: str = ""
    metrics_password: Secret = Secret("")
    metrics_token: Secret = Secret("")
    metrics_auth_scope: str = "all"
    # Prepended to every topic the bridge reads or writes (tests isolate themselves with it).
    topic_prefix: str = ""

    PREFIX = "ACTIVE_STREAM_LABEL_STUDIO_"

    @property
    def requests_topic(self) -> str:
        return self.topic_prefix + topics.ANNOTATION_REQUESTS

    @property
    def labels_topic(self) -> str:
        return self.topic_prefix + topics.LABELS

    @property
    def inference_topic(self) -> str:
        return self.topic_prefix + topics.INFERENCE_EVENTS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BridgeSettings:
        """Raises SettingsError naming the variable when a setting is missing or malformed."""
        fields = _service_fields(cls, environ, cls.PREFIX)
        raw = environ.get(cls.PREFIX + "CONFIGURE_PROJECT")
        if raw is not None:  # bool("false") is True: read it as a word
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise SettingsError(f"{cls.PREFIX}CONFIGURE_PROJECT={raw!r}: expected true/false")
            fields["configure_project"] = raw.lower() in ("true", "1", "yes")
        settings = cls(KafkaSettings.from_env(environ), **fields)
        p = cls.PREFIX
        if not settings.url.startswith(("http://", "https://")):
            raise SettingsError(f"{p}URL={settings.url!r}: expected Label Studio's http(s) URL")
        if not settings.token.reveal():
            raise SettingsError(f"{p}TOKEN is required (a Label Studio API token)")
        if not settings.webhook_secret.reveal():
            raise SettingsError(f"{p}WEBHOOK_SECRET is required: Label Studio's webhooks must "
                                f"carry it in the X-Active-Stream-Secret header")
        _require_positive(p, project_id=settings.project_id, batch_size=settings.batch_size)
        for name in ("api_timeout_s", "retry_max_s", "reconcile_interval_s", "request_ttl_s",
                     "batch_timeout_s"):
            if not getattr(settings, name) > 0:
                raise SettingsError(f"{p}{name.upper()}={getattr(settings, name)}: expected a "
                                    f"number > 0")
        _check_metrics_auth(p, settings)
        return settings
