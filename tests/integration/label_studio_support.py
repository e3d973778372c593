"""Label Studio for the integration tests: the real server (services/label_studio/server.py), a
project, a person who annotates through its API as the browser would, and the bridge as a real
subprocess.

Where Label Studio cannot be installed or started the tests skip with the reason, except under
ACTIVE_STREAM_REQUIRE_APACHE_KAFKA=1 (CI), where they fail: the suite's peers are required there.
"""

from __future__ import annotations

import base64
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.label_studio.api import LabelStudioClient
from services.label_studio.server import LabelStudioServer, LabelStudioUnavailable
from services.streaming.embedded import free_port
from services.streaming.settings import Secret
from tests.conftest import REQUIRE_ENV, TEST_GROUP_TIMINGS
from tests.integration.kafka_support import ServiceProcess

CLASSES = ("cat", "dog", "bird")
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<Choices name="class" toName="image" showInline="true">'
    + "".join(f'<Choice value="{c}"/>' for c in CLASSES) + "</Choices>"
    '<RectangleLabels name="box" toName="image">'
    + "".join(f'<Label value="{c}"/>' for c in CLASSES) + "</RectangleLabels></View>")
WEBHOOK_SECRET = "test-webhook-secret-0123"


FRAME = (96, 64)


def box_of(index: int) -> tuple[int, int, int, int]:
    """The box (x, y, width, height, pixels) of the object in picture `index`."""
    return 8 + (index * 13) % 40, 8 + (index * 7) % 20, 40, 30


def image_uri(index: int, color: tuple[int, int, int]) -> str:
    """A small PNG as a data: URI (well under the contract's 2,048 characters): a light frame
    of FRAME pixels with a box of `color` at `box_of(index)`, so pages show real pictures."""
    width, height = FRAME
    x0, y0, w, h = box_of(index)
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type: none
        for x in range(width):
            inside = x0 <= x < x0 + w and y0 <= y < y0 + h
            row += bytes(color) if inside else b"\xee\xee\xe4"
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
           + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def unavailable(reason: str) -> None:
    """Skip, or fail where the peers are required (CI)."""
    if required():
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
    pytest.skip(reason)


def start_label_studio(server: LabelStudioServer) -> LabelStudioServer:
    try:
        server.start()
    except LabelStudioUnavailable as exc:
        unavailable(f"Label Studio cannot run here: {exc}")
    return server


@pytest.fixture(scope="session")
def label_studio() -> Iterator[LabelStudioServer]:
    """One Label Studio for the session (started from a copy of the migrated template)."""
    server = start_label_studio(LabelStudioServer())
    try:
        yield server
    finally:
        server.stop()


def client_of(server: LabelStudioServer) -> LabelStudioClient:
    return LabelStudioClient(server.url, Secret(server.token), timeout_s=30)


def create_project(client: LabelStudioClient, config: str = LABEL_CONFIG) -> int:
    project = client.call("create_project", "POST", "/api/projects",
                          {"title": f"active-stream {uuid.uuid4().hex[:6]}",
                           "label_config": config})
    return int(project["id"])


def tasks_of(client: LabelStudioClient, project_id: int) -> list[dict[str, Any]]:
    """Every task of the project, predictions and annotations included."""
    out: list[dict[str, Any]] = []
    page = 1
    while True:
        answer = client.call("tasks", "GET", "/api/tasks", params={
            "project": project_id, "fields": "all", "page": page, "page_size": 100})
        out += answer["tasks"]
        if len(out) >= answer["total"] or not answer["tasks"]:
            return out
        page += 1


def annotate(client: LabelStudioClient, task: dict[str, Any], result: list[dict[str, Any]],
             lead_time: float = 3.5) -> dict[str, Any]:
    """What the editor sends when a person presses Submit (its request, as the browser makes it:
    the result, the prediction it started from, the time spent)."""
    predictions = task.get("predictions") or []
    body = {"result": result, "lead_time": lead_time, "draft_id": 0,
            "parent_prediction": predictions[0]["id"] if predictions else None,
            "project": str(task["project"]),
            "started_at": datetime.now(UTC).isoformat(timespec="milliseconds")}
    answer = client.call("annotate", "POST", f"/api/tasks/{task['id']}/annotations",
                         body, params={"project": task["project"]})
    return dict(answer)


def choose(task: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The result of clicking the choice `name`."""
    return [{"id": uuid.uuid4().hex[:10], "from_name": "class", "to_name": "image",
             "type": "choices", "value": {"choices": [name]}, "origin": "manual"}]


class BridgeProcess(ServiceProcess):
    """`active-stream label-studio` against `server`'s project, on private topics."""

    def __init__(self, bootstrap: str, prefix: str, server: LabelStudioServer, project_id: int,
                 **settings: Any) -> None:
        self.webhook_port = free_port()
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "ACTIVE_STREAM_LABEL_STUDIO_URL": server.url,
               "ACTIVE_STREAM_LABEL_STUDIO_TOKEN": server.token,
               "ACTIVE_STREAM_LABEL_STUDIO_PROJECT_ID": str(project_id),
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_HOST": "127.0.0.1",
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_PORT": str(self.webhook_port),
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_SECRET": WEBHOOK_SECRET,
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_URL":
                   f"http://127.0.0.1:{self.webhook_port}/webhook",
               "ACTIVE_STREAM_LABEL_STUDIO_GROUP_ID": f"{prefix}bridge",
               "ACTIVE_STREAM_LABEL_STUDIO_TOPIC_PREFIX": prefix,
               "ACTIVE_STREAM_LABEL_STUDIO_METRICS_HOST": "127.0.0.1",
               "ACTIVE_STREAM_LABEL_STUDIO_BATCH_TIMEOUT_S": "0.2",
               "ACTIVE_STREAM_LABEL_STUDIO_RECONCILE_INTERVAL_S": "2",
               "ACTIVE_STREAM_LABEL_STUDIO_RETRY_MAX_S": "2"}
        for key, value in TEST_GROUP_TIMINGS.items():
            env["ACTIVE_STREAM_KAFKA_" + key.upper().replace(".", "_")] = str(value)
        env.update({f"ACTIVE_STREAM_LABEL_STUDIO_{k.upper()}": str(v)
                    for k, v in settings.items()})
        super().__init__("label-studio", env, "ACTIVE_STREAM_LABEL_STUDIO_METRICS_PORT")


def wait_tasks(client: LabelStudioClient, project_id: int, n: int,
               timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = tasks_of(client, project_id)
        if len(tasks) >= n:
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(tasks)} of {n} tasks in project {project_id}")
        time.sleep(0.3)
