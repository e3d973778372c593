"""The topics of the loop, their fixed partition counts, and idempotent creation.

Topics are always created explicitly: a Kafka-protocol broker that auto-creates a topic picks its
own partition count (the embedded broker picks 4), and a silently re-partitioned input breaks the
scorer's per-partition state. See docs/brokers.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

INFERENCE_EVENTS = "al.inference-events.v1"
ANNOTATION_REQUESTS = "al.annotation-requests.v1"
LABELS = "al.labels.v1"
RETRAIN_TRIGGERS = "al.retrain-triggers.v1"
CLASS_FEEDBACK = "al.class-feedback.v1"
SCORER_STATE = "al.scorer-state.v1"

DLQ_SUFFIX = ".dlq"

_COMPACTED = {"cleanup.policy": "compact"}
# A scorer checkpoint holds its dedupe memory: ~2.6 MB at the default cap of 250,000 keys
# (measured; tests/unit/test_scorer_partition.py), over Kafka's ~1 MB default record limit.
STATE_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Compaction never touches the active segment: Kafka's 1 GiB default would let a restore that
# scans the topic (checkpoint_store.py's fallback) read up to that much. Rolled at 64 MiB or
# hourly, so an idle topic is compacted too.
_STATE = {**_COMPACTED, "max.message.bytes": str(STATE_MAX_MESSAGE_BYTES),
          "segment.bytes": str(64 * 1024 * 1024), "segment.ms": str(3600 * 1000)}
# A dead letter carries the original bytes base64-encoded (4/3 of their size) plus metadata, so a
# .dlq must accept records larger than its source topic's limit (Kafka's default is ~1 MB).
DLQ_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_DEAD_LETTERS = {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}


def dlq(topic: str) -> str:
    """Name of the dead-letter topic that receives what `topic`'s consumer could not process."""
    return topic + DLQ_SUFFIX


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the project needs it: name, partition count, and topic configs."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)


def loop_topics(partitions: int = 4, prefix: str = "") -> list[TopicSpec]:
    """Every topic of the loop (ARCHITECTURE.md) plus a `.dlq` for each input topic.

    `partitions` sizes the keyed data topics (inference events, requests, labels); it is the unit
    of scorer parallelism. Low-volume topics (triggers, feedback, state, dead letters) get one
    partition so a single reader sees them in order. `prefix` goes before every name (the
    services' `TOPIC_PREFIX` setting), e.g. to run several loops on one cluster.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    data = [
        TopicSpec(INFERENCE_EVENTS, partitions),
        TopicSpec(ANNOTATION_REQUESTS, partitions),
        TopicSpec(LABELS, partitions),
    ]
    control = [
        TopicSpec(RETRAIN_TRIGGERS, 1),
        TopicSpec(CLASS_FEEDBACK, 1, _COMPACTED),
        TopicSpec(SCORER_STATE, 1, _STATE),
    ]
    inputs = [INFERENCE_EVENTS, LABELS, ANNOTATION_REQUESTS, CLASS_FEEDBACK]
    dead_letters = [TopicSpec(dlq(name), 1, _DEAD_LETTERS) for name in inputs]
    return [replace(spec, name=prefix + spec.name) for spec in data + control + dead_letters]


@dataclass(frozen=True)
class TopicResult:
    """Outcome for one topic: `created`, `exists`, or `mismatch` (exists, other partition count)."""

    name: str
    status: str
    partitions: int
    detail: str = ""


def create_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    *,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
) -> list[TopicResult]:
    """Create `specs`; a topic that already exists is not an error (idempotent).

    An existing topic with a different partition count is reported as `mismatch` and left alone:
    re-partitioning a keyed topic moves keys between partitions and is an operator's decision.
    Raises KafkaException for any other failure (authorisation, broker down past `timeout_s`).
    """
    specs = list(specs)
    new = [
        NewTopic(s.name, s.partitions, replication_factor, config=dict(s.configs)) for s in specs
    ]
    futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    results = []
    for spec in specs:
        try:
            futures[spec.name].result(timeout=timeout_s)
            results.append(TopicResult(spec.name, "created", spec.partitions))
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            results.append(_existing(admin, spec, timeout_s))
    return results


def _existing(admin: AdminClient, spec: TopicSpec, timeout_s: float) -> TopicResult:
    meta = admin.list_topics(spec.name, timeout=timeout_s).topics[spec.name]
    actual = len(meta.partitions)
    if actual == spec.partitions:
        return TopicResult(spec.name, "exists", actual)
    detail = f"has {actual} partitions, expected {spec.partitions}; left unchanged"
    return TopicResult(spec.name, "mismatch", actual, detail)
