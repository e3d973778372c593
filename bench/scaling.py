"""Scale-out figure for bench/scorer.py: scorer processes on a 2-partition topic, 1 vs 2.

Each instance is `active-stream scorer` in a process of its own (as deployed; threads of one
process would share a GIL), in a fresh group, on events already in the topic. A run is timed from
the moment every instance has consumed something (so the group has settled: with one partition
each once both joined) until the instances together have consumed all `events`; the rate counts
the events consumed within that window. Progress is read from each instance's /metrics. The CPU
seconds the instances and the broker spent in that window are read from /proc: the cost of an
event, and so what the machine's cores allow any number of instances (bench/scorer.py).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from services.evaluation.processes import ServiceProcess, metric
from services.streaming.topics import INFERENCE_EVENTS, create_topics, loop_topics


@dataclass
class ScaleRun:
    instances: int
    events: int  # consumed inside the timed window
    seconds: float
    scorer_cpu_s: float = float("nan")  # the instances' CPU seconds in the window, together
    broker_cpu_s: float = float("nan")

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def fill(bootstrap: str, prefix: str, events: list[tuple[bytes, bytes]]) -> None:
    """Create a 2-partition loop under `prefix` and produce `events` (key, value) to its input."""
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), loop_topics(2, prefix))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in events:
        while True:
            try:
                producer.produce(prefix + INFERENCE_EVENTS, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) != 0:
        raise RuntimeError("scaling: events still undelivered after 60 s")


def run(bootstrap: str, prefix: str, instances: int, total: int, policy: dict[str, object],
        show: Callable[[str], None], cpu: Callable[[int], float], broker_pid: int,
        timeout_s: float = 300.0) -> ScaleRun:
    """`instances` scorer processes in a fresh group over the `total` events under `prefix`;
    `cpu(pid)` is a process's CPU seconds so far."""
    group = f"bench-scale-{uuid.uuid4().hex[:8]}"
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    procs = [ServiceProcess("scorer", {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ACTIVE_STREAM_SCORER_GROUP_ID": group,
        "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
        "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"{group}-{i}",
        "ACTIVE_STREAM_SCORER_METRICS_HOST": "127.0.0.1",
        "ACTIVE_STREAM_SCORER_POLICY": json.dumps(policy),
        "ACTIVE_STREAM_KAFKA_FETCH_QUEUE_BACKOFF_MS": "10",
        "ACTIVE_STREAM_LOG_FORMAT": "json"},
        "ACTIVE_STREAM_SCORER_METRICS_PORT", log=logs / f"scorer-{i}.log").start()
        for i in range(instances)]
    try:
        for proc in procs:
            proc.wait_ready(60.0)  # a scorer process imports and connects in a few seconds
        pids = [p.proc.pid for p in procs if p.proc is not None]

        def cpus() -> tuple[float, float]:
            return sum(cpu(pid) for pid in pids), cpu(broker_pid)

        start: tuple[float, float, tuple[float, float]] | None = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = [metric(p.metrics(), "scorer_events_consumed_total") for p in procs]
            now = time.perf_counter()
            if start is None and all(counts):
                start = (now, sum(counts), cpus())
            if sum(counts) >= total and start is not None:
                (scorers, broker), (scorers0, broker0) = cpus(), start[2]
                return ScaleRun(instances, int(sum(counts) - start[1]), now - start[0],
                                scorers - scorers0, broker - broker0)
            show(f"scaling, {instances} instance(s): {sum(counts):,.0f}/{total:,} consumed")
            time.sleep(0.1)  # a scrape costs the scorers little at 10 a second
        raise RuntimeError(f"scaling: {instances} instance(s) did not consume {total:,} events "
                           f"within {timeout_s:.0f} s; logs in {logs}")
    finally:
        for proc in procs:
            proc.stop(30.0)
