"""The embedded broker as a user meets it: `active-stream broker`, `topics create`, and a real
produce/consume round trip over a loopback socket."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from services.streaming.embedded import EmbeddedBroker
from services.streaming.topics import INFERENCE_EVENTS, loop_topics
from tests.conftest import TEST_GROUP_TIMINGS

pytestmark = pytest.mark.broker


@pytest.fixture(scope="session")
def broker(tansu: EmbeddedBroker) -> EmbeddedBroker:
    """This module is about the embedded broker, whichever broker the suite runs on."""
    return tansu

CLI = [sys.executable, "-m", "services.cli"]
ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    """True while `pid` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _start_cli_broker(*args: str) -> tuple[subprocess.Popen[str], str, int]:
    """Start `active-stream broker`; returns (process, bootstrap, tansu pid) once it is serving."""
    proc = subprocess.Popen([*CLI, "broker", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("bootstrap: "):
            break
    text = "".join(lines)
    found = re.search(r"^bootstrap: (127\.0\.0\.1:\d+)$", text, re.M)
    pid = re.search(r"pid (\d+)", text)
    assert found and pid, f"unexpected broker output:\n{text}\n{proc.stderr}"
    return proc, found.group(1), int(pid.group(1))


def _partition_counts(bootstrap: str) -> dict[str, int]:
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return {name: len(meta.partitions) for name, meta in topics.items()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_broker_serves_every_topic_and_stops_leaving_no_process(sig: signal.Signals) -> None:
    proc, bootstrap, tansu_pid = _start_cli_broker("--partitions", "3")
    try:
        expected = {spec.name: spec.partitions for spec in loop_topics(3)}
        counts = _partition_counts(bootstrap)
        assert {name: counts.get(name) for name in expected} == expected
        assert _alive(tansu_pid)
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "broker stopped" in out
    assert _wait_gone(tansu_pid), "the Tansu process outlived `active-stream broker`"


def test_broker_dies_with_a_killed_parent() -> None:
    proc, _, tansu_pid = _start_cli_broker()
    proc.kill()
    proc.wait(10)
    assert _wait_gone(tansu_pid), "SIGKILL of the CLI left the Tansu process running"


def test_cli_broker_on_a_fixed_port() -> None:
    with EmbeddedBroker() as probe:  # find a port that is free, then release it
        port = int(probe.bootstrap.rsplit(":", 1)[1])
    proc, bootstrap, tansu_pid = _start_cli_broker("--port", str(port))
    try:
        assert bootstrap == f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    assert _wait_gone(tansu_pid)


def test_topics_create_is_idempotent_and_reports_mismatches(broker: EmbeddedBroker) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "topics", "create", "--bootstrap", broker.bootstrap, *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    again = run()
    assert again.returncode == 0, again.stderr
    assert re.search(rf"exists\s+{re.escape(INFERENCE_EVENTS)}\s+partitions=4", again.stdout)
    assert "created" not in again.stdout

    other = run("--partitions", "2")
    assert other.returncode == 1
    assert "has 4 partitions, expected 2; left unchanged" in other.stdout
    assert _partition_counts(broker.bootstrap)[INFERENCE_EVENTS] == 4


def test_no_cluster_configured_is_one_line_not_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items()
           if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.startswith("ACTIVE_STREAM_KAFKA_")}
    result = subprocess.run([*CLI, "topics", "create"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "active-stream broker" in lines[0] and "KAFKA_BOOTSTRAP_SERVERS" in lines[0]


def test_round_trip_over_a_real_socket(broker: EmbeddedBroker, unique_topic: str) -> None:
    from confluent_kafka.admin import NewTopic

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(unique_topic, 2, 1)])[unique_topic].result(10)
    producer = Producer({"bootstrap.servers": broker.bootstrap,
                         "allow.auto.create.topics": False})
    sent = {f"asset-{i}".encode(): f'{{"n": {i}}}'.encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce(unique_topic, value, key)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic,
                         "auto.offset.reset": "earliest", **TEST_GROUP_TIMINGS})
    consumer.subscribe([unique_topic])
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    try:
        while len(got) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.5):
                assert msg.error() is None, msg.error()
                got[msg.key()] = msg.value()
    finally:
        consumer.close()
    assert got == sent


def test_dead_letter_topics_take_records_larger_than_a_megabyte(broker: EmbeddedBroker) -> None:
    """A 1 MB bad payload becomes a ~1.4 MB dead letter (base64); its .dlq must accept it."""
    from confluent_kafka.admin import ConfigResource

    from services.streaming.topics import DLQ_MAX_MESSAGE_BYTES, dlq

    topic = dlq(INFERENCE_EVENTS)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(10)
    assert configs["max.message.bytes"].value == str(DLQ_MAX_MESSAGE_BYTES)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "allow.auto.create.topics": False,
                         "message.max.bytes": DLQ_MAX_MESSAGE_BYTES})
    errors: list[object] = []
    producer.produce(topic, b"x" * 1_400_000, b"big",
                     on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(20) == 0
    assert errors == [None]
