"""The label sink's state is bounded by the dedupe window, and exactly-once across crashes
(issue 14, item 3). `Sim` drives `tables.Ledger` the way `app.count_label` does, with a dict
as the table and a per-partition write log as its changelog: a crash keeps a prefix of each
partition's log (aiokafka keeps one batch in flight per partition) and replays the input from a
committed offset at or before what was persisted."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from services.core.triggers import Fired, TriggerPolicy, trigger_id
from services.label_sink.tables import (
    DECIDED,
    LABEL,
    MODEL,
    DedupeWindow,
    Ledger,
    Verdict,
    Write,
    label_key,
)

Record = tuple[int, int, dict[str, Any]]  # (labels-by-model partition, offset, joined label)


def joined(label_id: str, model: str, offset: int, at: float, cls: str = "cat",
           floor: int | None = None, q: int = 0) -> dict[str, Any]:
    """A joined label at `offset` of label partition `q`, forwarded in order (floor offset + 1)
    unless `floor` says an older label of `q` was held then."""
    return {"id": label_id, "m": model, "q": q, "o": offset, "t": at, "c": [cls],
            "r": [[cls, cls != "dog"]], "w": [cls], "ta": None,
            "f": offset + 1 if floor is None else floor}


class Sim:
    def __init__(self, window: DedupeWindow, policy: TriggerPolicy, **ledger: Any) -> None:
        self.window, self.policy, self.options = window, policy, ledger
        self.table: dict[str, Any] = {}
        self.log: dict[int, list[Write]] = {}
        self.triggers: list[tuple[str, tuple[Any, ...], dict[str, int]]] = []
        self.duplicates = 0
        self.ledger = Ledger(window, **ledger)

    def apply(self, p: int, writes: list[Write]) -> None:
        for write in writes:
            self.log.setdefault(p, []).append(write)
            if write.value is None:
                self.table.pop(write.key, None)
            else:
                self.table[write.key] = write.value

    def process(self, p: int, s: int, row: dict[str, Any]) -> None:
        ledger = self.ledger
        if not ledger.valid:
            ledger.rebuild(self.table.items())
        found = self.table.get(label_key(p, row["id"]))
        verdict = ledger.verdict(p, s, found, row)
        if verdict is not Verdict.NEW:
            self.duplicates += 1
            if verdict is Verdict.DUPLICATE:  # as app.count_label does
                self.apply(p, ledger.skip(row))
            return
        state, record = ledger.count(p, s, row)
        decision = state.should_trigger(self.policy)
        fired = None
        if decision is not None:
            tid = trigger_id(row["m"], "labels", decision.ranges)
            self.triggers.append((tid, decision.ranges, dict(decision.counts)))
            fired = Fired(tid, decision.rule, decision.triggered_at)
            state.fire(decision)
        self.apply(p, ledger.persist(p, s, row, record, fired, found))
        if ledger.sweep_due(p):
            self.apply(p, ledger.sweep(p, s, self.table.items()))

    def crash(self, keep: dict[int, int]) -> Sim:
        """A new sink whose table is recovered from the first keep[p] writes of each log."""
        other = Sim(self.window, self.policy, **self.options)
        for p, writes in self.log.items():
            other.apply(p, writes[:keep.get(p, len(writes))])
        other.triggers = list(self.triggers)
        return other

    def states(self) -> dict[str, Any]:
        if not self.ledger.valid:
            self.ledger.rebuild(self.table.items())
        return {m: s.snapshot() for m, s in self.ledger.items()}

    def label_key_count(self, label_id: str) -> int:
        return sum(1 for k in self.table if k.startswith(LABEL) and k.endswith(":" + label_id))

    def label_rows(self, p: int | None = None) -> int:
        return sum(1 for k, v in self.table.items() if k.startswith(LABEL)
                   and (p is None or v[0] == p))


def stream(n: int, models: int, partitions: int, dup_every: int, seed: int) -> list[Record]:
    """n labels over `models` models (model i in partition i % partitions), with a duplicate
    of an earlier label (near or far back) every `dup_every` records: a resubmission, the same
    label_id at its own offset of the label topic."""
    rng = random.Random(seed)
    next_offset = dict.fromkeys(range(partitions), 0)
    out: list[Record] = []
    sent: list[Record] = []
    for i in range(n):
        m = rng.randrange(models)
        p = m % partitions
        row = joined(f"l{i}", f"m{m}", i, 1000.0 + i, rng.choice(["cat", "dog", "bird"]))
        if sent and i % dup_every == 0:
            old = sent[-rng.choice([1, 3, 30, 300, 3000]) if len(sent) > 3000 else -1]
            row = {**old[2], "o": i, "f": i + 1}
            p = old[0]
        out.append((p, next_offset[p], row))
        next_offset[p] += 1
        sent.append(out[-1])
    return out


def run(sim: Sim, records: list[Record]) -> Sim:
    for p, s, row in records:
        sim.process(p, s, row)
    return sim


def test_rows_stay_within_the_count_window_and_open_models() -> None:
    window = DedupeWindow(labels=2000, seconds=1e9)
    sim = run(Sim(window, TriggerPolicy(min_labels=700)), stream(30_000, 6, 2, 50, seed=1))
    # rows of the last `labels` offsets, plus those counted since the last sweep (sweep_min,
    # or a quarter of the rows then)
    bound = max(window.labels + sim.ledger.sweep_min, window.labels * 4 // 3 + 1)
    for p in (0, 1):
        assert sim.label_rows(p) <= bound
    assert sum(1 for k in sim.table if k.startswith(MODEL)) == 6
    # ... plus a state row and at most one frontier row (its duplicates') per model
    assert sum(1 for k in sim.table if k.startswith(DECIDED)) <= 6
    assert len(sim.table) <= 2 * bound + 12


def test_rows_stay_within_the_event_time_window() -> None:
    window = DedupeWindow(labels=10**9, seconds=500.0)
    sim = run(Sim(window, TriggerPolicy(min_labels=100)), stream(10_000, 3, 1, 10**9, seed=2))
    # labels are 1 s apart: 500 s of them, plus a sweep's worth (sweep_min)
    assert sim.label_rows() <= 500 + 1 + sim.ledger.sweep_min


def test_a_duplicate_inside_the_window_is_counted_once_and_after_it_again() -> None:
    window = DedupeWindow(labels=10, seconds=1e9)
    sim = Sim(window, TriggerPolicy(min_labels=10**6))
    sim.process(0, 0, joined("x", "m", 0, 1.0))
    for s in range(1, 10):
        sim.process(0, s, joined(f"y{s}", "m", s, 1.0 + s))
    # A resubmission (its own label-topic offset) 10 records after it: inside the window.
    sim.process(0, 10, joined("x", "m", 10, 1.0))
    assert sim.duplicates == 1
    assert sim.ledger.get("m").all_time.labels["cat"] == 10
    for s in range(11, 30):
        sim.process(0, s, joined(f"z{s}", "m", s, 1.0 + s))
    sim.process(0, 30, joined("x", "m", 30, 1.0))  # 30 records after: outside, counted again
    assert sim.duplicates == 1
    assert sim.ledger.get("m").all_time.labels["cat"] == 30


def test_a_late_duplicate_by_event_time_is_counted_again() -> None:
    sim = Sim(DedupeWindow(labels=10**6, seconds=100.0), TriggerPolicy(min_labels=10**6))
    sim.process(0, 0, joined("x", "m", 0, 1000.0))
    sim.process(0, 1, joined("x", "m", 1, 1000.0))  # resubmitted
    sim.process(0, 2, joined("y", "m", 2, 1200.0))  # the watermark moves 200 s on
    sim.process(0, 3, joined("x", "m", 3, 1000.0))
    assert sim.duplicates == 1 and sim.ledger.get("m").total == 3


@pytest.mark.parametrize("seed", range(6))
def test_a_crash_anywhere_gives_the_same_triggers_and_counts(seed: int) -> None:
    window = DedupeWindow(labels=60, seconds=1e9)
    policy = TriggerPolicy(min_labels=37)
    records = stream(1500, 4, 2, 7, seed=seed)
    options = {"snapshot_every": 25, "sweep_min": 20}
    reference = run(Sim(window, policy, **options), records)
    rng = random.Random(seed)
    for _ in range(8):
        cut = rng.randrange(1, len(records))
        sim = run(Sim(window, policy, **options), records[:cut])
        keep = {p: rng.randrange(0, len(w) + 1) for p, w in sim.log.items()}
        sim = sim.crash(keep)
        # Resume each partition from a committed offset at or before what the log kept.
        sim.ledger.rebuild(sim.table.items())
        start = {p: rng.randint(0, sim.ledger.applied(p) + 1) for p in (0, 1)}
        rest = [r for r in records if r[1] >= start[r[0]]]
        sim.ledger.invalidate()
        run(sim, rest)
        assert sim.states() == reference.states()
        assert set(map(repr, sim.triggers)) == set(map(repr, reference.triggers))
        # a trigger published twice is the same trigger (same id, manifest and counts)
        ids = Counter(t[0] for t in sim.triggers)
        assert len({repr(t) for t in sim.triggers}) == len(ids)


def test_a_restart_rebuilds_from_bounded_rows() -> None:
    window = DedupeWindow(labels=5000, seconds=1e9)
    sim = run(Sim(window, TriggerPolicy(min_labels=10**6), snapshot_every=200),
              stream(20_000, 5, 1, 10**9, seed=3))
    replayed = 0
    for key, value in sim.table.items():
        if key.startswith(LABEL):
            model = sim.table[MODEL + value[2]]
            replayed += value[1] > model["s"]
    # at most snapshot_every label rows per model are past their model's state row
    assert replayed <= 5 * 200
    restarted = sim.crash({})
    assert restarted.states() == sim.states()
    assert sum(restarted.ledger.get(f"m{i}").total for i in range(5)) == 20_000


def test_rows_are_folded_before_they_are_dropped() -> None:
    """A model whose labels leave the window before its state row is due is saved first."""
    window = DedupeWindow(labels=5, seconds=1e9)
    sim = run(Sim(window, TriggerPolicy(min_labels=10**6), snapshot_every=10**6, sweep_min=3),
              [(0, s, joined(f"l{s}", "m", s, float(s))) for s in range(50)])
    assert sim.label_rows() <= 5 + 3
    assert sim.crash({}).states()["m"]["T"] == 50


def test_a_copy_after_the_window_keeps_the_first_count_across_a_restart() -> None:
    """The copy's row replaces the first one's: the model's state row must hold the first
    label before that row goes."""
    sim = Sim(DedupeWindow(labels=5, seconds=1e9), TriggerPolicy(min_labels=10**6),
              snapshot_every=10**6, sweep_min=10**6)
    records = [(0, 0, joined("x", "m", 0, 0.0))]
    records += [(0, s, joined(f"y{s}", "m", s, float(s))) for s in range(1, 11)]
    records.append((0, 11, joined("x", "m", 11, 0.0)))  # resubmitted 11 records later: new
    run(sim, records)
    assert sim.ledger.get("m").total == 12
    assert sim.crash({}).states()["m"]["T"] == 12


def test_a_late_label_swept_at_once_is_not_counted_again_after_a_crash() -> None:
    """A label older than the event-time window is counted, then its row is swept at once:
    its model's state row, written first, still says it was processed."""
    window = DedupeWindow(labels=10**6, seconds=10.0)
    records = [(0, s, joined(f"l{s}", "m", s, 1000.0 + s)) for s in range(6)]
    records.append((0, 6, joined("late", "m", 6, 0.0)))
    sim = run(Sim(window, TriggerPolicy(min_labels=10**6), sweep_min=1), records)
    assert sim.label_key_count("late") == 0 and sim.label_rows() == 6  # swept at once
    restarted = sim.crash({})
    run(restarted, records[3:])  # the committed offset was behind: a replay
    assert restarted.states()["m"]["T"] == 7


