"""One run of the whole loop for the chaos soak (bench/chaos.py): on fresh topics under their
own prefix, 2 scorer instances and 2 sink workers as real processes, the actors of
chaos_actors.py, and (in the soak, not in the reference run) the faults of chaos_fleet.py plus
one broker restart. Ends with a drain, a graceful stop and a read of every topic the checks
need (`Outcome`)."""

from __future__ import annotations

import json
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from bench.chaos_actors import (
    Annotator,
    FeedbackTail,
    Trainer,
    consumer,
    ends,
    read_topic,
    wait,
)
from bench.chaos_fleet import Fleet, Slot, peak_rss_mib
from bench.chaos_input import Record
from bench.chaos_model import ModelService
from services.evaluation.processes import ServiceProcess
from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.topics import create_topics, dlq, loop_topics

PARTITIONS = 4
# The broker restarts on this thread, never on one that ends: Linux sends a child its
# parent-death signal (ApacheKafka sets SIGTERM) when the THREAD that spawned it exits, so a
# broker started from a short-lived thread is stopped again the moment that thread returns.
_KEEPER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-keeper")
PROGRESS_S = 10.0  # how often a progress line is printed (and RSS and metrics sampled)
BROKER_START_S = 240.0  # how long the restarted broker may take to serve again
BROKER_STOP_S = 180.0  # how long its controlled shutdown may take before a SIGKILL
STUCK_S = 90.0  # longer than the broker restart took (59 s): a stall past it is a finding


@dataclass(frozen=True)
class Settings:
    """What one run is given. `minutes`: the fault window (None: the reference run, no faults,
    the input as fast as it goes); `rate`: input records/s during the window."""

    seed: int
    minutes: float | None
    rate: float
    trigger_every: int
    policy: dict[str, Any]
    fault_interval: tuple[float, float] = (10.0, 60.0)
    drain_s: float = 240.0
    sabotage: str = "none"
    broker_restart: bool = True


@dataclass
class Outcome:
    """What a run produced, read back from the topics after a graceful stop."""

    name: str
    prefix: str
    produced: int = 0
    input_ends: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    inputs: list[tuple[int, int, str | None, float | None]] = field(default_factory=list)
    dead_letters: list[tuple[int, int, str]] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    label_ids: set[str] = field(default_factory=set)
    counted: dict[str, dict[str, int]] = field(default_factory=dict)
    trigger_records: dict[str, set[bytes]] = field(default_factory=dict)
    trained: dict[str, list[tuple[str, str, str | None]]] = field(default_factory=dict)
    trainer_problems: list[str] = field(default_factory=list)
    peak_mib: dict[str, float] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    stop_codes: dict[str, int | None] = field(default_factory=dict)
    actor_errors: list[str] = field(default_factory=list)
    drained: bool = False
    early_joined: int = 0
    answered_first: int | None = None
    labels_sent: int = 0
    topped_up: dict[str, int] = field(default_factory=dict)
    producers_replaced: list[str] = field(default_factory=list)  # the model service's (why)
    seconds: float = 0.0


def _env_scorer(kafka: ApacheKafka, prefix: str, i: int, s: Settings) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "ACTIVE_STREAM_LOG_FORMAT": "json",
            "ACTIVE_STREAM_SCORER_GROUP_ID": f"{prefix}scorer",
            "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
            "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"scorer-{i}",
            "ACTIVE_STREAM_SCORER_METRICS_HOST": "127.0.0.1",
            "ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S": "0.2",
            "ACTIVE_STREAM_SCORER_SEED": str(s.seed),
            "ACTIVE_STREAM_SCORER_POLICY": json.dumps(s.policy, sort_keys=True),
            # Requests from the input alone, so they can be compared with the reference run's
            # (bench/chaos.py's docstring).
            "ACTIVE_STREAM_SCORER_CLASS_FEEDBACK": "false",
            # The integration suite's group timings: a SIGSTOP longer than 6 s costs the
            # stopped member its partitions, as a hung pod would.
            "ACTIVE_STREAM_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "ACTIVE_STREAM_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}


def _env_sink(kafka: ApacheKafka, prefix: str, i: int, s: Settings,
              workdir: Path) -> dict[str, str]:
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "ACTIVE_STREAM_LOG_FORMAT": "json",
            "ACTIVE_STREAM_LABEL_SINK_APP_ID": f"{prefix}sink",
            "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": prefix,
            "ACTIVE_STREAM_LABEL_SINK_INSTANCE_ID": f"sink-{i}",
            "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
            "ACTIVE_STREAM_LABEL_SINK_SESSION_TIMEOUT_S": "6",
            "ACTIVE_STREAM_LABEL_SINK_HEARTBEAT_INTERVAL_S": "1",
            # Feedback (the soak's view of what is counted) at most a second after a count.
            "ACTIVE_STREAM_LABEL_SINK_FEEDBACK_INTERVAL_S": "1",
            "ACTIVE_STREAM_LABEL_SINK_TRIGGER_MIN_LABELS": str(s.trigger_every),
            "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": str(workdir / f"sink-{i}-data")}


