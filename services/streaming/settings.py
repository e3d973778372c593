"""Settings: one frozen object per service, read once from prefixed environment variables.

- `KAFKA_BOOTSTRAP_SERVERS` names the cluster (Apache Kafka, Redpanda, or the embedded broker).
- `ACTIVE_STREAM_KAFKA_<KEY>` is a librdkafka property passed through unchanged: the key is
  lowered and `_` becomes `.` (`ACTIVE_STREAM_KAFKA_SASL_MECHANISMS` -> `sasl.mechanisms`;
  librdkafka keys have no `_`). Our own prefix, so a stray `KAFKA_HOME` or `KAFKA_OPTS` from a
  Kafka installation is never mistaken for a client property.
- `ACTIVE_STREAM_KAFKA_CONFIG_FILE` may name a librdkafka `.properties` file whose keys are used
  verbatim (environment variables win over the file).
- Service settings use `ACTIVE_STREAM_SCORER_*` / `ACTIVE_STREAM_LABEL_SINK_*`.
Secret values (passwords, keys, tokens) are wrapped in `Secret`, which never prints its value.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.core import SelectorPolicy, with_overrides
from services.core.tiers import TIERS, CostBudgetPolicy, TierPolicy
from services.streaming import topics
from services.streaming.partitioning import KEYED_PARTITIONER

KAFKA_PREFIX = "ACTIVE_STREAM_KAFKA_"
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
CONFIG_FILE_ENV = "ACTIVE_STREAM_KAFKA_CONFIG_FILE"
_SECRET_MARKERS = ("password", "passphrase", "secret", "token", "key.pem", "jaas", "private")
# Credential-bearing librdkafka properties no marker names: the OAUTHBEARER config string and
# extensions (principal, scopes, tokens as key=value), the kinit command (may hold a password),
# and the in-memory private key. tests/unit/test_settings.py reviews every librdkafka property.
_SECRET_KEYS = frozenset({"sasl.oauthbearer.config", "sasl.oauthbearer.extensions",
                          "sasl.kerberos.kinit.cmd", "ssl_key"})

NO_BOOTSTRAP_HINT = (
    "no Kafka cluster configured: set KAFKA_BOOTSTRAP_SERVERS=host:port, or run "
    "`active-stream broker` in another terminal and export the address it prints"
)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what it expects."""


class Secret:
    """A string that is never shown by str/repr/logging; `reveal()` gives the value to a client."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def is_secret_key(key: str) -> bool:
    """True for librdkafka properties that hold credentials (sasl.password, ssl.key.password...)."""
    key = key.lower()
    return key in _SECRET_KEYS or any(marker in key for marker in _SECRET_MARKERS)


# librdkafka properties one kind of client ignores, with a CONFWARN line on stderr at creation.
# One ACTIVE_STREAM_KAFKA_* setting configures every client of a service, so `client(role=)`
# leaves out what that client would ignore. Measured on librdkafka 2.16 by creating each client
# with each property and reading its log (CONFWARN "... will be ignored by this ... instance").
CONSUMER_ONLY = frozenset({
    "group.id", "group.instance.id", "partition.assignment.strategy", "session.timeout.ms",
    "heartbeat.interval.ms", "group.protocol.type", "group.protocol",
    "coordinator.query.interval.ms", "max.poll.interval.ms", "enable.auto.commit",
    "auto.commit.interval.ms", "enable.auto.offset.store", "queued.min.messages",
    "queued.max.messages.kbytes", "fetch.wait.max.ms", "fetch.queue.backoff.ms",
    "fetch.message.max.bytes", "max.partition.fetch.bytes", "fetch.max.bytes", "fetch.min.bytes",
    "fetch.error.backoff.ms", "isolation.level", "enable.partition.eof", "check.crcs",
    "auto.offset.reset",
})
PRODUCER_ONLY = frozenset({
    "transactional.id", "transaction.timeout.ms", "enable.idempotence", "enable.gapless.guarantee",
    "queue.buffering.max.messages", "queue.buffering.max.kbytes", "queue.buffering.max.ms",
    "linger.ms", "message.send.max.retries", "retries", "queue.buffering.backpressure.threshold",
    "compression.codec", "compression.type", "batch.num.messages", "batch.size",
    "delivery.report.only.error", "sticky.partitioning.linger.ms", "request.required.acks",
    "acks", "request.timeout.ms", "message.timeout.ms", "delivery.timeout.ms", "partitioner",
    "compression.level",
})
_IGNORED_BY = {"producer": CONSUMER_ONLY, "admin": CONSUMER_ONLY, "consumer": PRODUCER_ONLY}


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster: bootstrap servers plus librdkafka properties, passed unchanged."""

    bootstrap_servers: str
    client_config: Mapping[str, str | Secret] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> KafkaSettings:
        """Raises SettingsError (with NO_BOOTSTRAP_HINT) when no bootstrap server is configured."""
        config: dict[str, str] = {}
        path = environ.get(CONFIG_FILE_ENV)
        if path:
            config.update(_read_properties(Path(path)))
        for name, value in environ.items():
            if name.startswith(KAFKA_PREFIX) and name != CONFIG_FILE_ENV:
                config[name[len(KAFKA_PREFIX):].lower().replace("_", ".")] = value
        from_config = config.pop("bootstrap.servers", "")
        bootstrap = environ.get(BOOTSTRAP_ENV) or from_config
        if not bootstrap.strip():
            raise SettingsError(NO_BOOTSTRAP_HINT)
        wrapped = {k: Secret(v) if is_secret_key(k) else v for k, v in config.items()}
        return cls(bootstrap.strip(), wrapped)

    def client(self, overrides: Mapping[str, Any] | None = None,
               role: str | None = None) -> dict[str, Any]:
        """librdkafka config for a confluent-kafka client, secrets revealed: hand it to the client
        and nowhere else. `overrides` (librdkafka keys) win over the configured properties.
        `role` ("producer", "consumer", "admin") leaves out the configured properties that kind
        of client would ignore (and warn about); overrides are always kept. A producer hashes
        keys Java's way (murmur2) unless `partitioner` is configured: services/streaming/
        partitioning.py says why the loop's joins need it."""
        ignored = _IGNORED_BY[role] if role is not None else frozenset()
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        if role == "producer":
            config["partitioner"] = KEYED_PARTITIONER
        for key, value in self.client_config.items():
            if key not in ignored:
                config[key] = value.reveal() if isinstance(value, Secret) else value
        config.update(overrides or {})
        return config


