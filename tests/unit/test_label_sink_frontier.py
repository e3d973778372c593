"""A label the label reader forwards again after its own crash is never counted twice, however
far back the dedupe window ends, and a label held for its request (early.py) and forwarded out
of offset order is still counted (services/label_sink/frontier.py). `reader` plays the label
reader (holds, floors, crashes that re-read from a commit); `Sim` plays the counter."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from services.core.triggers import TriggerPolicy
from services.label_sink.early import EarlyLabels, Held
from services.label_sink.frontier import Frontier, InFlight, floor_of
from services.label_sink.tables import DECIDED, MODEL, DedupeWindow
from tests.unit.test_label_sink_state import Record, Sim, joined, run


def reader(labels: dict[int, list[str]], seed: int, early_share: float = 0.1,
           crashes: int = 3, ids: dict[int, list[str]] | None = None) -> list[Record]:
    """What the label reader sends to labels-by-model (model mN -> partition N % 2) while it
    reads `labels[q]` (the models of partition q's labels, by offset): a label is early with
    probability `early_share`, held (early.EarlyLabels) until 1-40 more reads, then forwarded
    with its floor. `crashes` times, the reader dies: its held labels are lost and it reads
    again from a committed offset per partition, at or before the oldest held label and at or
    before what it read, possibly far back (the commit lags), forwarding those labels again."""
    rng = random.Random(seed)
    held = EarlyLabels(10**6, 0.0, 1e9)
    due: list[tuple[int, Held]] = []  # (release at read number, held label)
    nxt = dict.fromkeys(labels, 0)
    committed = dict.fromkeys(labels, 0)
    sent: dict[int, int] = {}
    out: list[Record] = []
    reads = 0
    crash_at = sorted(rng.sample(range(1, sum(map(len, labels.values()))), crashes))

    def forward(q: int, o: int) -> None:
        model = labels[q][o]
        p = int(model[1:]) % 2
        floor = floor_of(held.offsets(q), o)
        label_id = ids[q][o] if ids is not None else f"q{q}o{o}"
        out.append((p, sent.get(p, 0), joined(label_id, model, o, float(o), floor=floor, q=q)))
        sent[p] = sent.get(p, 0) + 1

    while any(nxt[q] < len(labels[q]) for q in labels) or due:
        for release, h in sorted(due, key=lambda d: d[0]):
            if release <= reads:  # its request arrived: forwarded, then no longer held
                forward(h.tp, h.offset)
                held.discard(h)
                due.remove((release, h))
        if crash_at and reads >= crash_at[0]:
            crash_at.pop(0)
            for q in labels:
                oldest = held.oldest(q)
                top = nxt[q] if oldest is None else oldest
                committed[q] = rng.randint(committed[q], max(committed[q], top))
                nxt[q] = committed[q]
            held, due = EarlyLabels(10**6, 0.0, 1e9), []
            continue
        open_qs = [q for q in labels if nxt[q] < len(labels[q])]
        if not open_qs:
            reads += 1  # only held labels left: their requests come
            continue
        q = rng.choice(open_qs)
        o = nxt[q]
        nxt[q] += 1
        reads += 1
        if rng.random() < early_share:
            h = Held(f"r{q}:{o}", q, o, None, 0.0, q)
            held.hold(h)
            due.append((reads + rng.randint(1, 40), h))
        else:
            forward(q, o)
    return out


def two_partitions(n: int, models: int, seed: int) -> dict[int, list[str]]:
    rng = random.Random(seed)
    return {q: [f"m{rng.randrange(models)}" for _ in range(n)] for q in (0, 1)}


def resubmitted(n: int, models: int, seed: int,
                share: float = 0.1) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """`two_partitions`, where a share of the labels are resubmissions: the label_id (and
    model) of the label 1-3 offsets before, at their own offset."""
    rng = random.Random(seed)
    labels = two_partitions(n, models, seed)
    ids = {q: [f"q{q}o{o}" for o in range(n)] for q in labels}
    for q in labels:
        for o in range(3, n):
            if rng.random() < share:
                back = o - rng.randint(1, 3)
                labels[q][o], ids[q][o] = labels[q][back], ids[q][back]
    return labels, ids


def totals(sim: Sim) -> int:
    """Labels counted, all time (the "al" column: labels per class; one class a label)."""
    return sum(sum(state["al"]) for state in sim.states().values())


def test_an_early_label_forwarded_after_later_ones_is_counted_and_its_replay_is_not() -> None:
    sim = Sim(DedupeWindow(labels=2, seconds=1e9), TriggerPolicy(min_labels=10**6))
    order = [0, 1, 2, 4, 5, 6, 7, 8, 9, 3]  # offset 3 waits for its request
    floors = {o: 3 for o in range(4, 10)} | {3: 10}
    records = [(0, s, joined(f"l{o}", "m", o, float(o), floor=floors.get(o)))
               for s, o in enumerate(order)]
    run(sim, records)
    assert sim.states()["m"]["T"] == 10  # a "highest offset counted" frontier would drop 3
    # The reader crashed before its commit: all ten forwarded again, far past the window.
    again = [(0, 10 + s, row) for s, (_, _, row) in enumerate(records)]
    run(sim, again)
    assert sim.states()["m"]["T"] == 10 and sim.duplicates == 10
    restarted = sim.crash({})
    run(restarted, [(0, 20 + s, row) for s, (_, _, row) in enumerate(records)])
    assert restarted.states() == sim.states()


def test_a_burst_forwarded_again_past_the_window_is_not_counted_again() -> None:
    """The CI case: thousands of labels forwarded, the reader killed before its first commit,
    every one forwarded again as new labels-by-model records, far beyond a small window."""
    sim = Sim(DedupeWindow(labels=50, seconds=1e9), TriggerPolicy(min_labels=10**6),
              snapshot_every=100, sweep_min=50)
    first = [(0, s, joined(f"l{s}", "m", s, float(s))) for s in range(3300)]
    run(sim, first)
    restarted = sim.crash({})  # the counter too restarts, from its persisted rows
    run(restarted, [(0, 3300 + s, row) for _, s, row in first])
    assert restarted.states()["m"]["T"] == 3300
    assert restarted.duplicates == 3300


@pytest.mark.parametrize("seed", range(5))
def test_reforwards_and_early_labels_count_each_label_once(seed: int) -> None:
    labels = two_partitions(400, 4, seed)
    records = reader(labels, seed)
    assert len(records) > 800  # the crashes forwarded some labels again
    sim = run(Sim(DedupeWindow(labels=20, seconds=1e9), TriggerPolicy(min_labels=10**6),
                  snapshot_every=15, sweep_min=10), records)
    assert totals(sim) == 800
    for model, state in sim.states().items():
        assert sum(state["al"]) == sum(m == model for q in labels for m in labels[q])


def crashed_replays(window: DedupeWindow, policy: TriggerPolicy, options: dict[str, int],
                    records: list[Any], seed: int) -> Iterator[Sim]:
    """8 runs of `records`, each cut at a random record, crashed at random changelog prefixes
    and replayed from a random committed offset at or before what persisted, to the end."""
    rng = random.Random(seed)
    for _ in range(8):
        cut = rng.randrange(1, len(records))
        sim = run(Sim(window, policy, **options), records[:cut])
        sim = sim.crash({p: rng.randrange(0, len(w) + 1) for p, w in sim.log.items()})
        sim.ledger.rebuild(sim.table.items())
        start = {p: rng.randint(0, sim.ledger.applied(p) + 1) for p in (0, 1)}
        sim.ledger.invalidate()
        run(sim, [r for r in records if r[1] >= start[r[0]]])
        yield sim


@pytest.mark.parametrize("seed", range(6))
def test_a_counter_crash_anywhere_with_reforwards_gives_the_same_state(seed: int) -> None:
    window = DedupeWindow(labels=20, seconds=1e9)
    policy = TriggerPolicy(min_labels=37)
    options = {"snapshot_every": 15, "sweep_min": 10}
    records = reader(two_partitions(300, 4, seed), seed + 100)
    reference = run(Sim(window, policy, **options), records)
    assert totals(reference) == 600
    for sim in crashed_replays(window, policy, options, records, seed):
        assert sim.states() == reference.states()
        assert {m: sim.ledger.frontier(m) for m, _ in sim.ledger.items()} == {
            m: reference.ledger.frontier(m) for m, _ in reference.ledger.items()}
        assert set(map(repr, sim.triggers)) == set(map(repr, reference.triggers))


def test_the_frontier_is_bounded_and_past_its_bound_no_label_is_lost() -> None:
    """With room for one offset above the floor, labels forwarded while older ones wait are
    forgotten: a re-forward of one may be counted again (the window decides), but no label is
    ever taken for a replay of another."""
    labels = two_partitions(400, 3, 7)
    records = reader(labels, 7, early_share=0.3)
    sim = run(Sim(DedupeWindow(labels=20, seconds=1e9), TriggerPolicy(min_labels=10**6),
                  snapshot_every=15, sweep_min=10, frontier_limit=1), records)
    for model, state in sim.states().items():
        assert state["T"] >= sum(m == model for q in labels for m in labels[q])
    for key, value in sim.table.items():
        if key.startswith(MODEL):
            assert all(len(above) <= 1 for _, above in value["f"].values())


def test_frontier_floor_and_offsets_above_it() -> None:
    f = Frontier()
    f.add(0, 1, 10)
    f.add(5, 2, 10)  # offset 2 still held: 5 is above the floor
    assert f.seen(0) and f.seen(5) and not f.seen(2) and not f.seen(3)
    f.add(2, 6, 10)  # 2 released, 3 and 4 read and not this model's: floor 6
    assert f.dump() == [6, []] and f.seen(4)
    assert floor_of([7, 9], 9) == 7 and floor_of([9], 9) == 10 and floor_of([], 4) == 5


def test_a_resubmission_forwarded_again_past_the_window_is_still_a_duplicate() -> None:
    """Case (a): label "a" at offset 0, its resubmission at offset 1 (a DUPLICATE, inside the
    window), then other models' labels. The reader is killed before its commit and forwards
    all again: by then "a"'s row is far out of the window, so only the frontier can tell the
    re-forward of offset 1 from a new label. A duplicate decides its offset as a count does."""
    window, policy = DedupeWindow(labels=3, seconds=1e9), TriggerPolicy(min_labels=10**6)
    first = [(0, 0, joined("a", "m", 0, 0.0)), (0, 1, joined("a", "m", 1, 1.0))]
    first += [(0, 2 + i, joined(f"n{i}", "n", 2 + i, 2.0 + i)) for i in range(10)]
    sim = run(Sim(window, policy), first)
    assert totals(sim) == 11 and sim.duplicates == 1
    assert sim.table[DECIDED + "m"] == {"0": [2, []]}
    again = [(0, 12 + s, row) for s, (_, _, row) in enumerate(first)]
    restarted = run(sim.crash({}), again)  # the counter restarts from its persisted rows too
    assert totals(restarted) == 11 and restarted.duplicates == 12
    run(sim, again)  # and without its restart
    assert totals(sim) == 11 and sim.duplicates == 13


@pytest.mark.parametrize("seed", range(4))
def test_resubmissions_keep_their_verdict_across_reforwards_and_counter_crashes(
        seed: int) -> None:
    """A counter crash anywhere, with reforwards and resubmissions: the same counts and the
    same frontiers (duplicates' included) as the uncrashed run."""
    window, policy = DedupeWindow(labels=20, seconds=1e9), TriggerPolicy(min_labels=37)
    options = {"snapshot_every": 15, "sweep_min": 10}
    labels, ids = resubmitted(300, 4, seed)
    records = reader(labels, seed + 200, ids=ids)
    reference = run(Sim(window, policy, **options), records)
    assert any(k.startswith(DECIDED) for k in reference.table)  # duplicates were decided
    distinct = {i for q in ids for i in ids[q]}
    assert len(distinct) <= totals(reference) < 600  # each label_id at least once
    for sim in crashed_replays(window, policy, options, records, seed):
        assert sim.states() == reference.states()
        assert {m: sim.ledger.frontier(m) for m, _ in sim.ledger.items()} == {
            m: reference.ledger.frontier(m) for m, _ in reference.ledger.items()}


def test_a_lost_forward_below_a_delivered_one_is_counted_when_forwarded_again() -> None:
    """Case (b): the forward of offset 0 is refused by the broker (aiokafka then sends the
    partition's next batch), the one of offset 1 is delivered and counted, the worker stops.
    Had offset 1 carried floor 2, the re-forward of 0 would be taken for a replay and label 0
    never counted; a forward still in flight keeps later floors at or below it."""
    flight = InFlight()

    def forward(o: int) -> dict[str, object]:
        floor = floor_of([], o, flight.oldest(0))  # as app.forward_label, before sending
        flight.sent(0, o)
        return joined(f"l{o}", "m", o, float(o), floor=floor)

    lost, delivered = forward(0), forward(1)
    flight.delivered(0, 1)  # offset 0's forward failed: it stays in flight
    assert delivered["f"] == 0 and lost["f"] == 1
    sim = run(Sim(DedupeWindow(labels=1, seconds=1e9), TriggerPolicy(min_labels=10**6)),
              [(0, 0, delivered)])
    flight = InFlight()  # the restarted reader reads from its commit, offset 0
    again = [forward(0)]
    flight.delivered(0, 0)
    again.append(forward(1))
    restarted = run(sim.crash({}), [(0, 1 + s, row) for s, row in enumerate(again)])
    assert totals(restarted) == 2 and restarted.duplicates == 1
    assert restarted.ledger.frontier("m") == {"0": [1, [1]]}  # 1 replayed: not added again


def test_in_flight_keeps_the_lowest_offset_not_delivered() -> None:
    flight = InFlight()
    for o in (4, 2, 7, 2):
        flight.sent("t", o)
    assert flight.oldest("t") == 2 and flight.oldest("u") is None
    flight.delivered("t", 2)
    assert flight.oldest("t") == 2  # sent twice, delivered once
    flight.delivered("t", 2)
    assert flight.oldest("t") == 4
    flight.delivered("t", 4)
    flight.delivered("t", 7)
    assert flight.oldest("t") is None and len(flight) == 0
    assert floor_of([9], 5, 3) == 3 and floor_of([], 5, 5) == 5 and floor_of([], 5) == 6


@pytest.mark.parametrize("seed", range(20))
def test_frontiers_merge_in_any_order_to_what_adding_in_order_gives(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.choice([1, 3, 50])
    adds = [(o, rng.randint(max(0, o - 5), o + 1)) for o in rng.sample(range(60), 40)]
    whole = Frontier()
    for o, f in adds:
        whole.add(o, f, limit)
    parts = [Frontier(), Frontier(), Frontier()]
    for o, f in adds:
        rng.choice(parts).add(o, f, limit)
    merged = Frontier()
    for part in rng.sample(parts, 3):
        merged.merge(part, limit)
    assert merged.dump() == whole.dump()
