"""Issue 22, item 2: a restarted or replaced label sink worker resumes counting at once, with no
label lost and none counted twice, on Apache Kafka.

Each test runs its workers with a 60-s session, far above its own limits for taking over
(`TAKEOVER_LIMIT_S`): a worker that waited out a dead or departed member's session would fail
the test. Neither test asserts wall time; the figures are bench/takeover.py's.

- restart: SIGKILL, then the same instance id again (static membership takes the partitions
  back without waiting for the dead member's session); then SIGTERM and a restart.
- scale-in: of two workers, one stops for good (SIGTERM): it leaves the group, so the other
  takes its partitions at its next heartbeat instead of after the session.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from services.streaming import topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import decode_class_feedback, decode_retrain_trigger
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import (
    SinkProcess,
    Truth,
    assert_manifests_exact,
    create_sink_topics,
    label,
)

pytestmark = pytest.mark.timeout(300)

MODELS = ("m-x", "m-y")
PER_MODEL, N = 120, 10
SESSION = {"session_timeout_s": 60, "heartbeat_interval_s": 1}
# Far below the session: only a takeover that does not wait for it fits in.
TAKEOVER_LIMIT_S = 30


def labels_of(tag: str) -> tuple[list[tuple[bytes, bytes]], Truth]:
    """PER_MODEL labels of each model (named by the label: no request needed), classes
    alternating, and what the sink must count."""
    truth = Truth({}, {}, {}, set())
    records = []
    for i in range(PER_MODEL * len(MODELS)):
        lid, model, cls = f"t-{tag}-{i}", MODELS[i % len(MODELS)], ("cat", "dog")[i // 2 % 2]
        truth.model_of[lid], truth.classes[lid] = model, cls
        records.append((f"a-{lid}".encode(), label(lid, [cls], at=1000.0 + i, model_id=model,
                                                    asset_id=f"a-{lid}")))
    return records, truth


class Feeder(threading.Thread):
    """Produces the records in chunks while the workers come and go."""

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                 pause_at: int | None = None) -> None:
        """`pause_at`: produce that many, then wait for `resume` before the rest."""
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.records = bootstrap, topic, records
        self.pause_at = pause_at
        self.resume = threading.Event()

    def run(self) -> None:
        for i in range(0, len(self.records), 12):
            if self.pause_at is not None and i >= self.pause_at:
                self.resume.wait(120)
            produce(self.bootstrap, self.topic, self.records[i:i + 12])
            time.sleep(0.5)


def counted(sink: SinkProcess) -> float:
    try:
        return metric(sink.metrics(), "label_sink_label_records_total")
    except OSError:  # not serving yet
        return 0.0


def assert_counted_once(bootstrap: str, prefix: str, truth: Truth, why: str) -> None:
    """The latest class feedback of each model holds exactly its labels, and its triggers'
    manifests name each label once."""
    labels_topic = prefix + topics.LABELS

    def latest(model: str) -> Any:
        mine = [f for f in (decode_class_feedback(m.value())
                            for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK))
                if f.model_id == model]
        return mine[-1] if mine else None

    def history(model: str) -> list[tuple[int, int, dict[str, int]]]:
        return [(m.partition(), m.offset(), {c: s.labels_total for c, s in f.classes.items()})
                for m in read_all(bootstrap, prefix + topics.CLASS_FEEDBACK)
                for f in [decode_class_feedback(m.value())] if f.model_id == model]

    for model in MODELS:
        try:
            wait_for(lambda m=model: latest(m) is not None and sum(
                s.labels_total for s in latest(m).classes.values()) == PER_MODEL, 90,
                     f"{model} not fully counted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; feedback records (partition, offset, counts): "
                                 f"{history(model)}\n{why}") from None
        # Read again: a feedback published after the full one (a stale rebuild) fails here.
        counts = {c: s.labels_total for c, s in latest(model).classes.items()}
        assert counts == truth.counts(model), \
            f"{model}: feedback records (partition, offset, counts): {history(model)}\n{why}"
    triggers = [decode_retrain_trigger(m.value())
                for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)]
    for model in MODELS:
        assert len({t.trigger_id for t in triggers if t.model_id == model}) == PER_MODEL // N
        assert len(assert_manifests_exact(bootstrap, labels_topic, triggers, truth, model,
                                          N)) == PER_MODEL
    assert read_all(bootstrap, topics.dlq(labels_topic)) == []


def test_a_restarted_worker_resumes_counting_without_waiting_out_its_session(
        kafka: ApacheKafka) -> None:
    bootstrap, tag = kafka.bootstrap, uuid.uuid4().hex[:8]
    prefix = f"lst-{tag}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    records, truth = labels_of(tag)

    def start() -> SinkProcess:
        return SinkProcess(bootstrap, app_id, prefix, trigger_min_labels=N, instance_id="w1",
                           **SESSION).start()

    sink = start()
    feeder = Feeder(bootstrap, prefix + topics.LABELS, records)
    try:
        sink.wait_ready(90)
        feeder.start()
        for how in ("SIGKILL", "SIGTERM"):
            wait_for(lambda s=sink: counted(s) >= 20, 60, f"no progress before the {how}")
            if how == "SIGKILL":
                sink.kill()
            else:
                assert sink.stop() == 0, sink.tail()
            sink = start()
            wait_for(lambda s=sink: counted(s) > 0, TAKEOVER_LIMIT_S,
                     f"the worker restarted after a {how} did not count within "
                     f"{TAKEOVER_LIMIT_S} s (its session is {SESSION['session_timeout_s']} s)"
                     f"\n{sink.tail()}")
        feeder.join()
        assert_counted_once(bootstrap, prefix, truth, sink.tail())
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()


def test_a_worker_that_stops_for_good_hands_its_partitions_over_at_once(
        kafka: ApacheKafka) -> None:
    bootstrap, tag = kafka.bootstrap, uuid.uuid4().hex[:8]
    prefix = f"lsl-{tag}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    records, truth = labels_of(tag)
    first, second = (SinkProcess(bootstrap, app_id, prefix, trigger_min_labels=N,
                                 instance_id=name, **SESSION) for name in ("w1", "w2"))
    first.start()
    feeder = Feeder(bootstrap, prefix + topics.LABELS, records, pause_at=len(records) // 2)
    try:
        first.wait_ready(90)
        second.start()
        feeder.start()
        wait_for(lambda: counted(second) >= 5 and counted(first) >= 5, 60,
                 f"both workers never counted\n{first.tail()}\n{second.tail()}")
        assert second.stop() == 0, second.tail()
        stopped = time.time()
        feeder.resume.set()  # the second half arrives after the stop, on every partition
        # The second worker's partitions are the first's again within a heartbeat or two;
        # waiting for its session would take 60 s.
        wait_for(lambda: progressed_everywhere(first, prefix + topics.LABELS, stopped),
                 TAKEOVER_LIMIT_S, f"the remaining worker did not take the partitions over "
                 f"within {TAKEOVER_LIMIT_S} s\n{first.tail()}")
        before = counted(first)
        feeder.join()
        wait_for(lambda: counted(first) > before, 60, "no counting after the hand-over")
        assert_counted_once(bootstrap, prefix, truth, first.tail())
        # Per partition, the committed lag of what the worker owns: all four, nothing left.
        labels = prefix + topics.LABELS
        wait_for(lambda: partition_lag(first, labels) == dict.fromkeys(range(4), 0.0), 60,
                 f"per-partition committed lag not 0 on all four: {partition_lag(first, labels)}")
    finally:
        codes = (first.stop(), second.stop())
    assert codes == (0, 0), (first.tail(), second.tail())


def progressed_everywhere(sink: SinkProcess, topic: str, since: float) -> bool:
    """The worker processed a record of each of the topic's 4 partitions after `since` (Unix
    time): it owns them all and they flow."""
    try:
        samples = sink.metrics()
    except OSError:
        return False
    return all(metric(samples, "label_sink_partition_progress_timestamp_seconds", topic=topic,
                      partition=str(p)) > since for p in range(4))


def partition_lag(sink: SinkProcess, topic: str) -> dict[int, float]:
    """The worker's `label_sink_partition_committed_lag_records` series of `topic`."""
    out = {}
    for (name, labels), value in sink.metrics().items():
        tags = dict(labels)
        if name == "label_sink_partition_committed_lag_records" and tags.get("topic") == topic:
            out[int(tags["partition"])] = value
    return out


