"""The label sink against the embedded broker, as a subprocess (`python -m services.label_sink`).

One module-scoped sink serves the behaviour tests, each on its own model ids; the crash test runs
its own sink so it can SIGKILL it. Trigger policy of the shared sink: N=10 labels, M=3 per class,
T=1000 s, D=0.5 with K=4.
"""

from __future__ import annotations

import base64
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from services.streaming import topics
from services.streaming.events import decode_class_feedback, decode_label, decode_retrain_trigger
from tests.integration.end_offsets import true_end_offsets
from tests.integration.kafka_support import metric, produce, read_all, wait_for
from tests.integration.label_sink_support import (
    SinkProcess,
    create_sink_topics,
    label,
    request,
)

pytestmark = pytest.mark.timeout(240)

POLICY = {
    "trigger_min_labels": 10,
    "trigger_min_labels_per_class": 3,
    "trigger_max_label_age_s": 1000,
    "trigger_max_disagreement": 0.5,
    "trigger_min_disagreement_labels": 4,
}


class Loop:
    """The topics of one sink (under a private prefix) and readers for its outputs."""

    def __init__(self, bootstrap: str, prefix: str, sink: SinkProcess) -> None:
        self.bootstrap, self.prefix, self.sink = bootstrap, prefix, sink
        self.labels = prefix + topics.LABELS
        self.requests = prefix + topics.ANNOTATION_REQUESTS

    def send_labels(self, records: list[tuple[str, bytes]]) -> None:
        produce(self.bootstrap, self.labels, [(k.encode(), v) for k, v in records])

    def send_requests(self, records: list[tuple[str, bytes]]) -> None:
        before = metric(self.sink.metrics(), "label_sink_requests_total")
        produce(self.bootstrap, self.requests, [(k.encode(), v) for k, v in records])
        wait_for(lambda: metric(self.sink.metrics(), "label_sink_requests_total")
                 >= before + len(records), 60, "requests not stored")

    def counted(self, model_id: str) -> float:
        return sum(v for (name, labels), v in self.sink.metrics().items()
                   if name == "label_sink_labels_total" and ("model_id", model_id) in labels)

    def wait_counted(self, model_id: str, n: int, timeout_s: float = 60) -> None:
        wait_for(lambda: self.counted(model_id) >= n, timeout_s,
                 f"{model_id}: {self.counted(model_id)} of {n} annotations counted\n"
                 f"{self.sink.tail()}")

    def triggers(self, model_id: str) -> list[Any]:
        out = [decode_retrain_trigger(m.value())
               for m in read_all(self.bootstrap, self.prefix + topics.RETRAIN_TRIGGERS)]
        return [t for t in out if t.model_id == model_id]

    def feedback(self, model_id: str) -> Any:
        out = [decode_class_feedback(m.value())
               for m in read_all(self.bootstrap, self.prefix + topics.CLASS_FEEDBACK)]
        mine = [f for f in out if f.model_id == model_id]
        return mine[-1] if mine else None

    def labels_in(self, trigger: Any) -> list[tuple[str, Any]]:
        """(label_id, decoded label) of every valid label record inside the manifest's ranges
        (several per partition where other records sit between the trigger's labels)."""
        assert trigger.manifest.topic == self.labels
        ranges = trigger.manifest.ranges
        out = []
        for msg in read_all(self.bootstrap, self.labels):
            if any(r.partition == msg.partition() and r.start_offset <= msg.offset() < r.end_offset
                   for r in ranges):
                try:
                    decoded = decode_label(msg.value())
                except Exception:
                    continue
                out.append((decoded.label_id, decoded))
        return out


@pytest.fixture(scope="module")
def loop(broker: Any) -> Iterator[Loop]:
    prefix = f"ls-{uuid.uuid4().hex[:8]}."
    create_sink_topics(broker.bootstrap, prefix)
    sink = SinkProcess(broker.bootstrap, f"label-sink-{prefix}", prefix, **POLICY).start()
    try:
        sink.wait_ready()
        yield Loop(broker.bootstrap, prefix, sink)
    finally:
        code = sink.stop()
        assert code == 0, f"sink exit code {code}\n{sink.tail()}"


def assert_no_trigger(loop: Loop, model_id: str) -> None:
    time.sleep(1.0)  # the trigger would have been published before the label was counted
    assert loop.triggers(model_id) == []


