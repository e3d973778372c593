"""`active-stream demo --label-studio`: the demo's annotator works through Label Studio.

A local Label Studio (server.py) with one project per seed, whose labeling config offers the data
set's classes; the bridge (`active-stream label-studio`, a child process like the scorer and the
label sink) turns the scorer's requests into tasks; the oracle then answers each task the way a
person's Submit does (`POST /api/tasks/{id}/annotations`), after the label delay, unless a person
already answered it in the browser; the bridge's webhook brings each annotation back as a label.
The project's URL and the login are printed, so a person can watch, or label by hand with a
longer `--label-delay`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from services.evaluation.processes import ServiceProcess, wait_until
from services.label_studio.api import LabelStudioClient
from services.label_studio.server import USER, LabelStudioServer
from services.streaming.embedded import free_port
from services.streaming.settings import Secret

# Each wait of a round: tasks appear within a batch timeout of the request; generous for CI.
STEP_TIMEOUT_S = 120.0


def label_config(classes: Sequence[str]) -> str:
    """An image-classification labeling config with one choice per class."""
    choices = "".join(f"<Choice value={quoteattr(str(c))}/>" for c in classes)
    return ('<View><Image name="image" value="$image"/>'
            f'<Choices name="class" toName="image" showInline="true">{choices}</Choices></View>')


class LabelStudioAnnotator:
    """The annotator of `services.evaluation.kafka_loop.KafkaLoop` through Label Studio."""

    def __init__(self, workdir: Path, classes: Sequence[str],
                 say: Callable[[str], None] = print) -> None:
        self.workdir = workdir
        self.classes = [str(c) for c in classes]
        self.say = say
        self.server: LabelStudioServer | None = None
        self.client: LabelStudioClient | None = None
        self.bridge: ServiceProcess | None = None
        self.project_id = 0

    def start(self, bootstrap: str, prefix: str, seed: int) -> None:
        """A project for this seed and a bridge on its topics (Label Studio started once)."""
        if self.server is None:
            self.say("starting Label Studio (a few seconds; the first time ever it installs "
                     "itself into ~/.cache/active-stream, ~1 GB, and migrates a database)")
            self.server = LabelStudioServer(data_dir=self.workdir / "label-studio")
            self.server.start()
            self.client = LabelStudioClient(self.server.url, Secret(self.server.token), 30.0)
        assert self.client is not None and self.server is not None
        project = self.client.call("create_project", "POST", "/api/projects", {
            "title": f"active-stream demo, seed {seed + 1}",
            "label_config": label_config(self.classes)})
        self.project_id = int(project["id"])
        port = free_port()
        env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ACTIVE_STREAM_LOG_FORMAT": "json",
               "ACTIVE_STREAM_LABEL_STUDIO_URL": self.server.url,
               "ACTIVE_STREAM_LABEL_STUDIO_TOKEN": self.server.token,
               "ACTIVE_STREAM_LABEL_STUDIO_PROJECT_ID": str(self.project_id),
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_HOST": "127.0.0.1",
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_PORT": str(port),
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhook",
               "ACTIVE_STREAM_LABEL_STUDIO_WEBHOOK_SECRET": secrets.token_hex(16),
               "ACTIVE_STREAM_LABEL_STUDIO_GROUP_ID": f"{prefix}label-studio",
               "ACTIVE_STREAM_LABEL_STUDIO_TOPIC_PREFIX": prefix,
               "ACTIVE_STREAM_LABEL_STUDIO_METRICS_HOST": "127.0.0.1",
               "ACTIVE_STREAM_LABEL_STUDIO_BATCH_TIMEOUT_S": "0.05",
               "ACTIVE_STREAM_LABEL_STUDIO_RECONCILE_INTERVAL_S": "5",
               # The demo's events carry the data set's (old) event times: never expire them.
               "ACTIVE_STREAM_LABEL_STUDIO_REQUEST_TTL_S": "1e10",
               "ACTIVE_STREAM_KAFKA_FETCH_WAIT_MAX_MS": "10"}
        self.bridge = ServiceProcess("label-studio", env, "ACTIVE_STREAM_LABEL_STUDIO_METRICS_PORT",
                                     self.workdir / f"seed-{seed}" / "label-studio-bridge.log")
        self.bridge.start().wait_ready(STEP_TIMEOUT_S)
        self.say(f"Label Studio: {self.server.url}/projects/{self.project_id}  (log in as "
                 f"{USER}, password {self.server.password}; label by hand with a longer "
                 f"--label-delay)")

    def answer(self, requests: Sequence[tuple[Any, str]], check: Callable[[], None]
               ) -> dict[str, str]:
        """Annotate the tasks of `requests` ((request, true class) pairs): the true class,
        unless a person answered first. Returns request id -> the class given."""
        assert self.client is not None and self.bridge is not None
        client, bridge = self.client, self.bridge
        wanted = {request.request_id: truth for request, truth in requests}

        def found() -> dict[str, int] | None:
            bridge.check()
            check()
            tasks = client.find_tasks(self.project_id, wanted)
            return tasks if len(tasks) == len(wanted) else None

        tasks = wait_until(found, STEP_TIMEOUT_S, "the bridge to create the round's tasks")
        given = {}
        for rid, task_id in tasks.items():
            task = client.task(task_id)
            if task.get("annotations"):  # a person was faster
                result = task["annotations"][0].get("result") or [{}]
                given[rid] = (result[0].get("value") or {}).get("choices", [wanted[rid]])[0]
                continue
            client.call("annotate", "POST", f"/api/tasks/{task_id}/annotations", {
                "result": [{"from_name": "class", "to_name": "image", "type": "choices",
                            "value": {"choices": [wanted[rid]]}, "origin": "manual"}],
                "lead_time": 1.0, "project": str(self.project_id),
                "started_at": datetime.now(UTC).isoformat(timespec="milliseconds")},
                params={"project": self.project_id})
            given[rid] = wanted[rid]
        return given

    def stop_seed(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
            self.bridge = None

    def close(self) -> None:
        self.stop_seed()
        if self.server is not None:
            self.server.stop()
            self.server = None
