"""Instance-level requests and the `cost: instances` budget (issue 16, item 3): which instances
a selection names, what it costs, that the budget in instances is never overspent beyond one
request's debt, and that the whole stays deterministic and invariant to batch cuts/restores."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.core.budget import BudgetPolicy, BudgetState, PhasedBucket, TokenBucket
from services.core.instances import InstancePolicy, cost, targets
from services.core.selection import Selected
from tests.unit.core.synth import dirichlet_events
from tests.unit.core.test_redundancy import VEvent, VPred

NAMES = [f"c{i}" for i in range(4)]


def frames(seed: int, n: int, objects: int = 5) -> list[VEvent]:
    """n frames of `objects` boxes each: most objects confident, one or two unsure."""
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n):
        preds = []
        for k in range(objects):
            sure = rng.random() < 0.7
            p = rng.dirichlet(np.full(4, 0.2 if sure else 5.0))
            preds.append(VPred(dict(zip(NAMES, p.tolist(), strict=True)), instance_id=f"o{k}",
                               track_id=f"t{k}", bbox=(10.0 * k, 0.0, 8.0, 8.0)))
        out.append(VEvent(f"e{f}", f"f{f}", "m", "v1", 1_000_000.0 + f / 5.0, tuple(preds)))
    return out


def _policy(unit: str = "instances", requests: bool = True, mode: str = "reservoir",
            **inst: object) -> SelectorPolicy:
    base = SelectorPolicy(mode=mode)  # type: ignore[arg-type]
    # labels_per_hour high: the count buckets (share) are the binding limit here
    return replace(base, budget=replace(base.budget, share=0.1, share_burst=20.0,
                                        labels_per_hour=1e6, cost=unit),  # type: ignore[arg-type]
                   instances=InstancePolicy(requests=requests, **inst))  # type: ignore[arg-type]


def _run(policy: SelectorPolicy, events: list, cuts: list[int], restore_at: int | None = None
         ) -> tuple[list[Selected], dict]:
    state = SelectorState.create(policy, seed=11)
    out: list[Selected] = []
    bounds = [0, *cuts, len(events)]
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False)):
        batch = PredictionBatch.from_events(events[lo:hi], [e.asset_id for e in events[lo:hi]])
        out += [replace(s, asset_index=0) for s in select(state, batch).selected]
        if restore_at is not None and k == restore_at:
            snap = json.loads(json.dumps(state.snapshot()))
            state = SelectorState.from_snapshot(snap, policy)
    return out, state.snapshot()


def test_targets_name_drivers_unstable_and_uncertain_rows_capped_by_priority() -> None:
    pr = np.array([0.1, 0.9, 0.2, 0.6, 0.55, 0.05])
    pol = InstancePolicy(requests=True, min_uncertainty=0.5, max_instances=16)
    assert targets(pol, pr, 0, 6, [1], unstable=[5]) == (1, 3, 4, 5)
    assert targets(pol, pr, 0, 6, [0], unstable=[]) == (0, 1, 3, 4)  # a driver always
    capped = InstancePolicy(requests=True, min_uncertainty=0.5, max_instances=2)
    assert targets(capped, pr, 0, 6, [0], unstable=[]) == (0, 1)  # driver, then priority
    assert targets(pol, pr, 2, 5, [2], unstable=[5]) == (2, 3, 4)  # only the asset's rows
    assert cost("assets", 7, 3) == 1 and cost("instances", 7, 3) == 3
    assert cost("instances", 7, None) == 7 and cost("instances", 0, None) == 1


def test_selections_name_only_uncertain_instances_and_cost_what_they_name() -> None:
    events = frames(1, 400)
    picks, _ = _run(_policy(), events, [])
    assert picks
    by_id = {e.asset_id: e for e in events}
    partial = 0
    for s in picks:
        assert s.targets is not None and s.cost == len(s.targets) >= 1
        assert set(s.driving_predictions) <= set(s.targets)
        preds = by_id[s.ref].predictions
        for p in s.targets:  # named: a driver or uncertain (margin score >= 0.5)
            top = sorted(preds[p].scores.values(), reverse=True)
            assert p in s.driving_predictions or 1.0 - (top[0] - top[1]) >= 0.5 - 1e-9
        partial += len(s.targets) < len(preds)
    assert partial > len(picks) // 2  # most frames: only some of the five are asked for


def test_whole_frame_cost_without_instance_requests() -> None:
    picks, _ = _run(_policy(requests=False), frames(2, 300), [])
    assert picks and all(s.targets is None and s.cost == 5 for s in picks)


@pytest.mark.parametrize("requests", [True, False])
def test_budget_in_instances_never_overspent_beyond_one_request(requests: bool) -> None:
    """Count lanes: instances granted over the first n instances seen <= the lanes'
    capacities + share x n + (largest cost - 1) per lane."""
    pol = _policy(requests=requests)
    events = frames(3, 1500)
    picks, snap = _run(pol, events, [500, 1000])
    spent = sum(s.cost for s in picks)
    seen = 5 * len(events)
    assert snap["units_seen"] == seen
    b = pol.budget
    bound = sum(b.lane(lane)[1] for lane in ("exploit", "explore")) + b.share * seen
    assert spent <= bound + 2 * (max(s.cost for s in picks) - 1)
    assert spent >= 0.5 * b.share * seen  # and it is not starved either
    assets, snap = _run(_policy(unit="assets", requests=requests), events, [500, 1000])
    assert all(s.cost == 1 for s in assets) and "units_seen" not in snap
    assert sum(s.cost for s in assets) <= sum(b.lane(lane)[1] for lane in ("exploit", "explore")
                                              ) + b.share * len(events)


def test_token_and_phased_buckets_carry_a_debt() -> None:
    tb = TokenBucket(3.0, 0.0)
    tb.spend(0.0, 1.0, 3.0, cost=5.0)
    assert tb.level == -2.0
    assert tb.first_index(np.arange(10, dtype=float), 0, 1.0, 3.0) == 3  # back to 1 token
    pb = PhasedBucket(-np.inf, 0.0)
    assert pb.level_at(0.0, 1.0, 0.5) == 1.0
    pb.spend(0.0, 1.0, 0.5, cost=3.0)
    assert [pb.level_at(float(t), 1.0, 0.5) for t in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    state = BudgetState(BudgetPolicy(cost="instances"))
    state.spend(BudgetPolicy(cost="instances"), "exploit", 1.0, 0.0, cost=4.0)
    again = BudgetState.from_snapshot(BudgetPolicy(cost="instances"),
                                      json.loads(json.dumps(state.snapshot())))
    assert again.snapshot() == state.snapshot()
    with pytest.raises(ValueError):
        BudgetPolicy(cost="boxes")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["reservoir", "threshold"])
def test_invariant_to_batch_cuts_and_restores(mode: str) -> None:
    events = frames(4, 1600)  # the threshold arm's stats are ready past ~100 x classes rows
    pol = _policy(mode=mode)
    one = _run(pol, events, [])
    rng = np.random.default_rng(5)
    cuts = sorted(set(rng.integers(1, 1600, size=25).tolist()))
    split = _run(pol, events, cuts, restore_at=7)
    assert one[0] and one == split
    single = _run(pol, events[:250], list(range(1, 250)))
    assert single == _run(pol, events[:250], [])
    if mode == "threshold":
        assert {s.strategy for s in one[0]} - {"exploration", "random_control"}


def test_selected_json_keeps_its_old_form_unless_set() -> None:
    plain = Selected("a", 0, "m", "v", "reservoir", 0.5, None, "c", (0,), 0.5, None, 1.0)
    assert len(plain.to_json()) == 12 and Selected.from_json(plain.to_json()) == plain
    named = replace(plain, targets=(0, 3), cost=2)
    assert Selected.from_json(json.loads(json.dumps(named.to_json()))) == named
    both = replace(named, track={"track_id": "t", "score": 1.0, "signals": [], "frames": ["a"]})
    assert Selected.from_json(json.loads(json.dumps(both.to_json()))) == both


def test_classification_stream_is_untouched_by_default() -> None:
    """The defaults (assets, no instance requests) leave selections and checkpoint as before:
    no `targets`, cost 1, no `units_seen` in the snapshot."""
    events = dirichlet_events(np.random.default_rng(6), 1200)
    picks, snap = _run(SelectorPolicy(), events, [400, 800])
    assert picks and all(s.targets is None and s.cost == 1 for s in picks)
    assert "units_seen" not in snap
