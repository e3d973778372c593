"""The services as child processes of the closed loop (`kafka_loop.py`): `active-stream scorer` and
`active-stream label-sink`, each with its own environment, log file and metrics port, scraped
over HTTP like Prometheus would. Stopped with SIGTERM (graceful), killed if they do not stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from services.streaming.embedded import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class ServiceDied(RuntimeError):
    """A service exited while the loop needed it; the message holds its log tail."""


class ServiceProcess:
    """`python -m services.cli COMMAND` with `env` on top of this process's environment.

    `started` lists every instance started in this process, so a caller that fails half-way
    (a test's assertion) can still reap what it started (`kill_leftovers`)."""

    started: list[ServiceProcess] = []

    def __init__(self, command: str, env: dict[str, str], port_var: str,
                 log: Path | None = None) -> None:
        """`port_var`: the variable naming the service's metrics port (a free port is put in
        it); `log`: where its output goes (a new temp dir when None)."""
        self.command = command
        self.port = free_port()
        self.log = log or Path(tempfile.mkdtemp(prefix=f"{command}-")) / "service.log"
        self.env = {**os.environ, **env, port_var: str(self.port)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            # Own session: a Ctrl-C at the terminal reaches the loop, which stops us in order.
            self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", self.command],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        ServiceProcess.started.append(self)
        return self

    @classmethod
    def kill_leftovers(cls, keep: list[ServiceProcess] | None = None) -> list[str]:
        """SIGKILL every started instance still running except those in `keep`; returns their
        commands. Forgets the ones that are no longer running."""
        kept = keep or []
        left = [p for p in cls.started if p.alive() and not any(p is k for k in kept)]
        for p in left:
            p.kill()
        cls.started[:] = [p for p in cls.started if p.alive()]
        return [p.command for p in left]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise ServiceDied (with the log tail) if the process has exited."""
        if not self.alive():
            raise ServiceDied(f"{self.command} exited; log tail:\n{self.tail()}")

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds until /readyz answered 200."""
        started = time.monotonic()
        wait_until(lambda: self._ready(), timeout_s, f"{self.command} not ready", self.check)
        return time.monotonic() - started

    def _ready(self) -> bool:
        try:
            return http_get(self.port, "/readyz")[0] == 200
        except OSError:
            return False

    def metrics(self) -> Samples:
        self.check()
        return scrape(self.port)

    def kill(self) -> None:
        """SIGKILL (a crash, for tests) and reap."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL past `timeout_s`. Returns the exit code. Idempotent."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str,
               check: Callable[[], None] | None = None, poll_s: float = 0.02) -> Any:
    """Poll `predicate` until it is truthy (returned) or `timeout_s` passes (TimeoutError
    naming `what`); `check` runs between polls to fail fast (e.g. a service died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> Samples:
    """Every sample of /metrics by (name, sorted labels)."""
    _, text = http_get(port, "/metrics")
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
