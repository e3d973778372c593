"""Issue 20 for the label sink: on the secured Apache Kafka (SASL_SSL, SCRAM, the authorizer
allowing nothing but ACLs), a sink whose principal lacks one of its ACLs holds instead of
crashing: one line naming the permission and the resource, not ready, the same process alive
(no crash loop), nothing committed past what it could deliver; once the ACL is granted it goes
on by itself and every label is counted exactly once (class feedback, exact trigger manifests).

- missing from the start (WRITE on the triggers topic): the sink waits before faust starts;
- taken away mid-run: WRITE on triggers (a trigger refused), READ on the labels topic (a fetch
  refused), READ on the group (heartbeats and commits refused).
"""

from __future__ import annotations

import tempfile
import uuid
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from services.streaming import acls, topics
from services.streaming.apache_kafka import ApacheKafka
from services.streaming.events import decode_class_feedback, decode_retrain_trigger
from services.streaming.settings import LabelSinkSettings
from tests.integration.kafka_support import ServiceProcess, metric, produce, read_all, wait_for
from tests.integration.label_sink_support import (
    Truth,
    assert_manifests_exact,
    create_sink_topics,
    label,
)
from tests.integration.test_security import ready, secured_env, user

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

MODEL, N = "m-acl", 10


class Loop:
    """A sink of its own user and topics on the secured listener, and what it must count."""

    def __init__(self, kafka: ApacheKafka) -> None:
        self.kafka = kafka
        self.prefix = f"lsa-{uuid.uuid4().hex[:8]}."
        create_sink_topics(kafka.bootstrap, self.prefix, partitions=2)
        name, self.password = user(kafka, "sink")
        self.env = {**secured_env(kafka, name, self.password),
                    "ACTIVE_STREAM_LABEL_SINK_APP_ID": f"sink-{self.prefix}",
                    "ACTIVE_STREAM_LABEL_SINK_TOPIC_PREFIX": self.prefix,
                    "ACTIVE_STREAM_LABEL_SINK_METRICS_HOST": "127.0.0.1",
                    "ACTIVE_STREAM_LABEL_SINK_TRIGGER_MIN_LABELS": str(N),
                    "ACTIVE_STREAM_LABEL_SINK_FEEDBACK_INTERVAL_S": "0.5",
                    "ACTIVE_STREAM_LABEL_SINK_SESSION_TIMEOUT_S": "6",
                    "ACTIVE_STREAM_LABEL_SINK_INSTANCE_ID": "w1",
                    "ACTIVE_STREAM_LABEL_SINK_DATA_DIR": tempfile.mkdtemp(prefix="sink-")}
        self.acls = acls.label_sink_acls(LabelSinkSettings.from_env(self.env), f"User:{name}")
        self.admin = AdminClient({"bootstrap.servers": kafka.bootstrap})  # a super user
        self.truth = Truth({}, {}, {}, set())
        self.labels = self.prefix + topics.LABELS

    def only(self, resource: str, name: str, operation: str) -> list[acls.Acl]:
        found = [a for a in self.acls
                 if (a.resource, a.name, a.operation) == (resource, name, operation)]
        assert len(found) == 1, (resource, name, operation)
        return found

    def send(self, n: int) -> None:
        records = []
        for _ in range(n):
            lid = f"acl-{len(self.truth.classes)}"
            cls = ("cat", "dog")[len(self.truth.classes) % 2]
            self.truth.model_of[lid], self.truth.classes[lid] = MODEL, cls
            records.append((f"a-{lid}".encode(), label(lid, [cls], at=1000.0 + len(
                self.truth.classes), model_id=MODEL, asset_id=f"a-{lid}")))
        produce(self.kafka.bootstrap, self.labels, records)

    def counted(self) -> int:
        mine = [f for f in (decode_class_feedback(m.value()) for m in read_all(
            self.kafka.bootstrap, self.prefix + topics.CLASS_FEEDBACK)) if f.model_id == MODEL]
        return sum(s.labels_total for s in mine[-1].classes.values()) if mine else 0

    def assert_counted_once(self, sink: ServiceProcess) -> None:
        total = len(self.truth.classes)
        wait_for(lambda: self.counted() == total, 90,
                 f"{self.counted()} of {total} counted\n{sink.tail()}")
        triggers = [decode_retrain_trigger(m.value()) for m in read_all(
            self.kafka.bootstrap, self.prefix + topics.RETRAIN_TRIGGERS)]
        assert len({t.trigger_id for t in triggers}) == total // N
        assert len(assert_manifests_exact(self.kafka.bootstrap, self.labels, triggers,
                                          self.truth, MODEL, N)) == total