def test_a_consensus_vote_row_stays_a_vote_after_a_restart() -> None:
    sim = Sim(DedupeWindow(), TriggerPolicy(min_labels=10**6))
    for i in range(6):
        row = joined(f"l{i}", "m0", i, float(i))
        if i % 3:
            row["v"] = 1  # two votes per decided label
        sim.process(0, i, row)
    assert sim.ledger.get("m0").total == 2
    restarted = sim.crash({})
    assert restarted.states() == sim.states()
    assert restarted.ledger.get("m0").total == 2
    assert restarted.ledger.get("m0").ranges()[0].end_offset == 6


def test_a_rebuild_leaves_out_the_rows_of_partitions_this_worker_does_not_own() -> None:
    """Rows of a partition taken away at a rebalance can linger in the in-memory table; a
    rebuild given the owned partitions keeps none of their models, counters or offsets."""
    sim = Sim(DedupeWindow(), TriggerPolicy(min_labels=1000))
    for i in range(30):
        sim.process(0, i, joined(f"a{i}", "m-a", i, 1000.0 + i))
        sim.process(1, i, joined(f"b{i}", "m-b", 100 + i, 1000.0 + i))
    everything = Ledger(DedupeWindow())
    everything.rebuild(sim.table.items())
    assert {m for m, _ in everything.items()} == {"m-a", "m-b"}
    mine = Ledger(DedupeWindow())
    mine.rebuild(sim.table.items(), partitions={1})
    assert {m for m, _ in mine.items()} == {"m-b"}
    assert mine.applied(0) == -1 and mine.applied(1) == 29
    assert mine.get("m-b").snapshot() == everything.get("m-b").snapshot()


def test_the_ledger_names_each_models_partition_before_and_after_a_restart() -> None:
    """The shell publishes a model's feedback only while it owns this partition (app.owns):
    rows of a revoked partition stay in faust's tables, and feedback built from them was
    stale (a rolling restart's last feedback said 52 labels after one with 120)."""
    sim = run(Sim(DedupeWindow(labels=50, seconds=1e9), TriggerPolicy(min_labels=10)),
              stream(600, 4, 2, 10**9, seed=5))
    expected = {f"m{i}": i % 2 for i in range(4)}
    assert {m: sim.ledger.partition_of(m) for m in expected} == expected
    restarted = sim.crash({})
    assert restarted.ledger.partition_of("m0") is None  # not rebuilt yet: nothing known
    restarted.states()  # rebuilds
    assert {m: restarted.ledger.partition_of(m) for m in expected} == expected
    assert restarted.ledger.partition_of("m-unknown") is None
