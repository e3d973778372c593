"""The endpoint Label Studio's webhooks call: `POST /webhook` (any path is accepted).

- The `X-Active-Stream-Secret` header must carry the shared secret (constant-time compare): 401.
- A body that is not a webhook Label Studio sends (not JSON, wrong shapes, a label the contract
  refuses) is answered 400 and dead-lettered with its bytes and reason to al.labels.v1.dlq,
  source topic `label-studio.webhook`; the bridge stays up.
- ANNOTATION_CREATED / ANNOTATION_UPDATED of the bridge's project become a label (labels.py),
  produced and acknowledged before the 200; a replay of the same annotation version is counted
  once (`duplicate`). Other actions and projects are answered 200 and ignored.
- A label the broker did not acknowledge is answered 503; the reconciliation pass will find the
  annotation again.
Label Studio sends each webhook once with a 1 s timeout and drops it on failure: the
reconciliation pass (bridge.py), not a retry, is what makes a lost webhook harmless.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from services import service_version
from services.label_studio.labels import BadAnnotation, Skip, to_label
from services.label_studio.metrics import BridgeMetrics
from services.label_studio.writer import DeliveryFailed, LabelWriter, RecordWriter
from services.streaming.events import ErrorCode, encode_dead_letter
from services.streaming.settings import Secret

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Active-Stream-Secret"
WEBHOOK_SOURCE = "label-studio.webhook"
LABEL_ACTIONS = frozenset({"ANNOTATION_CREATED", "ANNOTATION_UPDATED"})
# A webhook is ~4 KB (measured); an annotation with a thousand regions stays well under 4 MiB.
MAX_BODY_BYTES = 4 * 1024 * 1024
# Label Studio sends the whole body at once: 10 s frees a thread held by a stalled client.
READ_TIMEOUT_S = 10.0

# (task id, annotation id, label id) of labels produced: the bridge marks the task with them.
Marker = Callable[[int, int, str], None]


class WebhookHandler:
    """What a webhook call does, apart from HTTP: returns (status, outcome)."""

    def __init__(self, project_id: int, secret: Secret, labels: LabelWriter,
                 records: RecordWriter, dlq_topic: str, metrics: BridgeMetrics,
                 mark: Marker, empty_class: str = "") -> None:
        self.project_id, self.secret, self.labels = project_id, secret, labels
        self.records, self.dlq_topic, self.metrics = records, dlq_topic, metrics
        self.mark, self.empty_class = mark, empty_class
        self.version = service_version()

    def handle(self, secret: str | None, body: bytes) -> tuple[int, str]:
        status, outcome = self._handle(secret, body)
        self.metrics.webhooks.labels(outcome).inc()
        return status, outcome

    def _handle(self, secret: str | None, body: bytes) -> tuple[int, str]:
        if not hmac.compare_digest((secret or "").encode(), self.secret.reveal().encode()):
            return 401, "unauthorized"
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return self._invalid(body, ErrorCode.NOT_JSON, f"not JSON: {exc}")
        if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
            return self._invalid(body, ErrorCode.WRONG_TYPE, "expected an object with action")
        if payload["action"] not in LABEL_ACTIONS:
            return 200, "ignored"
        project = payload.get("project")
        project_id = project.get("id") if isinstance(project, dict) else project
        if type(project_id) is not int:
            return self._invalid(body, ErrorCode.MISSING_FIELD, "no project id")
        if project_id != self.project_id:
            return 200, "foreign"
        annotation, task = payload.get("annotation"), payload.get("task")
        try:
            value = to_label(self.project_id, annotation, task, self.empty_class)
        except Skip as skip:
            return 200, skip.outcome
        except BadAnnotation as exc:
            return self._invalid(body, exc.code, str(exc))
        label = orjson.loads(value)
        try:
            produced = self.labels.write(label["label_id"], label["asset_id"], value)
        except DeliveryFailed as exc:
            log.warning("label %s not delivered: %s", label["label_id"], exc)
            return 503, "failed"
        if not produced:
            return 200, "duplicate"
        self.metrics.labels.labels("webhook").inc()
        assert isinstance(task, dict) and isinstance(annotation, dict)  # to_label checked them
        self.mark(int(task["id"]), int(annotation["id"]), label["label_id"])
        return 200, "produced"

    def _invalid(self, body: bytes, code: ErrorCode, reason: str) -> tuple[int, str]:
        self._dead_letter(body, code, reason)
        return 400, "invalid"

    def dead_letter_annotation(self, annotation: Any, task: Any, exc: BadAnnotation) -> None:
        """For the reconciliation pass: an annotation read over the API that makes no label."""
        body = orjson.dumps({"action": "RECONCILIATION", "annotation": annotation,
                             "task": task})
        self._dead_letter(body, exc.code, str(exc))

    def _dead_letter(self, body: bytes, code: ErrorCode, reason: str) -> None:
        """Best effort: a dead letter the broker refuses is logged (the webhook is answered 400
        either way, and Label Studio keeps the annotation)."""
        letter = encode_dead_letter(body, topic=WEBHOOK_SOURCE, partition=0, offset=0,
                                    reason=reason, code=code, service="label-studio-bridge",
                                    service_version=self.version, failed_at=time.time())
        try:
            self.records.write(self.dlq_topic, letter, None)
        except DeliveryFailed as exc:
            log.error("dead letter of a bad annotation not delivered: %s", exc)
        log.warning("bad annotation dead-lettered: %s", reason)


class WebhookServer:
    """HTTP server on daemon threads (one per connection). `port=0` picks a free port."""

    def __init__(self, handler: WebhookHandler, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _http_handler(handler))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhooks",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def _http_handler(handler: WebhookHandler) -> type:
    class Handler(BaseHTTPRequestHandler):
        timeout = READ_TIMEOUT_S

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(411, {"error": "Content-Length required"})
                return
            if length > MAX_BODY_BYTES or length < 0:
                self._send(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                return
            body = self.rfile.read(length)
            status, outcome = handler.handle(self.headers.get(SECRET_HEADER), body)
            self._send(status, {"outcome": outcome})

        def _send(self, status: int, answer: dict[str, Any]) -> None:
            data = orjson.dumps(answer)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Every annotation calls in: the bridge logs outcomes, not requests."""

    return Handler
