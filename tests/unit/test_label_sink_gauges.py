"""The label sink's per-model gauges (services/label_sink/gauges.py): a worker that starts on
recovered tables republishes the same series a running one had set label by label, and drops
those of the models it no longer owns."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from services.core.feedback import FeedbackPolicy
from services.core.mastery import MasteryPolicy
from services.core.triggers import LabelRecord, TriggerState
from services.label_sink.gauges import model_partition, republish
from services.label_sink.mastery import STABLE, Mastery
from services.label_sink.metrics import LabelSinkMetrics

GAUGES = ("label_sink_control_estimate_ratio", "label_sink_mastery_state",
          "label_sink_control_model_accuracy_ratio", "label_sink_stopping_signal",
          "label_sink_stopping_branch_signal", "label_sink_probe_changed_ratio",
          "label_sink_agreement_ratio")
POLICY = MasteryPolicy(master_at=0.8, min_labels=10, stop_triggers=1, stop_min_labels=20)


def gauges(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect() for s in metric.samples if s.name in GAUGES}


def shell(table: dict[str, Any]) -> tuple[Mastery, CollectorRegistry]:
    registry = CollectorRegistry()
    return Mastery(table, POLICY, FeedbackPolicy(), LabelSinkMetrics(registry)), registry


def feed(m: Mastery, model: str, version: str, n: int, start: int) -> None:
    for i in range(start, start + n):
        name = "cat" if i % 2 else "dog"
        right = name == "cat" or i % 4 == 0
        m.count(model, {"id": f"l{i}", "t": float(i),
                        "k": [version, 10.0, [[name, name if right else "owl", right]]]})


def stability(m: Mastery, model: str, partition: int, changed: int) -> None:
    m.stability(model, {"m": model, STABLE: [f"v2\x1fv1\x1f{partition}", partition, "v2", "v1",
                                             200, changed]})


def running_sink() -> tuple[Mastery, CollectorRegistry, dict[str, Any], dict[str, TriggerState]]:
    """Two models through labels, a new version, triggers and stability records."""
    table: dict[str, Any] = {}
    m, registry = shell(table)
    states: dict[str, TriggerState] = {}
    for model in ("pose", "cars"):
        feed(m, model, "v1", 60, 0)
        m.at_trigger(model, "t1")
        feed(m, model, "v2", 30, 100)  # a new version: v1's estimates are gone from the gauges
        m.at_trigger(model, "t2")
        state = states[model] = TriggerState()
        for i, (human, agreed) in enumerate([("cat", True), ("dog", False), ("cat", True)]):
            state.record(LabelRecord(f"{model}{i}", 0, i, float(i), (human,),
                                     ((human, agreed),)))
        m.gauges.publish_agreement(model, state, {"cat", "dog"})
    stability(m, "pose", 0, 1)  # the stability branch raised for pose only
    return m, registry, table, states


def test_a_restarted_worker_republishes_the_same_gauges_from_its_tables() -> None:
    m, registry, table, states = running_sink()
    before = gauges(registry)
    labels = {dict(k[1])["model_id"] for k in before}
    assert labels == {"pose", "cars"}
    assert before["label_sink_stopping_branch_signal", (("branch", "stability"),
                                                        ("model_id", "pose"))] == 1.0
    assert before["label_sink_stopping_branch_signal", (("branch", "control"),
                                                        ("model_id", "pose"))] == 0.0
    assert before["label_sink_stopping_signal", (("model_id", "pose"),)] == 1.0
    assert before["label_sink_stopping_signal", (("model_id", "cars"),)] == 0.0

    restarted, fresh = shell(table)
    assert gauges(fresh) == {}  # a new process: nothing until it republishes
    models = republish(restarted.gauges, table.items(), states.items(), {0, 1, 2, 3}, 4)
    assert models == {"pose", "cars"}
    assert gauges(fresh) == before


def test_a_new_version_replaces_the_series_of_the_old_one() -> None:
    """Label by label, the old version's estimates go when the new version's first control label
    comes, so the running gauges equal a republication at every point."""
    table: dict[str, Any] = {}
    m, registry = shell(table)
    feed(m, "pose", "v1", 40, 0)
    m.count("pose", {"id": "x", "t": 99.0, "k": ["v2", 10.0, [["cat", "cat", True]]]})
    estimates = {dict(k[1])["class"] for k in gauges(registry)
                 if k[0] == "label_sink_control_estimate_ratio"}
    assert estimates == {"cat"}  # dog (and owl) have no v2 estimate
    again, fresh = shell(table)
    republish(again.gauges, table.items(), [], {0, 1, 2, 3}, 4)
    assert gauges(fresh) == gauges(registry)


def test_the_gauges_of_models_on_partitions_lost_are_dropped() -> None:
    m, registry, table, states = running_sink()
    pose, cars = model_partition("pose", 4), model_partition("cars", 4)
    assert pose != cars  # the two models on two partitions (else pick other names)
    republish(m.gauges, table.items(), states.items(), {pose}, 4)
    assert {dict(k[1])["model_id"] for k in gauges(registry)} == {"pose"}
    republish(m.gauges, table.items(), states.items(), set(), 4)
    assert gauges(registry) == {}
    republish(m.gauges, table.items(), states.items(), {pose, cars}, 4)  # back again
    assert {dict(k[1])["model_id"] for k in gauges(registry)} == {"pose", "cars"}


def test_model_partition_is_where_faust_sends_the_model_key() -> None:
    from aiokafka.partitioner import murmur2

    for model in ("pose", "cars", "m-mastery", "ü-model"):
        for n in (1, 4, 12):
            assert model_partition(model, n) == (murmur2(model.encode()) & 0x7FFFFFFF) % n
