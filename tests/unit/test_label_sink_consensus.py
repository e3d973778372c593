"""The label sink's consensus join (services/label_sink/consensus.py), without Kafka: agreement,
escalation to an expert request, idempotence on replay, and cost per tier and class."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from services.core.tiers import TierPolicy
from services.label_sink.consensus import (
    ConsensusHook,
    answer_of,
    compared_outcomes,
    expert_request_id,
    join,
    tier_row,
)
from services.label_sink.metrics import LabelSinkMetrics
from services.streaming.events import decode_annotation_request, decode_label, encode_event


def _request(tier: dict[str, Any] | None, rid: str = "r1") -> bytes:
    event: dict[str, Any] = {
        "schema_version": 1, "request_id": rid, "asset_id": "a1", "event_id": "e1",
        "model_id": "m", "model_version": "v1", "event_timestamp": 100.0,
        "reason": {"strategy": "reservoir", "score": 0.9, "class": "cat", "threshold": None,
                   "instances": [0], "inclusion_probability": None},
        "priority": 0.9, "predictions": [{"scores": {"cat": 0.55, "dog": 0.45}}],
        "source": {"topic": "in", "partition": 0, "offset": 3},
    }
    if tier is not None:
        event["tier"] = tier
    return encode_event(event)


def _label(lid: str, who: str, cls: str, rid: str = "r1") -> Any:
    return decode_label(encode_event({
        "schema_version": 1, "label_id": lid, "request_id": rid, "asset_id": "a1",
        "annotations": [{"label": cls}], "annotator_id": who, "labeled_at": 200.0}))


CONSENSUS = {"name": "consensus", "annotators": 2, "cost": 6.0}


def _row(k: int = 2, quorum: int = 2) -> dict[str, Any]:
    tier = {"name": "consensus", "annotators": k, "cost": 3.0 * k}
    row = tier_row(decode_annotation_request(_request(tier)), 0, quorum)
    assert row is not None
    return row


def test_untiered_requests_get_no_row() -> None:
    assert tier_row(decode_annotation_request(_request(None)), 0, 2) is None


def test_two_equal_answers_agree() -> None:
    row = _row()
    row, outcome = join(row, "l1", "ann-a", answer_of(_label("l1", "ann-a", "dog")))
    assert outcome == "pending" and row["d"] is None
    row, outcome = join(row, "l2", "ann-b", answer_of(_label("l2", "ann-b", "dog")))
    assert outcome == "agreed" and row["d"] == "agreed"
    assert orjson.loads(row["a"]) == [["", "dog"]] and "r" not in row


def test_disagreement_escalates_and_later_labels_are_late() -> None:
    row = _row()
    row, _ = join(row, "l1", "ann-a", answer_of(_label("l1", "ann-a", "dog")))
    row, outcome = join(row, "l2", "ann-b", answer_of(_label("l2", "ann-b", "cat")))
    assert outcome == "escalated" and row["d"] == "escalated" and row["a"] is None
    assert join(row, "l3", "ann-c", "x")[1] == "late"


def test_majority_of_three() -> None:
    row = _row(k=3, quorum=2)
    row, o1 = join(row, "l1", "a", "cat")
    row, o2 = join(row, "l2", "b", "dog")
    row, o3 = join(row, "l3", "c", "dog")
    assert (o1, o2, o3) == ("pending", "pending", "agreed") and row["a"] == "dog"
    row = _row(k=3, quorum=2)
    for lid, who, ans in (("l1", "a", "cat"), ("l2", "b", "dog")):
        row, _ = join(row, lid, who, ans)
    assert join(row, "l3", "c", "bird")[1] == "escalated"


def test_replay_and_same_annotator_are_duplicates_and_change_nothing() -> None:
    row, _ = join(_row(), "l1", "ann-a", "dog")
    for lid, who in (("l1", "ann-a"), ("l1", "ann-z"), ("l9", "ann-a")):
        again, outcome = join(row, lid, who, "cat")
        assert outcome == "duplicate" and again == row


def test_answers_ignore_boxes_and_order() -> None:
    def lab(annotations: list[dict[str, Any]]) -> Any:
        return decode_label(encode_event({
            "schema_version": 1, "label_id": "x", "asset_id": "a", "annotations": annotations,
            "annotator_id": "w", "labeled_at": 1.0}))
    one = lab([{"label": "cat", "instance_id": "i1", "bbox": [0, 0, 5, 5]},
               {"label": "dog", "instance_id": "i2"}])
    two = lab([{"label": "dog", "instance_id": "i2", "bbox": [1, 1, 4, 4]},
               {"label": "cat", "instance_id": "i1"}])
    assert answer_of(one) == answer_of(two)
    assert answer_of(one) != answer_of(lab([{"label": "cat", "instance_id": "i2"},
                                            {"label": "dog", "instance_id": "i1"}]))


class _Sent:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    async def __call__(self, key: bytes, value: bytes) -> None:
        self.records.append((key, value))


def _hook() -> tuple[ConsensusHook, dict[str, Any], _Sent, CollectorRegistry]:
    registry = CollectorRegistry()
    table: dict[str, Any] = {}
    sent = _Sent()
    return ConsensusHook(TierPolicy(), table, LabelSinkMetrics(registry), sent), table, sent, \
        registry


def test_hook_escalates_once_with_a_valid_expert_request_even_on_replay() -> None:
    hook, table, sent, registry = _hook()
    hook.on_request(decode_annotation_request(_request(CONSENSUS)), 0)
    labels = [_label("l1", "ann-a", "dog"), _label("l2", "ann-b", "cat")]
    for lab in labels + labels:  # a replay of both labels after the decision
        # The deciding label says so each time it is read; the counter counts it once, when
        # the labels table's dedupe passes it (`count`).
        decision = "escalated" if lab.label_id == "l2" else None
        assert asyncio.run(hook.on_label(lab)) == ("consensus", 3.0, "cat", decision)
    hook.count("m", {"z": ["consensus", 3.0, "cat", "escalated"]})
    assert len(sent.records) == 1
    key, value = sent.records[0]
    expert = decode_annotation_request(value)
    assert key == b"a1" and expert.tier is not None and expert.tier.name == "expert"
    assert expert.tier.escalated_from == "r1" and expert.request_id == expert_request_id("r1")
    assert expert.tier.cost == 8.0 and expert.priority == 1.0 and expert.asset_id == "a1"
    assert table["r1"]["d"] == "escalated"
    assert registry.get_sample_value("label_sink_consensus_decisions_total", {
        "model_id": "m", "class": "cat", "outcome": "escalated"}) == 1.0
    # A request replayed after the decision keeps its row (and its votes).
    hook.on_request(decode_annotation_request(_request(CONSENSUS)), 0)
    assert table["r1"]["d"] == "escalated"


def test_hook_crash_before_the_row_is_written_escalates_again_with_the_same_request() -> None:
    hook, table, sent, _ = _hook()
    hook.on_request(decode_annotation_request(_request(CONSENSUS)), 0)
    asyncio.run(hook.on_label(_label("l1", "ann-a", "dog")))
    before = dict(table["r1"])
    asyncio.run(hook.on_label(_label("l2", "ann-b", "cat")))
    table["r1"] = before  # the row write was lost: the sink replays l2
    asyncio.run(hook.on_label(_label("l2", "ann-b", "cat")))
    assert len(sent.records) == 2 and sent.records[0] == sent.records[1]


def test_agreement_sends_nothing_and_costs_are_counted_per_tier_and_class() -> None:
    hook, table, sent, registry = _hook()
    hook.on_request(decode_annotation_request(_request(CONSENSUS)), 0)
    hook.on_request(decode_annotation_request(
        _request({"name": "review", "annotators": 1, "cost": 1.0}, rid="r2")), 0)
    for lab in (_label("l1", "ann-a", "dog"), _label("l2", "ann-b", "dog"),
                _label("l3", "ann-c", "cat", rid="r2")):
        tier = asyncio.run(hook.on_label(lab))
        assert tier is not None
        hook.count("m", {"z": list(tier)})
    assert not sent.records and table["r1"]["d"] == "agreed"
    assert asyncio.run(hook.on_label(_label("l4", "ann-a", "dog", rid="unknown"))) is None

    def cost(tier: str) -> float | None:
        return registry.get_sample_value("label_sink_tier_cost_units_total",
                                          {"model_id": "m", "tier": tier, "class": "cat"})
    assert cost("consensus") == 6.0 and cost("review") == 1.0
    assert registry.get_sample_value("label_sink_consensus_decisions_total", {
        "model_id": "m", "class": "cat", "outcome": "agreed"}) == 1.0
    hook.count("m", {"id": "untiered"})  # no tier: nothing counted
    assert registry.get_sample_value("label_sink_tier_labels_total", {"tier": "review"}) == 1.0


def test_only_the_deciding_label_of_a_consensus_counts_also_on_replay() -> None:
    hook, _, _, _ = _hook()
    hook.on_request(decode_annotation_request(_request(CONSENSUS)), 0)
    hook.on_request(decode_annotation_request(_request(CONSENSUS, rid="r2")), 0)
    hook.on_request(decode_annotation_request(
        _request({"name": "review", "annotators": 1, "cost": 1.0}, rid="r3")), 0)
    agreed = [_label("l1", "ann-a", "dog"), _label("l2", "ann-b", "dog"),
              _label("l3", "ann-c", "dog")]  # l3: late
    split = [_label("l4", "ann-a", "dog", rid="r2"), _label("l5", "ann-b", "cat", rid="r2")]
    plain = [_label("l6", "ann-a", "cat", rid="r3")]
    decided = []
    for lab in agreed + split + plain + agreed:  # then a replay of the agreed request's labels
        asyncio.run(hook.on_label(lab))
        decided.append(hook.decides(lab))
    assert decided == [False, True, False, False, False, True, False, True, False]


def test_decision_and_cost_series_are_bounded_by_a_class_cap_per_model() -> None:
    """Hostile request classes: past the cap they count as `__other__`, so the cost and
    decision series cannot grow without bound."""
    from services.core.agreement import MAX_CLASSES, OTHER_CLASS

    hook, _, _, registry = _hook()
    for i in range(MAX_CLASSES + 50):
        hook.count("m", {"z": ["consensus", 3.0, f"c{i}", "agreed"]})
    hook.count("m2", {"z": ["consensus", 3.0, "c9999", "escalated"]})  # another model's cap
    series = {(s.labels["model_id"], s.labels["class"]) for metric in registry.collect()
              if metric.name == "label_sink_consensus_decisions" for s in metric.samples
              if s.name.endswith("_total")}
    assert len(series) == MAX_CLASSES + 1 and ("m", OTHER_CLASS) in series
    assert ("m", f"c{MAX_CLASSES - 2}") in series and ("m", f"c{MAX_CLASSES - 1}") not in series
    assert ("m2", "c9999") in series
    assert registry.get_sample_value("label_sink_consensus_decisions_total", {
        "model_id": "m", "class": OTHER_CLASS, "outcome": "agreed"}) == 51.0
    assert registry.get_sample_value("label_sink_tier_cost_units_total", {
        "model_id": "m", "tier": "consensus", "class": OTHER_CLASS}) == 51 * 3.0


def test_a_review_is_not_compared_other_tiers_are() -> None:
    # The label reader keeps a label's agreement outcomes through this (app.py): a review's
    # answer is anchored on the pre-label it showed, so it must not raise the class's agreement.
    outcomes = [["cat", True], ["dog", False]]
    assert compared_outcomes("review", outcomes) == []
    for tier in ("annotate", "consensus", "expert", None):
        assert compared_outcomes(tier, outcomes) == outcomes
