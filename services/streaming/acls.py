"""The Kafka ACLs each service needs, and nothing more (least privilege), from its own settings.

`active-stream acls` prints them or, with `--apply`, creates them through the admin API
(docs/security.md). Every entry names a principal, a resource (topic, group, transactional id),
how the name matches (literal or prefixed) and one operation. What each service does with it:

- scorer: reads the inference and class-feedback topics, writes drift records to the latter;
  reads and writes its state topic (its
  checkpoints, and the read markers of a restore that scans); writes requests and both
  dead-letter topics; every group.id its clients use starts with its group's name (the group it
  joins, and `-feedback`, `-fetch`, `-restore` for readers that only assign); `exactly_once`
  adds its transactional ids, `<group>-<instance>`.
- label sink (faust): reads labels and requests; creates, reads and writes its own topics, all
  named `<app_id>-...` (its changelogs, the labels-by-model topic, the leader topic); writes
  triggers, class feedback and both dead-letter topics; reads class feedback for the scorer's
  drift records (unless `..._MASTERY_REOPEN_ON_DRIFT=false`); joins the group `<app_id>`; with tiers
  set (`..._LABEL_SINK_TIERS`) it also writes expert requests to the requests topic.
- Label Studio bridge: reads requests (and inference events, for frame sizes); writes labels and
  the labels dead-letter topic; its groups start with its group id.
- HTTP ingest: writes inference events.
READ implies DESCRIBE, and WRITE on a topic lets an idempotent producer write (Kafka >= 3.0,
KIP-679): no cluster-level permission is needed. Measured on Apache Kafka 4.1.1 with the
authorizer denying everything else (tests/integration/test_security.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.streaming import topics


@dataclass(frozen=True, order=True)
class Acl:
    """One permission: `principal` may do `operation` on the `resource` named `name`
    (`pattern` "literal": that name; "prefixed": every name starting with it)."""

    principal: str
    resource: str  # "topic" | "group" | "transactional_id"
    name: str
    pattern: str  # "literal" | "prefixed"
    operation: str  # "read" | "write" | "create" | "describe"

    def line(self) -> str:
        return (f"{self.principal:24s} {self.operation:8s} {self.resource:16s} "
                f"{self.pattern:8s} {self.name}")


def _topic(principal: str, name: str, *operations: str, pattern: str = "literal") -> list[Acl]:
    return [Acl(principal, "topic", name, pattern, op) for op in operations]


def scorer_acls(settings: Any, principal: str) -> list[Acl]:
    """`settings`: a ScorerSettings."""
    acls = (_topic(principal, settings.input_topic, "read")
            + _topic(principal, settings.feedback_topic, "read", "write")  # write: drift
            + _topic(principal, settings.state_topic, "read", "write")
            + _topic(principal, settings.requests_topic, "write")
            + _topic(principal, topics.dlq(settings.input_topic), "write")
            + _topic(principal, topics.dlq(settings.feedback_topic), "write")
            + [Acl(principal, "group", settings.group_id, "prefixed", "read")])
    tiers = settings.tier_settings()
    for topic in sorted(set(tiers.topics.values())) if tiers is not None else []:
        acls += _topic(principal, topic, "write")  # per-tier copies (docs/tiers.md)
    if settings.processing_guarantee == "exactly_once":
        acls += [Acl(principal, "transactional_id", settings.group_id + "-", "prefixed", op)
                 for op in ("write", "describe")]
    return acls


def label_sink_acls(settings: Any, principal: str) -> list[Acl]:
    """`settings`: a LabelSinkSettings."""
    prefix = settings.topic_prefix
    labels, requests = prefix + topics.LABELS, prefix + topics.ANNOTATION_REQUESTS
    return (_topic(principal, labels, "read") + _topic(principal, requests, "read")
            + _topic(principal, settings.app_id + "-", "create", "read", "write",
                     pattern="prefixed")
            + _topic(principal, prefix + topics.RETRAIN_TRIGGERS, "write")
            + _topic(principal, prefix + topics.CLASS_FEEDBACK,
                     *(("read", "write") if settings.mastery_reopen_on_drift
                       or settings.mastery_stop_on_stability else ("write",)))
            + _topic(principal, topics.dlq(labels), "write")
            + _topic(principal, topics.dlq(requests), "write")
            + [Acl(principal, "group", settings.app_id, "literal", "read")]
            + _tier_acls(settings, principal, requests))


def _tier_acls(settings: Any, principal: str, requests: str) -> list[Acl]:
    """With ACTIVE_STREAM_LABEL_SINK_TIERS set, the sink writes the expert requests it escalates
    to the requests topic (and `topics.expert`): docs/tiers.md."""
    if not settings.tiers.strip():
        return []
    expert = settings.tier_settings().topics.get("expert")
    return _topic(principal, requests, "write") + (
        _topic(principal, expert, "write") if expert else [])


def bridge_acls(settings: Any, principal: str) -> list[Acl]:
    """`settings`: a Label Studio BridgeSettings."""
    return (_topic(principal, settings.requests_topic, "read")
            + _topic(principal, settings.inference_topic, "read")
            + _topic(principal, settings.labels_topic, "write")
            + _topic(principal, topics.dlq(settings.labels_topic), "write")
            + [Acl(principal, "group", settings.group_id, "prefixed", "read")])


def ingest_acls(settings: Any, principal: str) -> list[Acl]:
    """`settings`: an IngestSettings."""
    return _topic(principal, settings.topic, "write")


def bindings(acls: list[Acl]) -> list[Any]:
    """confluent-kafka AclBindings (ALLOW, any host) for `acls`."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional_id": ResourceType.TRANSACTIONAL_ID}
    patterns = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
    return [AclBinding(kinds[a.resource], a.name, patterns[a.pattern], a.principal, "*",
                       AclOperation[a.operation.upper()], AclPermissionType.ALLOW)
            for a in acls]


def apply(admin: Any, acls: list[Acl], timeout_s: float = 30.0) -> None:
    """Create `acls` (idempotent: an existing ACL is not an error). Raises KafkaException."""
    for future in admin.create_acls(bindings(acls), request_timeout=timeout_s).values():
        future.result(timeout_s)


def revoke(admin: Any, acls: list[Acl], timeout_s: float = 30.0) -> None:
    """Delete exactly `acls`. Raises KafkaException."""
    from confluent_kafka.admin import AclBindingFilter

    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal,
                                b.host, b.operation, b.permission_type)
               for b in bindings(acls)]
    for future in admin.delete_acls(filters, request_timeout=timeout_s).values():
        future.result(timeout_s)
