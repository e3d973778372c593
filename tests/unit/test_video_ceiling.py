"""The video benchmark's ceiling (services/evaluation/video_ceiling.py): the latest position at
which a cap-spending policy holds its k-th label bounds a real active-stream run, and the three
hindsight references report reach only for targets their models reach."""

from __future__ import annotations

import math

from services.evaluation.harness import strategy_seed
from services.evaluation.video import VideoSettings, run_seed, video_policy, video_seeds
from services.evaluation.video_ceiling import (
    earliest_position,
    latest_position,
    margin_curve,
    margin_reach,
    seen_reach,
)

SMALL = VideoSettings(seeds=1, clips=8, frames=15, budget=0.05, seed_labels=20)


def test_latest_position_is_the_budget_guarantee() -> None:
    budget = video_policy(VideoSettings()).budget  # share 1.5%, lanes' count capacity 9 + 1
    assert latest_position(budget, 30, 7200, 108) == math.ceil(40 / 0.015)
    assert latest_position(budget, 108, 7200, 108) == 7200
    # one label of rounding: a stream whose cap is floor(s x n) may hold labels a little later
    assert latest_position(budget, 30, 7250, 108) == math.ceil((40 + 0.75) / 0.015)
    assert earliest_position(budget, 30, 7200) == math.ceil(20 / 0.015)
    assert earliest_position(budget, 5, 7200) == 0  # the full buckets hold 10


def test_a_run_that_spends_the_cap_holds_each_label_by_its_latest_position() -> None:
    vs = next(video_seeds(SMALL))
    run = run_seed("active-stream", vs, vs.cap, SMALL,
                   strategy_seed(SMALL.random_state, 0, "active-stream"))
    assert run.labels_used == vs.cap  # the bound is about policies that spend the cap
    budget = video_policy(SMALL).budget
    for k, row in enumerate(run.labeled, start=1):
        assert row < latest_position(budget, k, vs.clips.n, vs.cap)


def test_references_reach_only_targets_their_models_reach() -> None:
    vs = next(video_seeds(SMALL))
    assert seen_reach(vs, 0.0, SMALL) == SMALL.seed_labels
    assert seen_reach(vs, 1.01, SMALL) == math.inf
    assert seen_reach(vs, 0.0, SMALL, now=True) == SMALL.seed_labels
    assert seen_reach(vs, 1.01, SMALL, now=True) == math.inf
    for paced in (True, False):
        assert margin_reach(vs, 0.0, SMALL, paced) == SMALL.seed_labels
        assert margin_reach(vs, 1.01, SMALL, paced) == math.inf
        reach = margin_reach(vs, 0.7, SMALL, paced)
        assert reach == math.inf or (reach - SMALL.seed_labels) % SMALL.retrain_every == 0 \
            or reach == SMALL.seed_labels + vs.cap


def test_the_paced_reference_picks_only_what_the_stream_has_shown() -> None:
    vs = next(video_seeds(SMALL))
    budget = video_policy(SMALL).budget
    paced, _ = margin_curve(vs, SMALL, paced=True)
    pool, curve = margin_curve(vs, SMALL, paced=False)
    assert len(paced) == len(pool) == vs.cap and len(curve) == 1 + math.ceil(vs.cap / 10)
    latest = [latest_position(budget, k, vs.clips.n, vs.cap) for k in range(1, vs.cap + 1)]
    assert all(row < n for row, n in zip(paced, latest, strict=True))
    assert any(row >= n for row, n in zip(pool, latest, strict=True))  # pacing bit
