"""The HTTP ingest service: an aiohttp app in front of an acknowledging Kafka producer.

`POST /v1/inference-events` (docs/ingest.md, services/ingest/openapi.json):

1. `Authorization: Bearer <token>` or 401; a declared Content-Length over the limit is a 413
   before the body is read (and a body that grows past it while read, too).
2. The body becomes one byte string per event (body.py); each is checked by the scorer's own
   batch decoder (`decode_inference_batch`), so an event is accepted here exactly when the scorer
   would accept it, with the scorer's reason code when not.
3. If the valid events would take the producer past `max_in_flight_events`, 429 + Retry-After
   and nothing of the request is produced. Else each is produced keyed by its asset_id (murmur2,
   the loop's rule: `KafkaSettings.client(role="producer")`), and the answer waits for the
   broker's acknowledgement of every one: 200 when all were stored, 503 + Retry-After when some
   were not (those are `failed` in the results, for the client to send again).

Why aiohttp: it is installed already (faust depends on it: no new dependency); its event loop
waits on every in-flight request's deliveries (up to the delivery timeout) without a thread
each; it enforces the body limit while reading; and in bench/ingest.py it answered small
requests ~2x as fast as the stdlib's ThreadingHTTPServer (2,164 vs 1,119 requests/s, 1 event
each), the same for 100-event requests where the decoder's work dominates (docs/ingest.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import KafkaException
from prometheus_client import CollectorRegistry

from services.ingest.body import BodyError, split_events
from services.ingest.metrics import IngestMetrics
from services.ingest.producer import AckingProducer, Delivered
from services.ingest.settings import IngestSettings
from services.streaming.inference_batch import DecodedBatch, decode_inference_batch
from services.streaming.ops import OpsAccess, OpsServer

log = logging.getLogger(__name__)

PATH = "/v1/inference-events"
_JSON = "application/json"
# The event loop ticks this often; /healthz fails when it has not ticked for _STALL_S (a handler
# that blocks the loop would otherwise leave every request hanging while the probe says ok).
_TICK_S = 1.0
_STALL_S = 10.0
# Grace added to the delivery timeout before a delivery report is taken as lost: librdkafka
# reports every record by message.timeout.ms, so this only guards against a bug.
_REPORT_GRACE_S = 5.0
# Metadata requests at start-up: the broker answers in milliseconds; 15 s covers a slow start.
_METADATA_TIMEOUT_S = 15.0


class IngestUnavailable(RuntimeError):
    """The service cannot start (broker unreachable, topic missing); the message says why."""


def openapi_document(max_events: int | None = None) -> bytes:
    """The committed OpenAPI document; with `max_events`, the batch length this instance takes
    in place of the default (what /openapi.json serves)."""
    document = resources.files("services.ingest").joinpath("openapi.json").read_bytes()
    if max_events is None:
        return document
    parsed = orjson.loads(document)
    for media in parsed["paths"][PATH]["post"]["requestBody"]["content"].values():
        media["schema"]["maxItems"] = max_events
    return orjson.dumps(parsed)


def producer_config(settings: IngestSettings) -> dict[str, Any]:
    """The producer: idempotent, acks from all in-sync replicas, a delivery timeout, and a queue
    larger than the in-flight bound so librdkafka's own limit is never what refuses a record."""
    return settings.kafka.client({
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,  # a request's events are produced at once: lingering only adds latency
        "message.timeout.ms": int(settings.delivery_timeout_s * 1000),
        "queue.buffering.max.messages": settings.max_in_flight_events + settings.max_events,
        "allow.auto.create.topics": False,
    }, role="producer")


