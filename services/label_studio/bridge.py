"""The bridge service: annotation requests in, Label Studio tasks out; webhooks in, labels out.

Main loop, per consumed batch of al.annotation-requests.v1:
decode (bad -> al.annotation-requests.v1.dlq) -> look the requests' tasks up by `request_id` ->
import the missing ones, highest priority first -> commit the batch's offsets. The offsets are
committed only after Label Studio confirmed the import, so a crash anywhere re-reads the batch,
and the lookup makes the second pass create nothing twice. Label Studio down or slow: the
partitions are paused (the consumer keeps its group membership), the import retried with a
backoff doubling up to `retry_max_s`, /readyz says not ready, and nothing is committed or dropped.
Between batches: the webhook threads' task marks are written, and every `reconcile_interval_s`
a reconciliation and expiry pass runs (reconcile.py). Webhooks arrive on their own threads
(webhook.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry

from services import service_version
from services.label_studio.api import LabelStudioClient, Refused, Unavailable
from services.label_studio.frames import FrameSizes
from services.label_studio.metrics import BridgeMetrics
from services.label_studio.reconcile import Reconciler
from services.label_studio.settings import BridgeSettings
from services.label_studio.tasks import ConfigError, LabelConfig, to_task
from services.label_studio.webhook import (
    SECRET_HEADER,
    WebhookHandler,
    WebhookServer,
)
from services.label_studio.writer import DeliveryFailed, LabelWriter, RecordWriter
from services.streaming import topics
from services.streaming.events import (
    AnnotationRequest,
    InvalidEvent,
    decode_annotation_request,
    encode_dead_letter,
)
from services.streaming.ops import OpsAccess, OpsServer

log = logging.getLogger(__name__)

SERVICE = "label-studio-bridge"
WEBHOOK_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
# How long the broker may take to acknowledge a label or dead letter.
DELIVERY_TIMEOUT_S = 30.0
_FIRST_RETRY_S = 0.5
_LAG_EVERY_S = 5.0


class BridgeUnavailable(RuntimeError):
    """The bridge cannot run: Label Studio refused it (token, project, labeling config) or a
    record could not be delivered; the message says why. Nothing was committed past it."""


class Bridge:
    def __init__(self, settings: BridgeSettings, registry: CollectorRegistry | None = None) -> None:
        s = self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = BridgeMetrics(self.registry)
        self.client = LabelStudioClient(s.url, s.token, s.api_timeout_s, self.metrics.observe_api)
        self.records = RecordWriter(s.kafka.client({
            "enable.idempotence": True, "acks": "all", "linger.ms": 1,
            "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
            "allow.auto.create.topics": False}, role="producer"), DELIVERY_TIMEOUT_S)
        self.labels = LabelWriter(self.records, s.labels_topic)
        self.handler = WebhookHandler(s.project_id, s.webhook_secret, self.labels, self.records,
                                      topics.dlq(s.labels_topic), self.metrics,
                                      self._mark, s.empty_class)
        self.reconciler = Reconciler(s, self.client, self.labels, self.handler, self.metrics)
        self.webhooks = WebhookServer(self.handler, s.webhook_host, s.webhook_port)
        self.ops = OpsServer(self.registry, s.metrics_host, s.metrics_port, health=self.health,
                             ready=self.ready, access=OpsAccess.of(s))
        default = (s.frame_width, s.frame_height) if s.frame_width and s.frame_height else None
        self.frames = FrameSizes(s.kafka.client({"group.id": f"{s.group_id}-frames"},
                                                role="consumer"), default)
        self.config: LabelConfig | None = None
        self.consumer: Consumer | None = None
        self._stop = threading.Event()
        self._connected = False
        self._generation = 0  # bumped on every revocation: a batch of an older one is dropped
        self._paused = False
        self._version_set = False
        self._last_loop = time.monotonic()
        self._version = service_version()

    # -- probes -----------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        if not self.webhooks.alive():
            return False, "webhook server stopped"
        stalled = time.monotonic() - self._last_loop
        if stalled > max(60.0, 3 * self.settings.retry_max_s):
            return False, f"main loop stalled for {stalled:.0f} s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if self.consumer is None:
            return False, "starting: connecting to Label Studio"
        if not self._connected:
            return False, "Label Studio unreachable: retrying"
        return True, "ok"

    # -- life cycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        """Until stop(): returns 0. Raises BridgeUnavailable (see the class)."""
        self.ops.start()
        self.webhooks.start()
        try:
            if not self._retrying(self._connect):
                return 0
            self.consumer = Consumer(self.settings.kafka.client({
                "group.id": self.settings.group_id, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "isolation.level": "read_committed"},
                role="consumer"))
            self.consumer.subscribe([self.settings.requests_topic], on_assign=self._assigned,
                                    on_revoke=self._revoked)
            self._loop()
        except (Refused, DeliveryFailed) as exc:
            raise BridgeUnavailable(str(exc)) from None
        finally:
            self._close()
        return 0

    def _connect(self) -> None:
        s = self.settings
        try:
            project = self.client.project(s.project_id)
            self.config = LabelConfig.from_parsed(project.get("parsed_label_config") or {})
        except ConfigError as exc:
            raise BridgeUnavailable(f"project {s.project_id}: {exc}") from None
        if s.configure_project:
            # model_version is set once predictions of it exist (Label Studio refuses it before).
            self.client.update_project(s.project_id, {"show_collab_predictions": True,
                                                      "sampling": "Uncertainty sampling"})
            self._version_set = project.get("model_version") == s.model_version
        if s.webhook_url:
            spec = {"project": s.project_id, "url": s.webhook_url, "send_payload": True,
                    "send_for_all_actions": False, "actions": WEBHOOK_ACTIONS,
                    "headers": {SECRET_HEADER: s.webhook_secret.reveal()}, "is_active": True}
            same = [w for w in self.client.webhooks(s.project_id) if w.get("url") == s.webhook_url]
            self.client.save_webhook(int(same[0]["id"]) if same else None, spec)
        log.info("connected to Label Studio %s, project %d", s.url, s.project_id)

    def _close(self) -> None:
        if self._connected:  # the marks of the last webhooks, so a restart skips those labels
            try:
                self.reconciler.apply_marks()
            except (Unavailable, Refused) as exc:
                log.info("some task marks not written (their labels may be produced again, "
                         "with the same label_id): %s", exc)
        if self.consumer is not None:
            self.consumer.close()
        self.webhooks.stop()
        self.frames.close()
        self.records.close()
        self.ops.stop()

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self.consumer is not None
        s = self.settings
        next_pass = lag_at = 0.0
        while not self._stop.is_set():
            self._last_loop = time.monotonic()
            batch = self.consumer.consume(s.batch_size, s.batch_timeout_s)
            if batch:
                self._process(batch)
            if not self._retrying(self.reconciler.apply_marks):
                return
            if time.monotonic() >= next_pass:
                self._pass()
                next_pass = time.monotonic() + s.reconcile_interval_s
            if time.monotonic() >= lag_at:
                self._observe_lag()
                lag_at = time.monotonic() + _LAG_EVERY_S

    def _process(self, batch: list[Message]) -> None:
        generation = self._generation
        requests: dict[str, AnnotationRequest] = {}
        ends: dict[tuple[str, int], int] = {}
        starts: dict[tuple[str, int], int] = {}
        for msg in batch:
            if msg.error() is not None:
                continue
            tp = (msg.topic() or "", msg.partition() or 0)
            starts.setdefault(tp, msg.offset() or 0)
            ends[tp] = (msg.offset() or 0) + 1
            self.metrics.requests.inc()
            try:
                request = decode_annotation_request(msg.value() or b"")
            except InvalidEvent as exc:
                self._dead_letter(msg, exc)
                continue
            requests[request.request_id] = request
        done = self._retrying(lambda: self._ensure_tasks(list(requests.values())))
        if not done or generation != self._generation:
            self._rewind(starts)  # not committed: read again (by us or the new owner)
            return
        try:
            assert self.consumer is not None
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                                 asynchronous=False)
        except KafkaException as exc:  # a rebalance took the partitions: the owner re-reads
            log.warning("commit failed, the batch will be read again: %s", exc)

    def _ensure_tasks(self, requests: list[AnnotationRequest]) -> None:
        if not requests:
            return
        s, config = self.settings, self.config
        assert config is not None
        existing = self.client.find_tasks(s.project_id, [r.request_id for r in requests])
        new = sorted((r for r in requests if r.request_id not in existing),
                     key=lambda r: -r.priority)  # task ids in priority order within a batch
        frames = self.frames.lookup(new)
        if new:
            tasks = [to_task(r, config, s.model_version, frames.get(r.request_id)) for r in new]
            self.client.import_tasks(s.project_id, tasks)
            if s.configure_project and not self._version_set and any(
                    "predictions" in t for t in tasks):
                # The pre-labels show in the editor, and "Uncertainty sampling" orders by their
                # score, only for the project's model_version.
                self.client.update_project(s.project_id, {"model_version": s.model_version})
                self._version_set = True
        self.metrics.created.inc(len(new))
        self.metrics.existing.inc(len(requests) - len(new))

    def _pass(self) -> None:
        """Reconciliation and expiry; a failure is logged and the next pass tries again."""
        try:
            self.reconciler.reconcile()
            self.reconciler.expire()
            self._connected = True
        except Unavailable as exc:
            self._connected = False
            log.warning("reconciliation pass postponed: %s", exc)
        except DeliveryFailed as exc:
            log.warning("reconciliation pass stopped, labels not delivered: %s", exc)
        except Refused as exc:  # e.g. a task deleted while the pass read it: the next pass
            log.warning("reconciliation pass stopped: %s", exc)

    def _retrying(self, action: Callable[[], Any]) -> bool:
        """Run `action` until Label Studio answers it; False when stopped or the partitions were
        revoked meanwhile. The partitions are paused while waiting."""
        delay, generation = _FIRST_RETRY_S, self._generation
        while True:
            try:
                action()
            except Unavailable as exc:
                self._connected = False
                log.warning("Label Studio unavailable, retrying in %.1f s: %s", delay, exc)
                if not self._wait(delay) or generation != self._generation:
                    return False
                delay = min(2 * delay, self.settings.retry_max_s)
                continue
            self._connected = True
            self._resume()
            return True

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` while staying in the group (poll on paused partitions); False when
        stopped."""
        deadline = time.monotonic() + seconds
        if self.consumer is not None and not self._paused:
            self.consumer.pause(self.consumer.assignment())
            self._paused = True
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self._last_loop = time.monotonic()
            if self.consumer is None:
                self._stop.wait(min(left, 0.5))
                continue
            msg = self.consumer.poll(min(left, 0.5))
            if msg is not None and msg.error() is None:  # not paused yet: read it again later
                self._rewind({(msg.topic() or "", msg.partition() or 0): msg.offset() or 0})
        return False

    def _resume(self) -> None:
        if self.consumer is not None and self._paused:
            self.consumer.resume(self.consumer.assignment())
            self._paused = False

    def _rewind(self, starts: dict[tuple[str, int], int]) -> None:
        assert self.consumer is not None
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        for (topic, partition), offset in starts.items():
            if (topic, partition) in owned:
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._paused:
            consumer.pause(partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._generation += 1

    def _dead_letter(self, msg: Message, exc: InvalidEvent) -> None:
        self.metrics.invalid.labels(exc.code.value).inc()
        letter = encode_dead_letter(
            msg.value(), topic=msg.topic() or "", partition=msg.partition() or 0,
            offset=msg.offset() or 0, reason=exc.reason, code=exc.code, service=SERVICE,
            service_version=self._version, failed_at=time.time(), key=msg.key())
        # Delivered before the batch's offsets are committed; raises DeliveryFailed if not.
        self.records.write(topics.dlq(self.settings.requests_topic), letter, msg.key())

    def _mark(self, task_id: int, annotation_id: int, label: str) -> None:
        self.reconciler.mark_later(task_id, annotation_id, label)

    def _observe_lag(self) -> None:
        assert self.consumer is not None
        try:
            assigned = self.consumer.assignment()
            for tp in self.consumer.position(assigned):
                _, high = self.consumer.get_watermark_offsets(tp, timeout=5)
                behind = high - tp.offset if tp.offset >= 0 else 0
                self.metrics.lag.labels(str(tp.partition)).set(max(0, behind))
        except KafkaException as exc:
            log.debug("lag not observed: %s", exc)
