"""Whether the cluster lets the label sink do what it must (issue 20): asked before faust starts,
and again while the sink holds after a refusal, so a missing ACL is one clear line and a wait,
never a crash loop.

The permissions are `services.streaming.acls.label_sink_acls`, the ones `active-stream acls
label-sink` grants. The broker says which operations the sink's principal may perform on a topic
or a group (KIP-430: `include_authorized_operations`), which needs only DESCRIBE, implied by
READ and WRITE; a resource it may not even describe answers an authorization error. CREATE on the
topics faust creates itself (`<app_id>-...`) is not asked: the only way, a validate-only
CreateTopics, really creates the topic on the embedded broker (measured: with one partition,
which faust then refuses). Blocking calls through our own librdkafka admin client.

Best effort: what the broker does not say (no authorizer, a broker without KIP-430 such as the
embedded one, a timeout) counts as allowed; a refusal the check missed still reaches the sink
when faust meets it (faust_guards.py, guard 5) and holds it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient

from services.streaming import acls
from services.streaming.settings import LabelSinkSettings

# One admin request on loopback takes milliseconds; a remote cluster under load may need
# seconds. Past it the check reports the broker as unreachable and the caller asks again.
REQUEST_TIMEOUT_S = 15.0
# The topics faust creates under the app id (tables' changelogs, the internal stream, its
# leader topic); the sink needs READ and WRITE on them once they exist.
FAUST_TOPICS = ("labels-by-model", "requests-changelog", "labels-changelog", "tiers-changelog",
                "mastery-changelog", "__assignor-__leader")
_DENIED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
           KafkaError.CLUSTER_AUTHORIZATION_FAILED)
# An operation implies others (Kafka's authorizer): ALL implies everything.
_IMPLIED = {"READ": {"READ", "ALL"}, "WRITE": {"WRITE", "ALL"}, "DESCRIBE": {
    "DESCRIBE", "READ", "WRITE", "DELETE", "ALTER", "ALL"}}


def needed(settings: LabelSinkSettings) -> list[tuple[str, str, str]]:
    """(resource, name, operation) the sink needs on resources that exist or are its own: the
    literal entries of `label_sink_acls`, the prefixed ones expanded to faust's own topics."""
    out = []
    for acl in acls.label_sink_acls(settings, "User:label-sink"):
        names = ([f"{settings.app_id}-{t}" for t in FAUST_TOPICS] if acl.pattern == "prefixed"
                 else [acl.name])
        out += [(acl.resource, name, acl.operation.upper()) for name in names]
    return out


def _verb(operation: str, resource: str, name: str) -> str:
    to = " to" if operation == "WRITE" else ""
    return f"not authorized to {operation}{to} {resource} {name}"


class Permissions:
    """`missing()`: the first permission the sink lacks, as one line, or None."""

    def __init__(self, settings: LabelSinkSettings, admin: Any = None) -> None:
        self._settings = settings
        self._admin = admin or AdminClient(settings.kafka.client(role="admin"))
        self._needed = needed(settings)

    def missing(self) -> str | None:
        """One line naming the first missing permission (and how to grant it), or None when
        every one is there or the broker does not say (module docstring)."""
        wants: dict[tuple[str, str], set[str]] = {}
        for resource, name, operation in self._needed:
            wants.setdefault((resource, name), set()).add(operation)
        topics = sorted(name for (resource, name) in wants if resource == "topic")
        groups = sorted(name for (resource, name) in wants if resource == "group")
        found = {**self._topic_operations(topics), **self._group_operations(groups)}
        for (resource, name), operations in sorted(wants.items()):
            have = found.get((resource, name))
            for operation in sorted(operations - {"CREATE"}):  # module docstring
                if have is None:
                    continue  # not created yet, or the broker does not say
                if isinstance(have, str):
                    return self._line(operation, resource, name, have)
                if not _IMPLIED.get(operation, {operation}) & have:
                    return self._line(operation, resource, name)
        return None

    def _line(self, operation: str, resource: str, name: str, why: str = "") -> str:
        detail = f" ({why})" if why else ""
        return (f"{_verb(operation, resource, name)}{detail}: grant the label sink's ACLs "
                "(`active-stream acls label-sink --principal ... --apply`)")

    def _topic_operations(self, names: Iterable[str]
                          ) -> dict[tuple[str, str], set[str] | str]:
        """Per topic: the operations allowed, or the authorization error (a str) when the
        principal may not describe it. Topics that do not exist, or that the broker says nothing
        about, are left out."""
        names = list(names)
        if not names:
            return {}
        out: dict[tuple[str, str], set[str] | str] = {}
        futures = self._admin.describe_topics(TopicCollection(names),
                                              include_authorized_operations=True,
                                              request_timeout=REQUEST_TIMEOUT_S)
        for name, future in futures.items():
            try:
                description = future.result(REQUEST_TIMEOUT_S)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in _DENIED:
                    out[("topic", name)] = error.str()
                continue  # does not exist (yet), or the broker did not say: not a refusal
            allowed = _names(description.authorized_operations)
            if allowed is not None:
                out[("topic", name)] = allowed
        return out

    def _group_operations(self, names: Iterable[str]
                          ) -> dict[tuple[str, str], set[str] | str]:
        names = list(names)
        if not names:
            return {}
        out: dict[tuple[str, str], set[str] | str] = {}
        futures = self._admin.describe_consumer_groups(names, include_authorized_operations=True,
                                                       request_timeout=REQUEST_TIMEOUT_S)
        for name, future in futures.items():
            try:
                description = future.result(REQUEST_TIMEOUT_S)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() in _DENIED:
                    out[("group", name)] = "the broker refused to describe it"
                continue
            allowed = _names(description.authorized_operations)
            if allowed is not None:
                out[("group", name)] = allowed
        return out


def _names(operations: Iterable[AclOperation] | None) -> set[str] | None:
    """The operations' names; None when the broker did not say (no authorizer, no KIP-430)."""
    if operations is None:
        return None
    return {op.name for op in operations}
