"""Helpers for the label sink integration tests: topics under a private prefix, the sink as a real
subprocess (so SIGKILL is real), event builders, topic readers and a metrics scraper."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from services.streaming import topics
from services.streaming.embedded import free_port
from services.streaming.events import encode_event
from services.streaming.topics import TopicSpec, create_topics

REPO = Path(__file__).resolve().parents[2]


def create_sink_topics(bootstrap: str, prefix: str, partitions: int = 4) -> None:
    data = [topics.LABELS, topics.ANNOTATION_REQUESTS]
    control = [topics.RETRAIN_TRIGGERS, topics.CLASS_FEEDBACK]
    specs = [TopicSpec(prefix + t, partitions) for t in data]
    specs += [TopicSpec(prefix + t, 1) for t in control]
    specs += [TopicSpec(topics.dlq(prefix + t), 1) for t in data]
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), specs)


class SinkProcess:
    """`python -m services.label_sink` with a private app id, topic prefix and metrics port."""

    def __init__(self, bootstrap: str, app_id: str, prefix: str, **options: Any) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkdtemp(prefix="label-sink-")) / "sink.log"
        env = dict(os.environ)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ACTIVE_STREAM_LABEL_SINK_APP_ID": app_id,
            "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
            "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT": str(self.port),
            "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": prefix,
            "ACTIVE_STREAM_LABEL_SINK_SESSION_TIMEOUT_S": "6",
            "ACTIVE_STREAM_LABEL_SINK_HEARTBEAT_INTERVAL_S": "1",
            "ACTIVE_STREAM_LABEL_SINK_FEEDBACK_INTERVAL_S": "0.5",
            "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": str(self.log.parent),
        })
        env.update({f"ACTIVE_STREAM_LABEL_SINK_{k.upper()}": str(v) for k, v in options.items()})
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkProcess:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "services.label_sink"], cwd=REPO,
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds until /readyz answered 200; fails with the log tail otherwise."""
        started = time.monotonic()
        wait_for(lambda: self._ready(), timeout_s, f"sink not ready; log:\n{self.tail()}")
        return time.monotonic() - started

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"sink died:\n{self.tail()}"
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


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples by (name, sorted labels)."""
    _, text = http_get(port, "/metrics")
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


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
    from confluent_kafka import TopicPartition

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


def label(label_id: str, classes: list[str], *, at: float, request_id: str | None = None,
          model_id: str | None = None, asset_id: str | None = None) -> bytes:
    event: dict[str, Any] = {
        "schema_version": 1, "label_id": label_id, "asset_id": asset_id or f"asset-{label_id}",
        "annotations": [{"label": c} for c in classes], "annotator_id": "ann-1",
        "labeled_at": at,
    }
    if request_id is not None:
        event["request_id"] = request_id
    if model_id is not None:
        event["model_id"] = model_id
    return encode_event(event)


def request(request_id: str, model_id: str, predicted: str, *, at: float, asset_id: str,
            classes: tuple[str, ...] = ("cat", "dog")) -> bytes:
    """An annotation request whose single prediction puts 0.9 on `predicted`."""
    rest = [c for c in classes if c != predicted]
    scores = {predicted: 0.9, **{c: 0.1 / len(rest) for c in rest}}
    return encode_event({
        "schema_version": 1, "request_id": request_id, "asset_id": asset_id, "asset_uri": None,
        "event_id": f"ev-{request_id}", "model_id": model_id, "model_version": "v1",
        "event_timestamp": at,
        "reason": {"strategy": "threshold", "score": 0.5, "class": predicted, "threshold": 0.4,
                   "instances": [0], "inclusion_probability": None},
        "priority": 0.5, "predictions": [{"scores": scores}],
        "source": {"topic": "al.inference-events.v1", "partition": 0, "offset": 0},
    })
