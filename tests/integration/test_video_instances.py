"""Instance-level requests and a budget in instances through the real scorer AND label sink on
Apache Kafka (issue 16, item 3): a video-like stream of multi-object frames; the scorer names
only the uncertain instances and spends its budget in instances, byte-identical to an in-process
replay of the same records; annotators label the named instances; the label sink, counting
instances too, fires retrain triggers when the instances (not the labels) reach min_labels."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import numpy as np
import orjson
import pytest

from services.core import SelectorState
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.streaming import topics
from services.streaming.events import decode_retrain_trigger, encode_event
from services.streaming.settings import ScorerSettings
from tests.integration.kafka_support import produce, read_all, wait_for
from tests.integration.label_sink_support import SinkProcess
from tests.integration.scorer_support import consumed, private_loop, scorer_env, scorer_in_thread

pytestmark = [pytest.mark.broker, pytest.mark.timeout(420)]

POLICY = {"budget": {"share": 0.05, "share_burst": 10.0, "labels_per_hour": 1e6,
                     "cost": "instances"},
          "instances": {"requests": True, "min_uncertainty": 0.5},
          "tracks": {"weight": 0.8}}
MIN_INSTANCES = 12
PARTITIONS = 2


def _frames(clips: int = 8, frames: int = 50) -> list[tuple[bytes, bytes]]:
    """Clips of `frames` frames, four tracked objects each: a ball and a foot the model is sure
    of, a shoulder and a hip it is not; the two players' track ids swap halfway through."""
    rng = np.random.default_rng(8)
    out = []
    for c in range(clips):
        for f in range(frames):
            swapped = f >= frames // 2
            preds = []
            for k, (cls, alt, p0) in enumerate((("ball", "foot", 0.97), ("foot", "ball", 0.95),
                                                 ("shoulder", "hip", 0.6),
                                                 ("hip", "shoulder", 0.58))):
                p = float(np.clip(p0 + rng.normal(0, 0.04), 0.5, 0.999))
                track = f"c{c}-t{k ^ 1 if swapped and k < 2 else k}"
                preds.append({"scores": {cls: p, alt: 1 - p}, "track_id": track,
                              "instance_id": f"c{c}-f{f}-o{k}",
                              "bbox": [20.0 * k + f, 10.0, 8.0, 8.0],
                              "embedding": [1.0, float(c), float(k), 0.01 * f]})
            event = {"schema_version": 1, "event_id": f"e{c}-{f}", "asset_id": f"clip{c}/f{f}",
                     "model_id": "pitch", "model_version": "v1", "sequence_id": f"clip{c}",
                     "timestamp": 1_700_000_000 + c * frames + f / 5, "predictions": preds}
            out.append((f"clip{c}".encode(), orjson.dumps(event)))
    return out


def _replay(bootstrap: str, prefix: str, env: dict[str, str]) -> list[bytes]:
    """The requests of the same records through fresh in-process PartitionScorers (no broker
    in the loop): what the service must have produced, byte for byte."""
    settings = ScorerSettings.from_env(env)
    policy = settings.selector_policy()
    records: dict[int, list[Record]] = defaultdict(list)
    for msg in read_all(bootstrap, prefix + topics.INFERENCE_EVENTS):
        records[msg.partition()].append(
            Record(msg.offset(), msg.key(), msg.value(), msg.timestamp()[1] / 1000.0))
    out: list[bytes] = []
    for p, recs in sorted(records.items()):
        recs.sort(key=lambda r: r.offset)
        by_offset = {r.offset: r.value for r in recs}
        state = SelectorState.create(policy.for_partition(p, PARTITIONS),
                                     partition_seed(settings.seed, p))
        scorer = PartitionScorer(settings.input_topic, p, state, 0, service_version="ref",
                                 fetch=by_offset.get)
        out.extend(o.value for o in scorer.process(recs).requests)
    return out


def _label(request: dict[str, Any], n: int) -> bytes:
    """The annotator's answer: one annotation per named instance (the pre-label, confirmed)."""
    named = request["annotate"]["instances"]
    return encode_event({
        "schema_version": 1, "label_id": f"lab-{n}", "request_id": request["request_id"],
        "asset_id": request["asset_id"], "annotator_id": "ann-1",
        "labeled_at": request["event_timestamp"] + 60.0,
        "annotations": [{"label": i["label"], "instance_id": i["instance_id"],
                         "bbox": i["bbox"]} for i in named]})


def test_instance_requests_and_instance_budget_through_scorer_and_sink(kafka: Any) -> None:
    bootstrap = kafka.bootstrap
    prefix = private_loop(bootstrap, partitions=PARTITIONS)
    stream = _frames()
    produce(bootstrap, prefix + topics.INFERENCE_EVENTS, stream)
    env = scorer_env(bootstrap, prefix, f"g-{prefix}", policy=orjson.dumps(POLICY).decode())
    with scorer_in_thread(env) as scorer:
        wait_for(lambda: consumed(scorer, len(stream)), 180, "stream not consumed")
    produced = [m.value() for m in read_all(bootstrap, prefix + topics.ANNOTATION_REQUESTS)]
    assert produced and sorted(produced) == sorted(_replay(bootstrap, prefix, env))

    requests = [orjson.loads(v) for v in produced]
    spent = 0
    for r in requests:
        named = r["annotate"]["instances"]
        assert r["annotate"]["cost"] == len(named) >= 1
        assert all(i["label"] not in ("ball", "foot") or r["reason"].get("track")
                   for i in named), "a sure instance is named only when its track is unstable"
        spent += len(named)
    # Count lanes per partition: capacities (9 + 1) + share x instances seen, plus at most one
    # request's debt (4 instances - 1) per lane; the partitions split the burst, not the share.
    seen = 4 * len(stream)
    assert spent <= PARTITIONS * (10 + 2 * 3) + 0.05 * seen
    assert spent < len(requests) * 4  # whole frames would have cost 4 each

    app = f"sink-{uuid.uuid4().hex[:6]}"
    sink = SinkProcess(bootstrap, app, prefix, trigger_min_labels=MIN_INSTANCES,
                       trigger_cost="instances").start()
    try:
        sink.wait_ready()
        labels = [(r["asset_id"].encode(), _label(r, n)) for n, r in enumerate(requests)]
        produce(bootstrap, prefix + topics.LABELS, labels)
        expected = spent // MIN_INSTANCES  # at least this many triggers fire

        def triggers() -> list[Any]:
            return [decode_retrain_trigger(m.value())
                    for m in read_all(bootstrap, prefix + topics.RETRAIN_TRIGGERS)]

        wait_for(lambda: len(triggers()) >= max(1, expected - 1), 120,
                 f"triggers not published\n{sink.tail()}")
        found = triggers()
    finally:
        assert sink.stop() == 0, sink.tail()
    cost_of = {r["request_id"]: len(r["annotate"]["instances"]) for r in requests}
    by_label = {f"lab-{n}": cost_of[r["request_id"]] for n, r in enumerate(requests)}
    for t in found:
        instances = sum(t.counts.values())
        assert t.rule == "label_count" and f"{instances} new instances" in t.detail
        # fired by the label that took the instances to MIN_INSTANCES: fewer labels than that
        assert instances >= MIN_INSTANCES > instances - max(by_label.values())
        assert t.total < instances  # `total` still counts label records