def held_because(sink: ServiceProcess, line: str) -> Any:
    status, why = ready(sink)
    return why if status == 503 and line in why else None


def test_a_sink_without_an_acl_holds_until_it_is_granted(kafka: ApacheKafka) -> None:
    loop = Loop(kafka)
    missing = loop.only("topic", loop.prefix + topics.RETRAIN_TRIGGERS, "write")
    acls.apply(loop.admin, [a for a in loop.acls if a not in missing])
    loop.send(30)
    sink = ServiceProcess("label-sink", loop.env, "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT").start()
    try:
        expected = f"not authorized to WRITE to topic {loop.prefix}{topics.RETRAIN_TRIGGERS}"
        why = wait_for(lambda: held_because(sink, expected), 60,
                       f"the sink did not hold\n{sink.tail()}")
        assert "active-stream acls label-sink" in why  # says how to fix it
        assert metric(sink.metrics(), "label_sink_holds_total") == 1
        assert metric(sink.metrics(), "label_sink_label_records_total") == 0
        pid = sink.proc.pid if sink.proc else None
        acls.apply(loop.admin, missing)
        loop.assert_counted_once(sink)
        wait_for(lambda: ready(sink)[0] == 200, 30, "not ready once granted")
        assert sink.alive() and sink.proc is not None and sink.proc.pid == pid
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()
    log = sink.log.read_text()
    assert log.count(f"label sink holds: {expected}") == 1, "said once"
    assert loop.password not in log


@pytest.mark.parametrize("taken", ["write triggers", "read labels", "read group"])
def test_an_acl_taken_away_mid_run_holds_the_sink_and_nothing_is_lost(
        kafka: ApacheKafka, taken: str) -> None:
    loop = Loop(kafka)
    app_id = loop.env["ACTIVE_STREAM_LABEL_SINK_APP_ID"]
    gone, expected = {
        "write triggers": (loop.only("topic", loop.prefix + topics.RETRAIN_TRIGGERS, "write"),
                           f"not authorized to WRITE to topic "
                           f"{loop.prefix}{topics.RETRAIN_TRIGGERS}"),
        "read labels": (loop.only("topic", loop.labels, "read"),
                        f"not authorized to READ topic {loop.labels}"),
        "read group": (loop.only("group", app_id, "read"),
                       f"not authorized to READ group {app_id}"),
    }[taken]
    acls.apply(loop.admin, loop.acls)
    sink = ServiceProcess("label-sink", loop.env, "ACTIVE_STREAM_LABEL_SINK_METRICS_PORT").start()
    try:
        sink.wait_ready(90)
        pid = sink.proc.pid if sink.proc else None
        loop.send(20)
        wait_for(lambda: loop.counted() == 20, 60, f"first labels not counted\n{sink.tail()}")
        acls.revoke(loop.admin, gone)
        loop.send(20)  # the first of its triggers is refused when WRITE is gone
        wait_for(lambda: held_because(sink, expected), 60,
                 f"the sink did not hold on {taken}\n{sink.tail()}")
        assert sink.alive(), sink.tail()
        acls.apply(loop.admin, gone)
        loop.send(20)
        loop.assert_counted_once(sink)
        wait_for(lambda: ready(sink)[0] == 200, 30, "not ready once granted")
        # Held, then started again in place: the same process all along, never a crash.
        assert sink.alive() and sink.proc is not None and sink.proc.pid == pid
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()
    log = sink.log.read_text()
    assert f"label sink holds: {expected}" in log
    assert "label sink starts again in place" in log
    assert "crashed" not in log and "exits with code" not in log
