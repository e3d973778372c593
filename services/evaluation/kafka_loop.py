"""`--mode kafka`: the benchmark's loop end to end through the real services on a Kafka cluster.

Per seed, on fresh private topics (one partition each), a real `active-stream scorer` and
`active-stream label-sink` run as child processes, and three actors run here:

- the model service streams the seed's events as inference events (the current model's full
  distribution as `scores`, `model_version` = v<retrainings>) to al.inference-events.v1, and
  with each model version first re-scores a fixed probe set (the first PROBES held-out rows,
  `probe: true`), from which the scorer measures how many predictions a version changed: the
  stopping signal's stability branch, which the next trigger's `stopping.stable` carries;
- the oracle annotator answers every annotation request with the true class (label events on
  al.labels.v1) until the hard label cap, optionally after a delay;
- the trainer consumes al.retrain-triggers.v1, reads exactly the labels in each trigger's
  manifest from al.labels.v1, retrains, and switches the model version.

The loop runs in the rounds harness.py describes: the model service streams one round and waits
until the loop has settled on it -- the scorer has consumed it (its metrics), every request of it
is read and answered, the sink has counted every label, each trigger that must follow has been
trained on, and the scorer has applied the class feedback published with the last trigger (its
`scorer_class_weight` gauge). The sink publishes feedback only with triggers here (its timer is
set far out), so the scorer's decisions depend on the events and feedback alone, never on timing:
with the same seed the scorer selects exactly the assets the in-process run selects
(tests/integration/test_label_efficiency_kafka.py).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.core.redundancy import REASONS as REDUNDANCY_REASONS
from services.evaluation.datasets import Dataset, Split
from services.evaluation.harness import FittedModel, SeedRun, Settings
from services.evaluation.loop_view import ControlPoint, LoopView, tier_spend
from services.evaluation.processes import ServiceProcess, metric, wait_until
from services.evaluation.strategies import EPOCH, MODEL_ID, SeedContext
from services.scorer.partition import partition_seed
from services.streaming import topics
from services.streaming.annotation_requests import decode_annotation_request
from services.streaming.control_events import decode_class_feedback, decode_retrain_trigger
from services.streaming.event_fields import SCHEMA_VERSION
from services.streaming.events import FeedbackKind, encode_event
from services.streaming.partitioning import KEYED_PARTITIONER
from services.streaming.topics import create_topics, loop_topics

# Tansu holds a waiting fetch for fetch.wait.max.ms (docs/brokers.md, quirk 8): keep it short so a
# round settles in milliseconds; group timings as the integration tests use (quirk 1).
CLIENT_TIMINGS = {"fetch.wait.max.ms": 10, "session.timeout.ms": 6000,
                  "heartbeat.interval.ms": 1000}
STEP_TIMEOUT_S = 120.0  # one wait of a round (service start-up included); generous for CI
PROBES = 300  # probe assets re-scored per model version (docs/mastery.md, stability branch)


@dataclass(frozen=True)
class RoundReport:
    """Progress after one round, for a live display."""

    seed: int
    events: int
    stream: int
    requests: int
    labels: int
    cap: int
    triggers: int
    accuracy: float
    model_version: str
    # What the demo shows besides accuracy (loop_view.py): each class's mastery state, the
    # changes of state the round's triggers carried, cost units spent per tier (with tiers).
    states: Mapping[str, str] | None = None
    changes: tuple[Mapping[str, Any], ...] = ()
    spend: Mapping[str, float] | None = None
    control: ControlPoint | None = None  # the newest control-arm estimate of a model version
    stable: Mapping[str, Any] | None = None  # the last trigger's stopping.stable


class _Tail:
    """Reads one single-partition topic from the start, exactly `n` records at a time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def take(self, n: int, check: Callable[[], None]) -> list[Message]:
        out: list[Message] = []
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while len(out) < n:
            for msg in self.consumer.consume(n - len(out), 0.05):
                err = msg.error()
                if err is not None and err.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"{self.topic}: {err}")
                if err is None:
                    out.append(msg)
            if len(out) < n:
                check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.topic}: {len(out)} of {n} records arrived")
        return out

    def read(self, start: int, end: int, check: Callable[[], None]) -> list[Message]:
        """Records at offsets [start, end)."""
        self.consumer.assign([TopicPartition(self.topic, 0, start)])
        return self.take(end - start, check)

    def close(self) -> None:
        self.consumer.close()


