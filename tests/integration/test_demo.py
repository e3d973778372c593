"""`active-stream demo`: Ctrl-C (SIGINT to the demo, as a terminal sends it) stops every process
the demo started -- the broker, the scorer and the label sink -- and exits 130 with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration.kafka_support import wait_for

pytestmark = pytest.mark.broker


def _children(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(3000) % 3
    np.savez(tmp_path / "blobs.npz", X=rng.normal(size=(3000, 4)) + np.eye(3, 4)[y], y=y)
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "demo", "--dataset", str(tmp_path / "blobs.npz"),
         "--label-delay", "0.5", "--out", str(tmp_path / "out")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the broker, the scorer and the label sink are up once the first round is reported
        log = tmp_path / "out" / "services" / "seed-0" / "label-sink.log"
        wait_for(lambda: log.exists() and len(_children(demo.pid)) >= 3, 60,
                 "the demo did not start its broker and services")
        time.sleep(8)  # well into the loop: services ready, rounds running
        started = _children(demo.pid)
        assert demo.poll() is None, demo.stderr.read() if demo.stderr else ""
        demo.send_signal(signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, err.decode()[-2000:]
    assert "interrupted; every service and the broker are stopped" in err.decode()
    assert "Traceback" not in err.decode()
    wait_for(lambda: not any(_alive(p) for p in started), 10,
             f"left running after Ctrl-C: {[p for p in started if _alive(p)]}")
