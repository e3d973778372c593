"""Confusion novelty (`ReservoirPolicy.novelty`, novelty.py): the powered draw's weights are
multiplied by how rare each asset's (predicted, runner-up) pair has been for its model; off by
default, and then nothing is counted."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from services.core import (
    BudgetPolicy,
    PredictionBatch,
    ReservoirPolicy,
    Selected,
    SelectorPolicy,
    SelectorState,
    select,
)
from services.core import novelty as nov
from services.core.registry import ModelBook
from services.core.view import BatchView
from tests.unit.core.synth import Event, Pred

BUDGET = BudgetPolicy(share=0.1, share_burst=5.0, labels_per_hour=1e9, burst=1e6,
                      exploration_share=0.0, class_cap_factor=100.0)


def _policy(novelty: float) -> SelectorPolicy:
    return SelectorPolicy(budget=BUDGET, exploration_rate=0.0,
                          reservoir=ReservoirPolicy(control_size=0, novelty=novelty))


def _events(n: int, seed: int = 0) -> list[Event]:
    """Every asset predicts `a` at 0.5 with margin 0.1 (equal uncertainty); its runner-up is
    `b` for 90% of them (the common confusion) and `c` for 10% (the rare one)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        second = "c" if rng.random() < 0.1 else "b"
        third = "b" if second == "c" else "c"
        scores = {"a": 0.5, second: 0.4, third: 0.1}
        out.append(Event(f"e{i}", f"x{i}", "m", "v1", 1_000_000.0 + i, (Pred(scores=scores),)))
    return out


def _run(policy: SelectorPolicy, events: list[Event], size: int = 50
         ) -> tuple[SelectorState, list[Selected]]:
    state = SelectorState.create(policy, 3)
    picks: list[Selected] = []
    for lo in range(0, len(events), size):
        chunk = events[lo:lo + size]
        picks += select(state, PredictionBatch.from_events(chunk, [e.event_id for e in chunk])
                        ).selected
    return state, picks


def _runner(picks: list[Selected], events: list[Event]) -> Counter[str]:
    by_id = {e.event_id: e for e in events}
    out: Counter[str] = Counter()
    for s in picks:
        scores = by_id[s.ref].predictions[0].scores
        assert scores is not None
        out[sorted(scores, key=lambda c: -scores[c])[1]] += 1
    return out


def test_novelty_spreads_picks_over_the_rare_confusion() -> None:
    events = _events(3000)
    _, default = _run(_policy(0.0), events)
    _, novel = _run(_policy(1.0), events)
    base, moved = _runner(default, events), _runner(novel, events)
    assert len(default) == len(novel) > 200
    # equal uncertainty: the default draws about the stream's 10% of the rare confusion; with
    # novelty 1 each pair's weight is about inverse to its frequency: about half of the picks
    assert base["c"] / len(default) < 0.2, base
    assert moved["c"] / len(novel) > 0.35, moved


def test_weigh_follows_the_smoothed_pair_share() -> None:
    book = ModelBook("m", 16)
    for name in "abc":
        book.class_index(name)
    classes = np.array([0, 0, 0, 0])
    runners = np.array([1, 1, 2, 1])
    got = nov.weigh(book, classes, runners, 1.0)
    # r = (n(pair) + 1) / (n(class) + k) x k, k = distinct runner-ups seen so far (>= 1)
    want_r = [1 / 1 * 1, 2 / 2 * 1, 1 / 3 * 1, 3 / 5 * 2]
    assert np.allclose(got, [1 / r for r in want_r])
    assert book.pair_total.tolist() == [4, 0, 0] and book.pair_kinds.tolist() == [2, 0, 0]
    assert np.allclose(nov.weigh(book, np.array([0]), np.array([1]), 0.5), (4 / 6 * 2) ** -0.5)


def test_runner_up_ignores_the_batch_class_order_and_top1_rows() -> None:
    book = ModelBook("m", 16)
    for name in ("z", "y", "x"):
        book.class_index(name)
    tie = {"x": 0.2, "y": 0.2, "z": 0.6}  # y and x tie: y has the lower book index
    for order in (tie, dict(reversed(list(tie.items())))):
        events = [Event("e0", "a0", "m", "v1", 1.0, (Pred(scores=order),)),
                  Event("e1", "a1", "m", "v1", 2.0, (Pred(label="x", confidence=0.7),))]
        view = _view(events, book)
        assert nov.runner_up(view, book, np.array([0, 1])).tolist() == [book.index["y"],
                                                                        nov.NO_RUNNER_UP]


def _view(events: list[Event], book: ModelBook) -> BatchView:
    batch = PredictionBatch.from_events(events, [e.event_id for e in events])
    return BatchView(batch, [book], [None], "margin", "max", 3, 0, -np.inf)


def test_off_by_default_nothing_is_counted() -> None:
    assert ReservoirPolicy().novelty == 0.0
    state, picks = _run(_policy(0.0), _events(500))
    assert picks and not state.books["m"].pairs
    assert all("pairs" not in b for b in state.snapshot()["books"])


def test_counts_survive_a_snapshot_and_the_run_continues_identically() -> None:
    events = _events(1200)
    whole, picks = _run(_policy(1.0), events)
    state, first = _run(_policy(1.0), events[:300])
    data = json.loads(json.dumps(state.snapshot()))
    assert any("pairs" in b for b in data["books"])
    state = SelectorState.from_snapshot(data, _policy(1.0))
    rest = []
    for lo in range(300, 1200, 37):
        chunk = events[lo:min(lo + 37, 1200)]
        rest += select(state, PredictionBatch.from_events(chunk, [e.event_id for e in chunk])
                       ).selected
    assert [s.ref for s in first + rest] == [s.ref for s in picks]
    assert state.snapshot() == whole.snapshot()


def test_pairs_per_book_are_bounded() -> None:
    book = ModelBook("m", 4096)
    for i in range(100):
        book.class_index(f"c{i}")
    rng = np.random.default_rng(1)
    classes, runners = rng.integers(0, 100, 20_000), rng.integers(0, 100, 20_000)
    nov.weigh(book, classes, runners, 1.0)
    assert len(book.pairs) == nov.MAX_PAIRS
    assert int(book.pair_total.sum()) == 20_000  # every asset counts toward its class


def test_novelty_out_of_range_is_rejected() -> None:
    for bad in (-1.0, 9.0):
        with pytest.raises(ValueError):
            ReservoirPolicy(novelty=bad)