class Ingest:
    """The request handler and the state it shares across requests."""

    def __init__(self, settings: IngestSettings, producer: AckingProducer,
                 metrics: IngestMetrics) -> None:
        self.settings = settings
        self.producer = producer
        self.metrics = metrics
        self.access = OpsAccess(mode="bearer", token=settings.token)
        self.last_tick = time.monotonic()

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            response = await self._handle(request)
        finally:
            self.metrics.duration.observe(time.perf_counter() - started)
        self.metrics.requests.labels(str(response.status)).inc()
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        s = self.settings
        if not self.access.allows(request.headers.get("Authorization")):
            return self._error(401, "unauthorized", "missing or wrong bearer token",
                               {"WWW-Authenticate": "Bearer"})
        if request.content_length is not None and request.content_length > s.max_body_bytes:
            return self._too_large(request.content_length)
        try:
            body = await asyncio.wait_for(request.read(), s.read_timeout_s)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large(None)
        except TimeoutError:
            return self._error(408, "timeout", f"body not received within {s.read_timeout_s} s")
        try:
            values = split_events(body, request.headers.get("Content-Type"), s.max_events)
        except BodyError as exc:
            return self._error(exc.status, exc.code, exc.detail)
        batch = decode_inference_batch(values)
        keys = _asset_ids(batch)
        if self.producer.in_flight + len(keys) > s.max_in_flight_events:
            return self._error(429, "backpressure", "too many events awaiting the broker; "
                               "retry later", {"Retry-After": str(s.retry_after_s)})
        results = await self._produce(values, batch.index, keys)
        for position, invalid in batch.errors:
            self.metrics.rejected.labels(invalid.code.value).inc()
            results[position] = {"index": position, "status": "rejected",
                                 "code": invalid.code.value, "field": invalid.field,
                                 "reason": invalid.reason}
        return self._answer(results)

    async def _produce(self, values: Sequence[bytes], index: Sequence[int],
                       keys: Sequence[str]) -> dict[int, dict[str, Any]]:
        """Produce the valid events and wait for every delivery report; one result each."""
        topic = self.settings.topic
        futures: list[asyncio.Future[Delivered]] = []
        for position, key in zip(index, keys, strict=True):
            try:
                futures.append(self.producer.produce(topic, values[position], key.encode()))
            except (BufferError, KafkaException) as exc:  # nothing of this event was queued
                futures.append(_failed(exc))
        if futures:
            await asyncio.wait(futures, timeout=self.settings.delivery_timeout_s + _REPORT_GRACE_S)
        results: dict[int, dict[str, Any]] = {}
        for position, future in zip(index, futures, strict=True):
            outcome = _outcome(future)
            if isinstance(outcome, Delivered):
                self.metrics.accepted.inc()
                results[position] = {"index": position, "status": "accepted",
                                     "partition": outcome.partition, "offset": outcome.offset}
            else:
                self.metrics.failed.inc()
                log.warning("event not delivered: %s", outcome)
                results[position] = {"index": position, "status": "failed",
                                     "code": "not_delivered", "reason": str(outcome)}
        return results

    def _answer(self, results: dict[int, dict[str, Any]]) -> web.Response:
        ordered = [results[i] for i in range(len(results))]
        counts = {"accepted": 0, "rejected": 0, "failed": 0}
        for result in ordered:
            counts[result["status"]] += 1
        status, headers = 200, None
        if counts["failed"]:
            status, headers = 503, {"Retry-After": str(self.settings.retry_after_s)}
        return web.Response(status=status, body=orjson.dumps({**counts, "results": ordered}),
                            content_type=_JSON, headers=headers)

    def _too_large(self, size: int | None) -> web.Response:
        limit = self.settings.max_body_bytes
        what = f"{size} bytes" if size is not None else "the body"
        return self._error(413, "too_large", f"{what} over the limit of {limit} bytes")

    def _error(self, status: int, code: str, detail: str,
               headers: dict[str, str] | None = None) -> web.Response:
        self.metrics.request_errors.labels(code).inc()
        body = orjson.dumps({"error": code, "detail": detail})
        return web.Response(status=status, body=body, content_type=_JSON, headers=headers)

    async def tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(_TICK_S)

    def health(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self.last_tick
        if stalled > _STALL_S:
            return False, f"event loop stalled for {stalled:.0f} s"
        return True, "ok"


def _asset_ids(batch: DecodedBatch) -> list[str]:
    """The asset_id of each valid event, in `batch.index` order."""
    keys: list[str] = []
    for part in batch.parts:
        if isinstance(part, list):
            keys.extend(event.asset_id for event in part)
        else:
            keys.extend(part.asset_ids)
    return keys


def _outcome(future: asyncio.Future[Delivered]) -> Delivered | BaseException:
    if not future.done():  # no report in time (module constant _REPORT_GRACE_S): a bug guard
        future.cancel()
        return TimeoutError("no delivery report in time; the event may still be stored")
    return future.exception() or future.result()


def _failed(exc: BaseException) -> asyncio.Future[Delivered]:
    future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
    future.set_exception(exc)
    return future


def build_app(ingest: Ingest) -> web.Application:
    app = web.Application(client_max_size=ingest.settings.max_body_bytes)
    document = openapi_document(ingest.settings.max_events)

    async def serve_openapi(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type=_JSON)

    app.router.add_post(PATH, ingest.handle)
    app.router.add_get("/openapi.json", serve_openapi)
    return app


async def serve(settings: IngestSettings, registry: CollectorRegistry | None = None,
                stop: asyncio.Event | None = None) -> int:
    """Run until `stop` is set (SIGINT/SIGTERM set it when None is given): stop taking
    requests, let those in progress get their answers, flush the producer."""
    loop = asyncio.get_running_loop()
    registry = registry if registry is not None else CollectorRegistry()
    metrics = IngestMetrics(registry)
    producer = AckingProducer(producer_config(settings), loop)
    try:
        await loop.run_in_executor(None, producer.partitions, settings.topic, _METADATA_TIMEOUT_S)
    except KafkaException as exc:
        producer.close(0)
        raise IngestUnavailable(f"topic {settings.topic} is not available on "
                                f"{settings.kafka.bootstrap_servers} ({exc.args[0]}): is the "
                                f"cluster reachable, and the topic created (`active-stream "
                                f"topics create`)?") from None
    metrics.in_flight.set_function(lambda: producer.in_flight)
    ingest = Ingest(settings, producer, metrics)
    ticker = asyncio.create_task(ingest.tick())
    runner = web.AppRunner(build_app(ingest), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    ready = [True]
    ops = OpsServer(registry, settings.metrics_host, settings.metrics_port,
                    health=ingest.health,
                    ready=lambda: (ready[0], "ok" if ready[0] else "stopping"),
                    access=OpsAccess.of(settings)).start()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    log.info("ingest listening on %s:%s, producing to %s", settings.host, settings.port,
             settings.topic)
    try:
        await stop.wait()
    finally:
        ready[0] = False
        # runner.cleanup() stops listening, then waits for the handlers in progress (their
        # deliveries included) before closing connections.
        await runner.cleanup()
        ticker.cancel()
        left = await loop.run_in_executor(None, producer.close, settings.delivery_timeout_s)
        ops.stop()
        if left:
            log.error("%d events were still unacknowledged at shutdown", left)
    return 0


def run(settings: IngestSettings) -> int:
    return asyncio.run(serve(settings))
