"""Label Studio down: the bridge stays up but not ready, commits nothing past the tasks that
exist, drops nothing; Label Studio back (same port, same database): every request becomes
exactly one task. A second bridge reading the same requests from the start creates none."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.label_studio.server import LabelStudioServer
from services.streaming import topics
from tests.integration.kafka_support import http_get, metric, produce, wait_for
from tests.integration.label_sink_support import request
from tests.integration.label_studio_support import (
    BridgeProcess,
    client_of,
    create_project,
    start_label_studio,
    tasks_of,
    wait_tasks,
)
from tests.integration.scorer_support import committed, private_loop

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

PARTITIONS = 2


def _requests(start: int, n: int) -> list[tuple[bytes, bytes]]:
    now = time.time()
    return [(f"asset-{i}".encode(),
             request(f"r-{i}-{uuid.uuid4().hex[:4]}", "pets", "cat", at=now, asset_id=f"asset-{i}"))
            for i in range(start, start + n)]


def _ready(bridge: BridgeProcess) -> int:
    return http_get(bridge.port, "/readyz")[0]


def test_label_studio_down_means_not_ready_no_commit_no_drop_and_exactly_once_after(
    broker: Any, tmp_path: Path,
) -> None:
    data = tmp_path / "label-studio"
    server = start_label_studio(LabelStudioServer(data_dir=data))
    client = client_of(server)
    project_id = create_project(client)
    prefix = private_loop(broker.bootstrap, PARTITIONS)
    requests_topic = prefix + topics.ANNOTATION_REQUESTS
    bridge = BridgeProcess(broker.bootstrap, prefix, server, project_id, retry_max_s=1)
    group = f"{prefix}bridge"
    try:
        bridge.start().wait_ready(120)
        produce(broker.bootstrap, requests_topic, _requests(0, 10))
        wait_tasks(client, project_id, 10)
        wait_for(lambda: sum(committed(broker.bootstrap, group, requests_topic,
                                       PARTITIONS).values()) == 10, 30, "first batch uncommitted")

        server.stop()  # Label Studio goes away
        produce(broker.bootstrap, requests_topic, _requests(10, 10))
        wait_for(lambda: _ready(bridge) == 503, 30, "the bridge still says ready")
        wait_for(lambda: metric(bridge.metrics(), "label_studio_bridge_label_studio_up") == 0,
                 30, "label_studio_up is not 0")
        time.sleep(3)  # several retries long: still nothing committed past the tasks that exist
        assert sum(committed(broker.bootstrap, group, requests_topic, PARTITIONS).values()) == 10
        bridge.check()  # up all along

        server = start_label_studio(LabelStudioServer(data_dir=data, port=server.port))
        bridge.wait_ready(60)
        tasks = wait_tasks(client, project_id, 20)
        time.sleep(2)  # a duplicate would show up by now
        tasks = tasks_of(client, project_id)
        assert len(tasks) == 20
        assert len({t["data"]["request_id"] for t in tasks}) == 20
        wait_for(lambda: sum(committed(broker.bootstrap, group, requests_topic,
                                       PARTITIONS).values()) == 20, 30, "second batch uncommitted")
        assert metric(bridge.metrics(), "label_studio_bridge_api_errors_total",
                      operation="find_tasks") > 0
    finally:
        assert bridge.stop() == 0, bridge.tail()

    # Every request again, as after a crash before any commit: found, none created twice.
    again = BridgeProcess(broker.bootstrap, prefix, server, project_id,
                          group_id=f"{prefix}bridge-2", configure_project="false")
    try:
        again.start().wait_ready(120)
        wait_for(lambda: metric(again.metrics(), "label_studio_bridge_tasks_existing_total") == 20,
                 60, "the second bridge did not look the requests up")
        assert metric(again.metrics(), "label_studio_bridge_tasks_created_total") == 0
        assert len(tasks_of(client, project_id)) == 20
    finally:
        assert again.stop() == 0, again.tail()
        server.stop()
