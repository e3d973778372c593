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


# The gate (`ReservoirPolicy.novelty_gate`): the exponent times 1 - exp(-(W - 1) x c), c the
# chance that two earlier counted assets share a pair.

def _one_at_a_time(book: ModelBook, classes: np.ndarray, runners: np.ndarray, beta: float,
                   window: int) -> list[float]:
    """The contract of `weigh`, one asset at a time (the form it had before it was vectorised,
    plus the gate computed from the counts before each asset)."""
    out = []
    pairs, total, kinds = book.pairs, book.pair_total, book.pair_kinds
    for c, r in zip(classes.tolist(), runners.tolist(), strict=True):
        key = c * book.max_classes + r if r >= 0 else -1 - c
        n = pairs.get(key, 0)
        k = max(int(kinds[c]), 1)
        e = beta
        if window:
            counted = sum(pairs.values())
            e *= nov.gate(counted, sum(v * (v - 1) for v in pairs.values()), window)
        out.append(((n + 1.0) / (int(total[c]) + k) * k) ** -e)
        if n or len(pairs) < nov.MAX_PAIRS:
            pairs[key] = n + 1
            kinds[c] += int(n == 0)
        total[c] += 1
    return out


def _book(classes: int, max_classes: int = 64) -> ModelBook:
    book = ModelBook("m", max_classes)
    for i in range(classes):
        book.class_index(f"c{i}")
    return book