class Annotator(Protocol):
    """Who answers the requests instead of the oracle's direct labels (`demo --label-studio`:
    services/label_studio/demo.py). `answer` gets (request, true class) pairs and returns the
    class given per request id; the labels it causes arrive on the labels topic."""

    def start(self, bootstrap: str, prefix: str, seed: int) -> None: ...

    def answer(self, requests: list[tuple[Any, str]], check: Callable[[], None]
               ) -> dict[str, str]: ...

    def stop_seed(self) -> None: ...


Events = Callable[[FittedModel, int, int, int], list[dict[str, Any]]]
"""The model service's inference events for stream positions [lo, hi) under the current model
and version: `events(model, version, lo, hi)`. Asset ids must be `asset-<position>` (the
oracle and the trainer map requests and labels back to positions by them)."""


class KafkaLoop:
    """The closed loop for one strategy (`active-stream`) on `bootstrap`; see the module doc.

    `policy_overrides`: the selector policy as ACTIVE_STREAM_SCORER_POLICY overrides (the same
    the in-process run applies); `label_delay_s`: wall-clock wait before the oracle answers a
    round's requests; `workdir`: service logs and the sink's data (a temp dir when None);
    `annotator`: answers the requests instead of the oracle's labels (None: the oracle);
    `tiers_json`: the tier policy (docs/tiers.md) both services get, None = no tiers; the oracle
    then answers a consensus request with its k labels, from k annotator ids."""

    def __init__(self, bootstrap: str, settings: Settings, policy_overrides: Mapping[str, Any],
                 *, label_delay_s: float = 0.0, workdir: Path | None = None,
                 on_round: Callable[[RoundReport], None] | None = None,
                 annotator: Annotator | None = None, tiers_json: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.policy_json = json.dumps(policy_overrides, sort_keys=True)
        self.label_delay_s = label_delay_s
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="active-stream-loop-"))
        self.on_round = on_round
        self.annotator = annotator
        self.tiers_json = tiers_json

    def run_seed(self, data: Dataset, split: Split, ctx: SeedContext, seed: int,
                 events: Events | None = None) -> SeedRun:
        """One seed through the services. `events`: how the model service builds its events
        (None: one whole-asset classification prediction per event, over the model's classes;
        the video scenario passes its own, services/evaluation/video_kafka.py)."""
        started = time.perf_counter()
        prefix = f"le{seed}-{uuid.uuid4().hex[:6]}."
        create_topics(AdminClient({"bootstrap.servers": self.bootstrap}),
                      loop_topics(1, prefix=prefix))
        scorer, sink = self._services(prefix, seed, ctx)
        try:
            for service in (scorer, sink):
                service.start()
            for service in (scorer, sink):
                service.wait_ready(STEP_TIMEOUT_S)
            if self.annotator is not None:
                self.annotator.start(self.bootstrap, prefix, seed)
            return _Round(self, prefix, scorer, sink, data, split, ctx, seed,
                          events).run(started)
        finally:
            if self.annotator is not None:
                self.annotator.stop_seed()
            for service in (scorer, sink):
                service.stop()

    def _services(self, prefix: str, seed: int, ctx: SeedContext
                  ) -> tuple[ServiceProcess, ServiceProcess]:
        common = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "ACTIVE_STREAM_LOG_FORMAT": "json"}
        scorer_env = {
            **common,
            "ACTIVE_STREAM_SCORER_GROUP_ID": f"{prefix}scorer",
            "ACTIVE_STREAM_SCORER_TOPIC_PREFIX": prefix,
            "ACTIVE_STREAM_SCORER_METRICS_HOST": "127.0.0.1",
            "ACTIVE_STREAM_SCORER_BATCH_TIMEOUT_S": "0.05",
            "ACTIVE_STREAM_SCORER_SEED": str(ctx.seed),
            "ACTIVE_STREAM_SCORER_POLICY": self.policy_json,
            "ACTIVE_STREAM_SCORER_INSTANCE_ID": f"{prefix}scorer-0",
            **{"ACTIVE_STREAM_KAFKA_" + k.upper().replace(".", "_"): str(v)
               for k, v in CLIENT_TIMINGS.items()},
        }
        sink_env = {
            **common,
            "ACTIVE_STREAM_LABEL_SINK_APP_ID": f"{prefix}sink",
            "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": prefix,
            "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
            "ACTIVE_STREAM_LABEL_SINK_SESSION_TIMEOUT_S": "6",
            "ACTIVE_STREAM_LABEL_SINK_HEARTBEAT_INTERVAL_S": "1",
            "ACTIVE_STREAM_LABEL_SINK_TRIGGER_MIN_LABELS": str(self.settings.retrain_every),
            # Feedback only with triggers: its timer would make the scorer's weights depend on
            # wall-clock timing (module docstring).
            "ACTIVE_STREAM_LABEL_SINK_FEEDBACK_INTERVAL_S": "86400",
            "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": str(self.workdir / f"{prefix}sink-data"),
        }
        if self.tiers_json is not None:
            scorer_env["ACTIVE_STREAM_SCORER_TIERS"] = self.tiers_json
            sink_env["ACTIVE_STREAM_LABEL_SINK_TIERS"] = self.tiers_json
        logs = self.workdir / f"seed-{seed}"
        return (ServiceProcess("scorer", scorer_env, "ACTIVE_STREAM_SCORER_METRICS_PORT",
                               logs / "scorer.log"),
                ServiceProcess("label-sink", sink_env, "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT",
                               logs / "label-sink.log"))


