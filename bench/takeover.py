"""How fast partitions flow again after a crash, a restart or a scale-out, on Apache Kafka (not a
test; prints figures).

    .venv/bin/python bench/takeover.py [--partitions 4] [--rate 2000]
        [--protocol classic|consumer] [--static|--no-static] [--session-timeout-ms 45000]
        [--only all|scorer|sink] [--sink-static|--no-sink-static] [--sink-session-timeout-s 10]

A fresh Apache Kafka (KRaft, one node, services/streaming/apache_kafka.py) and a paced stream of
inference events (and, for the label sink, of labels) that never stops. The scorer and the sink
run as real processes (services/evaluation/processes.py) so that SIGKILL is real. Progress of a
partition = its committed offset moved (the bench reads the group's committed offsets every
50 ms, without joining the group). Measured, in this order:

  scorer_restart_s           SIGKILL the only instance and start it again at once (same instance
                             id): from the kill until every partition has moved again.
  scorer_sigterm_restart_s   the same with SIGTERM (it finishes its batch, checkpoints, commits).
  scorer_join_s              a second instance joins: from its start until the partitions it
                             takes have moved under it.
  scorer_other_partitions_pause_s
                             meanwhile, the longest time without a request from a partition
                             the first instance kept (with an eager protocol it keeps none: all
                             are revoked); `..._commit_pause_s`: the same for its commits.
  scorer_leave_s             the second instance stops (SIGTERM, for good): from then until its
                             partitions move under the first again (static members do not leave
                             the group on close: expect the session timeout here).
  sink_restart_s             SIGKILL the label sink and start it again (same instance id):
                             until it counts again.
  sink_sigterm_restart_s     the same with SIGTERM (it commits, leaves the group, exits).
  sink_join_s                a second worker joins: from its start until it counts.
  sink_other_worker_pause_s  meanwhile, the longest time the first worker counted nothing.
  sink_leave_s               the second worker stops for good (SIGTERM): until every label
                             partition is committed again (faust commits every ~2.8 s).

The last line is `JSON {...}` with these keys and the settings. The goal for each is <= 5 s on
2 cores; every figure is printed, met or not. Timings are wall clock on a shared machine: run it
twice before believing a difference under a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

# Run as `python bench/takeover.py`: the repository root holds tests/ (the shared event
# generator), which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.evaluation.processes import ServiceProcess, metric, wait_until  # noqa: E402
from services.streaming import topics  # noqa: E402
from services.streaming.apache_kafka import ApacheKafka  # noqa: E402
from services.streaming.events import encode_event  # noqa: E402
from services.streaming.partitioning import KEYED_PARTITIONER  # noqa: E402
from services.streaming.topics import create_topics, loop_topics  # noqa: E402
from tests.synthetic_events import event_bodies, stamp  # noqa: E402

GOAL_S = 5.0


class Pacer(threading.Thread):
    """Produces `make(i)` records at `rate` per second until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: float,
                 make: Callable[[int], tuple[bytes, bytes]]) -> None:
        super().__init__(daemon=True, name=f"pacer-{topic}")
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                  "partitioner": KEYED_PARTITIONER})
        self.topic, self.rate, self.make = topic, rate, make
        self.halt = threading.Event()
        self.sent = 0

    def run(self) -> None:
        started = time.monotonic()
        while not self.halt.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due:
                key, value = self.make(self.sent)
                self.producer.produce(self.topic, value, key)
                self.sent += 1
            self.producer.poll(0)
            time.sleep(0.01)
        self.producer.flush(10)


class Watch:
    """The group's committed offset per partition, sampled every 50 ms, and when each moved."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "enable.auto.commit": False})
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.offsets = {p: -1 for p in range(partitions)}
        self.moved_at = {p: time.monotonic() for p in range(partitions)}
        self.gaps: dict[int, list[tuple[float, float]]] = {p: [] for p in range(partitions)}

    def sample(self) -> None:
        now = time.monotonic()
        for tp in self.consumer.committed(self.tps, timeout=10):
            if tp.offset > self.offsets[tp.partition]:
                self.gaps[tp.partition].append((self.moved_at[tp.partition], now))
                self.offsets[tp.partition] = tp.offset
                self.moved_at[tp.partition] = now

    def until_all_moved_past(self, baseline: dict[int, int], partitions: list[int],
                             timeout_s: float) -> float:
        """Sample until each of `partitions` is committed past `baseline`; returns the time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sample()
            if all(self.offsets[p] > baseline[p] for p in partitions):
                return time.monotonic()
            time.sleep(0.05)
        raise TimeoutError(f"partitions {partitions} did not move in {timeout_s:.0f} s")

    def longest_gap(self, partitions: list[int], since: float, until: float) -> float:
        """Longest time between two moves of one of `partitions`, overlapping [since, until]."""
        longest = 0.0
        for p in partitions:
            spans = self.gaps[p] + [(self.moved_at[p], until)]
            for start, end in spans:
                if end >= since and start <= until:
                    longest = max(longest, min(end, until) - max(start, since))
        return longest