def test_label_count_rule_fires_exactly_at_n_and_manifest_covers_the_labels(loop: Loop) -> None:
    model = "m-count"
    sent = [(f"a-count-{i}", label(f"count-{i}", ["cat" if i % 2 else "dog"], at=1000 + i,
                                   model_id=model)) for i in range(10)]
    loop.send_labels(sent[:9])
    loop.wait_counted(model, 9)
    assert_no_trigger(loop, model)
    loop.send_labels(sent[9:])
    trigger = wait_for(lambda: loop.triggers(model), 30, "no trigger")[0]
    assert (trigger.rule, trigger.total, dict(trigger.counts)) == ("label_count", 10,
                                                                    {"cat": 5, "dog": 5})
    assert trigger.triggered_at == 1009
    covered = {lid for lid, lab in loop.labels_in(trigger) if lab.model_id == model}
    assert covered == {f"count-{i}" for i in range(10)}
    # Each range starts and ends on a counted label: it covers exactly the counted labels.
    ends = {(lab.model_id, lid) for lid, lab in loop.labels_in(trigger)}
    assert all(m == model for m, _ in ends)


def test_class_coverage_rule_fires_when_every_predicted_class_has_m_labels(loop: Loop) -> None:
    model, truth = "m-cov", ["cat", "cat", "cat", "dog", "dog", "dog"]
    loop.send_requests([(f"a-cov-{i}", request(f"r-cov-{i}", model, c, at=500.0,
                                               asset_id=f"a-cov-{i}"))
                        for i, c in enumerate(truth)])
    labels = [(f"a-cov-{i}", label(f"cov-{i}", [c], at=600.0 + i, request_id=f"r-cov-{i}",
                                   asset_id=f"a-cov-{i}")) for i, c in enumerate(truth)]
    loop.send_labels(labels[:5])
    loop.wait_counted(model, 5)
    assert_no_trigger(loop, model)
    loop.send_labels(labels[5:])
    trigger = wait_for(lambda: loop.triggers(model), 30, "no trigger")[0]
    assert (trigger.rule, trigger.total, dict(trigger.counts)) == ("class_coverage", 6,
                                                                    {"cat": 3, "dog": 3})


def test_label_age_rule_uses_event_time(loop: Loop) -> None:
    model = "m-age"
    times = [5000.0, 5100.0, 5200.0, 6000.0, 6001.0]  # 6000 - 5000 is not > 1000; 6001 is
    sent = [("a-age", label(f"age-{i}", ["cat"], at=t, model_id=model))
            for i, t in enumerate(times)]  # one key: one partition, so in order
    loop.send_labels(sent[:4])
    loop.wait_counted(model, 4)
    assert_no_trigger(loop, model)
    loop.send_labels(sent[4:])
    trigger = wait_for(lambda: loop.triggers(model), 30, "no trigger")[0]
    assert (trigger.rule, trigger.total, trigger.triggered_at) == ("label_age", 5, 6001.0)


def test_disagreement_rule_fires_at_k_wrong_labels(loop: Loop) -> None:
    model = "m-dis"
    loop.send_requests([(f"a-dis-{i}", request(f"r-dis-{i}", model, "cat", at=500.0,
                                               asset_id=f"a-dis-{i}")) for i in range(4)])
    sent = [(f"a-dis-{i}", label(f"dis-{i}", ["dog"], at=600.0 + i, request_id=f"r-dis-{i}",
                                 asset_id=f"a-dis-{i}")) for i in range(4)]
    loop.send_labels(sent[:3])
    loop.wait_counted(model, 3)
    assert_no_trigger(loop, model)
    loop.send_labels(sent[3:])
    trigger = wait_for(lambda: loop.triggers(model), 30, "no trigger")[0]
    assert (trigger.rule, trigger.total) == ("disagreement", 4)
    assert "'dog'" in trigger.detail


