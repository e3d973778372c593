"""`active-stream demo --label-studio`: the closed loop with the oracle annotating through a real
Label Studio. Every label the trainer used was an annotation in Label Studio's project."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.label_studio.server import LabelStudioServer
from tests.integration.label_studio_support import client_of, start_label_studio, tasks_of

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]


def test_the_demo_annotates_through_label_studio(tmp_path: Path) -> None:
    start_label_studio(LabelStudioServer()).stop()  # skip (or fail in CI) without Label Studio
    rng = np.random.default_rng(0)
    y = np.arange(400) % 3
    np.savez(tmp_path / "blobs.npz", X=rng.normal(size=(400, 4)) + 2 * np.eye(3, 4)[y], y=y)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--label-studio", "--dataset",
         str(tmp_path / "blobs.npz"), "--label-delay", "0", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=540, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"Label Studio: (http://127\.0\.0\.1:\d+)/projects/(\d+)", done.stderr)
    assert match, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    labels = int(results["strategies"]["active-stream"]["labels_used"])
    assert labels == results["settings"]["label_cap"] > 0

    # The project is still there in the demo's Label Studio directory: one annotated task per
    # label the loop used, each answered with one of the data set's classes.
    server = start_label_studio(LabelStudioServer(data_dir=out / "services" / "label-studio"))
    try:
        tasks = tasks_of(client_of(server), int(match.group(2)))
    finally:
        server.stop()
    annotated = [t for t in tasks if t["annotations"]]
    assert len(annotated) == labels
    for task in annotated:
        (annotation,) = task["annotations"]
        assert annotation["result"][0]["value"]["choices"][0] in {"0", "1", "2"}
        assert task["meta"]["active_stream_labels"]  # the bridge made a label of it