def _read_properties(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"{CONFIG_FILE_ENV}={path}: cannot read ({exc.strerror})") from None
    props = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected key=value")
        props[key.strip()] = value.strip()
    return props


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})  # an empty variable: off


def _read(environ: Mapping[str, str], prefix: str, name: str, default: Any) -> Any:
    """Parse `prefix+NAME` as the type of `default`; SettingsError names the variable."""
    var = prefix + name.upper()
    raw = environ.get(var)
    if raw is None:
        return default
    if isinstance(default, bool):  # bool("false") is True: read the words people write
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise SettingsError(f"{var}={raw!r}: expected true or false")
    try:
        return type(default)(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r}: expected {type(default).__name__}") from None


def _service_fields(cls: type, environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """Every field but `kafka`, read from `prefix+FIELD_NAME` with the dataclass default."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name != "kafka":
            values[f.name] = _read(environ, prefix, f.name, f.default)
    return values


PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")


def load_policy_overrides(text: str) -> dict[str, Any]:
    """Selector policy overrides from a JSON object, or from the JSON file `@path`; {} for "".
    ValueError says what is wrong (unreadable file, bad JSON, not an object)."""
    if not text.strip():
        return {}
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
        overrides = json.loads(raw)
    except OSError as exc:
        raise ValueError(f"cannot read {text[1:]} ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(overrides, dict):
        raise ValueError("expected a JSON object of policy settings")
    return overrides


@dataclass(frozen=True)
class TierSettings:
    """Tiers as configured: the rule, the group's cost budget (None: unlimited) and the topic of
    each tier that gets per-tier copies (prefixed)."""

    policy: TierPolicy
    cost_budget: CostBudgetPolicy | None
    topics: dict[str, str]


def tier_settings(overrides: Mapping[str, Any], prefix: str = "") -> TierSettings:
    """TierSettings from a JSON object: TierPolicy fields (partial `costs` keep the other
    defaults), "cost_budget" and "topics" (the scorer copies review/annotate/consensus requests
    there, the label sink expert ones). ValueError names what is wrong."""
    rest = dict(overrides)
    budget = rest.pop("cost_budget", None)
    routes = rest.pop("topics", None) or {}
    if "costs" in rest:
        rest["costs"] = {**TierPolicy().costs, **rest["costs"]}
    policy = with_overrides(TierPolicy(), rest, "tiers")
    if not isinstance(routes, dict) or not set(routes) <= set(TIERS) or \
            not all(isinstance(t, str) and t for t in routes.values()):
        raise ValueError(f"tiers.topics maps some of {list(TIERS)} to topic names")
    cost = None if budget is None else CostBudgetPolicy(**budget)
    return TierSettings(policy, cost, {k: prefix + v for k, v in routes.items()})


@dataclass(frozen=True)
class ScorerSettings:
    """The scorer's settings; env prefix `ACTIVE_STREAM_SCORER_` (e.g. `..._GROUP_ID`)."""

    kafka: KafkaSettings
    group_id: str = "active-stream-scorer"
    processing_guarantee: str = "at_least_once"
    batch_size: int = 1000
    # How long the loop waits for the first record of a batch (an idle loop wakes this often),
    # then how long for the rest of it once one has come (services/scorer/batching.py): the
    # linger bounds what batching adds to event-to-request latency on a slow or bursty stream.
    batch_timeout_s: float = 0.5
    batch_linger_s: float = 0.05
    checkpoint_every_events: int = 10_000
    checkpoint_every_s: float = 10.0
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9310
    # Who may read /metrics, /healthz and /readyz (services/streaming/ops.py): "none" (whoever
    # reaches the port), "basic" (METRICS_USER + METRICS_PASSWORD) or "bearer" (METRICS_TOKEN);
    # METRICS_AUTH_SCOPE=metrics protects /metrics only, leaving the probes open for a kubelet.
    metrics_auth: str = "none"
    metrics_user: str = ""
    metrics_password: Secret = Secret("")
    metrics_token: Secret = Secret("")
    metrics_auth_scope: str = "all"
    seed: int = 0
    # Names this instance's transactional.id (exactly_once) and, with static membership, its
    # group.instance.id; must be stable across restarts (a StatefulSet's pod name) so a restarted
    # instance fences its previous incarnation and takes its partitions back at once, and unique
    # per instance. Defaults to the host name.
    instance_id: str = ""
    # Join the group as a static member (group.instance.id = instance_id, KIP-345): a restarted
    # instance gets its partitions back without waiting out its dead predecessor's session.
    static_membership: bool = True
    # Prepended to every topic the scorer reads or writes (tests isolate themselves with it).
    topic_prefix: str = ""
    # SelectorPolicy overrides (the labeling budget, the mode, ...): a JSON object or @path of a
    # JSON file, nested by sub-policy: {"budget": {"share": 0.05, "labels_per_hour": 500}}.
    # The budget is the whole group's: each partition's selector gets its share (policy.scaled).
    policy: str = ""
    # Dead letters without the record's value, key or the values a reason quotes (SHA-256 and
    # size instead), for streams whose records may hold personal data (docs/scorer.md).
    dead_letter_redact: bool = False
    # When an input partition's log ends before an offset this group already processed (the
    # topic was recreated, or truncated by an unclean leader election): "reset" rebuilds that
    # partition's state from its log's first record, as for a new partition; "stop" stops the
    # scorer (exit 4) for an operator to decide (docs/scorer.md, "Offsets that go backwards").
    on_offset_regression: str = "reset"
    # Labeling tiers (docs/tiers.md): "" (off: requests carry no tier) or a JSON object / @path
    # of TierPolicy settings plus optional "cost_budget" {"units_per_hour", "burst"} (the whole
    # group's) and "topics" {tier: topic} for per-tier copies of the requests.
    tiers: str = ""
    # Apply the label sink's class feedback (al.class-feedback.v1) to the class weights. Off:
    # every weight stays 1, so the requests depend on the input alone, never on when feedback
    # arrived (an A/B control deployment; the chaos soak's comparison with a reference run).
    class_feedback: bool = True
    # Probe assets (events with `probe: true`, docs/mastery.md) whose predictions are kept per
    # model and input partition to compare consecutive model versions; 0 = keep none (probes
    # are then only kept out of selection, and no stability record is published).
    probe_max: int = 4096

    PREFIX = "ACTIVE_STREAM_SCORER_"

    def selector_policy(self) -> SelectorPolicy:
        """The selection policy: the defaults with `policy`'s overrides. SettingsError names
        the variable when they are unreadable or invalid."""
        try:
            return with_overrides(SelectorPolicy(), load_policy_overrides(self.policy))
        except ValueError as exc:
            raise SettingsError(f"{self.PREFIX}POLICY: {exc}") from None

    def tier_settings(self) -> TierSettings | None:
        """The tier settings, None when tiers are off. SettingsError names the variable."""
        try:
            overrides = load_policy_overrides(self.tiers)
            return tier_settings(overrides, self.topic_prefix) if overrides else None
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{self.PREFIX}TIERS: {exc}") from None

    @property
    def input_topic(self) -> str:
        return self.topic_prefix + topics.INFERENCE_EVENTS

    @property
    def requests_topic(self) -> str:
        return self.topic_prefix + topics.ANNOTATION_REQUESTS

    @property
    def state_topic(self) -> str:
        return self.topic_prefix + topics.SCORER_STATE

    @property
    def feedback_topic(self) -> str:
        return self.topic_prefix + topics.CLASS_FEEDBACK

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ScorerSettings:
        fields = _service_fields(cls, environ, cls.PREFIX)
        fields["instance_id"] = fields["instance_id"] or socket.gethostname()
        settings = cls(KafkaSettings.from_env(environ), **fields)
        if settings.processing_guarantee not in PROCESSING_GUARANTEES:
            raise SettingsError(
                f"{cls.PREFIX}PROCESSING_GUARANTEE={settings.processing_guarantee!r}: "
                f"expected one of {', '.join(PROCESSING_GUARANTEES)}"
            )
        if settings.on_offset_regression not in OFFSET_REGRESSION_POLICIES:
            raise SettingsError(
                f"{cls.PREFIX}ON_OFFSET_REGRESSION={settings.on_offset_regression!r}: "
                f"expected one of {', '.join(OFFSET_REGRESSION_POLICIES)}")
        _require_positive(cls.PREFIX, batch_size=settings.batch_size,
                          checkpoint_every_events=settings.checkpoint_every_events)
        # A negative timeout makes librdkafka wait forever; 0 would spin the loop.
        if not (0 < settings.batch_timeout_s <= 3600 and 0 <= settings.batch_linger_s <= 3600):
            raise SettingsError(
                f"{cls.PREFIX}BATCH_TIMEOUT_S={settings.batch_timeout_s:g}, "
                f"{cls.PREFIX}BATCH_LINGER_S={settings.batch_linger_s:g}: expected seconds, "
                "the timeout in (0, 3600], the linger in [0, 3600]")
        if not 0 <= settings.probe_max <= 1_000_000:  # bounds a checkpoint's probe books
            raise SettingsError(f"{cls.PREFIX}PROBE_MAX={settings.probe_max}: expected an "
                                "integer in [0, 1000000]")
        settings.selector_policy()  # fail at start-up, naming the variable
        settings.tier_settings()
        _check_metrics_auth(cls.PREFIX, settings)
        return settings


BROKER_COMPAT = ("auto", "tansu", "none")
OFFSET_REGRESSION_POLICIES = ("reset", "stop")


@dataclass(frozen=True)
class LabelSinkSettings:
    """The label sink's settings; env prefix `ACTIVE_STREAM_LABEL_SINK_`.

    Trigger rules are off at their neutral value: per-class labels 0, label age 0, disagreement 1.
    """

    kafka: KafkaSettings
    app_id: str = "active-stream-label-sink"
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9311
    # Who may read /metrics, /healthz and /readyz (services/streaming/ops.py): "none" (whoever
    # reaches the port), "basic" (METRICS_USER + METRICS_PASSWORD) or "bearer" (METRICS_TOKEN);
    # METRICS_AUTH_SCOPE=metrics protects /metrics only, leaving the probes open for a kubelet.
    metrics_auth: str = "none"
    metrics_user: str = ""
    metrics_password: Secret = Secret("")
    metrics_token: Secret = Secret("")
    metrics_auth_scope: str = "all"
    # Prepended to every topic the sink reads or writes (tests isolate themselves with it).
    topic_prefix: str = ""
    trigger_min_labels: int = 100
    trigger_min_labels_per_class: int = 0
    trigger_max_label_age_s: float = 0.0
    trigger_max_disagreement: float = 1.0
    trigger_min_disagreement_labels: int = 20
    trigger_cooldown_s: float = 0.0
    # What TRIGGER_MIN_LABELS counts: "assets" (label records) or "instances" (their
    # annotations), the unit of the scorer's budget.cost (docs/video.md).
    trigger_cost: str = "assets"
    # A request older than this (event time) when its label arrives is not joined, and is pruned.
    request_ttl_s: float = 7 * 86400.0
    # A label read before the request it answers waits for it (services/label_sink/early.py):
    # at least the grace and until the requests partition has been read to where its request
    # would have to be, at most max_wait (wall clock), and at most this many at once (~1 KB
    # each); then it is dead-lettered.
    early_label_grace_s: float = 30.0
    early_label_max_wait_s: float = 3600.0
    early_label_limit: int = 10_000
    # The dedupe window (services/label_sink/tables.py, docs/label-sink.md "State"): a label whose
    # label_id was counted among the last DEDUPE_WINDOW_LABELS records of its labels-by-model
    # partition AND within DEDUPE_WINDOW_S of event time is a duplicate; the sink keeps one row
    # (~0.8 KB in memory) per label of that window, so these bound its memory and changelog.
    dedupe_window_labels: int = 25_000
    dedupe_window_s: float = 86_400.0
    # Class feedback of changed models is published at most this often (wall clock).
    feedback_interval_s: float = 5.0
    # Class mastery from control-arm labels (docs/mastery.md): a class is mastered when the
    # lower bounds of its accuracy and agreement intervals (at MASTERY_CONFIDENCE) reach
    # MASTER_AT over >= MIN_LABELS annotations; reopened when an upper bound falls below
    # REOPEN_BELOW over >= MIN_REOPEN_LABELS. MASTER_AT=1 keeps every class learning.
    mastery_master_at: float = 0.95
    mastery_min_labels: int = 30
    mastery_reopen_below: float = 0.95
    mastery_min_reopen_labels: int = 10
    mastery_confidence: float = 0.95
    # Stopping signal (docs/mastery.md): raised when STOP_TRIGGERS model versions in a row (at
    # their triggers) did not beat the control-arm accuracy of the version before them by
    # STOP_MIN_GAIN, each estimated on >= STOP_MIN_LABELS control annotations (0 = off).
    # STOP_TO_EXPLORATION: once raised, every class of the model gets only exploration.
    mastery_stop_triggers: int = 3
    mastery_stop_min_gain: float = 0.005
    mastery_stop_min_labels: int = 100
    mastery_stop_to_exploration: bool = False
    # Its prediction-stability branch (docs/mastery.md): read the scorer's stability records
    # from class feedback (the sink then needs READ there); raised when, of >= STABLE_MIN_PROBES
    # probes compared, the share whose predicted class the newest version changed is below
    # STABLE_THRESHOLD.
    mastery_stop_on_stability: bool = True
    mastery_stable_threshold: float = 0.01
    mastery_stable_min_probes: int = 100
    # Read the scorer's drift records from class feedback and reopen a mastered class on drift
    # (docs/mastery.md); the sink then needs READ on the class-feedback topic.
    mastery_reopen_on_drift: bool = True
    # When a drift record reopens a mastered class, publish a retrain trigger with rule `drift`
    # at once, covering the model's labels since its last trigger (none without such labels, or
    # within TRIGGER_COOLDOWN_S; docs/mastery.md). Needs MASTERY_REOPEN_ON_DRIFT.
    trigger_on_drift: bool = True
    # Group session: Apache Kafka's 45 s default makes every rebalance slow; 10 s still tolerates
    # a GC pause. The embedded broker needs ~6 s / 1 s (docs/brokers.md). With static membership
    # it only delays the hand-over of a worker that dies and does not come back.
    session_timeout_s: float = 10.0
    # The worker's group.instance.id (KIP-345) when static_membership is on: stable across
    # restarts (the host name: a pod's name) and unique per worker of one app id. Defaults to
    # the host name.
    instance_id: str = ""
    # Join as a static member, so a restarted worker (same instance_id) gets its partitions back
    # at once instead of after its dead predecessor's session (docs/label-sink.md, "Running on a
    # cluster").
    static_membership: bool = True
    # A worker that stops (SIGTERM) leaves the group even as a static member, so the others take
    # its partitions at once (scale-in; a Recreate deploy, whose new pod has another name). Off:
    # a stopped worker's partitions wait for its restart or its session (a StatefulSet).
    leave_group_on_stop: bool = True
    # A member hears of a rebalance at its next heartbeat: with 3 s a second worker's join took
    # ~6 s (bench/takeover.py), most of it waiting for the first worker's heartbeat.
    heartbeat_interval_s: float = 1.0
    # "auto": enable the faust high-watermark shim when the cluster id says Tansu.
    broker_compat: str = "auto"
    # Where faust keeps its local files (memory tables write nothing big); "" = a temp dir.
    data_dir: str = ""
    # Replicas of the topics faust creates (labels-by-model, table changelogs). 1 suits a single
    # broker; use 3 where the cluster has min.insync.replicas=2, or producing to them fails.
    topic_replication_factor: int = 1
    # A stop (SIGTERM/SIGINT, or after a crash) that has not finished after this long ends the
    # process anyway (exit 75): below Kubernetes' grace period (60 s in deploy/kubernetes), above
    # a normal graceful stop (2-4 s measured on Apache Kafka).
    stop_timeout_s: float = 30.0
    # Tier settings for the consensus join (docs/tiers.md): the scorer's ..._SCORER_TIERS JSON,
    # of which the sink uses `quorum`, `costs.expert`, `expert_priority` and `topics.expert`;
    # "" = the defaults. Requests without a tier are handled as before either way.
    tiers: str = ""

    PREFIX = "ACTIVE_STREAM_LABEL_SINK_"

    def tier_settings(self) -> TierSettings:
        """The tier settings (defaults for ""). SettingsError names the variable."""
        try:
            return tier_settings(load_policy_overrides(self.tiers), self.topic_prefix)
        except (ValueError, TypeError) as exc:
            raise SettingsError(f"{self.PREFIX}TIERS: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LabelSinkSettings:
        fields = _service_fields(cls, environ, cls.PREFIX)
        fields["instance_id"] = fields["instance_id"] or socket.gethostname()
        settings = cls(KafkaSettings.from_env(environ), **fields)
        _require_positive(cls.PREFIX, trigger_min_labels=settings.trigger_min_labels,
                          early_label_limit=settings.early_label_limit,
                          dedupe_window_labels=settings.dedupe_window_labels,
                          topic_replication_factor=settings.topic_replication_factor)
        if not 0 <= settings.early_label_grace_s <= settings.early_label_max_wait_s:
            raise SettingsError(f"{cls.PREFIX}EARLY_LABEL_GRACE_S / _MAX_WAIT_S="
                                f"{settings.early_label_grace_s} / "
                                f"{settings.early_label_max_wait_s}: expected 0 <= grace <= "
                                "max wait")
        if not settings.dedupe_window_s > 0:
            raise SettingsError(f"{cls.PREFIX}DEDUPE_WINDOW_S={settings.dedupe_window_s}: "
                                "expected a number of seconds > 0")
        if not settings.stop_timeout_s > 0:
            raise SettingsError(f"{cls.PREFIX}STOP_TIMEOUT_S={settings.stop_timeout_s}: expected "
                                "a number of seconds > 0")
        if settings.broker_compat not in BROKER_COMPAT:
            raise SettingsError(f"{cls.PREFIX}BROKER_COMPAT={settings.broker_compat!r}: "
                                f"expected one of {', '.join(BROKER_COMPAT)}")
        settings.tier_settings()
        _check_metrics_auth(cls.PREFIX, settings)
        return settings


METRICS_AUTH_MODES = ("none", "basic", "bearer")
METRICS_AUTH_SCOPES = ("all", "metrics")


def _check_metrics_auth(prefix: str, settings: Any) -> None:
    """SettingsError when the ops endpoints' access settings are unknown or incomplete; the
    message names variables, never a secret's value."""
    mode, scope = settings.metrics_auth, settings.metrics_auth_scope
    if mode not in METRICS_AUTH_MODES:
        raise SettingsError(f"{prefix}METRICS_AUTH={mode!r}: expected one of "
                            f"{', '.join(METRICS_AUTH_MODES)}")
    if scope not in METRICS_AUTH_SCOPES:
        raise SettingsError(f"{prefix}METRICS_AUTH_SCOPE={scope!r}: expected one of "
                            f"{', '.join(METRICS_AUTH_SCOPES)}")
    if mode == "basic" and (not settings.metrics_user or ":" in settings.metrics_user
                            or not settings.metrics_password.reveal()):
        raise SettingsError(f"{prefix}METRICS_AUTH=basic needs {prefix}METRICS_USER (without "
                            f"':') and {prefix}METRICS_PASSWORD")
    if mode == "bearer" and not settings.metrics_token.reveal():
        raise SettingsError(f"{prefix}METRICS_AUTH=bearer needs {prefix}METRICS_TOKEN")


def _require_positive(prefix: str, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise SettingsError(f"{prefix}{name.upper()}={value}: expected an integer >= 1")


def describe(settings: Any) -> dict[str, Any]:
    """A printable view of a settings object: secrets masked, nothing revealed."""
    out = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, KafkaSettings):
            out[f.name] = {"bootstrap.servers": value.bootstrap_servers,
                           **{k: str(v) for k, v in value.client_config.items()}}
        else:
            out[f.name] = value
    return out