@pytest.mark.parametrize("window", [0, 2, 50])
def test_weigh_equals_counting_one_asset_at_a_time(window: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for trial in range(40):
        rng = np.random.default_rng(trial)
        n_classes = int(rng.integers(2, 40))
        # a small bound on a third of the trials: pairs refused once the book is full
        monkeypatch.setattr(nov, "MAX_PAIRS", int(rng.integers(3, 60)) if trial % 3 == 0
                            else 2048)
        beta = float(rng.choice([0.5, 1.0, 2.0]))
        fast, slow = _book(n_classes), _book(n_classes)
        for _ in range(int(rng.integers(1, 6))):
            m = int(rng.integers(0, 200))
            classes = rng.integers(0, n_classes, m)
            runners = rng.integers(-1, n_classes, m)  # -1: no runner-up (a top-1 row)
            got = nov.weigh(fast, classes, runners, beta, window)
            want = _one_at_a_time(slow, classes, runners, beta, window)
            assert got.tolist() == want, trial  # bit for bit
            assert fast.pairs == slow.pairs
            assert fast.pair_total.tolist() == slow.pair_total.tolist()
            assert fast.pair_kinds.tolist() == slow.pair_kinds.tolist()


def test_gate_is_the_chance_of_a_shared_confusion_in_the_window() -> None:
    assert nov.gate(0, 0, 50) == nov.gate(1, 0, 50) == 1.0  # nothing known yet: ungated
    assert nov.gate(100, 0, 50) == 0.0  # every pair met once: nothing repeats
    assert nov.gate(100, 100 * 99, 50) == pytest.approx(1.0 - np.exp(-49.0))  # one pair
    # 10 pairs of 10 assets each: c = 10 x 90 / (100 x 99)
    assert nov.gate(100, 900, 50) == pytest.approx(1.0 - np.exp(-49.0 * 900 / 9900))


def _gated_exponent(book: ModelBook, classes: np.ndarray, runners: np.ndarray, beta: float
                    ) -> float:
    """The exponent the gate leaves to the last of `classes`/`runners`, counted after the rest:
    log(gated factor) / log(ungated factor) x beta, on copies of the book."""
    gated, plain = (ModelBook.from_snapshot(json.loads(json.dumps(book.snapshot())), 64)
                    for _ in range(2))
    a = nov.weigh(gated, classes, runners, beta, 50)[-1]
    b = nov.weigh(plain, classes, runners, beta, 0)[-1]
    assert b != 1.0
    return float(np.log(a) / np.log(b) * beta)


def test_gate_leaves_few_repeated_confusions_at_the_configured_novelty() -> None:
    # 7 classes, each confused with its neighbour 80% of the time and with two others else
    rng = np.random.default_rng(3)
    book = _book(7)
    classes = rng.integers(0, 7, 2000)
    roll = rng.random(2000)
    runners = np.where(roll < 0.8, (classes + 1) % 7,
                       np.where(roll < 0.9, (classes + 2) % 7, (classes + 3) % 7))
    nov.weigh(book, classes[:-1], runners[:-1], 0.5, 50)
    got = _gated_exponent(book, classes[-1:], runners[-1:], 0.5)
    # sum of p(pair)^2 = 7 x (0.8^2 + 0.1^2 + 0.1^2) / 49: the gate is 0.99
    assert got > 0.98 * 0.5
    assert got == pytest.approx(0.5 * (1 - np.exp(-49 * 0.66 / 7)), rel=0.01)


def test_gate_takes_novelty_away_where_confusions_spread_over_many_pairs() -> None:
    # 30 classes, runner-ups uniform: 870 pairs equally likely, c = 1/870, gate ~ 0.055
    rng = np.random.default_rng(4)
    book = _book(30)
    classes = rng.integers(0, 30, 20_000)
    runners = (classes + rng.integers(1, 30, 20_000)) % 30
    nov.weigh(book, classes[:-1], runners[:-1], 0.5, 50)
    got = _gated_exponent(book, classes[-1:], runners[-1:], 0.5)
    assert got < 0.05 * 0.5 * 1.3 and got == pytest.approx(0.5 * (1 - np.exp(-49 / 870)),
                                                         rel=0.1)


def _gated(beta: float = 1.0, window: int = 50) -> SelectorPolicy:
    return SelectorPolicy(budget=BUDGET, exploration_rate=0.0, reservoir=ReservoirPolicy(
        control_size=0, novelty=beta, novelty_gate=window))


def _spread_events(n: int, seed: int = 0) -> list[Event]:
    """30 classes, equal uncertainty, each asset's runner-up one of the other 29 at random."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        top, second = rng.choice(30, 2, replace=False).tolist()
        scores = {f"k{j}": 0.3 / 28 for j in range(30)}
        scores[f"k{top}"], scores[f"k{second}"] = 0.4, 0.3
        out.append(Event(f"e{i}", f"x{i}", "m", "v1", 1_000_000.0 + i, (Pred(scores=scores),)))
    return out


def test_gated_picks_follow_novelty_at_few_classes_and_the_default_at_many() -> None:
    few = _events(3000)
    _, plain = _run(_policy(1.0), few)
    _, gated = _run(_gated(), few)
    # two pairs, one of them 90% of assets: the gate is ~1, the picks those of novelty 1
    assert _runner(gated, few)["c"] == pytest.approx(_runner(plain, few)["c"], rel=0.1)
    many = _spread_events(3000)
    _, default = _run(_policy(0.0), many)
    _, ungated = _run(_policy(4.0), many)
    _, gated_many = _run(_gated(4.0), many)
    refs = {s.ref for s in default}
    # novelty 4 moves most picks away from the default's; gated, nearly none move
    assert len({s.ref for s in ungated} & refs) < 0.6 * len(refs)
    assert len({s.ref for s in gated_many} & refs) > 0.8 * len(refs)


@pytest.mark.parametrize("events", [_events, _spread_events])
def test_gated_counts_survive_a_snapshot_and_the_run_continues_identically(events) -> None:
    stream = events(1200)
    whole, picks = _run(_gated(), stream)
    state, first = _run(_gated(), stream[:300])
    state = SelectorState.from_snapshot(json.loads(json.dumps(state.snapshot())), _gated())
    rest = []
    for lo in range(300, 1200, 37):
        chunk = stream[lo:min(lo + 37, 1200)]
        rest += select(state, PredictionBatch.from_events(chunk, [e.event_id for e in chunk])
                       ).selected
    assert [s.ref for s in first + rest] == [s.ref for s in picks]
    assert state.snapshot() == whole.snapshot()


def test_novelty_gate_is_off_by_default_and_checked() -> None:
    assert ReservoirPolicy().novelty_gate == 0
    for bad in (-1, 1, 1_000_001):
        with pytest.raises(ValueError):
            ReservoirPolicy(novelty=0.5, novelty_gate=bad)