class Run:
    """One run (module doc); `go()` returns its Outcome. `say` prints progress."""

    def __init__(self, kafka: ApacheKafka, records: list[Record], s: Settings, name: str,
                 workdir: Path, say: Callable[[str], None]) -> None:
        self.kafka, self.records, self.s, self.name, self.say = kafka, records, s, name, say
        self.prefix = f"chaos-{name}-{uuid.uuid4().hex[:6]}."
        self.workdir = workdir / name
        self.out = Outcome(name, self.prefix)
        self.t0 = time.monotonic()
        self._model_seen = (0, self.t0)  # (delivered, when it last changed)
        self._stack_shown = False

    def topic(self, name: str) -> str:
        return self.prefix + name

    def go(self) -> Outcome:
        create_topics(AdminClient({"bootstrap.servers": self.kafka.bootstrap}),
                      loop_topics(PARTITIONS, prefix=self.prefix))
        fleet = Fleet(self._slots(), self.say)
        fleet.start()
        bootstrap = self.kafka.bootstrap
        fast = self.s.minutes is None
        model = ModelService(bootstrap, self.topic(topics.INFERENCE_EVENTS), self.records,
                             None if fast else self.s.rate, PARTITIONS)
        annotator = Annotator(bootstrap, self.topic(topics.ANNOTATION_REQUESTS),
                              self.topic(topics.LABELS), PARTITIONS, self.s.seed,
                              0.0 if fast else 1.0,
                              sabotage_double_count=self.s.sabotage == "double-count")
        trainer = Trainer(bootstrap, self.topic(topics.RETRAIN_TRIGGERS),
                          self.topic(topics.LABELS))
        feedback = FeedbackTail(bootstrap, self.topic(topics.CLASS_FEEDBACK))
        actors = [model, annotator, trainer, feedback]
        try:
            fleet.wait_ready(180)
            self.say(f"[{self.name}] services ready in {time.monotonic() - self.t0:.1f}s")
            for actor in actors:
                actor.start()
            if not fast:
                self._faults(fleet, model, annotator, trainer, feedback)
            self._drain(fleet, model, annotator, trainer, feedback)
            self.out.early_joined = fleet.early_joined()
            self.out.stop_codes = fleet.stop()
        finally:
            fleet.kill_all()
            for actor in actors:
                actor.halt.set()
            for actor in actors:
                actor.join(90)
        self._collect(fleet, model, annotator, trainer, feedback)
        self.out.seconds = time.monotonic() - self.t0
        return self.out

    def _slots(self) -> list[Slot]:
        def scorer(i: int) -> Callable[[], ServiceProcess]:
            env = _env_scorer(self.kafka, self.prefix, i, self.s)
            return lambda: ServiceProcess("scorer", env, "ACTIVE_STREAM_SCORER_METRICS_PORT",
                                          self.workdir / f"scorer-{i}.log")

        def sink(i: int) -> Callable[[], ServiceProcess]:
            env = _env_sink(self.kafka, self.prefix, i, self.s, self.workdir)
            return lambda: ServiceProcess("label-sink", env,
                                          "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT",
                                          self.workdir / f"sink-{i}.log")

        return [Slot(f"scorer-{i}", scorer(i)) for i in range(2)] + \
            [Slot(f"sink-{i}", sink(i)) for i in range(2)]

    def _progress(self, fleet: Fleet, model: ModelService, annotator: Annotator,
                  trainer: Trainer, feedback: FeedbackTail) -> None:
        fleet.sample()
        self.out.peak_mib["broker"] = max(self.out.peak_mib.get("broker", 0.0),
                                          peak_rss_mib(self.kafka.pid))
        self._model_stuck(model)
        self.say(f"[{self.name}] t+{time.monotonic() - self.t0:5.0f}s events "
                 f"{model.delivered}/{len(self.records)} ({model.sent} sent, "
                 f"{len(model.producer)} in the producer, {model.failed} failed, "
                 f"{len(model.replaced)} producers replaced), requests read "
                 f"{annotator.requests} "
                 f"({len(annotator.answered)} answered), labels sent {annotator.sent}, counted "
                 f"{feedback.counted()}, triggers {len(trainer.trained)}; faults "
                 f"{len(fleet.faults)}, exits {len(fleet.exits)}; {fleet.states()}")

    def _model_stuck(self, model: ModelService) -> None:
        """Once, when the model service has delivered nothing for STUCK_S while it had records
        to send: print its thread's stack. The 30-minute run's model service stopped for good
        after the broker restart without a trace; the stack tells a thread blocked in a call
        from a producer that holds records it never sends (then `in the producer` grows)."""
        now = time.monotonic()
        if model.delivered != self._model_seen[0]:
            self._model_seen = (model.delivered, now)
            return
        if (self._stack_shown or model.halt.is_set() or not model.is_alive()
                or now - self._model_seen[1] < STUCK_S):
            return
        self._stack_shown = True
        frame = sys._current_frames().get(model.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)"
        self.say(f"[{self.name}] model service: nothing delivered for {STUCK_S:.0f} s; its "
                 f"stack:\n{stack}")

    def _faults(self, fleet: Fleet, *actors: Any) -> None:
        """Faults every fault_interval seconds (seeded) and one broker restart, for `minutes`."""
        assert self.s.minutes is not None
        rng = np.random.default_rng([self.s.seed, 4])
        lo, hi = self.s.fault_interval
        start = time.monotonic()
        end = start + self.s.minutes * 60
        next_fault = start + float(rng.uniform(lo, hi))
        broker_at: float | None = start + float(rng.uniform(0.3, 0.7)) * self.s.minutes * 60
        if not self.s.broker_restart:
            broker_at = None
        next_progress = start
        restart: Future[None] | None = None
        while time.monotonic() < end:
            now = time.monotonic()
            fleet.tick()
            if now >= next_fault:
                fleet.fault(rng)
                next_fault = now + float(rng.uniform(lo, hi))
            if broker_at is not None and now >= broker_at:
                broker_at = None
                # The faults go on meanwhile (SIGCONTs and restarts due).
                restart = _KEEPER.submit(self._restart_broker, fleet)
            if now >= next_progress:
                self._progress(fleet, *actors)
                next_progress = now + PROGRESS_S
            time.sleep(0.2)
        if restart is not None:
            restart.result()

    def _restart_broker(self, fleet: Fleet) -> None:
        began = time.monotonic()
        self.out.peak_mib["broker"] = max(self.out.peak_mib.get("broker", 0.0),
                                          peak_rss_mib(self.kafka.pid))
        fleet._note("broker restart begins (SIGTERM)", fleet.faults)
        # A controlled shutdown took 11-30 s here, near ApacheKafka.stop's default 30-s grace,
        # past which it is SIGKILLed: the restart is meant to be a clean one. Start-up took
        # 10-45 s with the machine's load average near 30: more than the default 60 s.
        self.kafka.stop(BROKER_STOP_S)
        self.kafka.start(BROKER_START_S)
        fleet._note(f"broker serving again ({time.monotonic() - began:.1f}s)", fleet.faults)

    def _drain(self, fleet: Fleet, model: ModelService, annotator: Annotator,
               trainer: Trainer, feedback: FeedbackTail) -> None:
        """Every service up; the input sent and committed; every request answered; each model
        topped up to whole triggers; every label counted and covered by a trigger."""
        fleet.tick(now=True)
        deadline = time.monotonic() + self.s.drain_s
        last = [time.monotonic()]
        group = consumer(self.kafka.bootstrap, **{"group.id": f"{self.prefix}scorer"})
        reader = consumer(self.kafka.bootstrap)
        requests = self.topic(topics.ANNOTATION_REQUESTS)
        inputs = self.topic(topics.INFERENCE_EVENTS)

        def tick() -> None:
            fleet.tick()
            if time.monotonic() - last[0] > PROGRESS_S:
                last[0] = time.monotonic()
                self._progress(fleet, model, annotator, trainer, feedback)

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        def input_committed() -> bool:
            tps = group.committed([TopicPartition(inputs, p) for p in range(PARTITIONS)], 10)
            return {tp.partition: tp.offset for tp in tps} == ends(reader, inputs, PARTITIONS)

        def answered() -> bool:
            want = ends(reader, requests, PARTITIONS)
            return all(annotator.read_upto[p] >= e for p, e in want.items()) and \
                annotator.pending() == 0

        try:
            ok = (wait(lambda: model.halt.is_set(), left(), tick)
                  and wait(input_committed, left(), tick) and wait(answered, left(), tick))
            if ok:
                self.out.topped_up = annotator.top_up(self.s.trigger_every, self._latest() + 60)
                want = annotator.expected()
                total = sum(sum(c.values()) for c in want.values())
                ok = wait(lambda: annotator.pending() == 0 and all(
                    sum(feedback.latest.get(m, {}).values()) >= sum(c.values())
                    for m, c in want.items()) and trainer.covered() >= total, left(), tick)
            self.out.drained = ok
            self._progress(fleet, model, annotator, trainer, feedback)
            self.say(f"[{self.name}] drained: {ok} "
                     f"(t+{time.monotonic() - self.t0:.0f}s)")
        finally:
            group.close()
            reader.close()

    def _answered_first(self) -> int | None:
        """Labels produced before the sink stored their request: the label's timestamp (set by
        the annotator's producer) before the first record of the request in the sink's
        requests-table changelog (written once the sink has read it). Unlike the sink's own
        counter of labels that waited, this survives its kills. None without that changelog."""
        changelog = f"{self.prefix}sink-requests-changelog"
        try:
            stored: dict[str, int] = {}
            for m in read_topic(self.kafka.bootstrap, changelog, PARTITIONS):
                rid = orjson.loads(m.key() or b"null")
                if isinstance(rid, str) and m.value() is not None:
                    stored.setdefault(rid, m.timestamp()[1])
            early = 0
            for m in read_topic(self.kafka.bootstrap, self.topic(topics.LABELS), PARTITIONS):
                rid = orjson.loads(m.value() or b"{}").get("request_id")
                if rid in stored and m.timestamp()[1] < stored[rid]:
                    early += 1
            return early
        except KafkaException:
            return None

    def _latest(self) -> float:
        """The newest event time of the input (the backlog labels come after it)."""
        good = [r.value for r in self.records if r.code is None and r.value is not None]
        return max(float(orjson.loads(v)["timestamp"]) for v in good[-100:])

    def _collect(self, fleet: Fleet, model: ModelService, annotator: Annotator,
                 trainer: Trainer, feedback: FeedbackTail) -> None:
        o, bootstrap = self.out, self.kafka.bootstrap
        o.produced = model.delivered
        o.producers_replaced = list(model.replaced)
        if model.unresolved:
            # Failed deliveries the model service reconciled are not errors; records whose
            # outcome it never learnt are (bench/chaos_model.py).
            first = [self.records[i].key.decode() for i in sorted(model.unresolved)[:5]]
            o.actor_errors.append(f"{len(model.unresolved)} events of unknown outcome (first: "
                                  f"{first}; last error: {model.last_error})")
        if annotator.failed:
            o.actor_errors.append(f"deliveries failed: {annotator.failed} labels (last error: "
                                  f"{annotator.last_error})")
        o.faults, o.exits = fleet.faults, fleet.exits
        o.actor_errors += [f"{a.name}: {a.error!r}" for a in (model, annotator, trainer, feedback)
                           if a.error is not None]
        for slot in fleet.slots:
            o.peak_mib[slot.name] = slot.peak_mib
        o.expected = {m: dict(c) for m, c in annotator.expected().items()}
        o.label_ids = set(annotator.answered)
        o.counted = {m: dict(c) for m, c in feedback.latest.items()}
        o.trigger_records = {k: set(v) for k, v in trainer.records.items()}
        o.trained, o.trainer_problems = dict(trainer.trained), list(trainer.problems)
        o.labels_sent = annotator.sent
        inputs = self.topic(topics.INFERENCE_EVENTS)
        code_of = {r.key: r.code for r in self.records}
        for msg in read_topic(bootstrap, inputs, PARTITIONS):
            code = code_of.get(msg.key() or b"")
            t = None
            if code is None:
                t = float(orjson.loads(msg.value() or b"")["timestamp"])
            o.inputs.append((int(msg.partition() or 0), int(msg.offset() or 0), code, t))
        for msg in read_topic(bootstrap, dlq(inputs), 1):
            letter = orjson.loads(msg.value() or b"")
            src = letter["source"]
            o.dead_letters.append((src["partition"], src["offset"], letter["code"]))
        o.requests = [m.value() or b"" for m in
                      read_topic(bootstrap, self.topic(topics.ANNOTATION_REQUESTS), PARTITIONS)]
        o.answered_first = self._answered_first()
        reader: Consumer = consumer(bootstrap, **{"group.id": f"{self.prefix}scorer"})
        try:
            o.input_ends = ends(reader, inputs, PARTITIONS)
            tps = reader.committed([TopicPartition(inputs, p) for p in range(PARTITIONS)], 10)
            o.committed = {tp.partition: tp.offset for tp in tps}
        finally:
            reader.close()