def test_a_rolling_restart_of_two_workers_counts_each_label_once(kafka: ApacheKafka) -> None:
    """Issue 22, item 3 for the sink: each of two workers in turn is stopped with SIGTERM and
    started again with its id while labels keep arriving; every label is counted once, in
    exactly one trigger's manifest (the scorers' rolling restart: test_scorer_takeover.py)."""
    bootstrap, tag = kafka.bootstrap, uuid.uuid4().hex[:8]
    prefix = f"lsrr-{tag}."
    create_sink_topics(bootstrap, prefix)
    app_id = f"label-sink-{prefix}"
    records, truth = labels_of(tag)

    def start(name: str) -> SinkProcess:
        return SinkProcess(bootstrap, app_id, prefix, trigger_min_labels=N, instance_id=name,
                           **SESSION).start()

    workers = {"w1": start("w1")}
    feeder = Feeder(bootstrap, prefix + topics.LABELS, records)
    try:
        workers["w1"].wait_ready(90)  # the first creates faust's topics; then the second joins
        workers["w2"] = start("w2")
        workers["w2"].wait_ready(90)
        feeder.start()
        for name in ("w1", "w2"):
            wait_for(lambda w=workers[name]: counted(w) >= 5, 60,
                     f"{name} counted nothing before its restart\n{workers[name].tail()}")
            assert workers[name].stop() == 0, workers[name].tail()
            workers[name] = start(name)
            workers[name].wait_ready(90)
        feeder.join()
        assert_counted_once(bootstrap, prefix, truth,
                            "\n".join(w.tail() for w in workers.values()))
    finally:
        codes = [w.stop() for w in workers.values()]
    assert codes == [0, 0], [w.tail() for w in workers.values()]