def test_redelivered_labels_do_not_change_counts(loop: Loop) -> None:
    model = "m-dup"
    sent = [(f"a-dup-{i}", label(f"dup-{i}", ["cat"], at=2000.0 + i, model_id=model))
            for i in range(10)]
    before = metric(loop.sink.metrics(), "label_sink_duplicate_labels_total")
    loop.send_labels(sent[:7])
    loop.wait_counted(model, 7)
    loop.send_labels(sent[:7])  # the same records again, as a redelivering producer would
    wait_for(lambda: metric(loop.sink.metrics(), "label_sink_duplicate_labels_total")
             >= before + 7, 30, "duplicates not seen")
    assert loop.counted(model) == 7
    assert_no_trigger(loop, model)
    loop.send_labels(sent[7:])
    trigger = wait_for(lambda: loop.triggers(model), 30, "no trigger")[0]
    assert (trigger.total, dict(trigger.counts)) == (10, {"cat": 10})
    covered = [lid for lid, lab in loop.labels_in(trigger) if lab.model_id == model]
    # The redelivered copies sit between the labels but are not in the manifest: a trainer
    # reading it gets each label once.
    assert sorted(covered) == sorted(f"dup-{i}" for i in range(10))
    feedback = wait_for(lambda: loop.feedback(model), 30, "no feedback")
    assert feedback.classes["cat"].labels_total == 10


def test_bad_labels_go_to_the_dlq_with_reasons_while_good_ones_flow(loop: Loop) -> None:
    model = "m-dlq"
    good = [(f"a-dlq-{i}", label(f"dlq-{i}", ["cat"], at=3000.0 + i, model_id=model))
            for i in range(3)]
    valid = orjson.loads(good[0][1])
    bad = {  # name -> (expected code, payload)
        "not_json": ("not_json", b"{not json"),
        "missing": ("missing_field",
                    orjson.dumps({k: v for k, v in valid.items() if k != "annotator_id"})),
        "version": ("unknown_version", orjson.dumps({**valid, "schema_version": 2})),
        "empty": ("empty", orjson.dumps({**valid, "annotations": []})),
        # valid on its own, but it names no model and answers no known request
        "unattributed": ("missing_field", label("dlq-orphan", ["cat"], at=3000.0,
                                                request_id="never-requested")),
    }
    loop.send_labels([good[0], *[(f"bad-{n}", v) for n, (_, v) in bad.items()], *good[1:]])
    loop.wait_counted(model, 3)
    dlq_topic = topics.dlq(loop.labels)
    records = wait_for(lambda: [orjson.loads(m.value()) for m in read_all(loop.bootstrap,
                                                                          dlq_topic)]
                       if len(read_all(loop.bootstrap, dlq_topic)) >= len(bad) else None,
                       30, "dead letters missing")
    by_key = {base64.b64decode(r["key_b64"]).decode(): r for r in records}
    assert set(by_key) == {f"bad-{n}" for n in bad}
    for name, (code, original) in bad.items():
        record = by_key[f"bad-{name}"]
        assert record["code"] == code
        assert base64.b64decode(record["original_b64"]) == original
        assert record["source"]["topic"] == loop.labels
        assert record["service"] == "label-sink" and record["reason"]
    assert by_key["bad-unattributed"]["reason"].startswith("model_id: absent")
    samples = loop.sink.metrics()
    assert metric(samples, "label_sink_invalid_labels_total", reason="missing_field") == 2
    for code in ("not_json", "unknown_version", "empty"):
        assert metric(samples, "label_sink_invalid_labels_total", reason=code) == 1
    assert metric(samples, "label_sink_unattributed_labels_total") == 1
    assert metric(samples, "label_sink_invalid_labels_total", reason="too_large") == 0


def test_class_feedback_shows_weak_and_strong_classes(loop: Loop) -> None:
    model = "m-fb"
    truth = ["cat"] * 6 + ["dog"] * 6  # the model says "cat" for every asset
    loop.send_requests([(f"a-fb-{i}", request(f"r-fb-{i}", model, "cat", at=100.0,
                                              asset_id=f"a-fb-{i}"))
                        for i in range(len(truth))])
    turnaround_before = metric(loop.sink.metrics(), "label_sink_turnaround_seconds_count")
    loop.send_labels([(f"a-fb-{i}", label(f"fb-{i}", [c], at=400.0, request_id=f"r-fb-{i}",
                                          asset_id=f"a-fb-{i}")) for i, c in enumerate(truth)])
    loop.wait_counted(model, 12)

    def settled() -> Any:
        fb = loop.feedback(model)
        ok = fb and {c: s.labels_total for c, s in fb.classes.items()} == {"cat": 6, "dog": 6}
        return fb if ok else None

    feedback = wait_for(settled, 30, "feedback not complete")
    cat, dog = feedback.classes["cat"], feedback.classes["dog"]
    assert (cat.agreement, dog.agreement) == (1.0, 0.0)
    assert dog.weight > 1.0 > cat.weight > 0
    samples = loop.sink.metrics()
    assert metric(samples, "label_sink_agreement_ratio", model_id=model, **{"class": "cat"}) == 1
    assert metric(samples, "label_sink_agreement_ratio", model_id=model, **{"class": "dog"}) == 0
    assert metric(samples, "label_sink_turnaround_seconds_count") == turnaround_before + 12
    assert metric(samples, "label_sink_turnaround_seconds_bucket", le="300.0") >= 12


