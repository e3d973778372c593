"""Tiers in the scorer's partition path (no Kafka): off by default, byte-identical output;
on, every request carries its tier, per-tier copies go to their topics, the cost budget holds,
and a checkpoint restores the router so a restart continues exactly."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from services.core import SelectorPolicy, SelectorState
from services.core.tiers import CostBudgetPolicy, TierPolicy, TierRouter
from services.scorer.checkpoint_format import read_checkpoint
from services.scorer.feedback import FeedbackReader
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.streaming.events import decode_annotation_request, encode_event
from services.streaming.settings import ScorerSettings, SettingsError, tier_settings
from tests.synthetic_events import inference_events
from tests.unit.feedback_messages import FeedbackMessage

TOPIC = "al.inference-events.v1"
# A generous label budget so the tiers, not the selector, decide what the cost budget takes.
POLICY = SelectorPolicy(mode="threshold")
TIERS = TierPolicy(review_below=0.3, consensus_from=0.6)


def _records(n: int, seed: int = 7) -> list[Record]:
    return [Record(i, k, v, 1_700_000_000.0 + i) for i, (k, v) in
            enumerate(inference_events(n, seed))]


def _scorer(records: list[Record], router: TierRouter | None = None,
            topics: dict[str, str] | None = None, state: SelectorState | None = None,
            offset: int = 0) -> PartitionScorer:
    by_offset = {r.offset: r.value for r in records}
    state = state or SelectorState.create(POLICY, partition_seed(0, 0))
    return PartitionScorer(TOPIC, 0, state, offset, service_version="test",
                           fetch=by_offset.get, tiers=router, tier_topics=topics)


def test_without_tiers_requests_and_checkpoints_have_no_tier_field() -> None:
    records = _records(3000)
    scorer = _scorer(records)
    result = scorer.process(records)
    assert result.requests and not result.request_tiers and not result.tier_copies
    for out in result.requests:
        assert b'"tier"' not in out.value
        assert decode_annotation_request(out.value).tier is None
    assert "tiers" not in orjson.loads(scorer.checkpoint())


def test_tiers_on_every_request_carries_its_tier_and_copies_go_to_their_topics() -> None:
    records = _records(3000)
    plain = _scorer(records).process(records)
    result = _scorer(records, TierRouter(TIERS), {"review": "pool.review"}).process(records)
    # The tiers do not change what is selected (no cost budget): same assets, same order.
    assert [o.key for o in result.requests] == [o.key for o in plain.requests]
    tiers = [decode_annotation_request(o.value).tier for o in result.requests]
    assert all(t is not None for t in tiers)
    names = Counter(t.name for t in tiers if t is not None)
    assert set(names) >= {"review", "annotate", "consensus"}, names
    for out, tier in zip(result.requests, tiers, strict=True):
        request = decode_annotation_request(out.value)
        expected = "review" if request.reason.score < 0.3 else (
            "consensus" if request.reason.score >= 0.6 else "annotate")
        if request.reason.strategy == "random_control":
            expected = "annotate"
        assert tier is not None and tier.name == expected
        assert tier.cost == TIERS.request_cost(expected)
        assert tier.annotators == (2 if expected == "consensus" else 1)
    assert [o for _, o in result.tier_copies] == [
        o for o, t in zip(result.requests, result.request_tiers, strict=True) if t == "review"]
    assert {topic for topic, _ in result.tier_copies} == {"pool.review"}


def test_cost_budget_is_never_overspent_and_withholds_what_it_cannot_afford() -> None:
    records = _records(4000)
    budget = CostBudgetPolicy(units_per_hour=600.0, burst=20.0)
    result = _scorer(records, TierRouter(TIERS, budget)).process(records)
    tiers = [decode_annotation_request(o.value).tier for o in result.requests]
    costs = [t.cost for t in tiers if t is not None]
    assert len(costs) == len(result.requests) > 0
    span = 2000.0  # the synthetic events are 0.5 s apart in event time
    assert sum(costs) <= budget.burst + budget.units_per_hour * (span + 1) / 3600.0
    assert result.withheld > 0


def test_restart_from_a_checkpoint_continues_exactly() -> None:
    records = _records(4000)
    budget = CostBudgetPolicy(units_per_hour=300.0, burst=15.0)

    def router() -> TierRouter:
        r = TierRouter(TIERS, budget)
        r.set_classes("digits", {"3": ("mastered", 0.99), "5": (None, 0.2)})
        return r

    whole = _scorer(records, router()).process(records)
    first = _scorer(records, router())
    head = first.process(records[:1700])
    saved = read_checkpoint(first.checkpoint(), POLICY)
    assert saved is not None and saved.tiers is not None
    second = _scorer(records, TierRouter.from_snapshot(TIERS, budget, saved.tiers),
                     state=saved.state, offset=saved.offset)
    tail = second.process(records[1700:])
    assert head.requests + tail.requests == whole.requests
    assert head.withheld + tail.withheld == whole.withheld > 0


def test_tier_settings_parse_and_reject() -> None:
    s = tier_settings({"consensus_k": 3, "costs": {"review": 0.5},
                       "cost_budget": {"units_per_hour": 100, "burst": 10},
                       "topics": {"consensus": "al.consensus"}}, "t.")
    assert s.policy.consensus_k == 3 and s.policy.costs["review"] == 0.5
    assert s.policy.costs["annotate"] == 3.0
    assert s.cost_budget == CostBudgetPolicy(100, 10)
    assert s.topics == {"consensus": "t.al.consensus"}
    for bad in ({"no_such": 1}, {"topics": {"gold": "x"}}, {"consensus_k": 1},
                {"cost_budget": {"burst": 0, "units_per_hour": 1}}):
        with pytest.raises((ValueError, TypeError)):
            tier_settings(bad)
    env = {"KAFKA_BOOTSTRAP_SERVERS": "localhost:9092",
           "ACTIVE_STREAM_SCORER_TIERS": '{"consensus_k": 1}'}
    with pytest.raises(SettingsError, match="ACTIVE_STREAM_SCORER_TIERS"):
        ScorerSettings.from_env(env)
    off = ScorerSettings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "h:1"})
    assert off.tier_settings() is None  # off by default


def test_acls_grant_the_tier_writes_only_when_tiers_are_set() -> None:
    from services.streaming import acls
    from services.streaming.settings import LabelSinkSettings

    base = {"KAFKA_BOOTSTRAP_SERVERS": "h:1"}
    tiered = {**base, "ACTIVE_STREAM_SCORER_TIERS": '{"topics": {"review": "pool.review"}}',
              "ACTIVE_STREAM_LABEL_SINK_TIERS": '{"topics": {"expert": "pool.expert"}}'}

    def writes(found: list[acls.Acl]) -> set[str]:
        return {a.name for a in found if a.resource == "topic" and a.operation == "write"}

    assert "pool.review" not in writes(acls.scorer_acls(ScorerSettings.from_env(base), "U"))
    assert "pool.review" in writes(acls.scorer_acls(ScorerSettings.from_env(tiered), "U"))
    plain = writes(acls.label_sink_acls(LabelSinkSettings.from_env(base), "U"))
    assert "al.annotation-requests.v1" not in plain
    assert {"al.annotation-requests.v1", "pool.expert"} <= writes(
        acls.label_sink_acls(LabelSinkSettings.from_env(tiered), "U"))


def test_a_replay_without_output_still_routes_so_the_cost_gate_matches() -> None:
    """After a crash the records between the checkpoint and the group's commit are replayed
    without output; the router must spend on them as the crashed instance did."""
    records = _records(4000)
    budget = CostBudgetPolicy(units_per_hour=300.0, burst=15.0)
    whole = _scorer(records, TierRouter(TIERS, budget))
    whole.process(records[:1000])
    saved = read_checkpoint(whole.checkpoint(), POLICY)
    assert saved is not None
    whole.process(records[1000:2500])
    expected = whole.process(records[2500:])
    by_offset = {r.offset: r.value for r in records}
    again = PartitionScorer(TOPIC, 0, saved.state, saved.offset, service_version="test",
                            fetch=by_offset.get, suppress_below=2500,
                            tiers=TierRouter.from_snapshot(TIERS, budget, saved.tiers))
    replayed = again.process(records[1000:])
    assert replayed.requests == expected.requests and expected.requests


def test_feedback_reader_hands_the_router_each_classs_label_count() -> None:
    # The calibration the band follows pools each class's disagreement by its labels_total
    # (services/core/tiers.py `TierRouter.calibration`): the reader must pass it on.
    record = encode_event({"schema_version": 1, "model_id": "digits", "updated_at": 1.0,
                           "classes": {"3": {"labels_total": 40, "labels_since_trigger": 4,
                                             "agreement": 0.5, "weight": 2.0},
                                       "5": {"labels_total": 2, "labels_since_trigger": 2,
                                             "agreement": None, "weight": 1.0}}})
    reader: Any = FeedbackReader.__new__(FeedbackReader)
    reader.__dict__.update(latest={}, tier_inputs={}, dead_letters=[], invalid_codes=[],
                           topic="fb", service_version="t")
    reader._consumer = SimpleNamespace(consume=lambda *a, **k: [FeedbackMessage(record)])
    reader.poll()
    assert reader.tier_inputs == {"digits": {"3": (None, 0.5, 40), "5": (None, None, 2)}}
    router = TierRouter(TierPolicy())
    router.set_classes("digits", reader.tier_inputs["digits"])
    assert router.classes["digits"]["3"] == (None, 0.5, 40)