class Flow(threading.Thread):
    """Reads the requests topic as they come and notes, per input partition (the request's
    `source.partition`), when requests from it arrived: selection flowing, whether or not
    offsets are being committed."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True, name="flow")
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "takeover-flow",
                                  "enable.auto.commit": False,
                                  "isolation.level": "read_uncommitted"})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
        self.arrivals: dict[int, list[float]] = {p: [] for p in range(partitions)}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for msg in self.consumer.consume(500, 0.05):
                if msg.error() is None:
                    source = orjson.loads(msg.value())["source"]["partition"]
                    self.arrivals[source].append(time.monotonic())
        self.consumer.close()

    def longest_gap(self, partitions: list[int], since: float, until: float) -> float:
        longest = 0.0
        for p in partitions:
            times = [since] + [t for t in self.arrivals[p] if since < t < until] + [until]
            longest = max(longest, max(b - a for a, b in zip(times, times[1:], strict=False)))
        return longest


_EVENTS = np.random.default_rng(11)  # only the pacer's thread draws from it


def event(i: int) -> tuple[bytes, bytes]:
    """Inference event `i` of the shared stream (tests/synthetic_events.py), 100 a second of
    event time."""
    ((key, body),) = event_bodies(_EVENTS, i, 1)
    return key, body + stamp(1_700_000_000.0 + i * 0.01)


def label(i: int) -> tuple[bytes, bytes]:
    asset = f"labeled-{i}"
    body = {"schema_version": 1, "label_id": f"l-{i}", "asset_id": asset, "model_id": "m",
            "annotations": [{"label": "a" if i % 2 else "b"}], "annotator_id": "bench",
            "labeled_at": 1_700_000_000.0 + i}
    return asset.encode(), encode_event(body)


def scorer(args: argparse.Namespace, bootstrap: str, prefix: str, instance: str,
           workdir: Path) -> ServiceProcess:
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "ACTIVE_STREAM_SCORER_GROUP_ID": f"g-{prefix}",
           "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
           "ACTIVE_STREAM_SCORER_INSTANCE_ID": instance,
           "ACTIVE_STREAM_SCORER_STATIC_MEMBERSHIP": "true" if args.static else "false",
           "ACTIVE_STREAM_SCORER_METRICS_HOST": "127.0.0.1",
           "ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S": "0.1",
           "ACTIVE_STREAM_KAFKA_GROUP_PROTOCOL": args.protocol,
           "ACTIVE_STREAM_LOG_FORMAT": "json"}
    if args.protocol == "classic":
        if args.session_timeout_ms:
            env["ACTIVE_STREAM_KAFKA_SESSION_TIMEOUT_MS"] = str(args.session_timeout_ms)
        if args.heartbeat_interval_ms:
            env["ACTIVE_STREAM_KAFKA_HEARTBEAT_INTERVAL_MS"] = str(args.heartbeat_interval_ms)
        if args.assignor:
            env["ACTIVE_STREAM_KAFKA_PARTITION_ASSIGNMENT_STRATEGY"] = args.assignor
    return ServiceProcess("scorer", env, "ACTIVE_STREAM_SCORER_METRICS_PORT",
                          log=workdir / f"scorer-{instance}-{time.monotonic_ns()}.log")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def partitions_of(proc: ServiceProcess) -> list[int]:
    """The partitions an instance holds and has processed a batch of (its lag gauges)."""
    try:
        samples = proc.metrics()
    except OSError:  # not serving yet
        return []
    return sorted(int(dict(labels)["partition"]) for (name, labels), _ in samples.items()
                  if name == "scorer_consumer_lag_messages")


def bench_scorer(args: argparse.Namespace, kafka: ApacheKafka, workdir: Path) -> dict[str, float]:
    bootstrap, prefix, n = kafka.bootstrap, f"tk{uuid.uuid4().hex[:6]}.", args.partitions
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), loop_topics(n, prefix=prefix))
    input_topic = prefix + topics.INFERENCE_EVENTS
    pacer = Pacer(bootstrap, input_topic, args.rate, event)
    pacer.start()
    flow = Flow(bootstrap, prefix + topics.ANNOTATION_REQUESTS, n)
    flow.start()
    watch = Watch(bootstrap, f"g-{prefix}", input_topic, n)
    everything = list(range(n))
    out: dict[str, float] = {}
    first = scorer(args, bootstrap, prefix, "a", workdir).start()
    try:
        first.wait_ready(60)
        watch.until_all_moved_past({p: -1 for p in everything}, everything, 60)
        time.sleep(3)

        for name, kill in (("scorer_restart_s", True), ("scorer_sigterm_restart_s", False)):
            watch.sample()
            signalled = time.monotonic()
            if kill:
                first.kill()
            else:
                first.stop()
            watch.sample()
            baseline = dict(watch.offsets)
            first = scorer(args, bootstrap, prefix, "a", workdir).start()
            out[name] = watch.until_all_moved_past(baseline, everything, 120) - signalled
            say(f"{name}: {out[name]:.2f} s")
            time.sleep(3)

        watch.sample()
        joined_at = time.monotonic()
        second = scorer(args, bootstrap, prefix, "b", workdir).start()
        try:
            taken = wait_until(lambda: partitions_of(second), 120, "the second instance's share",
                               second.check, poll_s=0.05)
            baseline = dict(watch.offsets)
            moved = watch.until_all_moved_past(baseline, taken, 120)
            out["scorer_join_s"] = moved - joined_at
            kept = [p for p in everything if p not in taken]
            time.sleep(3)
            watch.sample()
            now = time.monotonic()
            # Selection pausing (no request from a kept partition), and commits pausing (its
            # committed offset not moving: a cooperative rebalance refuses commits a moment).
            out["scorer_other_partitions_pause_s"] = (
                flow.longest_gap(kept, joined_at, now) if kept else float("nan"))
            out["scorer_other_partitions_commit_pause_s"] = (
                watch.longest_gap(kept, joined_at, now) if kept else float("nan"))
            say(f"scorer_join_s: {out['scorer_join_s']:.2f} s (took {taken}); other "
                f"partitions {kept}: requests paused {out['scorer_other_partitions_pause_s']:.2f}"
                f" s, commits {out['scorer_other_partitions_commit_pause_s']:.2f} s")
            watch.sample()
            left_at = time.monotonic()
            second.stop()
            watch.sample()  # its own last commit, at its hand-over, is not progress
            baseline = dict(watch.offsets)
            out["scorer_leave_s"] = watch.until_all_moved_past(
                baseline, taken, (args.session_timeout_ms or 45_000) / 1000 + 60) - left_at
            say(f"scorer_leave_s: {out['scorer_leave_s']:.2f} s")
        finally:
            second.stop()
    finally:
        first.stop()
        pacer.halt.set()
        pacer.join()
        flow.halt.set()
        flow.join()
    return out


def bench_sink(args: argparse.Namespace, kafka: ApacheKafka, workdir: Path) -> dict[str, float]:
    """The label sink's figures (module docstring). Progress of a worker = its own count of
    label records (`label_sink_label_records_total`) moved; of a partition = the group's
    committed offset on the labels topic moved (faust commits every ~2.8 s, which bounds how
    finely the leave figure can be read)."""
    bootstrap, prefix, n = kafka.bootstrap, f"ts{uuid.uuid4().hex[:6]}.", args.partitions
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), loop_topics(n, prefix=prefix))
    app_id = f"s-{prefix}"
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "ACTIVE_STREAM_LABEL_SINK_APP_ID": app_id,
           "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": prefix,
           "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
           "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": tempfile.mkdtemp(prefix="sink-", dir=workdir),
           "ACTIVE_STREAM_LABEL_SINK_TRIGGER_MIN_LABELS": "1000000",
           "ACTIVE_STREAM_LABEL_SINK_STATIC_MEMBERSHIP": "true" if args.sink_static else "false",
           "ACTIVE_STREAM_LOG_FORMAT": "json"}
    if args.sink_session_timeout_s:
        env["ACTIVE_STREAM_LABEL_SINK_SESSION_TIMEOUT_S"] = str(args.sink_session_timeout_s)
    pacer = Pacer(bootstrap, prefix + topics.LABELS, args.label_rate, label)
    pacer.start()
    watch = Watch(bootstrap, app_id, prefix + topics.LABELS, n)
    everything = list(range(n))

    def sink(instance: str) -> ServiceProcess:
        mine = {**env, "ACTIVE_STREAM_LABEL_SINK_INSTANCE_ID": instance}
        return ServiceProcess("label-sink", mine, "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT",
                              log=workdir / f"sink-{instance}-{time.monotonic_ns()}.log")

    def counted(proc: ServiceProcess) -> float:
        try:
            return metric(proc.metrics(), "label_sink_label_records_total")
        except OSError:
            return 0.0

    def counting_again(proc: ServiceProcess, since: float, what: str) -> float:
        """Seconds from `since` until `proc` counts more than it has now."""
        before = counted(proc)
        wait_until(lambda: counted(proc) > before, 120, what, proc.check, poll_s=0.05)
        return time.monotonic() - since

    out: dict[str, float] = {}
    first = sink("a").start()
    second: ServiceProcess | None = None
    try:
        first.wait_ready(90)
        wait_until(lambda: counted(first) > 0, 60, "the sink counting", first.check)
        watch.until_all_moved_past({p: -1 for p in everything}, everything, 60)
        time.sleep(3)
        for name, kill in (("sink_restart_s", True), ("sink_sigterm_restart_s", False)):
            signalled = time.monotonic()
            if kill:
                first.kill()
            else:
                first.stop()
            first = sink("a").start()
            out[name] = counting_again(first, signalled, "the restarted sink counting")
            say(f"{name}: {out[name]:.2f} s")
            time.sleep(3)

        # A second worker joins: until it counts; meanwhile the first's longest pause.
        samples: list[tuple[float, float]] = []
        joined_at = time.monotonic()
        second = sink("b").start()
        deadline = joined_at + 120
        while counted(second) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the second worker never counted")
            second.check()
            samples.append((time.monotonic(), counted(first)))
            time.sleep(0.05)
        out["sink_join_s"] = time.monotonic() - joined_at
        until = time.monotonic() + 3
        while time.monotonic() < until:
            samples.append((time.monotonic(), counted(first)))
            time.sleep(0.05)
        moves = [joined_at] + [t for (t, c), (_, b) in zip(samples[1:], samples, strict=False)
                               if c > b] + [samples[-1][0]]
        out["sink_other_worker_pause_s"] = max(b - a for a, b in zip(moves, moves[1:],
                                                                      strict=False))
        say(f"sink_join_s: {out['sink_join_s']:.2f} s; the first worker paused "
            f"{out['sink_other_worker_pause_s']:.2f} s")

        # The second stops for good (SIGTERM): until every partition is committed again.
        watch.sample()
        left_at = time.monotonic()
        second.stop()
        watch.sample()  # its own last commit, at its stop, is not progress
        baseline = dict(watch.offsets)
        session = args.sink_session_timeout_s or 10.0
        out["sink_leave_s"] = watch.until_all_moved_past(baseline, everything,
                                                         session + 60) - left_at
        say(f"sink_leave_s: {out['sink_leave_s']:.2f} s")
        return out
    finally:
        if second is not None:
            second.stop()
        first.stop()
        pacer.halt.set()
        pacer.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2000.0, help="inference events per second")
    parser.add_argument("--label-rate", type=float, default=100.0, help="labels per second")
    parser.add_argument("--protocol", choices=["classic", "consumer"], default="classic")
    parser.add_argument("--assignor", default="",
                        help="classic protocol: partition.assignment.strategy (e.g. "
                             "cooperative-sticky); default librdkafka's range,roundrobin")
    parser.add_argument("--static", action=argparse.BooleanOptionalAction, default=True,
                        help="scorers join as static members (group.instance.id)")
    parser.add_argument("--session-timeout-ms", type=int, default=0,
                        help="the scorer's session timeout (classic; 0: the scorer's default)")
    parser.add_argument("--heartbeat-interval-ms", type=int, default=0,
                        help="the scorer's heartbeat interval (classic; 0: the scorer's default)")
    parser.add_argument("--only", choices=["all", "scorer", "sink"], default="all")
    parser.add_argument("--sink-static", action=argparse.BooleanOptionalAction, default=True,
                        help="sink workers join as static members (group.instance.id)")
    parser.add_argument("--sink-session-timeout-s", type=float, default=0.0,
                        help="the sink's session timeout (0: the sink's default, 10 s)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="takeover-"))
    say(f"logs in {workdir}")
    with ApacheKafka() as kafka:
        say(f"Apache Kafka {kafka.version} on {kafka.bootstrap}")
        figures: dict[str, float] = {}
        if args.only in ("all", "scorer"):
            figures.update(bench_scorer(args, kafka, workdir))
        if args.only in ("all", "sink"):
            figures.update(bench_sink(args, kafka, workdir))
    for name, value in figures.items():
        verdict = "met" if value <= GOAL_S else "NOT met"
        print(f"{name:34s} {value:7.2f} s   goal <= {GOAL_S:.0f} s: {verdict}")
    settings = {"protocol": args.protocol, "assignor": args.assignor or "default",
                "heartbeat_interval_ms": args.heartbeat_interval_ms or "default",
                "static": args.static, "sink_static": args.sink_static,
                "sink_session_timeout_s": args.sink_session_timeout_s or "default",
                "session_timeout_ms": args.session_timeout_ms or "default",
                "partitions": args.partitions, "rate": args.rate, "cores": os.cpu_count()}
    print("JSON " + json.dumps({**{k: round(v, 3) for k, v in figures.items()}, **settings}))


if __name__ == "__main__":
    main()
