"""Scorer benchmark: consume, decode, the scorer end to end, and its peers on the same events and
broker (not a test; prints figures).

    .venv/bin/python bench/scorer.py [--events 1000000] [--partitions 4] [--broker apache-kafka]
                                     [--out DIR]

A fresh broker (a private Apache Kafka 4.1.1 by default, services/streaming/apache_kafka.py; or
`--broker tansu`, the embedded one) gets N keyed 10-class inference events (~305 B of JSON from
tests/synthetic_events.py's stream, 1,000 events per second of event time) on a fresh input
topic: setup, not a figure. Then, each
timed from the end of the first batch to the N-th event (connection, fetch start-up and the
scorer's group join excluded):

  (i)   consume only: a plain confluent-kafka Consumer, assign() (no group), consume(10,000);
  (ii)  the same plus orjson.loads of every value;
  (ii+) a ceiling for (iii): (ii) plus the least any scorer on this stack must do with a parsed
        event -- keep the fields selection reads (asset id, timestamp, the score vector) as
        columns, one numpy array per 1,000 events -- with no validation, selection, output or
        commit. (ii+)/(ii) bounds the (iii)/(ii) ratio any such scorer can reach;
  (iii) the scorer end to end: services.scorer.Scorer on a thread of this process, a fresh
        group, default settings (consume -> decode + validate -> select -> produce requests ->
        flush -> commit, checkpoints), progress read from `scorer_events_consumed_total`.
The same scorer, idle and caught up, then gets a stream paced at half the (iii) rate for
--latency-warmup-seconds (20; not timed: a broker just started serves a new load slowly at
first) and then --latency-seconds, every event stamped with the wall clock at its produce()
call. Latency is measured per request of the timed stretch: the time a reader process receives
it from the requests topic minus its `event_timestamp`. Pacer and reader are processes of their
own, so they do not take this process's GIL from the scorer. For context: the scorer's
broker-free core
(PartitionScorer.process: decode -> select -> encode) on events in memory, with this process's
RSS after each million events when --core-events reaches it (state growth, no Kafka buffers).

Then, on the same broker (bench/peers/, installed by the `bench` extra; a missing one is skipped):
  peers: a quix-streams app, a per-message faust-streaming agent and scikit-activeml's
        VariableUncertainty called per event, each in a process of its own reading the same
        input topic from the start (--peer-events for quix, --slow-peer-events for the others),
        selecting by least-confidence above the 98th percentile of those events (2%); each
        peer's events/s and the scorer's (iii) rate as a multiple of it;
  scale-out: 1 then 2 `active-stream scorer` processes on a 2-partition topic
        (bench/scaling.py, --scaling-events);
  Tansu, for reference (Apache Kafka runs): the paced phase again, same rate, on a fresh
        embedded broker and scorer.

Selection policy: SelectorPolicy() with the event-time budget lifted (labels_per_hour 1e9), so the
2% share binds in both phases and the paced phase has requests to measure (the default 1,000
labels/h would allow about 60 there).

All consumers, the scorer's included, run with fetch.queue.backoff.ms=10 (--fetch-queue-backoff-ms):
with librdkafka's default of 1 s, a consumer that empties its full prefetch queue sits idle (on
this broker (i) ran at ~250k instead of ~600k events/s). Otherwise the scorer runs with its
defaults; --kafka passes librdkafka properties to it (fetch.wait.max.ms matters for latency: Tansu
holds a fetch for all of it even when records arrive). The 2 cores are shared with the broker and
with whatever else runs: each phase prints the machine's busy cores and how many of them were
neither the bench's nor the broker's.

Peak RSS is this process's (getrusage): the scorer plus the bench's own consumers, so an upper
bound on the scorer's; VmRSS is also printed after each million events of (iii). The broker's
(VmHWM) is printed apart (Tansu holds every event in memory; Apache Kafka is a JVM).
--profile runs the scorer thread under cProfile during (iii) and skips the paced phase.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import multiprocessing as mp
import os
import pstats
import resource
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

# Run as `python bench/scorer.py`: the repository root holds tests/ (the shared event generator)
# and bench/ (the peers), neither of them installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import scaling  # noqa: E402
from bench.peers.common import threshold_for  # noqa: E402
from bench.peers.run import PEERS, PeerRun, run_peer  # noqa: E402
from services.core import SelectorPolicy, SelectorState  # noqa: E402
from services.evaluation.cli import StatusLine  # noqa: E402
from services.scorer.partition import PartitionScorer, Record  # noqa: E402
from services.scorer.service import Scorer  # noqa: E402
from services.streaming.apache_kafka import ApacheKafka  # noqa: E402
from services.streaming.embedded import EmbeddedBroker  # noqa: E402
from services.streaming.inference_batch import decode_inference_batch  # noqa: E402
from services.streaming.settings import ScorerSettings  # noqa: E402
from services.streaming.topics import INFERENCE_EVENTS, create_topics, loop_topics  # noqa: E402
from tests.synthetic_events import event_bodies, stamp  # noqa: E402

T0, DT = 1_700_000_000.0, 0.001  # event time of the bulk events: 1,000 events per second
TARGET_RATIO = 0.8
CEILING_TARGET = 0.5  # (iii)/(ii+), issue 19
# active-stream's multiple of each peer's events/s that issue 19 asks for.
PEER_GOALS = {"quix": 2.0, "faust": 15.0, "skactiveml": 20.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- events: tests/synthetic_events.py's stream, drawn a chunk at a time ----------------------

def produce_all(producer: Producer, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Produce every (key, value); when librdkafka's queue is full, serve deliveries and retry."""
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.poll(0)


# -- measuring ----------------------------------------------------------------------------------

class Progress:
    """The project's own status line (services/evaluation/cli.py), throttled: rewritten in place
    at most 5 times a second on a terminal, a line every 5 s otherwise (CI logs)."""

    def __init__(self) -> None:
        self.line = StatusLine(sys.stderr)
        self.last = 0.0

    def show(self, text: str) -> None:
        now = time.monotonic()
        if now - self.last < (0.2 if self.line.live else 5.0):
            return
        self.last = now
        self.line.update(f"  .. {text}")

    def end(self) -> None:
        if self.line.pending:  # clear the status line: results print where it was
            self.line.update("")
            self.line.pending = False
        self.last = 0.0


