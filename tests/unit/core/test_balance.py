"""Class-balanced flushes (`ReservoirPolicy.balance`, balance.py): while a predicted class has
fewer than `balance` picks, a flush grants its entries first, round-robin over such classes;
off by default, and then nothing is counted and nothing is reordered."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

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
from services.core.balance import order
from tests.unit.core.synth import Event, Pred

CLASSES = ("a", "b", "c", "d")
# 10% of assets, no exploration and no control arm, so every pick is the flush's weighted draw;
# no class cap, so the cap does not balance the classes by itself.
BUDGET = BudgetPolicy(share=0.1, share_burst=5.0, labels_per_hour=1e9, burst=1e6,
                      exploration_share=0.0, class_cap_factor=100.0)


def _policy(balance: int) -> SelectorPolicy:
    return SelectorPolicy(budget=BUDGET, exploration_rate=0.0,
                          reservoir=ReservoirPolicy(control_size=0, balance=balance))


def _events(n: int, seed: int = 0) -> list[Event]:
    """Predicted class `a` (half the stream) is near a tie with `b`; b, c, d are predicted
    with confidence 0.8-0.95: the powered draw of a window all but always takes `a`."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        top = "a" if i % 2 == 0 else CLASSES[1 + (i // 2) % 3]
        conf = rng.uniform(0.40, 0.45) if top == "a" else rng.uniform(0.8, 0.95)
        rest = [c for c in CLASSES if c != top]
        scores = {top: conf, rest[0]: conf - 0.02 if top == "a" else (1 - conf) / 2}
        left = 1.0 - sum(scores.values())
        scores |= {rest[1]: left / 2, rest[2]: left / 2}
        out.append(Event(f"e{i}", f"x{i}", "m", "v1", 1_000_000.0 + i, (Pred(scores=scores),)))
    return out


def _run(policy: SelectorPolicy, events: list[Event], size: int = 50
         ) -> tuple[SelectorState, list[Selected]]:
    state = SelectorState.create(policy, 7)
    picks: list[Selected] = []
    for lo in range(0, len(events), size):
        chunk = events[lo:lo + size]
        picks += select(state, PredictionBatch.from_events(chunk, [e.event_id for e in chunk])
                        ).selected
    return state, picks


def test_a_balanced_flush_picks_every_class_k_times_before_following_the_draw() -> None:
    events = _events(1000)
    _, default = _run(_policy(0), events)
    state, balanced = _run(_policy(3), events)
    assert len(default) == len(balanced) > 12
    # the default's draw follows class a; the balanced flush first gives b, c, d 3 picks each
    assert Counter(s.class_name for s in default[:12])["a"] >= 10
    first = Counter(s.class_name for s in balanced[:12])
    assert first == {c: 3 for c in CLASSES}, first
    # once every class has its 3 picks, the flush is the default's draw again
    assert Counter(s.class_name for s in balanced[12:])["a"] >= len(balanced[12:]) - 2
    book = state.books["m"]
    counted = dict(zip(book.names, book.picked.tolist(), strict=True))
    assert counted == Counter(s.class_name for s in balanced)


def test_off_by_default_nothing_is_counted_and_the_snapshot_keeps_its_form() -> None:
    assert ReservoirPolicy().balance == 0
    state, picks = _run(_policy(0), _events(400))
    assert picks and not state.books["m"].picked.any()
    assert all("picked" not in b for b in state.snapshot()["books"])


def test_counts_survive_a_snapshot_and_the_run_continues_identically() -> None:
    events = _events(800)
    whole, picks = _run(_policy(3), events)
    state, first = _run(_policy(3), events[:100])  # restored while classes are still short
    data = json.loads(json.dumps(state.snapshot()))
    assert any("picked" in b for b in data["books"])
    state = SelectorState.from_snapshot(data, _policy(3))
    rest = []
    for lo in range(100, 800, 37):
        chunk = events[lo:min(lo + 37, 800)]
        rest += select(state, PredictionBatch.from_events(chunk, [e.event_id for e in chunk])
                       ).selected
    assert [s.ref for s in first + rest] == [s.ref for s in picks]
    assert state.snapshot() == whole.snapshot()


def test_order_is_round_robin_up_to_each_shortfall() -> None:
    state = SelectorState.create(_policy(2), 0)
    book = state.book("m")
    for c in CLASSES:
        book.class_index(c)
    book.picked[book.index["b"]] = 1  # b is short of one pick, c of none
    book.picked[book.index["c"]] = 2
    entries = [(0.0, p) for p in ("a1", "a2", "a3", "c1", "b1", "b2", "d1", "z1")]

    def class_of(p: str) -> tuple[str, str | None]:
        return "m", p[0]

    got = [p for _, p in order(state, entries, class_of)]
    # round 0: a1, b1, d1 (entry order); round 1: a2; then the rest in entry order (z unknown)
    assert got == ["a1", "b1", "d1", "a2", "a3", "c1", "b2", "z1"]
    off = SelectorState.create(_policy(0), 0)
    assert order(off, entries, class_of) == entries


def test_negative_balance_is_rejected() -> None:
    with pytest.raises(ValueError):
        ReservoirPolicy(balance=-1)
    assert replace(ReservoirPolicy(), balance=5).balance == 5


def test_every_arm_counts_toward_its_class() -> None:
    """Exploration and the control arm's picks count too: a class they sampled is less short."""
    policy = SelectorPolicy(budget=replace(BUDGET, exploration_share=0.3),
                            reservoir=ReservoirPolicy(control_size=2, balance=3))
    state, picks = _run(policy, _events(2000))
    arms = Counter(s.strategy for s in picks)
    assert arms["exploration"] and arms["random_control"] and arms["reservoir"], arms
    book = state.books["m"]
    assert dict(zip(book.names, book.picked.tolist(), strict=True)) == Counter(
        s.class_name for s in picks)