def test_sigkill_mid_stream_then_restart_counts_like_an_uninterrupted_run(broker: Any) -> None:
    prefix = f"lsk-{uuid.uuid4().hex[:8]}."
    create_sink_topics(broker.bootstrap, prefix)
    app_id, model, n, total = f"label-sink-{prefix}", "m-kill", 50, 610
    rng = random.Random(7)
    classes = [rng.choice(["cat", "dog", "bird"]) for _ in range(total)]
    sink = SinkProcess(broker.bootstrap, app_id, prefix, trigger_min_labels=n).start()
    loop = Loop(broker.bootstrap, prefix, sink)
    try:
        sink.wait_ready()
        loop.send_requests([(f"a-k-{i}", request(f"r-k-{i}", model, "cat", at=10.0,
                                                 asset_id=f"a-k-{i}"))
                            for i in range(0, total, 2)])
        sent = [(f"a-k-{i}", label(f"k-{i}", [c], at=100.0 + i,
                                   request_id=f"r-k-{i}" if i % 2 == 0 else None,
                                   model_id=model, asset_id=f"a-k-{i}"))
                for i, c in enumerate(classes)]

        def feed() -> None:
            for start in range(0, total, 61):
                loop.send_labels(sent[start:start + 61])
                time.sleep(0.25)

        feeder = threading.Thread(target=feed)
        started = time.monotonic()
        feeder.start()
        loop.wait_counted(model, 150)
        sink.kill()  # mid-stream: more labels are still being produced
        feeder.join()
        sink = SinkProcess(broker.bootstrap, app_id, prefix, trigger_min_labels=n).start()
        loop.sink = sink
        recovery_s = sink.wait_ready(90)

        def done(expected: int) -> Any:
            fb = loop.feedback(model)
            ok = fb and sum(s.labels_total for s in fb.classes.values()) == expected
            return fb if ok else None

        feedback = wait_for(lambda: done(total), 90, f"not all counted:\n{sink.tail()}")
        replayed = metric(sink.metrics(), "label_sink_duplicate_labels_total")
        print(f"\nrestart: ready after {recovery_s:.1f}s; {total} labels done "
              f"{time.monotonic() - started:.1f}s after the first; {replayed:.0f} replayed labels "
              f"skipped after the restart")
        assert {c: s.labels_total for c, s in feedback.classes.items()} == Counter(classes)
        assert sum(s.labels_since_trigger for s in feedback.classes.values()) == total % n

        triggers = {t.trigger_id: t for t in loop.triggers(model)}  # replays reuse the id
        assert len(triggers) == total // n and all(t.total == n for t in triggers.values())
        seen: set[str] = set()
        for trigger in triggers.values():
            # Exactly the trigger's labels, each once, none named by another trigger.
            mine = loop.labels_in(trigger)
            assert len(mine) == n and {lab.model_id for _, lab in mine} == {model}
            assert len({lid for lid, _ in mine}) == n and not seen & {lid for lid, _ in mine}
            counts = Counter(a.label for _, lab in mine for a in lab.annotations)
            assert counts == trigger.counts
            seen |= {lid for lid, _ in mine}
        assert len(seen) == total // n * n

        # The next trigger comes exactly N labels after the last one, as without the crash.
        more = [(f"a-k-{i}", label(f"k-{i}", ["cat"], at=100.0 + i, model_id=model))
                for i in range(total, total + n - total % n)]
        loop.send_labels(more[:-1])
        wait_for(lambda: done(total + len(more) - 1), 30, "extra labels not counted")
        assert len({t.trigger_id for t in loop.triggers(model)}) == total // n
        loop.send_labels(more[-1:])
        wait_for(lambda: len({t.trigger_id for t in loop.triggers(model)}) == total // n + 1,
                 30, "next trigger missing")
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()


def changelog_ends(bootstrap: str, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """({partition: reported end}, {partition: true end}) of a 4-partition changelog."""
    config = {"bootstrap.servers": bootstrap, "group.id": "label-sink-test-watermarks"}
    consumer = Consumer(config)
    try:
        reported = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in range(4)}
    finally:
        consumer.close()
    return reported, true_end_offsets({"bootstrap.servers": bootstrap}, topic, range(4))


