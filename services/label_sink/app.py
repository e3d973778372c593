"""The label sink: a faust app, a thin shell around the pure trigger and agreement logic.

Flow (all topics raw bytes; we decode ourselves so a bad record can be dead-lettered verbatim):

1. `read_requests` (al.annotation-requests.v1) -> `requests` table, for the join.
2. `read_labels` (al.labels.v1): decode (bad -> al.labels.v1.dlq with the reason), join with the
   request, and forward the joined label keyed by model_id to the internal topic
   `<app_id>-labels-by-model`, so that one model's labels meet in one partition, hence one worker.
3. `count_labels` (labels-by-model): dedupe by label_id against the `labels` table, count, run the
   trigger policy, publish al.retrain-triggers.v1; class feedback goes out on a timer.
4. `read_drift` (al.class-feedback.v1, with MASTERY_REOPEN_ON_DRIFT or
   MASTERY_STOP_ON_STABILITY): the scorer's drift and stability records go, keyed by model_id,
   to labels-by-model too, where a drift record may reopen a mastered class and a stability
   record feeds the stopping signal (label_sink/mastery.py); the sink's own feedback records
   there are passed over.

Idempotence under at-least-once (faust reprocesses after a crash): the `labels` table holds each
model's compact state row, the rows of the labels in the dedupe window and the labels counted
since the state row (`tables.Ledger`); a record whose effect persisted is skipped as a replay,
and so is a label forwarded again after a crash of the label reader (its model's frontier on
al.labels.v1 offsets, frontier.py), any later one is processed again against the same state.
A trigger is published (and its delivery awaited) BEFORE the row of the label that fired it is
written, so a crash in between republishes the same trigger (same labels, same deterministic
trigger_id) instead of losing it. Consumers of triggers dedupe on trigger_id. State stays
bounded by the window (tables.py).

Order: each agent admits a record through `ordering.InOrder` before processing it, so records of
a partition are processed in offset order, each once per assignment, never past a hole; the
offsets faust commits are the guard's (faust_guards.py). docs/label-sink.md, "Restarts".

Co-partitioning: the join reads the `requests` table from the label's worker, so labels and
requests must be keyed alike (by asset_id) with the same partition count. With one worker (the
common case for a low-volume sink) any keying works.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import faust
import numpy as np
import orjson
from confluent_kafka import KafkaException

from services import service_version
from services.core.agreement import feedback_classes
from services.core.feedback import FeedbackPolicy
from services.core.triggers import Decision, Fired, trigger_id
from services.label_sink.broker_offsets import BrokerOffsets, Record
from services.label_sink.changelogs import CHANGELOG_CONFIG
from services.label_sink.cluster import SinkTopics
from services.label_sink.cluster import SinkUnavailable as SinkUnavailable  # the CLI's import
from services.label_sink.consensus import ConsensusHook, compared_outcomes
from services.label_sink.delivery import DeliveryGuard
from services.label_sink.drift_trigger import due_trigger
from services.label_sink.early import EarlyLabels, Held
from services.label_sink.faust_guards import denial
from services.label_sink.frontier import InFlight, floor_of
from services.label_sink.gauges import republish
from services.label_sink.mastery import (
    CONTROL,
    DRIFT,
    STABLE,
    Mastery,
    control_request,
    control_unit,
    drift_row,
    mastery_policy,
    stability_row,
)
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.ordering import FetchedEvent, InOrder, OutOfOrder
from services.label_sink.outputs import (
    export_committed_lag,
    feedback_event,
    prune,
    trigger_event,
    trigger_policy,
)
from services.label_sink.security import FaustSecurity, faust_security
from services.label_sink.tables import (
    DedupeWindow,
    Ledger,
    Verdict,
    Write,
    joined_label,
    label_key,
    request_row,
)
from services.streaming import topics
from services.streaming.ceiling import DeadLetterCeiling, DeadLetterWindow
from services.streaming.events import (
    ErrorCode,
    InvalidEvent,
    decode_annotation_request,
    decode_class_feedback,
    decode_label,
    encode_class_feedback,
    encode_dead_letter,
    encode_retrain_trigger,
)
from services.streaming.settings import LabelSinkSettings

log = logging.getLogger(__name__)

SERVICE = "label-sink"
_RAW: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                        "value_serializer": "raw"}
# How often the offset timer runs: it seeks back a partition stalled with records left (ordering.py)
# and refreshes the committed-offset lag gauge. Each run costs a few metadata requests; a stall
# is noticed after one to two periods.
OFFSETS_INTERVAL_S = 5.0
# Requests pruning: scan the table for expired rows after this many inserts (and at least after
# half the table's size), so pruning costs O(1) amortised per request.
_PRUNE_EVERY = 1000


@dataclass
class SinkStatus:
    """What /healthz and /readyz report; written on the event loop, read by the HTTP thread."""

    assigned: bool = False
    crashed: BaseException | None = None
    app: Any = None
    order: InOrder | None = None
    delivery: DeliveryGuard | None = None
    dirty: set[str] = field(default_factory=set)
    # Why the sink holds (a permission missing: worker.py), None when it does not.
    held: str | None = None
    # Labels waiting for their requests (early.py); they bound the commit of their partition.
    early: EarlyLabels | None = None

    def health(self) -> tuple[bool, str]:
        if self.crashed is not None:
            return False, f"crashed: {self.crashed!r}"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        app, held = self.app, self.held
        if held is not None:
            return False, f"holding: {held}"
        if self.crashed is not None or app is None:
            return False, "not running"
        if not self.assigned or app.rebalancing or app.in_recovery:
            return False, "waiting for partitions / table recovery"
        return True, "ok"


def build_app(
    settings: LabelSinkSettings,
    metrics: LabelSinkMetrics,
    status: SinkStatus,
    *,
    partitions: int,
    on_crash: Callable[[BaseException], None],
    security: FaustSecurity | None = None,
    broker: BrokerOffsets | None = None,
    on_denied: Callable[[str], None] | None = None,
) -> faust.App:
    """The faust app with its topics, tables, agents and timers. Does not start anything.

    `security` defaults to `faust_security(settings.kafka.client_config)`; `broker` (offset
    look-ups) to one built from `settings.kafka`. The agents' offset guard is `status.order`.
    `on_denied(line)` hears of an output or an agent refused for want of an ACL (default: a
    crash, `on_crash`)."""
    if security is None:
        security = faust_security(settings.kafka.client_config)
    names = SinkTopics.with_prefix(settings.topic_prefix)
    policy = trigger_policy(settings)
    feedback_policy = FeedbackPolicy()
    mastery_rule = mastery_policy(settings)
    data_dir = settings.data_dir or str(Path(tempfile.gettempdir()) / "active-stream-label-sink")
    servers = settings.kafka.bootstrap_servers.split(",")
    app = faust.App(
        settings.app_id,
        # faust otherwise reads os.environ and lets variables such as TOPIC_REPLICATION_FACTOR,
        # PROCESSING_GUARANTEE or BROKER override the arguments below: our settings only.
        env={},
        broker=[f"kafka://{server.strip()}" for server in servers],
        broker_credentials=security.credentials,
        # aiokafka's idempotent producer (needed by exactly_once) is rejected by the embedded
        # broker, and EOS is not needed: counting is idempotent (see the module docstring).
        processing_guarantee="at_least_once",
        store="memory://",
        datadir=data_dir,
        topic_partitions=partitions,
        # faust creates the labels-by-model topic, the table changelogs and its leader topic with
        # this many replicas (changelog topics take no replication of their own).
        topic_replication_factor=settings.topic_replication_factor,
        table_standby_replicas=0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        # Static membership (KIP-345): a restarted worker with the same id takes its partitions
        # back at once; without it they wait out the killed worker's session (measured ~11 s).
        consumer_group_instance_id=settings.instance_id if settings.static_membership else None,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        autodiscover=False,
        producer_acks=-1,
        key_serializer="json",
        value_serializer="json",
    )
    status.app = app

    def refused(exc: BaseException) -> None:
        status.crashed = exc
        on_crash(exc)

    status.delivery = DeliveryGuard(refused, on_denied)
    app.sensors.add(status.delivery)
    labels_in = app.topic(names.labels, **_RAW)
    requests_in = app.topic(names.requests, **_RAW)
    by_model = app.topic(f"{settings.app_id}-labels-by-model", partitions=partitions,
                         internal=True, **_RAW)
    if broker is None:
        broker = BrokerOffsets(settings.kafka.client(role="consumer"), settings.app_id)

    async def seek(tp: Any, offset: int) -> None:
        # In the consumer's own thread (faust's `seek` calls aiokafka from this one).
        await app.consumer.seek_wait({tp: offset})

    def consumer_state(tp: tuple[str, int]) -> str:
        """faust's view of a partition, for the log line of a stalled one."""
        consumer: Any = app.consumer  # faust's Consumer (its internals are untyped)
        return (f"flow active {consumer.flow_active}, flow control active "
                f"{app.flow_control.is_active()}, partition active "
                f"{tp in (consumer._active_partitions or ())}, paused "
                f"{tp in consumer._paused_partitions}, buffered "
                f"{tp in consumer._buffered_partitions}, read offset "
                f"{consumer._read_offset.get(tp)}")

    def read_offset(tp: tuple[str, int]) -> int | None:
        consumer: Any = app.consumer
        offset = consumer._read_offset.get(tp)
        return offset if isinstance(offset, int) else None

    drift_in = (app.topic(names.feedback, **_RAW) if settings.mastery_reopen_on_drift
                or settings.mastery_stop_on_stability else None)
    by_model_topic = by_model.get_topic_name()
    guarded = (names.labels, names.requests, by_model_topic)
    order = status.order = InOrder(seek, broker, metrics,
                                   topics=guarded + ((names.feedback,) if drift_in else ()),
                                   describe=consumer_state, read_offset=read_offset)
    # The handlers below take a faust event or, for records the consumer skipped, an
    # ordering.FetchedEvent: they use only `value` and `message.{topic,partition,offset,key}`.
    labels_dlq = app.topic(topics.dlq(names.labels), **_RAW)
    requests_dlq = app.topic(topics.dlq(names.requests), **_RAW)
    triggers_out = app.topic(names.triggers, **_RAW)
    feedback_out = app.topic(names.feedback, **_RAW)
    # Table rows are JSON (key: request/label id); see services/label_sink/tables.py.
    requests = app.Table("requests", partitions=partitions, key_type=str,
                         extra_topic_configs=CHANGELOG_CONFIG)
    labels = app.Table("labels", partitions=partitions, key_type=str,
                       extra_topic_configs=CHANGELOG_CONFIG)
    # model_id -> control-arm estimates and class mastery (label_sink/mastery.py).
    mastery = Mastery(app.Table("mastery", partitions=partitions, key_type=str,
                                extra_topic_configs=CHANGELOG_CONFIG), mastery_rule,
                      feedback_policy, metrics,
                      stop_to_exploration=settings.mastery_stop_to_exploration,
                      trigger_on_drift=settings.trigger_on_drift)
    ledger = Ledger(DedupeWindow(settings.dedupe_window_labels, settings.dedupe_window_s))
    in_flight = InFlight()  # forwards not known delivered yet (frontier.py)
    early = status.early = EarlyLabels(settings.early_label_limit, settings.early_label_grace_s,
                                       settings.early_label_max_wait_s)
    window = DeadLetterWindow(DeadLetterCeiling())
    version = service_version()
    # Tiers (consensus.py): rows only for requests that carry a tier, so without tiers this
    # table stays empty and nothing else changes.
    tier_table = app.Table("tiers", partitions=partitions, key_type=str,
                           extra_topic_configs=CHANGELOG_CONFIG)
    tiers = settings.tier_settings()
    expert_copy = (app.topic(tiers.topics["expert"], **_RAW) if "expert" in tiers.topics
                   else None)

    async def send_expert(key: bytes, value: bytes) -> None:
        await (await requests_in.send(key=key, value=value))  # awaited: delivered
        if expert_copy is not None:
            await (await expert_copy.send(key=key, value=value))

    consensus = ConsensusHook(tiers.policy, tier_table, metrics, send_expert)

    def crashes_worker(body: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """A bug in an agent stops the whole worker (exit code 70) instead of faust's default of
        restarting the agent after acking the event that failed (STYLE.md)."""

        async def agent(stream: Any) -> None:
            try:
                await body(stream)
            except Exception as exc:
                line = denial(exc, "WRITE")  # an agent's own reads are fetches: guard 5
                if line is not None and on_denied is not None:
                    on_denied(line)
                    return
                log.critical("label sink agent %s crashed: %r", body.__name__, exc, exc_info=exc)
                status.crashed = exc
                on_crash(exc)
                raise

        agent.__name__ = agent.__qualname__ = body.__name__
        return agent

    async def send_dead_letter(topic: Any, event: Any, exc: InvalidEvent) -> None:
        msg = event.message
        letter = encode_dead_letter(event.value or b"", topic=msg.topic, partition=msg.partition,
                                    offset=msg.offset, reason=exc.reason, code=exc.code,
                                    service=SERVICE, service_version=version,
                                    failed_at=time.time(), key=msg.key)
        await topic.send(key=msg.key, value=letter)

    inserted = [0]  # requests stored since the last prune
    newest: dict[int, float] = {}  # newest request event time per partition

    @app.agent(requests_in)
    @crashes_worker
    async def read_requests(stream: Any) -> None:
        async for event in stream.events():
            await order.process(event, store_request)

    async def store_request(event: Any) -> None:
        try:
            request = decode_annotation_request(event.value)
        except InvalidEvent as exc:
            metrics.invalid_requests.labels(exc.code.value).inc()
            await send_dead_letter(requests_dlq, event, exc)
            return
        partition = event.message.partition
        requests[request.request_id] = {**request_row(request, partition),
                                        **control_request(request)}
        consensus.on_request(request, partition)
        metrics.requests.inc()
        metrics.table_rows.labels("requests").set(len(requests))
        for held in early.waiting(request.request_id):  # labels that came first: join them now
            await forward_label(FetchedEvent(held.record))
            early.discard(held)  # after its forward is queued: the commit never passes it
            metrics.early_joined.inc()
        metrics.early_waiting.set(len(early))
        newest[partition] = max(newest.get(partition, 0.0), request.event_timestamp)
        inserted[0] += 1
        if inserted[0] >= max(_PRUNE_EVERY, len(requests) // 2):
            inserted[0] = 0
            prune(requests, partition, newest[partition] - settings.request_ttl_s)
            prune(tier_table, partition, newest[partition] - settings.request_ttl_s)

    @app.agent(labels_in)
    @crashes_worker
    async def read_labels(stream: Any) -> None:
        async for event in stream.events():
            await order.process(event, forward_label)

    async def forward_label(event: Any) -> None:
        msg = event.message
        try:
            label = decode_label(event.value)
        except InvalidEvent as exc:
            window.record(np.ones(1, dtype=bool))
            metrics.invalid.labels(exc.code.value).inc()
            await send_dead_letter(labels_dlq, event, exc)
            window.check()  # raises past the ceiling: a broken producer must page someone
            return
        window.record(np.zeros(1, dtype=bool))
        request = requests.get(label.request_id) if label.request_id else None
        if request is None and label.request_id and label.model_id is None:
            # Its request may not have been read yet: wait for it (early.py).
            record = Record(msg.topic, msg.partition, msg.offset, msg.key, event.value)
            if early.hold(Held(label.request_id, (msg.topic, msg.partition), msg.offset, record,
                               time.time(), msg.partition)):
                metrics.early_waiting.set(len(early))
                return
            await dead_letter_orphan(event, f"request_id {label.request_id!r} answers no known "
                                            f"request and {early.limit} labels wait for theirs "
                                            "already (early_label_limit)")
            return
        if request is not None and label.labeled_at - request["t"] > settings.request_ttl_s:
            request = None
        row = joined_label(label, msg.partition, msg.offset, request)
        if row is None:  # nothing to count it under: dead-letter it, never drop it
            await dead_letter_orphan(event, f"request_id {label.request_id!r} answers no known "
                                            "request (within request_ttl_s)")
            return
        # Its floor: every label of its partition below it is forwarded and delivered (or
        # dead-lettered) before it, so a re-forward of one is a replay to the counter
        # (frontier.py); one held for its request or in flight keeps the floor below it.
        tp = (msg.topic, msg.partition)
        row["f"] = floor_of(early.offsets(tp), msg.offset, in_flight.oldest(tp))
        tier = await consensus.on_label(label) if request is not None else None
        if tier is not None:
            row["z"] = list(tier)  # (tier, cost, class, decision): counted once, in count_label
            row["r"] = compared_outcomes(tier[0], row["r"])  # a review: counted, not compared
            if not consensus.decides(label):
                row["v"] = 1  # a consensus vote: in the manifest, not counted (consensus.py)
        unit = control_unit(request, label)
        if unit is not None:
            row[CONTROL] = unit
        in_flight.sent(tp, msg.offset)
        sent: Any = await by_model.send(key=row["m"].encode(), value=orjson.dumps(row))  # a future
        sent.add_done_callback(partial(forwarded, tp, msg.offset))

    def forwarded(tp: tuple[str, int], offset: int, sent: Any) -> None:
        # A refused forward stays in flight: the worker stops on it (delivery.py) and no later
        # label's floor may pass it meanwhile, or its re-forward would be taken for a replay.
        if not sent.cancelled() and sent.exception() is None:
            in_flight.delivered(tp, offset)

    async def dead_letter_orphan(event: Any, why: str) -> None:
        metrics.unattributed.inc()
        orphan = InvalidEvent("model_id", ErrorCode.MISSING_FIELD, f"absent, and {why}")
        metrics.invalid.labels(orphan.code.value).inc()
        await send_dead_letter(labels_dlq, event, orphan)

    @app.agent(by_model)
    @crashes_worker
    async def count_labels(stream: Any) -> None:
        async for event in stream.events():
            await order.process(event, count_label)

    def owned_partitions() -> set[int]:
        """The labels-by-model partitions assigned to this worker now (Ledger.rebuild)."""
        return {p for t, p in order.assigned() if t == by_model_topic}

    def export_rows() -> None:
        metrics.table_rows.labels("labels").set(len(labels))
        metrics.table_rows.labels("requests").set(len(requests))

    def apply(writes: list[Write]) -> None:
        for key, value in writes:  # in order: tables.py says why it matters
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value

    async def read_drift(stream: Any) -> None:
        async for event in stream.events():
            await order.process(event, forward_drift)

    if drift_in is not None:
        app.agent(drift_in, name="read_drift")(crashes_worker(read_drift))

    async def forward_drift(event: Any) -> None:
        try:
            feedback = decode_class_feedback(event.value or b"")
        except InvalidEvent:
            return  # the scorer dead-letters unusable feedback records (scorer/feedback.py)
        row = drift_row(feedback) if settings.mastery_reopen_on_drift else None
        if row is None and settings.mastery_stop_on_stability:
            row = stability_row(feedback)
        if row is not None:
            await by_model.send(key=row["m"].encode(), value=orjson.dumps(row))

    async def count_label(event: Any) -> None:
        row = orjson.loads(event.value)
        if STABLE in row:  # a stability record, not a label: the book dedupes it by its id
            mastery.stability(row["m"], row)
            return
        if DRIFT in row:  # a drift report, not a label: the mastery book dedupes it by its id
            change = mastery.drift(row["m"], row)
            if change is not None:
                log.info("class %r of %s: %s -> %s (%s)", change.name, row["m"], change.old,
                         change.new, change.reason)
                status.dirty.add(row["m"])  # the next feedback carries the new state
            if settings.trigger_on_drift:
                await drift_trigger(row, event.message.partition, event.message.offset)
            return
        p, s = event.message.partition, event.message.offset
        if not ledger.valid:
            rebuild()
        found = labels.get(label_key(p, row["id"]))
        verdict = ledger.verdict(p, s, found, row)
        if verdict is not Verdict.NEW:
            metrics.duplicates.inc()
            if verdict is Verdict.DUPLICATE:
                apply(ledger.skip(row))  # its offset is decided: a re-forward is a replay
            return
        model_id = row["m"]
        state, record = ledger.count(p, s, row)
        if CONTROL in row and not row.get("v"):  # before the label's row: mastery.py says why
            for change in mastery.count(model_id, row):
                log.info("class %r of %s: %s -> %s (%s)", change.name, model_id, change.old,
                         change.new, change.reason)
        decision = state.should_trigger(policy)
        fired = None
        if decision is not None:
            fired = await publish_trigger(model_id, decision)
            state.fire(decision)
        apply(ledger.persist(p, s, row, record, fired, found))
        if ledger.sweep_due(p):
            apply(ledger.sweep(p, s, labels.items()))
        export_rows()
        count_metrics(model_id, row, state)
        consensus.count(model_id, row)
        status.dirty.add(model_id)
        if fired is not None:
            await publish_feedback(model_id)

    async def drift_trigger(row: dict[str, Any], p: int, s: int) -> None:
        """The `drift` trigger of the drift record `row` at (p, s), if its reopening's is due
        and not fired yet (drift_trigger.py; also when the record is replayed)."""
        if not ledger.valid:
            rebuild()
        due = due_trigger(row, mastery, ledger, policy)
        if due is None:
            return
        seq, decision = due
        model_id = row["m"]
        await publish_trigger(model_id, decision)
        ledger.get(model_id).fire(decision)
        apply(ledger.close(p, s, model_id, seq))
        export_rows()
        await publish_feedback(model_id)

    async def publish_trigger(model_id: str, decision: Decision) -> Fired:
        tid = trigger_id(model_id, names.labels, decision.ranges)
        stopping = mastery.at_trigger(model_id, tid)  # recorded before it is published
        event = trigger_event(tid, model_id, names.labels, decision,
                              mastery=mastery.trigger_field(model_id), stopping=stopping)
        delivery = await triggers_out.send(key=model_id.encode(),
                                           value=encode_retrain_trigger(event))
        await delivery  # delivered before the firing label is persisted (module docstring)
        metrics.triggers.labels(decision.rule).inc()
        log.info("retrain trigger %s for %s: %s", tid[:12], model_id, decision.detail)
        return Fired(tid, decision.rule, decision.triggered_at)

    def count_metrics(model_id: str, row: dict[str, Any], state: Any) -> None:
        metrics.label_records.inc()
        kept = state.names.kept  # class series bounded like the state (agreement.ClassCap)
        for name in row["c"] if not row.get("v") else ():  # a consensus vote is no label
            metrics.labels.labels(model_id, kept(name)).inc()
        mastery.gauges.publish_agreement(model_id, state, {kept(name) for name, _ in row["r"]})
        if row["r"]:
            metrics.joined.inc()
        if row.get("ta") is not None:
            metrics.turnaround.observe(max(0.0, row["ta"]))

    def rebuild() -> None:
        """The ledger from the labels table, after a rebalance or a restart, by whichever comes
        first: the timer or a record to count. The last feedback of a model may never have gone
        out (its previous owner stopped between a count and its timer): every model this worker
        owns is published again once, from the rebuilt counts, not at its next label (the count
        path used to rebuild without it, and then the timer saw a valid ledger)."""
        owned = owned_partitions()
        ledger.rebuild(labels.items(), owned)
        export_rows()
        status.dirty.update(model_id for model_id, _ in ledger.items() if owns(model_id))
        # The gauges too, from the recovered tables, before any new label (gauges.py).
        republish(mastery.gauges, mastery.table.items(), ledger.items(), owned, partitions)

    def owns(model_id: str) -> bool:
        """The model's labels-by-model partition is assigned to this worker now."""
        p = ledger.partition_of(model_id)
        return p is not None and (by_model_topic, p) in order.assigned()

    async def publish_feedback(model_id: str) -> None:
        if not ledger.valid:
            # A rebalance invalidated the ledger while this task awaited a send (the timer
            # between two models, or a count after its trigger): leave the model dirty; the
            # timer publishes it from the rebuilt counts. Found by the chaos soak, where it
            # crashed the worker ("ledger used before rebuild()").
            status.dirty.add(model_id)
            return
        status.dirty.discard(model_id)
        if not owns(model_id):
            # Its partition went to another worker, whose rebuild publishes it. From here it
            # would be the stale state of the rows faust keeps after a revoke: measured, a
            # rolling restart's last feedback for a model said 52 labels after one with 120.
            return
        state = ledger.get(model_id)
        if state.clock is None:
            return
        classes = feedback_classes(state.all_time, state.since_trigger(), feedback_policy)
        event = feedback_event(model_id, state.clock, mastery.feedback_classes(
            model_id, {name: vars(stats) for name, stats in classes.items()}))
        await feedback_out.send(key=model_id.encode(), value=encode_class_feedback(event))
        metrics.feedback.inc()

    @app.timer(interval=settings.feedback_interval_s)
    async def feedback_timer() -> None:
        if not ledger.valid:
            if not status.ready()[0]:
                return  # tables still recovering: a rebuild now would count half of them
            rebuild()
        for model_id in sorted(status.dirty):
            await publish_feedback(model_id)

    @app.timer(interval=OFFSETS_INTERVAL_S)
    async def offsets_timer() -> None:
        try:
            ends = await export_committed_lag(order, broker, metrics)
            await order.watch(ends)
            await expire_early(ends)
        except (KafkaException, TimeoutError) as exc:
            log.info("offset check skipped (broker did not answer): %s", exc)
        except OutOfOrder as exc:
            log.critical("label sink stops: %s", exc)
            status.crashed = exc
            on_crash(exc)

    async def expire_early(ends: dict[tuple[str, int], int]) -> None:
        """Dead-letter the held labels whose request cannot come any more (early.py)."""
        request_ends = {p: end for (topic, p), end in ends.items() if topic == names.requests}
        for held, why in early.expired(request_ends, lambda p: order.frontier(
                (names.requests, p)), time.time()):
            await dead_letter_orphan(FetchedEvent(held.record), why)
            early.discard(held)  # after its dead letter is queued (delivery before commit)
        metrics.early_waiting.set(len(early))

    # mode's Signal.connect stubs want a `signal` keyword we receive through **kwargs.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        status.assigned = False
        order.revoke(revoked)
        early.forget((tp.topic, tp.partition) for tp in revoked)
        ledger.invalidate()  # rows may move to another worker: rebuild from what stays here

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        order.assign(assigned)
        mine = order.assigned()
        early.forget({h.tp for h in early.all()} - mine)
        status.assigned = True
        ledger.invalidate()

    return app
