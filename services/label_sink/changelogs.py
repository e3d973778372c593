"""The configuration of the label sink's table changelogs, which bounds what a restart's table
recovery reads: applied by faust when it creates a changelog, and by `align` on start to a
changelog created before (faust leaves an existing topic's configuration alone).

faust creates the changelogs with `cleanup.policy=compact`, but on Apache Kafka (measured on
4.1.1, docs/label-sink.md "Compaction") three defaults kept them growing with history:

- the log cleaner compacts closed segments only, and a segment closes at 1 GiB or after 7 days;
- a deleted row's tombstone survives cleaning for `delete.retention.ms`, 1 day: the sink deletes
  every label row that leaves the dedupe window and every request past its TTL, so at a million
  labels a day the changelog held a tombstone per label ever swept (1.93 M records after 1 M
  labels; 293 s to recover);
- a tombstone is dropped by a LATER cleaning than the one that first sees it (KIP-534: that one
  only stamps it with its delete horizon), and a log is cleaned again only once its dirty part
  exceeds `min.cleanable.dirty.ratio` of it (0.5).

With the values below a restart reads the live rows (the dedupe window, the open requests, one
state row per model), the tombstones of about the last `delete.retention.ms`, the dirty part the
cleaner has not reached yet, and each partition's open segment (at most 4 MiB, ~25,000 label
rows), whatever the history.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

log = logging.getLogger(__name__)

# The tables whose changelogs faust creates, named `<app_id>-<table>-changelog`.
TABLES = ("requests", "labels", "mastery", "tiers")

# Why `delete.retention.ms` is 10 minutes, and why it is safe. A table recovery reads a
# changelog partition from its start; if it reads a row and the cleaner then drops that row's
# tombstone before the recovery reaches it, the recovered table keeps a deleted row. The cleaner
# drops the row itself in the pass that first sees its tombstone (the row is older), and drops
# the tombstone at the earliest `delete.retention.ms` after that pass: so a recovery that read
# the row started before that pass, and it sees the tombstone if it finishes within
# `delete.retention.ms` of its start. Recoveries of the bounded changelogs take seconds to a few
# minutes (bench/sink_state.py: the restart after a million labels on a loaded 2-core machine),
# well within 10 minutes. Even past it, a kept row is harmless: a label row is deleted only once
# its model's state row includes it (tables.py), so a rebuild skips it and the dedupe verdict
# ignores rows out of the window; a request row is deleted past its TTL, and rows past the TTL
# are ignored and pruned again. Shorter would save little (at a million labels a day, ~7,000
# tombstones are 10 minutes' worth); longer keeps more tombstones after a burst.
DELETE_RETENTION_MS = 600_000
CHANGELOG_CONFIG = {
    # Small segments so the cleaner reaches the rows soon (a closed segment is cleanable).
    "segment.bytes": str(4 * 2**20),
    "segment.ms": str(3_600_000),
    "delete.retention.ms": str(DELETE_RETENTION_MS),
    # A log is cleaned again once a tenth of it is dirty, not a half: the second pass that drops
    # stamped tombstones comes sooner. Each pass rereads the clean part, which stays small (the
    # live rows and the recent tombstones), so cleaning more often costs little.
    "min.cleanable.dirty.ratio": "0.1",
}
# One admin request on loopback takes milliseconds; a remote cluster under load may need
# seconds. Past it the sink starts anyway (the changelog keeps its configuration, logged).
REQUEST_TIMEOUT_S = 15.0


def changelog_topics(app_id: str) -> list[str]:
    return [f"{app_id}-{table}-changelog" for table in TABLES]


def align(admin: AdminClient, topic_names: list[str],
          config: dict[str, str] | None = None) -> list[str]:
    """Set `config` (default `CHANGELOG_CONFIG`) on those of `topic_names` that exist and differ
    from it; returns the topics altered. Topics that do not exist are left to faust, which
    creates them with the configuration. Raises KafkaException when the broker refuses a
    describe or an alter (no ALTER_CONFIGS permission, a broker without the API). Blocking;
    idempotent."""
    wanted = CHANGELOG_CONFIG if config is None else config
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topic_names]
    described = admin.describe_configs(resources, request_timeout=REQUEST_TIMEOUT_S)
    stale = []
    for resource, future in described.items():
        try:
            entries = future.result(REQUEST_TIMEOUT_S)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue  # not created yet: faust creates it with the configuration
            raise
        differ = {k: v for k, v in wanted.items() if k not in entries or entries[k].value != v}
        if differ:
            changes = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                       for k, v in differ.items()]
            stale.append(ConfigResource(ConfigResource.Type.TOPIC, resource.name,
                                        incremental_configs=changes))
    if not stale:
        return []
    for future in admin.incremental_alter_configs(
            stale, request_timeout=REQUEST_TIMEOUT_S).values():
        future.result(REQUEST_TIMEOUT_S)
    return [r.name for r in stale]


def align_or_warn(admin: AdminClient, app_id: str) -> None:
    """`align` the sink's changelogs; a refusal or a timeout is logged with the command that
    applies the configuration by hand, and the sink starts anyway (it works, its recovery just
    reads more)."""
    try:
        altered = align(admin, changelog_topics(app_id))
    except KafkaException as exc:
        settings = ",".join(f"{k}={v}" for k, v in CHANGELOG_CONFIG.items())
        log.warning("could not set the table changelogs' configuration (%s): a restart reads "
                    "more of them than needed; apply it with `kafka-configs --alter --entity-type "
                    "topics --entity-name <app_id>-<table>-changelog --add-config %s`",
                    exc.args[0] if exc.args else exc, settings)
        return
    if altered:
        log.info("table changelogs created before set to %s: %s", CHANGELOG_CONFIG, altered)