def test_table_recovery_needs_the_high_watermark_shim_on_the_embedded_broker(
        tansu: Any) -> None:
    """Shows why services/label_sink/faust_compat.py exists (docs/brokers.md, high watermark).

    A sink stores annotation requests and stops cleanly (offsets committed). Restarted WITHOUT
    the shim, faust recovers the requests table only up to the misreported high watermark: every
    row of a changelog partition's last batch but the first is lost, and since the requests'
    input offsets are committed they are never read again, so labels answering them are
    dead-lettered as unattributed. Restarted WITH the shim, the same changelog gives every row."""
    broker = tansu
    prefix = f"lshw-{uuid.uuid4().hex[:8]}."
    create_sink_topics(broker.bootstrap, prefix)
    app_id, model, burst = f"label-sink-{prefix}", "m-hw", 100
    changelog = f"{app_id}-requests-changelog"
    options = {"trigger_min_labels": 100_000}  # no triggers: this test is about the join only
    sink = SinkProcess(broker.bootstrap, app_id, prefix, broker_compat="none", **options).start()
    loop = Loop(broker.bootstrap, prefix, sink)
    n = 0  # requests stored

    def restart_and_join(compat: str, phase: str) -> tuple[int, int]:
        """Restart the sink, send one label per stored request; (joined, unattributed)."""
        loop.sink = SinkProcess(broker.bootstrap, app_id, prefix, broker_compat=compat,
                                **options).start()
        try:
            loop.sink.wait_ready(90)
            loop.send_labels([("hw", label(f"hw-{phase}-{i}", ["cat"], at=200.0,
                                           request_id=f"r-hw-{i}", asset_id=f"a-hw-{i}"))
                              for i in range(n)])

            def outcome() -> tuple[int, int] | None:
                samples = loop.sink.metrics()
                joined = int(metric(samples, "label_sink_joined_labels_total"))
                orphans = int(metric(samples, "label_sink_unattributed_labels_total"))
                return (joined, orphans) if joined + orphans >= n else None

            return wait_for(outcome, 60, f"labels not all handled\n{loop.sink.tail()}")
        finally:
            code = loop.sink.stop()
            assert code == 0, loop.sink.tail()

    def written(rows: int) -> dict[int, int] | None:
        """The reported ends, once the changelog holds `rows` rows."""
        reported, true = changelog_ends(broker.bootstrap, changelog)
        return reported if sum(true.values()) == rows else None

    try:
        sink.wait_ready()
        # One key, so one partition of the requests topic and of its changelog (faust writes a
        # row to the changelog partition of the record it came from). With several partitions
        # only the partition whose recovery finishes last loses its tail: rows that arrive after
        # recovery ended wait in faust's recovery buffer, while rows of a partition that reached
        # its (wrong) highwater earlier are applied at the end of recovery. Each burst is one
        # produce call: the sink stores it in a tight loop, so its changelog rows go out in
        # multi-record batches. The last batch must hold more than one row for the reported end
        # to be short; about half the bursts end on a single-row batch (measured: 7 of 12), so
        # send bursts until one does not (10 all ending on one row: ~0.1%).
        for _ in range(10):
            loop.send_requests([("hw", request(f"r-hw-{i}", model, "cat", at=100.0,
                                               asset_id=f"a-hw-{i}"))
                                for i in range(n, n + burst)])
            n += burst
            reported = wait_for(partial(written, n), 30, f"changelog rows missing: {n}")
            if sum(reported.values()) < n:
                break
    finally:
        code = sink.stop()
    assert code == 0, sink.tail()
    reported, true = changelog_ends(broker.bootstrap, changelog)
    print(f"\nrequests changelog: reported ends {reported}, true ends {true}")
    assert sum(true.values()) == n  # one row per request
    short = sum(true.values()) - sum(reported.values())
    assert short > 0, "the broker reported the true end: the shim's premise is gone"

    without_shim = restart_and_join("none", "b")
    with_shim = restart_and_join("tansu", "c")
    print(f"(joined, unattributed) after a restart: {without_shim} without the shim, "
          f"{with_shim} with it")
    # Exactly the rows past the reported end were lost: faust stops at offset (reported - 1).
    assert without_shim == (n - short, short)
    assert with_shim == (n, 0)