def cpu_seconds(pid: int | str = "self", tid: int | None = None) -> float:
    """User + system CPU seconds of a process, or of one of its threads (Linux /proc)."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle or iowait), summed over cores."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def rss_mb(pid: int | str = "self", key: str = "VmRSS:") -> float:
    """Resident set of a process in MB: current (VmRSS) or peak (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1e3
    return float("nan")


@dataclass
class Meter:
    """Reads the counters a phase is judged by; `scorer` adds the scorer's own metrics."""

    broker_pid: int
    scorer: ScorerThread | None = None

    def read(self) -> dict[str, float]:
        out = {"t": time.perf_counter(), "bench": cpu_seconds(),
               "broker": cpu_seconds(self.broker_pid), "machine": machine_busy_seconds()}
        if self.scorer is not None:
            out.update(self.scorer.counters())
        return out


@dataclass
class Phase:
    """`events` handled between two Meter readings."""

    name: str
    events: int
    start: dict[str, float]
    end: dict[str, float]

    def d(self, key: str) -> float:
        return self.end[key] - self.start[key]

    @property
    def seconds(self) -> float:
        return self.d("t")

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    def children(self) -> float:
        """CPU seconds of the pacer and reader processes, where they ran."""
        return self.d("children") if "children" in self.end else 0.0

    def others(self) -> float:
        """Cores kept busy by processes other than the bench's and the broker's."""
        busy = self.d("machine") - self.d("bench") - self.d("broker") - self.children()
        return max(0.0, busy) / self.seconds

    def line(self) -> str:
        per_m = 1e6 / max(1, self.events)
        pacer = f", pacer + reader {self.children() * per_m:4.1f}" if self.children() else ""
        return (f"  {self.name:<34} {self.rate:>9,.0f} events/s ({self.seconds:6.2f} s) | CPU s "
                f"per 1M events: bench {self.d('bench') * per_m:5.1f}, broker "
                f"{self.d('broker') * per_m:4.1f}{pacer} | machine busy "
                f"{self.d('machine') / self.seconds:.2f} cores, {self.others():.2f} of them "
                "other processes")


# -- (i) and (ii): a plain consumer -------------------------------------------------------------

def consume_rate(bootstrap: str, topic: str, partitions: int, n: int, name: str,
                 work: Callable[[bytes], Any] | None, config: dict[str, Any], meter: Meter,
                 progress: Progress) -> Phase:
    """Read the topic's first `n` records with assign() + consume(10,000), applying `work` to
    every value; timed from the end of the first batch to the n-th record."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, **config})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen, base, start = 0, 0, dict[str, float]()
    try:
        while seen < n:
            # Ask for no more than remain: consume() waits its full timeout for a short batch.
            batch = consumer.consume(min(10_000, n - seen), 30.0)
            if not batch:
                raise RuntimeError(f"{name}: no records for 30 s after {seen:,} of {n:,}")
            for msg in batch:
                if msg.error():
                    raise KafkaException(msg.error())
                if work is not None:
                    work(msg.value() or b"")
            seen += len(batch)
            if not start:
                start, base = meter.read(), seen
            progress.show(f"{name}: {seen:,}/{n:,}")
        return Phase(name, seen - base, start, meter.read())
    finally:
        progress.end()
        consumer.close()


class ColumnsOnly:
    """(ii+): orjson.loads, then the columns selection reads, one numpy array per 1,000 events
    (the scorer's batch size); nothing validated, selected or produced."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.times: list[float] = []
        self.scores: list[list[float]] = []

    def __call__(self, value: bytes) -> None:
        event = orjson.loads(value)
        self.ids.append(event["asset_id"])
        self.times.append(event["timestamp"])
        self.scores.append(list(event["predictions"][0]["scores"].values()))
        if len(self.scores) == 1000:
            np.array(self.scores)
            np.array(self.times)
            self.ids, self.times, self.scores = [], [], []


# -- (iii): the scorer --------------------------------------------------------------------------

class ScorerThread:
    """A Scorer on a thread of this process, optionally under cProfile. Its metrics stay readable
    after `stop()`, which also frees the scorer and its clients."""

    def __init__(self, settings: ScorerSettings, policy: SelectorPolicy, profile: bool) -> None:
        self.registry = CollectorRegistry()
        scorer = Scorer(settings, policy=policy, registry=self.registry)
        self._stop: Callable[[], None] | None = scorer.stop
        self.profile = cProfile.Profile() if profile else None
        self.errors: list[BaseException] = []
        self.tid: int | None = None
        self.started = time.perf_counter()
        # A thread drops its target's args when it ends: then nothing here holds the scorer.
        self.thread = threading.Thread(target=self._run, args=(scorer,), name="scorer",
                                       daemon=True)
        self.thread.start()

    def _run(self, scorer: Scorer) -> None:
        self.tid = threading.get_native_id()
        try:
            if self.profile is not None:
                self.profile.runcall(scorer.run)
            else:
                scorer.run()
        except BaseException as exc:  # reported by the bench's main thread
            self.errors.append(exc)

    def value(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    def consumed(self) -> int:
        return int(self.value("scorer_events_consumed_total"))

    def counters(self) -> dict[str, float]:
        return {"consumed": self.consumed(),
                "requests": self.value("scorer_requests_emitted_total"),
                "batches": self.value("scorer_batch_duration_seconds_count"),
                "batch_s": self.value("scorer_batch_duration_seconds_sum"),
                "checkpoints": self.value("scorer_checkpoints_total"),
                "thread": cpu_seconds(tid=self.tid) if self.tid else float("nan")}

    def latency_buckets(self) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of scorer_event_to_request_seconds."""
        name = "scorer_event_to_request_seconds_bucket"
        return sorted((float(s.labels["le"]), s.value) for metric in self.registry.collect()
                      for s in metric.samples if s.name == name)

    def check(self) -> None:
        if self.errors:
            raise RuntimeError(f"the scorer crashed: {self.errors[0]!r}") from self.errors[0]
        if not self.thread.is_alive():
            raise RuntimeError("the scorer thread ended on its own")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop the scorer (it checkpoints, commits, leaves its group) and free its clients: its
        producer has no close(), and one alive past the broker logs its loss. Idempotent."""
        if self._stop is None:
            return
        self._stop()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            print(f"  the scorer did not stop within {timeout_s:g} s; it ends with the process",
                  file=sys.stderr)
            return
        self._stop = None
        gc.collect()  # the Scorer sits in reference cycles (bound-method callbacks)


@dataclass
class Wait:
    """The scorer's progress to a target: the phase from its first counted batch to the target,
    a (seconds, consumed) timeline, and this process's peak RSS sampled meanwhile."""

    phase: Phase
    timeline: list[tuple[float, int]] = field(default_factory=list)
    rss_peak: float = 0.0
    rss_at: dict[int, float] = field(default_factory=dict)  # VmRSS (MB) after each 1M events


def wait_consumed(run: ScorerThread, target: int, name: str, meter: Meter, progress: Progress,
                  stall_s: float = 60.0) -> Wait:
    """Block until the scorer has consumed `target` records, reading its counter every 20 ms.
    The phase starts at the first change seen. Raises if the scorer dies or stalls `stall_s`."""
    base = last = run.consumed()
    moved, start = time.perf_counter(), meter.read()
    timeline, rss_peak, rss_at = [], 0.0, {}
    try:
        while True:
            run.check()
            count, now = run.consumed(), time.perf_counter()
            timeline.append((now, count))
            rss = rss_mb()
            rss_peak = max(rss_peak, rss)
            millions = (count - base) // 1_000_000
            if millions and millions not in rss_at:
                rss_at[millions] = rss
            if count != last:
                if last == base:
                    start = meter.read()
                last, moved = count, now
            if count >= target:
                end = meter.read()
                return Wait(Phase(name, int(end["consumed"] - start["consumed"]), start, end),
                            timeline, rss_peak, rss_at)
            if now - moved > stall_s:
                raise RuntimeError(f"{name}: no progress for {stall_s:.0f} s at {count:,} of "
                                   f"{target:,}")
            progress.show(f"{name}: {count - base:,}/{target - base:,} consumed")
            time.sleep(0.02)
    finally:
        progress.end()


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Upper bound of the bucket holding quantile q, from (le, cumulative count) buckets."""
    total = buckets[-1][1] if buckets else 0.0
    return next((le for le, cum in buckets if total and cum >= q * total), float("nan"))


# -- latency: pacer and reader processes --------------------------------------------------------

def pace(bootstrap: str, topic: str, rate: float, total: int, seed: int,
         ready: Any, go: Any, stop: Any, results: Any) -> None:
    """Child process: produce `total` fresh events at `rate` a second, every event stamped with
    the wall clock just before its produce() call (events fall due in bursts ~1 ms apart).

    The events are made before the pacing starts: making one costs ~3.7 us of CPU, ~0.14 of a
    core at 37,000 a second, taken from the scorer and the broker on the same 2 cores, where a
    production scorer's producers run elsewhere (~0.4 KB an event held meanwhile)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends it (`stop`, then SIGTERM)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "allow.auto.create.topics": False})
    rng = np.random.default_rng(seed)
    pending: deque[tuple[bytes, bytes]] = deque()
    made, sent, worst = 0, 0, 0.0
    while made < total:
        pending.extend(event_bodies(rng, made, min(1000, total - made), "lat-"))
        made += 1000
    ready.set()
    go.wait()
    start, cpu, started = time.perf_counter(), cpu_seconds(), time.time()
    while sent < total and not stop.is_set():
        due = min(total, int((time.perf_counter() - start) * rate) + 1) - sent
        if due <= 0:  # ahead of schedule
            time.sleep(0.0005)
            continue
        worst = max(worst, due / rate)
        ts = stamp(time.time())
        produce_all(producer, topic, [(k, b + ts) for k, b in
                                      (pending.popleft() for _ in range(due))])
        sent += due
    seconds = time.perf_counter() - start
    producer.flush(30)
    results.put({"sent": sent, "seconds": seconds, "worst_lag_s": worst,
                 "cpu": cpu_seconds() - cpu, "started": started})


def read_requests(bootstrap: str, topic: str, partitions: int, since: float, wait_ms: int,
                  ready: Any, stop: Any, results: Any) -> None:
    """Child process: read the requests topic from the start; for each request whose event is
    from `since` on (wall clock), record (receive time, receive time - event_timestamp). One
    poll() a record, so no batch filling up holds a receive time back. `ready` is set once every
    older request is read and the reader has idled a second: set at its first empty poll
    instead, it let the first paced requests wait ~0.4 s for a consumer still starting
    (2026-12-07, five runs: 0.39 s from the scorer's produce to the reader every time, 11 ms with
    3 s between the reader's readiness and the pacing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends it (`stop`, then SIGTERM)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False,
                         # The reader should add as little latency as it can, and take as
                         # little of the 2 cores as it can (`reader_wait_ms`).
                         "fetch.wait.max.ms": wait_ms})
    tps = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
    # The requests written so far (nothing writes them while the reader starts: the scorer is
    # idle and caught up).
    older = sum(high - low for low, high in (
        consumer.get_watermark_offsets(tp, timeout=30) for tp in tps))
    consumer.assign(tps)
    seen: list[tuple[float, float]] = []
    cpu, read, idle_since = None, 0, None
    try:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is None:
                if cpu is None and read >= older:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= 1.0:
                        cpu = cpu_seconds()
                        ready.set()
                continue
            value = msg.value()
            if msg.error() or value is None:
                continue
            read += 1
            received = time.time()
            event_ts = orjson.loads(value)["event_timestamp"]
            if event_ts >= since:
                seen.append((received, received - event_ts))
        results.put((seen, cpu_seconds() - (cpu or 0.0)))
    finally:
        consumer.close()


@dataclass
class Latency:
    """The paced phase: what was sent, what the reader measured, and how the scorer kept up."""

    rate: float
    sent: int
    warmup_s: float  # paced first, its requests not counted
    paced_s: float
    worst_lag_s: float  # how far the pacer fell behind its schedule at worst
    received: np.ndarray  # wall clock at which the reader got each request
    seconds: np.ndarray  # latency of each request
    histogram: list[tuple[float, float]]  # the scorer's own latency histogram over the phase
    wait: Wait  # from the first paced event consumed to the last

    def ms(self, q: float) -> float:
        return float(np.quantile(self.seconds, q)) * 1e3 if self.seconds.size else float("nan")


def reader_wait_ms(broker: str) -> int:
    """fetch.wait.max.ms of the latency reader. Apache Kafka answers a waiting fetch as soon as a
    record arrives, so librdkafka's default (500) adds no latency there, while polling every
    5 ms cost the broker ~30% of a core on this 2-core machine with nothing to read (measured
    2026-12-07: an idle broker 7%, plus one idle consumer at 500 ms 7%, at 5 ms 38%): CPU taken
    from the scorer it measures. Tansu holds a fetch for all of fetch.wait.max.ms even when
    records arrive (docs/brokers.md), so there the reader polls every 5 ms."""
    return 5 if broker == "tansu" else 500


def measure_latency(run: ScorerThread, bootstrap: str, settings: ScorerSettings, partitions: int,
                    rate: float, seconds: float, warmup_s: float, seed: int, meter: Meter,
                    stack: contextlib.ExitStack, progress: Progress, broker: str) -> Latency:
    """Pace `rate` events a second for `warmup_s` + `seconds` into the caught-up scorer; time
    each request of the events paced after the warm-up. The warm-up is for the broker: a broker
    just started serves the first seconds of a new load slower than it serves it later
    (2026-12-07, measured at the scorer: event to acknowledged request p99 404 ms over a first
    paced phase, 128 ms over a second one on the same broker and scorer; the broker's own CPU for
    one producer at 20,000 events/s and one consumer: 97% of a core over the first 10 s of that
    load, 36% over the next 10 s). In the bench's paced phase the slow stretch came anywhere in
    its first ~20 s (p50 200-300 ms for 4-6 s, at 0-8 s in some runs, at 12-18 s in others),
    and not in a second paced phase on the same broker: a broker in service is long past it."""
    ctx = mp.get_context("spawn")  # not fork: this process runs librdkafka threads
    total = max(1000, int(rate * (seconds + warmup_s)))
    pacer_ready, reader_ready, go, stop = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    paced, read = ctx.Queue(), ctx.Queue()
    pacer = ctx.Process(target=pace, name="bench-pacer", daemon=True, args=(
        bootstrap, settings.input_topic, rate, total, seed, pacer_ready, go, stop, paced))
    reader = ctx.Process(target=read_requests, name="bench-reader", daemon=True, args=(
        bootstrap, settings.requests_topic, partitions, time.time(), reader_wait_ms(broker),
        reader_ready, stop, read))
    for proc in (pacer, reader):
        proc.start()
        stack.callback(_end_process, proc, go, stop)
    if not (pacer_ready.wait(60) and reader_ready.wait(60)):
        raise RuntimeError("the pacer or reader process did not start within 60 s")
    before = run.latency_buckets()
    go.set()
    wait = wait_consumed(run, run.consumed() + total, f"paced at {rate:,.0f}/s", meter, progress)
    sent = paced.get(timeout=60)
    time.sleep(1.0)  # the last requests reach the reader
    stop.set()
    seen, reader_cpu = read.get(timeout=60)
    pairs = np.asarray(seen, dtype=float).reshape(-1, 2)
    pairs = pairs[pairs[:, 0] - pairs[:, 1] >= sent["started"] + warmup_s]  # event time
    # Their CPU since the pacer started / the reader was ready: tells them from other load.
    wait.phase.start["children"], wait.phase.end["children"] = 0.0, sent["cpu"] + reader_cpu
    hist = [(le, cum - c0) for (le, cum), (_, c0) in
            zip(run.latency_buckets(), before, strict=True)]
    return Latency(rate, sent["sent"], warmup_s, sent["seconds"], sent["worst_lag_s"], pairs[:, 0],
                   pairs[:, 1], hist, wait)


def _end_process(proc: Any, go: Any, stop: Any) -> None:
    stop.set()
    go.set()  # a pacer still waiting to start sees `stop` at once
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)


# -- context: the broker-free core --------------------------------------------------------------

@dataclass
class Core:
    """CPU seconds (this thread's: robust to other load) spent in PartitionScorer.process, and in
    decode_inference_batch alone (the scorer's decoder), on the same `events` records."""

    events: int = 0
    process_s: float = 0.0
    decode_s: float = 0.0
    rss_at: dict[int, float] = field(default_factory=dict)  # VmRSS (MB) after each 1M events


def core_only(n: int, partitions: int, policy: SelectorPolicy, seed: int,
              progress: Progress) -> Core:
    """PartitionScorer.process (decode -> select -> encode requests) on `n` events made in
    memory, `partitions` states fed ~1,000 / partitions records a call as the scorer does, and,
    timed apart, decode_inference_batch over the same records. Deferred (control-arm) picks are
    not read back here (a couple per window)."""
    rng = np.random.default_rng(seed + 1)
    scorers = [PartitionScorer("bench", p, SelectorState.create(policy.scaled(1 / partitions), p),
                               0, service_version="bench", fetch=lambda _offset: None)
               for p in range(partitions)]
    core = Core()
    try:
        while core.events < n:
            parts: list[list[Record]] = [[] for _ in range(partitions)]
            chunk = event_bodies(rng, core.events, min(1000, n - core.events))
            for i, (key, body) in enumerate(chunk, core.events):
                parts[i % partitions].append(Record(i // partitions, key,
                                                    body + stamp(T0 + i * DT), 0.0))
            start = time.thread_time()
            for records in parts:
                decode_inference_batch([record.value for record in records])
            middle = time.thread_time()
            for scorer, records in zip(scorers, parts, strict=True):
                scorer.process(records)
            core.decode_s += middle - start
            core.process_s += time.thread_time() - middle
            core.events += len(chunk)
            if core.events % 1_000_000 == 0:
                core.rss_at[core.events // 1_000_000] = rss_mb()
            progress.show(f"core only: {core.events:,}/{n:,}")
    finally:
        progress.end()
    return core


# -- the run ------------------------------------------------------------------------------------

def setup(bootstrap: str, partitions: int, n: int, seed: int, meter: Meter,
          progress: Progress) -> tuple[str, Phase]:
    """Create a fresh set of loop topics and produce the N bulk events to the input topic."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    create_topics(AdminClient({"bootstrap.servers": bootstrap}), loop_topics(partitions, prefix))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         "allow.auto.create.topics": False})
    rng = np.random.default_rng(seed)
    start, done = meter.read(), 0
    while done < n:
        chunk = event_bodies(rng, done, min(10_000, n - done))
        produce_all(producer, prefix + INFERENCE_EVENTS,
                    [(k, b + stamp(T0 + i * DT)) for i, (k, b) in enumerate(chunk, done)])
        done += len(chunk)
        progress.show(f"produce: {done:,}/{n:,}")
    if producer.flush(60) != 0:
        raise RuntimeError("produce: records still undelivered after 60 s")
    progress.end()
    return prefix, Phase("produce (setup; generation incl.)", n, start, meter.read())


def scorer_settings(bootstrap: str, prefix: str, batch_size: int | None,
                    consumer: dict[str, Any]) -> ScorerSettings:
    # The scorer's own settings as a user sets them (e.g. ACTIVE_STREAM_SCORER_BATCH_LINGER_S),
    # except those the bench needs.
    env = {**user_scorer_settings(),
           "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "ACTIVE_STREAM_SCORER_GROUP_ID": f"bench-scorer-{uuid.uuid4().hex[:8]}",
           "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
           "ACTIVE_STREAM_SCORER_METRICS_HOST": "127.0.0.1",
           "ACTIVE_STREAM_SCORER_METRICS_PORT": "0",
           # The embedded broker's group join takes session.timeout.ms / 2 (docs/brokers.md).
           "ACTIVE_STREAM_KAFKA_SESSION_TIMEOUT_MS": "6000",
           "ACTIVE_STREAM_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
    for key, value in consumer.items():
        env["ACTIVE_STREAM_KAFKA_" + key.upper().replace(".", "_")] = str(value)
    if batch_size:
        env["ACTIVE_STREAM_SCORER_BATCH_SIZE"] = str(batch_size)
    return ScorerSettings.from_env(env)


def user_scorer_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("ACTIVE_STREAM_SCORER_")}


def describe_scorer(args: argparse.Namespace) -> str:
    settings = [f"batch_size={args.batch_size}"] if args.batch_size else []
    settings += [f"{k}={v}" for k, v in sorted(user_scorer_settings().items())]
    return ", ".join(settings + args.kafka) or "default settings"


def bench_policy() -> SelectorPolicy:
    default = SelectorPolicy()
    return replace(default, budget=replace(default.budget, labels_per_hour=1e9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--out", type=Path,
                        help="write scorer.png, summary.json (and scorer.prof) here")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--latency-warmup-seconds", type=float, default=20.0,
                        help="paced before the --latency-seconds whose requests are timed")
    parser.add_argument("--latency-share", type=float, default=0.5,
                        help="paced rate as a share of the (iii) rate")
    parser.add_argument("--core-events", type=int, default=200_000,
                        help="events for the broker-free core figure, made in memory (0: skip "
                        "it); 10000000 for the RSS after 1M and after 10M events")
    parser.add_argument("--batch-size", type=int,
                        help="ACTIVE_STREAM_SCORER_BATCH_SIZE (default: the scorer's own)")
    parser.add_argument("--fetch-queue-backoff-ms", type=int, default=10,
                        help="fetch.queue.backoff.ms of the consumers in (i)-(iii); "
                        "-1: librdkafka's default (1000)")
    parser.add_argument("--kafka", action="append", default=[], metavar="KEY=VALUE",
                        help="a librdkafka property for the scorer's clients (repeatable), e.g. "
                        "fetch.wait.max.ms=10")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the scorer thread in (iii); skips the paced phase")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--broker", choices=sorted(BROKERS), default="apache-kafka",
                        help="where every phase runs (default: a private Apache Kafka)")
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="skip the peers (bench/peers/)")
    parser.add_argument("--peer-events", type=int, default=300_000,
                        help="events for the quix-streams peer (at most --events)")
    parser.add_argument("--slow-peer-events", type=int, default=30_000,
                        help="events for the faust and scikit-activeml peers")
    parser.add_argument("--peer-python", metavar="PATH",
                        help="the interpreter of the venv `make bench-peers` makes, for the "
                        "peers (default: this one); keeps quix-streams' confluent-kafka < 2.13 "
                        "out of the service's environment (bench/README.md)")
    parser.add_argument("--scaling-events", type=int, default=300_000,
                        help="events for the scale-out runs, 1 vs 2 scorer processes (0: skip)")
    parser.add_argument("--no-tansu-latency", dest="tansu_latency", action="store_false",
                        help="skip the paced phase on Tansu for reference (Apache Kafka runs)")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            run_bench(args, stack)
    except KeyboardInterrupt:
        print("\ninterrupted: scorer, clients and broker stopped", file=sys.stderr)
        sys.exit(130)


def run_bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    progress, n, parts = Progress(), args.events, args.partitions
    consumer = {} if args.fetch_queue_backoff_ms < 0 else {
        "fetch.queue.backoff.ms": args.fetch_queue_backoff_ms}
    broker: ApacheKafka | EmbeddedBroker = (
        ApacheKafka() if args.broker == "apache-kafka" else EmbeddedBroker())
    stack.enter_context(broker)
    assert broker.pid is not None
    meter = Meter(broker.pid)
    size = len(event_bodies(np.random.default_rng(0), 0, 1)[0][1] + stamp(T0))
    print(f"scorer benchmark: {n:,} 10-class inference events ({size} B), {parts} partitions, "
          f"{BROKERS[args.broker]}, {os.cpu_count()} cores (load average "
          f"{os.getloadavg()[0]:.2f} at start); consumers: {consumer or 'librdkafka defaults'}; "
          f"scorer: {describe_scorer(args)}\n", flush=True)
    prefix, produced = setup(broker.bootstrap, parts, n, args.seed, meter, progress)
    print(produced.line(), flush=True)
    phases = [produced]
    works: tuple[tuple[str, Callable[[bytes], Any] | None], ...] = (
        ("(i)   consume only", None), ("(ii)  consume + orjson.loads", orjson.loads),
        ("(ii+) ceiling: (ii) + columns, no checks", ColumnsOnly()))
    for name, work in works:
        phases.append(consume_rate(broker.bootstrap, prefix + INFERENCE_EVENTS, parts, n, name,
                                   work, consumer, meter, progress))
        print(phases[-1].line(), flush=True)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux

    extra = dict(kv.split("=", 1) for kv in args.kafka)
    settings = scorer_settings(broker.bootstrap, prefix, args.batch_size, {**consumer, **extra})
    policy = bench_policy()
    run = ScorerThread(settings, policy, args.profile)
    # Ctrl-C in a terminal reaches the broker too (one process group): once it is gone, a
    # graceful stop could only wait out the scorer's 60 s flush timeouts.
    stack.callback(lambda: run.stop(60.0 if broker.running() else 2.0))
    meter.scorer = run
    scored = wait_consumed(run, n, "(iii) scorer end to end", meter, progress)
    startup = scored.phase.start["t"] - run.started
    print(scored.phase.line(), flush=True)
    latency = None
    if not args.profile:
        latency = measure_latency(run, broker.bootstrap, settings, parts,
                                  args.latency_share * scored.phase.rate, args.latency_seconds,
                                  args.latency_warmup_seconds,
                                  args.seed + 2, meter, stack, progress, args.broker)
        print(latency.wait.phase.line(), flush=True)
    run.stop()
    # Before the core phase and the peers and scale-out set-ups, which hold events in memory.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # kB on Linux
    if run.profile is not None:
        print_profile(run.profile, args.out)
    core = None
    if args.core_events:
        core = core_only(args.core_events, parts, policy, args.seed, progress)
    broker_rss = rss_mb(broker.pid, "VmHWM:")
    extras = Extras()
    if args.peers:
        extras.peers = measure_peers(args, broker.bootstrap, prefix + INFERENCE_EVENTS,
                                     consumer, progress)
    if args.scaling_events:
        extras.scaling = measure_scaling(args, broker.bootstrap, broker.pid, progress)
    if latency is not None and args.broker == "apache-kafka" and args.tansu_latency:
        extras.tansu = tansu_latency(args, latency.rate, {**consumer, **extra}, progress)
    report(args, phases, scored, startup, latency, core, rss_before, peak, broker_rss, extras)


# -- beside the scorer: peers, scale-out, Tansu for reference ------------------------------------

BROKERS = {"apache-kafka": "Apache Kafka 4.1.1 (KRaft, one node, private)",
           "tansu": "embedded Tansu broker"}


@dataclass
class Extras:
    """What runs after (iii): the peers, the scale-out runs, the paced phase on Tansu."""

    peers: list[PeerRun] = field(default_factory=list)
    scaling: list[scaling.ScaleRun] = field(default_factory=list)
    tansu: Latency | None = None


def measure_peers(args: argparse.Namespace, bootstrap: str, topic: str,
                  consumer: dict[str, Any], progress: Progress) -> list[PeerRun]:
    """Each peer over the first events of the bulk topic, one after the other (not beside the
    scorer: it has stopped), with the threshold that selects 2% of those events."""
    most = min(args.events, args.peer_events)
    rng, values = np.random.default_rng(args.seed), list[bytes]()
    while len(values) < most:  # the bulk events again: setup() draws them 10,000 at a time
        values.extend(b + stamp(T0) for _, b in event_bodies(rng, len(values), 10_000))
    threshold = threshold_for(values[:most])
    print(f"\npeers: least-confidence above {threshold:.4f} (2% of the first {most:,} events); "
          "each in a process of its own, a fresh group, the topic read from the start", flush=True)
    runs = []
    for peer in PEERS:
        events = most if peer.name == "quix" else min(most, args.slow_peer_events)
        progress.show(f"peer {peer.name}: {events:,} events")
        runs.append(run_peer(peer, bootstrap, topic, args.partitions, events, threshold,
                             consumer.get("fetch.queue.backoff.ms", 1000), timeout_s=600.0,
                             python=args.peer_python))
        progress.end()
        run = runs[-1]
        if run.result is None:
            print(f"  {peer.label:<48} {run.note}", flush=True)
        else:
            r = run.result
            print(f"  {peer.label:<48} {r['eps']:>9,.0f} events/s ({r['events']:,} events, "
                  f"{r['selected']:,} selected, {r['seconds']:.2f} s)", flush=True)
    return runs


def measure_scaling(args: argparse.Namespace, bootstrap: str, broker_pid: int,
                    progress: Progress) -> list[scaling.ScaleRun]:
    """1 then 2 scorer processes on the same 2-partition topic (bench/scaling.py)."""
    prefix = f"bench{uuid.uuid4().hex[:6]}scale."
    rng = np.random.default_rng(args.seed + 5)
    events = [(k, b + stamp(T0 + i * DT)) for i, (k, b) in
              enumerate(event_bodies(rng, 0, args.scaling_events, "scale-"))]
    scaling.fill(bootstrap, prefix, events)
    # As bench_policy(): the event-time budget lifted, so the 2% share binds.
    policy: dict[str, object] = {"budget": {"labels_per_hour": 1e9}}
    print(f"\nscale-out: {len(events):,} events on 2 partitions, scorer processes "
          "(`active-stream scorer`), a fresh group each run", flush=True)
    runs = []
    for instances in (1, 2):
        runs.append(scaling.run(bootstrap, prefix, instances, len(events), policy,
                                progress.show, cpu_seconds, broker_pid))
        progress.end()
        run = runs[-1]
        print(f"  {instances} instance(s) {run.rate:>12,.0f} events/s "
              f"({run.events:,} events in {run.seconds:.2f} s; CPU per event: scorers "
              f"{run.scorer_cpu_s / run.events * 1e6:.1f} us, broker "
              f"{run.broker_cpu_s / run.events * 1e6:.1f} us)", flush=True)
    return runs


def tansu_latency(args: argparse.Namespace, rate: float, consumer: dict[str, Any],
                  progress: Progress) -> Latency:
    """The paced phase again, at the same rate, on a fresh embedded Tansu broker and scorer,
    for reference. 1,000 events first, so the scorer has joined and caught up before pacing."""
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        assert broker.pid is not None
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        create_topics(AdminClient({"bootstrap.servers": broker.bootstrap}),
                      loop_topics(args.partitions, prefix))
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
        warm = event_bodies(np.random.default_rng(args.seed + 6), 0, 1000, "warm-")
        produce_all(producer, prefix + INFERENCE_EVENTS,
                    [(k, b + stamp(time.time())) for k, b in warm])
        producer.flush(30)
        settings = scorer_settings(broker.bootstrap, prefix, args.batch_size, consumer)
        run = ScorerThread(settings, bench_policy(), False)
        stack.callback(lambda: run.stop(60.0 if broker.running() else 2.0))
        meter = Meter(broker.pid)
        meter.scorer = run
        wait_consumed(run, 1000, "Tansu: warm-up", meter, progress)
        latency = measure_latency(run, broker.bootstrap, settings, args.partitions, rate,
                                  args.latency_seconds, args.latency_warmup_seconds,
                                  args.seed + 7, meter, stack, progress,
                                  "tansu")
        print(latency.wait.phase.line().replace("paced at", "Tansu, paced at"), flush=True)
        return latency


# -- output -------------------------------------------------------------------------------------

def breakdown(phase: Phase, core: Core | None) -> list[str]:
    """Where the scorer's wall time goes, per 1,000 events: the batch-duration histogram splits
    the loop, the scorer thread's CPU time splits working from waiting, and the broker-free core
    (CPU time, measured apart) splits the work into decode, select + encode, and the shell."""
    k = 1000 / phase.events * 1e3  # seconds over the phase -> ms per 1,000 events
    wall, inside, cpu = phase.seconds * k, phase.d("batch_s") * k, phase.d("thread") * k
    batches = max(1.0, phase.d("batches"))
    lines = [f"    per 1,000 events: {wall:5.1f} ms wall = {inside:5.1f} ms in Scorer._process "
             f"(decode..commit; {batches:,.0f} batches of {phase.events / batches:,.0f}) + "
             f"{wall - inside:4.1f} ms in the rest of the loop (consume, feedback poll, "
             "checkpoints)",
             f"                      {wall:5.1f} ms wall = {cpu:5.1f} ms on a CPU (the scorer "
             f"thread) + {wall - cpu:5.1f} ms off it (waiting on the broker: consume, flush, "
             "commit; or for a core or the GIL)"]
    if core is not None:
        decode = core.decode_s / core.events * 1e6
        rest = (core.process_s - core.decode_s) / core.events * 1e6
        lines.append(f"                      {cpu:5.1f} ms CPU  = {decode:5.1f} ms "
                     f"decode_inference_batch + {rest:5.1f} ms select and encode (both measured "
                     f"without Kafka) + {cpu - decode - rest:5.1f} ms the Kafka shell (messages, "
                     "produce, metrics, checkpoints)")
    requests = phase.d("requests")
    lines.append(f"    {requests:,.0f} requests ({requests / phase.events:.2%}), "
                 f"{phase.d('checkpoints'):.0f} checkpoints")
    return lines


def report(args: argparse.Namespace, phases: list[Phase], scored: Wait, startup: float,
           latency: Latency | None, core: Core | None, rss_before: float, peak: float,
           broker_rss: float, extras: Extras) -> None:
    produced, consumed, decoded, ceiling = phases
    ratio = scored.phase.rate / decoded.rate
    print(f"\nResults: {args.events:,} events, {args.partitions} partitions"
          f"{' (scorer under cProfile: slowed)' if args.profile else ''}")
    for phase in (produced, consumed, decoded, ceiling, scored.phase):
        print(f"  {phase.name:<40} {phase.rate:>9,.0f} events/s")
    print(f"  {'ratio (iii)/(ii)':<40} {ratio:>9.2f}   "
          f"({'meets' if ratio >= TARGET_RATIO else 'MISSES'} the {TARGET_RATIO} target)")
    print(f"  {'ceiling (ii+)/(ii)':<40} {ceiling.rate / decoded.rate:>9.2f}   (no scorer on "
          "this stack can exceed it: it does less than any scorer must)")
    of_ceiling = scored.phase.rate / ceiling.rate
    print(f"  {'ratio (iii)/(ii+)':<40} {of_ceiling:>9.2f}   "
          f"({'meets' if of_ceiling >= CEILING_TARGET else 'MISSES'} the {CEILING_TARGET} "
          "target of issue 19)")
    print("\n".join(breakdown(scored.phase, core)))
    print(f"    startup (group join + restore), not timed: {startup:.1f} s")
    summary: dict[str, Any] = {
        "events": args.events, "partitions": args.partitions,
        "consume_eps": round(consumed.rate), "decode_eps": round(decoded.rate),
        "scorer_eps": round(scored.phase.rate), "ratio": round(ratio, 3),
        "ceiling_eps": round(ceiling.rate), "ceiling_ratio": round(ceiling.rate / decoded.rate, 3),
        "core_eps": round(core.events / core.process_s) if core else None,
        "scorer_startup_s": round(startup, 2), "peak_rss_mb": round(peak, 1),
        "other_load_cores_iii": round(scored.phase.others(), 2),
        "broker_peak_rss_mb": round(broker_rss, 1), "profiled": args.profile,
    }
    if core is not None:
        print(f"  {'core only, no Kafka (context)':<40} {core.events / core.process_s:>9,.0f} "
              f"events per CPU second (PartitionScorer.process, {core.events:,} events in "
              "memory)")
        if core.rss_at:
            at = ", ".join(f"{m}M: {mb:.0f} MB" for m, mb in sorted(core.rss_at.items()))
            print(f"  {'RSS during the core run, by events':<40} {at}   (this process, the "
                  f"scorer thread stopped: the state of {args.partitions} partitions grows or not)")
            summary["core_rss_mb_at_millions"] = {str(m): round(mb, 1)
                                                  for m, mb in sorted(core.rss_at.items())}
    rss_peak = scored.rss_peak
    if latency is not None:
        rss_peak = max(rss_peak, latency.wait.rss_peak)
        summary.update(print_latency(latency))
        print_latency_breakdown(latency)
    print(f"  {'peak RSS, bench process':<40} {peak:9.1f} MB   (holds the scorer and the bench's "
          f"consumers: an upper bound; {rss_before:.0f} MB before the scorer started, at most "
          f"{rss_peak:.0f} MB sampled while it ran)")
    held = "memory storage: every event" if args.broker == "tansu" else "a JVM, 512 MB heap"
    print(f"  {'peak RSS, broker':<40} {broker_rss:9.1f} MB   ({held})")
    if scored.rss_at:
        at = ", ".join(f"{m}M: {mb:.0f} MB" for m, mb in sorted(scored.rss_at.items()))
        print(f"  {'RSS during (iii), by events consumed':<40} {at}   (the bench process: the "
              "scorer and the bench's closed consumers)")
        summary["rss_mb_at_millions"] = {str(m): round(mb, 1)
                                         for m, mb in sorted(scored.rss_at.items())}
    summary.update(print_extras(scored.phase.rate, extras))
    if args.out:
        print(f"  {plot(args.out, scored, latency)}")
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("JSON " + json.dumps(summary), flush=True)


def print_extras(scorer_eps: float, extras: Extras) -> dict[str, Any]:
    """The peers (and the scorer's multiple of each), scale-out, Tansu's latency; JSON fields."""
    out: dict[str, Any] = {}
    for run in extras.peers:
        out[f"{run.peer.name}_eps"] = round(run.eps) if run.eps else None
        if not run.eps:
            print(f"  {'peer: ' + run.peer.name:<40} {run.note}")
            continue
        multiple, goal = scorer_eps / run.eps, PEER_GOALS[run.peer.name]
        out[f"{run.peer.name}_multiple"] = round(multiple, 2)
        print(f"  {'peer: ' + run.peer.label[:34]:<40} {run.eps:>9,.0f} events/s   the scorer "
              f"is {multiple:5.2f}x it ({'meets' if multiple >= goal else 'MISSES'} the "
              f"{goal:g}x goal; {run.events:,} events)")
    if len(extras.scaling) == 2:
        one, two = extras.scaling
        print(f"  {'scale-out, 2 partitions':<40} 1 instance {one.rate:,.0f}, 2 instances "
              f"{two.rate:,.0f} events/s: {two.rate / one.rate:.2f}x (goal 1.7x)")
        # The scorer and the broker share this machine's cores: at one instance's CPU per
        # event (scorer + broker), no number of instances gets past cores / that cost here.
        per_event = (one.scorer_cpu_s + one.broker_cpu_s) / one.events
        cores = os.cpu_count() or 1
        print(f"    CPU per event with 1 instance: {per_event * 1e6:.1f} us (scorer + broker), so "
              f"{cores} cores allow at most {cores / per_event:,.0f} events/s here, "
              f"{cores / per_event / one.rate:.2f}x one instance; 1.7x needs "
              f"{1.7 * one.rate * per_event:.1f} cores at that cost")
        out.update(scale_1_eps=round(one.rate), scale_2_eps=round(two.rate),
                   scale_ratio=round(two.rate / one.rate, 2),
                   scale_cpu_bound_ratio=round(cores / per_event / one.rate, 2))
    if extras.tansu is not None:
        lat = extras.tansu
        print(f"  {'Tansu, paced at ' + format(lat.rate, ',.0f') + ' events/s':<40} p50 "
              f"{lat.ms(0.5):6.1f} ms   p99 {lat.ms(0.99):6.1f} ms   ({lat.seconds.size:,} "
              "requests; for reference, its fetch.wait.max.ms quirk included)")
        out.update(tansu_latency_p50_ms=round(lat.ms(0.5), 1),
                   tansu_latency_p99_ms=round(lat.ms(0.99), 1))
    return out


def print_latency(lat: Latency) -> dict[str, Any]:
    phase = lat.wait.phase
    p50, p99 = lat.ms(0.5), lat.ms(0.99)
    print(f"  {'latency, paced at ' + format(lat.rate, ',.0f') + ' events/s':<40} p50 {p50:6.1f} "
          f"ms   p99 {p99:6.1f} ms   max {lat.ms(1.0):6.1f} ms   ({lat.seconds.size:,} requests)")
    print(f"    = when a reader process got the request from the requests topic minus its "
          f"event_timestamp (the pacer's wall clock at produce); includes the pacer's linger "
          f"(5 ms), the scorer's batching, flush and commit, and the reader's fetch. A caught-up "
          f"consumer waits up to fetch.wait.max.ms (librdkafka: 500) for data: Tansu does not "
          f"answer a waiting fetch early when records arrive (try --kafka "
          f"fetch.wait.max.ms=20). Requests of events paced in the first {lat.warmup_s:g} s "
          f"(the warm-up) are not counted.\n"
          f"    paced {lat.sent:,} events in {lat.paced_s:.1f} s (worst lag behind schedule "
          f"{lat.worst_lag_s * 1e3:.0f} ms); the scorer consumed them at {phase.rate:,.0f}/s, "
          f"the last {phase.seconds - lat.paced_s:.2f} s after the pacer ended; it emitted "
          f"{phase.d('requests'):,.0f} requests; its own histogram over the whole phase (wall "
          f"at produce - event time) says p50 <= {histogram_quantile(lat.histogram, 0.5):g} s, "
          f"p99 <= {histogram_quantile(lat.histogram, 0.99):g} s")
    behind = phase.seconds - lat.paced_s
    if behind > 1.0:
        print(f"    NOTE: the scorer fell behind the pacer (it consumed the last event "
              f"{behind:.1f} s after it was produced), so these latencies include a growing "
              "backlog; see the machine's other load above, or pace slower (--latency-share)")
    return {"latency_rate_eps": round(lat.rate), "paced_scorer_eps": round(phase.rate),
            "latency_p50_ms": round(p50, 1),
            "latency_p99_ms": round(p99, 1), "latency_requests": int(lat.seconds.size)}


def print_latency_breakdown(lat: Latency) -> None:
    print("    the scorer while paced:")
    print("\n".join(breakdown(lat.wait.phase, None)))


def print_profile(profile: cProfile.Profile, out: Path | None) -> None:
    buf = io.StringIO()
    stats = pstats.Stats(profile, stream=buf)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)
    print("\ncProfile of the scorer thread, start to stop (profiling slows it):")
    print(buf.getvalue())
    if out is not None:
        stats.dump_stats(out / "scorer.prof")


def plot(out: Path, scored: Wait, latency: Latency | None) -> str:
    """scorer.png: (iii) throughput over time; latency over the paced phase, and its CDF."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no plot"
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    t = np.array([s for s, _ in scored.timeline]) - scored.timeline[0][0]
    c = np.array([n for _, n in scored.timeline], dtype=float)
    step = max(1, len(t) // 200)
    axes[0].plot(t[step::step], np.diff(c[::step]) / np.diff(t[::step]))
    axes[0].set(title="(iii) scorer throughput", xlabel="s since the scorer started",
                ylabel="events/s")
    if latency is not None and latency.seconds.size:
        ms = latency.seconds * 1e3
        axes[1].plot(latency.received - latency.received.min(), ms, ".", markersize=2)
        axes[1].set(title=f"event-to-request latency, paced at {latency.rate:,.0f} events/s",
                    xlabel="s since the first request", ylabel="ms")
        axes[2].plot(np.sort(ms), np.arange(1, ms.size + 1) / ms.size)
        axes[2].set_xscale("log")
        axes[2].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axes[2].set(title="latency distribution", xlabel="ms (log)", ylabel="share of requests")
    fig.tight_layout()
    fig.savefig(out / "scorer.png", dpi=100)
    plt.close(fig)
    return f"plot: {out / 'scorer.png'}"


if __name__ == "__main__":
    main()
