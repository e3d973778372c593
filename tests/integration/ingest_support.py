"""The HTTP ingest service as a real subprocess on a free port, and a small HTTP client."""

from __future__ import annotations

import http.client
import uuid
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient

from services.streaming import topics
from services.streaming.embedded import free_port
from services.streaming.topics import TopicSpec, create_topics
from tests.integration.kafka_support import ServiceProcess

TOKEN = "test-ingest-token-0123456789"


def ingest_topic(bootstrap: str, partitions: int = 3, **configs: str) -> str:
    """Create the inference-events topic under a fresh prefix; returns the prefix."""
    prefix = f"i{uuid.uuid4().hex[:8]}."
    create_topics(AdminClient({"bootstrap.servers": bootstrap}),
                  [TopicSpec(prefix + topics.INFERENCE_EVENTS, partitions, configs)])
    return prefix


class IngestProcess(ServiceProcess):
    """`active-stream ingest` on loopback: API on `api_port`, ops on `port`."""

    def __init__(self, bootstrap: str, prefix: str, **settings: Any) -> None:
        self.api_port = free_port()
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "ACTIVE_STREAM_INGEST_HOST": "127.0.0.1",
               "ACTIVE_STREAM_INGEST_PORT": str(self.api_port),
               "ACTIVE_STREAM_INGEST_TOKEN": TOKEN,
               "ACTIVE_STREAM_INGEST_TOPIC_PREFIX": prefix,
               "ACTIVE_STREAM_INGEST_METRICS_HOST": "127.0.0.1"}
        env.update({f"ACTIVE_STREAM_INGEST_{k.upper()}": str(v) for k, v in settings.items()})
        super().__init__("ingest", env, "ACTIVE_STREAM_INGEST_METRICS_PORT")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def post(self, body: bytes, content_type: str = "application/json", *,
             token: str | None = TOKEN, headers: dict[str, str] | None = None,
             timeout_s: float = 60.0) -> tuple[int, dict[str, str], Any]:
        """POST /v1/inference-events; returns (status, headers, parsed JSON body)."""
        sent = {"Content-Type": content_type, **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=timeout_s)
        try:
            conn.request("POST", "/v1/inference-events", body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, dict(resp.getheaders()), orjson.loads(data) if data else None
        finally:
            conn.close()
