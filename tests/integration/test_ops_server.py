"""The ops endpoints over real HTTP on loopback."""

from __future__ import annotations

import urllib.error

import pytest
from prometheus_client import CollectorRegistry, Counter

from services.streaming.ops import OpsServer
from tests.integration.kafka_support import http_get


def test_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    events = Counter("demo_events_consumed_total", "Events consumed.", registry=registry)
    events.inc(7)
    state = {"ready": False}
    server = OpsServer(registry, "127.0.0.1", 0,
                       ready=lambda: (state["ready"], "ready" if state["ready"] else "restoring"))
    server.start()
    try:
        status, body = http_get(server.port, "/metrics")
        assert status == 200 and "demo_events_consumed_total 7.0" in body
        assert http_get(server.port, "/healthz") == (200, "ok\n")
        assert http_get(server.port, "/readyz") == (503, "restoring\n")
        state["ready"] = True
        assert http_get(server.port, "/readyz") == (200, "ready\n")
        assert http_get(server.port, "/nope")[0] == 404
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        http_get(server.port, "/healthz")