def selector_seed(ctx: SeedContext) -> int:
    """The selector seed the scorer derives for input partition 0 from ACTIVE_STREAM_SCORER_SEED
    = ctx.seed; the in-process run seeds its selector the same way."""
    return partition_seed(ctx.seed, 0)


class _Round:
    """One seed's run: the actors and the round protocol."""

    def __init__(self, loop: KafkaLoop, prefix: str, scorer: ServiceProcess,
                 sink: ServiceProcess, data: Dataset, split: Split, ctx: SeedContext,
                 seed: int, events: Events | None = None) -> None:
        self.loop, self.settings = loop, loop.settings
        self.scorer, self.sink = scorer, sink
        self.data, self.split, self.ctx, self.seed = data, split, ctx, seed
        self.input = prefix + topics.INFERENCE_EVENTS
        self.labels_topic = prefix + topics.LABELS
        self.producer = Producer({"bootstrap.servers": loop.bootstrap, "linger.ms": 2,
                                  "allow.auto.create.topics": False,
                                  "partitioner": KEYED_PARTITIONER})
        self.requests = _Tail(loop.bootstrap, prefix + topics.ANNOTATION_REQUESTS)
        self.triggers = _Tail(loop.bootstrap, prefix + topics.RETRAIN_TRIGGERS)
        self.feedback = _Tail(loop.bootstrap, prefix + topics.CLASS_FEEDBACK)
        self.labels = _Tail(loop.bootstrap, self.labels_topic)
        self.given: dict[int, str] = {}  # row -> class a person gave that differs from the truth
        self.records = 0  # label records produced by the oracle (a consensus request has k)
        self.trained_requests: set[str] = set()  # requests whose label the trainer has taken
        self.view = LoopView()
        self.control_x: dict[str, int] = {}  # model version -> labels it was trained on
        self.probes_sent = 0  # probe events produced (the scorer counts them as consumed)
        self.probed = -1  # the model version whose probes were sent last
        self.compared = 0  # versions compared with the one before on the probes
        self.events: Events = events or self._classification_events

    def check(self) -> None:
        self.scorer.check()
        self.sink.check()

    def run(self, started: float) -> SeedRun:
        try:
            return self._run(started)
        finally:
            for tail in (self.requests, self.triggers, self.feedback, self.labels):
                tail.close()

    def _run(self, started: float) -> SeedRun:
        X, y, stream, s = self.data.X, self.data.y, self.split.stream, self.settings
        X_test, y_test = X[self.split.test], y[self.split.test]
        trained = list(self.split.seed.tolist())  # rows the current model was trained on
        model = FittedModel(X[trained], y[trained], s.max_iter)
        curve = [(len(trained), model.accuracy(X_test, y_test))]
        self.control_x["v0"] = len(trained)
        picked: list[int] = []
        n, cap = stream.shape[0], self.ctx.cap
        version = pos = requests = acquired = triggered = 0
        label_offset = 0  # labels-topic offset up to which the trainer has trained
        while pos < n and acquired < cap:
            hi = min(n, pos + s.batch_size)
            if version != self.probed:  # a new model version: its probes first
                self.compared += self.probed >= 0
                self._probe(model, version, pos)
                self.probed = version
            self._stream(model, version, pos, hi)
            pos = hi
            self._wait_metric(self.scorer, "scorer_events_consumed_total",
                              hi + self.probes_sent)
            # The comparison's record in the sink before this round's labels, so that the
            # next trigger carries it whatever the timing.
            wait_until(lambda: metric(self.sink.metrics(), "label_sink_stability_records_total",
                                      outcome="applied") >= self.compared, STEP_TIMEOUT_S,
                       "the sink to apply the scorer's stability records", self.check)
            total = int(metric(self.scorer.metrics(), "scorer_requests_emitted_total"))
            batch = [decode_annotation_request(m.value() or b"")
                     for m in self.requests.take(total - requests, self.check)]
            requests = total
            self._wait_metric(self.sink, "label_sink_requests_total", requests)
            if batch and self.loop.label_delay_s:
                time.sleep(self.loop.label_delay_s)
            answers = []
            for request in batch:
                if acquired >= cap:
                    break  # the hard cap: later picks are never labeled
                p = int(request.asset_id.rsplit("-", 1)[1])
                picked.append(p)
                answers.append((request, str(y[stream[p]])))
                acquired += 1
            if self.loop.annotator is None:
                for request, truth in answers:
                    self._label(request, truth)
            elif answers:
                self.loop.annotator.answer(answers, self.check)
            if self.producer.flush(30) != 0:
                raise RuntimeError("labels not delivered within 30 s")
            if self.loop.annotator is None:
                self._wait_metric(self.sink, "label_sink_label_records_total", self.records)
            else:
                self._wait_metric(self.sink, "label_sink_label_records_total", acquired)
            due = acquired // s.retrain_every - triggered
            changes: list[Mapping[str, Any]] = []
            for msg in self.triggers.take(due, self.check):
                trigger = decode_retrain_trigger(msg.value() or b"")
                changes += self.view.trigger(trigger.mastery, trigger.stopping)
                # The ranges hold exactly the labels this trigger counted. Here every label is
                # valid and counted once (one model, one partition), so they follow on from the
                # previous trigger's without a gap.
                for r in trigger.manifest.ranges:
                    if r.start_offset != label_offset:
                        raise RuntimeError(f"trigger {trigger.trigger_id} has a range from "
                                           f"{r.start_offset}, after {label_offset} trained "
                                           "labels")
                    trained += self._rows(r.start_offset, r.end_offset)
                    label_offset = r.end_offset
                version += 1
                model = FittedModel(X[trained], self._classes(trained), s.max_iter)
                curve.append((len(trained), model.accuracy(X_test, y_test)))
                self.control_x[f"v{version}"] = len(trained)
            if due:
                triggered += due
                feedback = self._sink_feedback(due)
                self.view.feedback(feedback.classes)
                if pos < n and acquired < cap:
                    self._wait_weights(feedback)
            self._report(pos, requests, acquired, triggered, curve[-1][1], version, changes)
        end = self.records if self.loop.annotator is None else acquired
        if end > label_offset:  # the final retraining on labels past the last trigger
            trained += self._rows(label_offset, end)
            model = FittedModel(X[trained], self._classes(trained), s.max_iter)
            curve.append((len(trained), model.accuracy(X_test, y_test)))
            self._report(pos, requests, acquired, triggered, curve[-1][1], version)
        control = [{"labels": self.control_x[v], "model_version": v, "estimate": c.estimate,
                    "low": c.low, "high": c.high, "control_labels": c.labels}
                   for v, c in self.view.control.items() if v in self.control_x]
        samples = self.scorer.metrics()
        suppressed = {r: int(metric(samples, "scorer_redundant_suppressed_total", reason=r))
                      for r in REDUNDANCY_REASONS}
        return SeedRun("active-stream", self.seed, acquired, curve,
                       time.perf_counter() - started,
                       {"requests": requests, "triggers": triggered,
                        "suppressed": {r: c for r, c in suppressed.items() if c}}, picked,
                       control)

    # -- the actors ---------------------------------------------------------------------------

    def _stream(self, model: FittedModel, version: int, lo: int, hi: int) -> None:
        """The model service: events lo:hi with the current model, keyed by asset id."""
        for event in self.events(model, version, lo, hi):
            self.producer.produce(self.input, encode_event(event), event["asset_id"].encode())
        if self.producer.flush(30) != 0:
            raise RuntimeError("inference events not delivered within 30 s")

    def _probe(self, model: FittedModel, version: int, pos: int) -> None:
        """The model service re-scores the fixed probe set (the first PROBES held-out rows)
        with a new model version, stamped at the stream's current event time."""
        rows = self.split.test[:PROBES]
        for k, dist in enumerate(model.proba(self.data.X[rows]).tolist()):
            asset = f"probe-{k}"
            event = {"schema_version": SCHEMA_VERSION, "event_id": f"probe-v{version}-{k}",
                     "asset_id": asset, "model_id": MODEL_ID, "model_version": f"v{version}",
                     "timestamp": EPOCH + pos * self.settings.event_spacing, "probe": True,
                     "predictions": [{"scores": dict(zip(model.classes, dist, strict=True))}]}
            self.producer.produce(self.input, encode_event(event), asset.encode())
        self.probes_sent += rows.shape[0]

    def _classification_events(self, model: FittedModel, version: int, lo: int, hi: int
                               ) -> list[dict[str, Any]]:
        """Events lo:hi, each the current model's distribution over its classes."""
        rows = self.split.stream[lo:hi]
        proba = model.proba(self.data.X[rows])
        return [{"schema_version": SCHEMA_VERSION, "event_id": f"e{p}", "asset_id": f"asset-{p}",
                 "model_id": MODEL_ID, "model_version": f"v{version}",
                 "timestamp": EPOCH + p * self.settings.event_spacing,
                 "predictions": [{"scores": dict(zip(model.classes, dist, strict=True))}]}
                for p, dist in zip(range(lo, hi), proba.tolist(), strict=True)]

    def _label(self, request: Any, true_class: str) -> None:
        """The oracle: the true class of the requested asset, from each of the annotators its
        tier asks for (k independent labels for consensus, which agree, so it is decided)."""
        k = 1 if request.tier is None else request.tier.annotators
        for i in range(k):
            suffix = "" if k == 1 else f"-{i + 1}"
            event = {"schema_version": SCHEMA_VERSION,
                     "label_id": f"oracle-{request.request_id}{suffix}",
                     "request_id": request.request_id, "asset_id": request.asset_id,
                     "model_id": request.model_id, "annotations": [{"label": true_class}],
                     "annotator_id": f"oracle{suffix}",
                     "labeled_at": request.event_timestamp + self.loop.label_delay_s}
            self.producer.produce(self.labels_topic, encode_event(event),
                                  request.asset_id.encode())
            self.records += 1

    def _rows(self, start: int, end: int) -> list[int]:
        """The trainer: dataset rows of the label records at offsets [start, end)."""
        rows = []
        for msg in self.labels.read(start, end, self.check):
            label = json.loads(msg.value() or b"")
            request_id = label.get("request_id")
            if request_id is not None:
                if request_id in self.trained_requests:
                    continue  # another vote of a consensus request: one training row
                self.trained_requests.add(request_id)
            p = int(label["asset_id"].rsplit("-", 1)[1])
            row = int(self.split.stream[p])
            given = label["annotations"][0]["label"]
            if str(self.data.y[row]) != given:
                if self.loop.annotator is None:
                    raise RuntimeError(f"label {label['label_id']} disagrees with the data set")
                self.given[row] = given  # a person's label: the trainer takes it as given
            rows.append(row)
        return rows

    def _classes(self, rows: list[int]) -> np.ndarray:
        """The classes the trainer learns for `rows`: the data set's, or a person's."""
        y = self.data.y[rows]
        if not self.given:
            return y
        given = [self.given.get(r) for r in rows]
        return np.array([type(y[i])(g) if g is not None else y[i] for i, g in enumerate(given)],
                        dtype=y.dtype)

    # -- settling -----------------------------------------------------------------------------

    def _wait_metric(self, service: ServiceProcess, name: str, at_least: int) -> None:
        wait_until(lambda: metric(service.metrics(), name) >= at_least, STEP_TIMEOUT_S,
                   f"{service.command} {name} >= {at_least}", self.check)

    def _sink_feedback(self, n: int) -> Any:
        """The last of the next `n` class-feedback records the label sink published (the
        scorer's own records on that topic, drift and stability, are passed over)."""
        found = None
        while n:
            for msg in self.feedback.take(1, self.check):
                record = decode_class_feedback(msg.value() or b"")
                if record.kind is FeedbackKind.FEEDBACK:
                    found, n = record, n - 1
        return found

    def _wait_weights(self, feedback: Any) -> None:
        """Until the scorer's class weights equal the feedback's (it applies feedback between
        batches, so the next round is decided with it)."""
        want = {name: stats.weight for name, stats in feedback.classes.items()}

        def applied() -> bool:
            samples = self.scorer.metrics()
            return all(metric(samples, "scorer_class_weight", model_id=feedback.model_id,
                              **{"class": c}) == w for c, w in want.items())
        wait_until(applied, STEP_TIMEOUT_S, "the scorer to apply class feedback", self.check)

    def _report(self, pos: int, requests: int, labels: int, triggers: int, accuracy: float,
                version: int, changes: list[Mapping[str, Any]] | None = None) -> None:
        if self.loop.on_round is not None:
            spend = tier_spend(self.sink.metrics()) if self.loop.tiers_json is not None else None
            self.loop.on_round(RoundReport(self.seed, pos, self.split.stream.shape[0],
                                           requests, labels, self.ctx.cap, triggers, accuracy,
                                           f"v{version}", dict(self.view.states),
                                           tuple(changes or ()), spend, self.view.newest,
                                           self.view.stable))

