"""Drift through the real scorer on Apache Kafka: a class whose confidence distribution shifts
produces one drift record on class feedback (in the batch's transaction, byte-identical to a
run without Kafka), the drift counter and the boost gauge; the stationary classes stay quiet."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from confluent_kafka import TopicPartition

from services.core import SelectorState
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.streaming.events import FeedbackKind, decode_class_feedback, encode_event
from services.streaming.settings import ScorerSettings
from tests.contract.schema_support import validator
from tests.integration.kafka_support import produce, read_all, wait_for
from tests.integration.scorer_support import consumed, private_loop, scorer_env, scorer_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

T0, DT, N, SHIFT = 1_700_000_000.0, 0.05, 18_000, 12_000  # the shift at T0 + 600 s
POLICY = {"stats": {"bucket_seconds": 60}, "drift": {"boost": 3.0}}
CLASSES = ["ball", "shoulder", "hip"]


def _events() -> list[tuple[bytes, bytes]]:
    """Top-1 events over three classes, 20 per second of event time; the shoulder's
    confidence drops from Beta(8, 2) to Beta(5, 3) at event SHIFT."""
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 3, N)
    conf = rng.beta(8, 2, N)
    moved = (np.arange(N) >= SHIFT) & (labels == 1)
    conf[moved] = rng.beta(5, 3, int(moved.sum()))
    out = []
    for i in range(N):
        event = {"schema_version": 1, "event_id": f"e{i}", "asset_id": f"a{i}",
                 "model_id": "pose", "model_version": "v1", "timestamp": T0 + i * DT,
                 "predictions": [{"label": CLASSES[labels[i]], "confidence": float(conf[i])}]}
        out.append((f"a{i}".encode(), encode_event(event)))
    return out


def test_a_shifted_class_produces_a_drift_record_and_metrics(kafka: object) -> None:
    bootstrap = kafka.bootstrap  # type: ignore[attr-defined]
    prefix = private_loop(bootstrap, partitions=1)
    events = _events()
    produce(bootstrap, prefix + "al.inference-events.v1", events)
    env = scorer_env(bootstrap, prefix, f"g-{prefix}", policy=orjson.dumps(POLICY).decode(),
                     processing_guarantee="exactly_once")
    labels = {"model_id": "pose", "class": "shoulder"}
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, N), 120, "stream not consumed")
        registry = scorer.registry
        # the gauge is refreshed at checkpoints (every few seconds)
        wait_for(lambda: registry.get_sample_value("scorer_class_drift_boost_ratio",
                                                   labels) == 3.0, 60, "no boost gauge")
        drifts = registry.get_sample_value("scorer_class_drift_total", labels)
        others = [registry.get_sample_value("scorer_class_drift_total",
                                            {"model_id": "pose", "class": c})
                  for c in ("ball", "hip")]
        weights = scorer.partitions[0].live.state.class_weights("pose")
        # The scorer reads its own drift record back on class feedback: it must not take it
        # for (empty) weights. Wait until its feedback reader is past the record.
        feedback = TopicPartition(prefix + "al.class-feedback.v1", 0)
        wait_for(lambda: scorer.feedback._consumer.position([feedback])[0].offset >= 1, 30,
                 "the scorer's feedback reader did not read the drift record")
        applied = registry.get_sample_value("scorer_feedback_applied_total")
    assert drifts == 1 and others == [None, None]
    assert applied == 0
    assert weights == {"ball": 1.0, "shoulder": 3.0, "hip": 1.0}
    records = read_all(bootstrap, prefix + "al.class-feedback.v1")  # read_committed
    assert len(records) == 1
    assert list(validator("class-feedback").iter_errors(orjson.loads(records[0].value()))) == []
    record = decode_class_feedback(records[0].value())
    assert record.kind is FeedbackKind.DRIFT and record.model_id == "pose"
    assert record.drift is not None and record.classes == {}
    notice = record.drift
    assert (notice.class_name, notice.model_version, notice.partition) == ("shoulder", "v1", 0)
    assert T0 + SHIFT * DT < notice.detected_at <= T0 + SHIFT * DT + 2 * 60
    assert notice.distance > notice.critical and notice.boost == 3.0
    assert records[0].key() == "\x1f".join(("drift", "pose", "shoulder", "0")).encode()
    # the same bytes as the partition's records through the core, no Kafka
    assert records[0].value() == _reference(bootstrap, prefix, env)


def _reference(bootstrap: str, prefix: str, env: dict[str, str]) -> bytes:
    settings = ScorerSettings.from_env(env)
    recs = [Record(m.offset(), m.key(), m.value(), m.timestamp()[1] / 1000.0)
            for m in read_all(bootstrap, prefix + "al.inference-events.v1")]
    state = SelectorState.create(settings.selector_policy().for_partition(0, 1),
                                 partition_seed(settings.seed, 0))
    scorer = PartitionScorer(settings.input_topic, 0, state, 0, service_version="ref",
                             fetch=lambda offset: None)
    out = []
    for lo in range(0, len(recs), 1000):
        out += scorer.process(recs[lo:lo + 1000]).drift_records
    assert len(out) == 1
    return out[0].value
