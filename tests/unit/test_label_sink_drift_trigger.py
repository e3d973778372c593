"""The retrain trigger a drift fires (services/label_sink/drift_trigger.py): when, what it
covers, and exactly once across a crash anywhere in its writes. `Sim` drives the Ledger, the
Mastery shell and `due_trigger` the way app.count_label does, logging every write of the
`labels` and `mastery` tables and every trigger published; a crash keeps some of them."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from services.core.feedback import FeedbackPolicy
from services.core.mastery import MasteryPolicy
from services.core.triggers import Fired, TriggerPolicy, TriggerState, trigger_id
from services.label_sink.drift_trigger import DRIFT_RULE, drift_decision, due_trigger
from services.label_sink.mastery import CONTROL, DRIFT, DUE, Mastery
from services.label_sink.metrics import LabelSinkMetrics
from services.label_sink.tables import Ledger, Verdict, label_key

POLICY = TriggerPolicy(min_labels=25)
RULE = MasteryPolicy(master_at=0.8, min_labels=10)
MODEL = "pose"


def label_row(i: int) -> dict[str, Any]:
    """Control label i: a shoulder the model got right, at label-topic offset i."""
    return {"id": f"l{i}", "m": MODEL, "q": 0, "o": i, "t": 1000.0 + i, "c": ["shoulder"],
            "r": [["shoulder", True]], "w": ["shoulder"], "ta": None, "f": i + 1,
            CONTROL: ["v1", 20.0, [["shoulder", "shoulder", True]]]}


def drift_row(at: float, tag: str = "d1") -> dict[str, Any]:
    return {"m": MODEL, DRIFT: [f"v1\x1fshoulder\x1f0\x1f{tag}", "shoulder", at,
                                "drift of v1 on input partition 0: KS distance 0.300 > 0.100"]}


class LoggedTable(dict[str, Any]):
    """A table whose writes go to a shared effect log, as (table, key, value)."""

    def __init__(self, name: str, log: list[tuple[str, Any, Any]]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def __setitem__(self, key: str, value: Any) -> None:
        self.log.append((self.name, key, value))
        super().__setitem__(key, value)

    def pop(self, key: str, default: Any = None) -> Any:
        self.log.append((self.name, key, None))
        return super().pop(key, default)


class Sim:
    def __init__(self) -> None:
        self.effects: list[tuple[str, Any, Any]] = []
        self.labels = LoggedTable("labels", self.effects)
        self.mastery = Mastery(LoggedTable("mastery", self.effects), RULE, FeedbackPolicy(),
                               LabelSinkMetrics(CollectorRegistry()), trigger_on_drift=True)
        self.ledger = Ledger()

    def publish(self, decision: Any) -> Fired:
        tid = trigger_id(MODEL, "labels", decision.ranges)
        self.mastery.at_trigger(MODEL, tid)  # as app.publish_trigger: recorded, then published
        self.effects.append(("trigger", tid, (decision.rule, decision.total, decision.ranges)))
        return Fired(tid, decision.rule, decision.triggered_at)

    def apply(self, writes: Any) -> None:
        for key, value in writes:
            if value is None:
                self.labels.pop(key)
            else:
                self.labels[key] = value

    def process(self, s: int, row: dict[str, Any]) -> None:
        if not self.ledger.valid:
            self.ledger.rebuild(self.labels.items())
        if DRIFT in row:
            self.mastery.drift(MODEL, row)
            due = due_trigger(row, self.mastery, self.ledger, POLICY)
            if due is not None:
                seq, decision = due
                self.publish(decision)
                self.ledger.get(MODEL).fire(decision)
                self.apply(self.ledger.close(0, s, MODEL, seq))
            return
        found = self.labels.get(label_key(0, row["id"]))
        if self.ledger.verdict(0, s, found, row) is not Verdict.NEW:
            return
        state, record = self.ledger.count(0, s, row)
        self.mastery.count(MODEL, row)
        decision = state.should_trigger(POLICY)
        fired = None
        if decision is not None:
            fired = self.publish(decision)
            state.fire(decision)
        self.apply(self.ledger.persist(0, s, row, record, fired, found))

    def triggers(self) -> dict[str, Any]:
        return {k: v for kind, k, v in self.effects if kind == "trigger"}

    @classmethod
    def recovered(cls, effects: list[tuple[str, Any, Any]]) -> Sim:
        """A new sink on the tables the kept `effects` wrote (triggers kept are out already)."""
        sim = cls()
        for kind, key, value in effects:
            if kind == "trigger":
                sim.effects.append((kind, key, value))
            elif kind == "labels":
                sim.apply([(key, value)])
            else:
                sim.mastery.table[key] = value
        return sim


# The input: 20 labels (shoulder mastered at the 16th, no trigger: 20 < 25), the drift report,
# 3 labels, the same report again (a re-forward: it must not fire on those 3), 22 labels (a
# label_count trigger on the 25th), then a second report once the class is mastered again,
# with no label since the last trigger.
INPUT = ([label_row(i) for i in range(20)] + [drift_row(5000.0)]
         + [label_row(i) for i in range(20, 23)] + [drift_row(5000.0)]
         + [label_row(i) for i in range(23, 45)] + [drift_row(9000.0, "d2")])
DRIFT_AT = 20


def run(sim: Sim, start: int = 0) -> Sim:
    for s in range(start, len(INPUT)):
        sim.process(s, INPUT[s])
    return sim


def test_a_drift_reopening_fires_one_trigger_with_the_labels_since_the_last() -> None:
    sim = run(Sim())
    triggers = list(sim.triggers().values())
    assert [(rule, total) for rule, total, _ in triggers] == [(DRIFT_RULE, 20), ("label_count", 25)]
    offsets = [o for _, _, ranges in triggers for r in ranges
               for o in range(r.start_offset, r.end_offset)]
    assert sorted(offsets) == list(range(45))  # every label once, in one of the two
    # The second report reopened the class again, but no label waited: no trigger for it.
    book = sim.mastery.book(MODEL)
    assert book is not None and [c.to_dict()["to"] for c in book.changes] == [
        "mastered", "reopened", "mastered", "reopened"]
    assert sim.mastery.table[MODEL][DUE][0] == 4


def test_a_crash_anywhere_in_the_drift_record_s_writes_publishes_the_same_trigger() -> None:
    clean = run(Sim())
    before = Sim()
    for s in range(DRIFT_AT):
        before.process(s, INPUT[s])
    first = len(before.effects)
    run_once = Sim.recovered(before.effects)
    run_once.process(DRIFT_AT, INPUT[DRIFT_AT])
    drift_effects = run_once.effects[first:]
    kinds = [kind for kind, _, _ in drift_effects]
    assert kinds == ["mastery", "mastery", "trigger", "labels"], kinds
    cases = [drift_effects[:n] for n in range(len(drift_effects) + 1)]
    # The labels row persisted, the mastery rows not (two changelogs: no order between them).
    cases.append([e for e in drift_effects if e[0] != "mastery"])
    for kept in cases:
        sim = run(Sim.recovered(before.effects + kept), DRIFT_AT)
        assert sim.triggers() == clean.triggers(), kept
        assert sim.labels[f"m:{MODEL}"] == clean.labels[f"m:{MODEL}"]
        assert sim.mastery.table[MODEL] == clean.mastery.table[MODEL]


def test_no_drift_trigger_without_labels_within_the_cooldown_or_when_off() -> None:
    state = TriggerState()
    assert drift_decision(state, POLICY, "x") is None  # nothing to train on
    sim = Sim()
    for s in range(20):
        sim.process(s, INPUT[s])
    state = sim.ledger.get(MODEL)
    decision = drift_decision(state, POLICY, "class 'shoulder' reopened on drift")
    assert decision is not None and decision.rule == DRIFT_RULE and decision.total == 20
    assert decision.triggered_at == state.clock and decision.ranges == state.ranges()
    assert decision.counts == {"shoulder": 20}
    state.last_triggered_at = state.clock - 10.0
    assert drift_decision(state, TriggerPolicy(min_labels=25, cooldown_s=60.0), "x") is None
    off = Sim()
    off.mastery.trigger_on_drift = False
    run(off)
    assert [rule for rule, _, _ in off.triggers().values()] == ["label_count"]
    assert DUE not in off.mastery.table[MODEL]
