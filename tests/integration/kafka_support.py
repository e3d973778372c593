"""Helpers shared by the service integration tests: a service as a real subprocess (so SIGKILL is
real), topic readers and writers, and a metrics scraper."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from services.evaluation.processes import http_get, scrape
from services.evaluation.processes import metric as metric  # re-exported for the tests
from services.streaming.embedded import free_port

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`python -m services.cli <command>` with its own environment, log file and metrics port."""

    def __init__(self, command: str, env: dict[str, str], port: int | None = None) -> None:
        self.command = command
        self.port = port or free_port()
        self.log = Path(tempfile.mkdtemp(prefix=f"{command}-")) / "service.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", self.command],
                                         cwd=REPO, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds until /readyz answered 200; fails with the log tail otherwise."""
        started = time.monotonic()
        wait_for(lambda: self._ready(), timeout_s, f"{self.command} not ready; log:\n{self.tail()}")
        return time.monotonic() - started

    def _ready(self) -> bool:
        alive = self.proc is not None and self.proc.poll() is None
        assert alive, f"{self.command} died:\n{self.tail()}"
        try:
            return http_get(self.port, "/readyz")[0] == 200
        except OSError:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.port)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait (graceful); returns the exit code. Safe to call twice."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_for(predicate: Callable[[], Any], timeout_s: float, message: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(message)


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "allow.auto.create.topics": False,
                         "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, value=value, key=key)
    assert producer.flush(15) == 0


def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` from the beginning to its true end (partition EOF)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    remaining, out = set(meta.partitions), []
    deadline = time.monotonic() + 20
    while remaining and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                remaining.discard(msg.partition())
                continue
            raise AssertionError(msg.error())
        out.append(msg)
    consumer.close()
    return out


