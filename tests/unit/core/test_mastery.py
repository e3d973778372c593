"""Class mastery (services/core/mastery.py) and what a mastered class costs in the selector."""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson
import pytest

from services.core import SelectorPolicy, SelectorState, select
from services.core.feedback import FeedbackPolicy, with_mastery
from services.core.mastery import (
    ClassState,
    MasteryBook,
    MasteryPolicy,
    Plateau,
    judge,
    plateaued,
)
from tests.unit.core.synth import batches, top1_events

POLICY = MasteryPolicy()  # the defaults: lower bounds >= 0.95 over >= 30 labels


def hit(name: str) -> list[tuple[str, str | None, bool]]:
    return [(name, name, True)]


def miss(name: str, predicted: str = "other") -> list[tuple[str, str | None, bool]]:
    return [(name, predicted, False)]


def feed(book: MasteryBook, labels: list[list[tuple[str, str | None, bool]]], *,
         version: str = "v1", start: int = 0, weight: float = 20.0) -> list:
    changes = []
    for i, label in enumerate(labels, start):
        changes += book.apply(POLICY, f"l{i}", version, weight, label, 1000.0 + i)
    return changes


def test_a_class_always_right_is_mastered_once_its_lower_bound_passes() -> None:
    book = MasteryBook()
    changes = feed(book, [hit("cat")] * 72)
    assert changes == [] and book.states() == {"cat": ClassState.LEARNING}  # low 0.9493
    changes = feed(book, [hit("cat")], start=72)
    assert [(c.name, c.old, c.new, c.seq) for c in changes] == [
        ("cat", ClassState.LEARNING, ClassState.MASTERED, 1)]
    assert book.mastered() == {"cat"} and book.classes["cat"].changed_at == 1072.0


def test_min_labels_holds_even_when_the_bound_passes() -> None:
    loose = MasteryPolicy(master_at=0.5, min_labels=30)
    book = MasteryBook()
    for i in range(29):
        book.apply(loose, f"l{i}", "v1", 1.0, hit("cat"), 0.0)
    assert book.mastered() == set()
    book.apply(loose, "l29", "v1", 1.0, hit("cat"), 0.0)
    assert book.mastered() == {"cat"}


def test_a_mastered_class_whose_estimate_falls_is_reopened_then_can_be_mastered_again() -> None:
    book = MasteryBook()
    feed(book, [hit("cat")] * 80)
    assert book.mastered() == {"cat"}
    # After mastery the evidence starts over: 10 labels, 4 wrong -> upper bound < 0.95.
    changes = feed(book, [miss("cat"), hit("cat")] * 4 + [miss("cat"), miss("cat")], start=80)
    assert [c.new for c in changes] == [ClassState.REOPENED]
    assert "upper bound" in changes[0].reason
    changes = feed(book, [hit("cat")] * 300, start=200)
    assert [c.new for c in changes] == [ClassState.MASTERED] and book.seq == 3


def test_errors_keep_a_class_learning() -> None:
    book = MasteryBook()
    feed(book, [hit("cat")] * 9 + [miss("cat")] * 1 + [hit("cat")] * 300)
    assert book.mastered() == {"cat"}  # 1 error in 310 still passes
    book2 = MasteryBook()
    feed(book2, ([hit("cat")] * 9 + [miss("cat")]) * 40)  # 90% right: never mastered
    assert book2.mastered() == set()


def test_precision_counts_too_a_class_predicted_for_others_is_not_mastered() -> None:
    book = MasteryBook()
    # Every cat is recognised, but the model also calls every dog a cat.
    feed(book, [hit("cat"), miss("dog", predicted="cat")] * 100)
    assert book.mastered() == set()
    iv = book.estimate(POLICY, "cat")
    assert iv is not None and iv[1] is not None and iv[1].estimate == 1.0
    assert iv[2] is not None and iv[2].estimate == 0.5


def test_drift_hook_reopens_and_a_new_version_restarts_the_evidence() -> None:
    book = MasteryBook()
    feed(book, [hit("cat")] * 80)
    change = book.reopen(POLICY, "cat", 5000.0, "drift: PSI 0.4")
    assert change is not None and change.new is ClassState.REOPENED
    assert book.reopen(POLICY, "cat", 5001.0, "again") is None  # not mastered any more
    feed(book, [hit("cat")] * 73, start=100)
    assert book.mastered() == {"cat"}
    feed(book, [hit("cat")] * 5, version="v2", start=300)  # v2: state kept, evidence anew
    assert book.mastered() == {"cat"} and book.classes["cat"].evidence.accuracy.n == 5
    feed(book, [hit("cat")] * 3, version="v1", start=400)  # a late v1 label: estimate only
    assert book.classes["cat"].evidence.accuracy.n == 5
    assert book.versions["v1"]["cat"].accuracy.n == 153 + 3


def test_a_drift_report_reopens_a_mastered_class_once_by_its_id() -> None:
    book = MasteryBook()
    feed(book, [hit("cat")] * 80 + [hit("dog")] * 5)
    assert book.mastered() == {"cat"}
    assert book.drift(POLICY, "v1/dog/0/5000", "dog", 5000.0, "drift") is None  # learning
    change = book.drift(POLICY, "v1/cat/0/5000", "cat", 5000.0, "drift of v1")
    assert change is not None and (change.old, change.new) == (ClassState.MASTERED,
                                                               ClassState.REOPENED)
    assert change.reason == "drift of v1" and change.at == 5000.0
    feed(book, [hit("cat")] * 73, start=6000 - 1000)  # mastered again after the drift
    assert book.mastered() == {"cat"}
    resumed = MasteryBook.from_snapshot(orjson.loads(orjson.dumps(book.snapshot())))
    for b in (book, resumed):  # the same report again (a replay, a re-forwarded copy)
        assert b.drift(POLICY, "v1/cat/0/5000", "cat", 5000.0, "drift of v1") is None
        assert b.drift(POLICY, "v1/dog/0/5000", "dog", 5000.0, "drift") is None
        assert b.mastered() == {"cat"}
    # A report detected before the class's last change is stale, whatever its id.
    assert book.drift(POLICY, "v1/cat/1/4000", "cat", 4000.0, "old") is None
    assert book.mastered() == {"cat"}
    later = book.drift(POLICY, "v1/cat/0/9000", "cat", 9000.0, "new episode")
    assert later is not None and later.new is ClassState.REOPENED
    assert [c.reason for c in book.changes[-3:]] == ["drift of v1", book.changes[-2].reason,
                                                     "new episode"]


def test_drift_ids_are_bounded() -> None:
    book = MasteryBook()
    for i in range(200):
        book.drift(POLICY, f"d{i}", "cat", float(i), "drift")
    assert len(book.drifts) == 64 and book.drifts[-1] == "d199"


def test_replaying_the_last_label_is_idempotent_and_snapshots_replay_byte_identically() -> None:
    rng = np.random.default_rng(3)
    labels = [hit(str(c)) if rng.random() < 0.97 else miss(str(c))
              for c in rng.choice(["cat", "dog", "owl"], 600)]
    straight = MasteryBook()
    feed(straight, labels)
    resumed = MasteryBook()
    feed(resumed, labels[:250])
    resumed = MasteryBook.from_snapshot(orjson.loads(orjson.dumps(resumed.snapshot())))
    feed(resumed, labels[249:250], start=249)  # the crash window: last label again
    feed(resumed, labels[250:], start=250)
    assert orjson.dumps(resumed.snapshot()) == orjson.dumps(straight.snapshot())
    assert straight.mastered()  # the test would be empty otherwise


def test_with_mastery_moves_a_mastered_class_weight_to_the_others() -> None:
    fp = FeedbackPolicy()
    out = with_mastery(fp, {"a": 1.0, "b": 1.0, "c": 2.0}, {"a"})
    assert out["a"] == fp.mastered_weight
    assert sum(out.values()) == pytest.approx(4.0)
    assert out["c"] == pytest.approx(2 * out["b"]) and out["b"] > 1.0
    assert with_mastery(fp, {"a": 1.0}, set()) == {"a": 1.0}
    with pytest.raises(ValueError):
        FeedbackPolicy(mastered_weight=0.5)


def test_judge_needs_both_rates() -> None:
    book = MasteryBook()
    feed(book, [[("cat", None, True)]] * 100)  # recognised, but no prediction to confirm
    assert judge(book.classes["cat"], POLICY) is None and book.mastered() == set()


def _shares(weights: dict[str, float]) -> tuple[Counter[str], Counter[str]]:
    """Requests per class (all strategies, and exploration/control only) on one stream."""
    rng = np.random.default_rng(11)
    n = 60_000
    names = rng.choice(["shoulder", "elbow", "knee"], n).tolist()
    conf = rng.beta(4, 2, n)
    state = SelectorState.create(SelectorPolicy(), 0)
    state.set_class_weights("m", weights)
    picks = [s for b in batches(top1_events(names, conf), 1000) for s in select(state, b).selected]
    explore = Counter(s.class_name for s in picks
                      if s.strategy in ("exploration", "random_control"))
    return Counter(s.class_name for s in picks), explore


def test_a_mastered_class_gets_the_exploration_share_and_the_others_its_budget() -> None:
    fp = FeedbackPolicy()
    even = {"shoulder": 1.0, "elbow": 1.0, "knee": 1.0}
    before, _ = _shares(even)
    after, explore = _shares(with_mastery(fp, even, {"shoulder"}))
    total_before, total_after = sum(before.values()), sum(after.values())
    print(f"requests before {dict(before)}, after {dict(after)}; exploration {dict(explore)}")
    assert abs(total_after - total_before) <= 0.05 * total_before  # the same budget
    assert after["shoulder"] < 0.4 * before["shoulder"]
    assert after["elbow"] > before["elbow"] and after["knee"] > before["knee"]
    assert explore["shoulder"] > 0  # still sampled at random


def _version(book: MasteryBook, policy: MasteryPolicy, version: str, right: int,
             start: int) -> None:
    """100 control labels of `version`, `right` of them right."""
    for i in range(100):
        label = hit("cat") if i < right else miss("cat")
        book.apply(policy, f"{version}-{start + i}", version, 10.0, label, float(start + i))


def test_stopping_signal_rises_when_k_versions_in_a_row_buy_no_accuracy() -> None:
    policy = MasteryPolicy(stop_triggers=2, stop_min_gain=0.01, stop_min_labels=50)
    book = MasteryBook()
    signals = []
    for n, (version, right) in enumerate([("v1", 70), ("v2", 80), ("v3", 90), ("v4", 90),
                                          ("v5", 89)]):
        _version(book, policy, version, right // 2, 1000 * n)
        # A trigger before the next version is deployed: the same version's entry, updated.
        assert book.at_trigger(policy, f"t{n}a") is False or n == 4
        _version(book, policy, version, right - right // 2, 1000 * n + 500)
        signals.append(book.at_trigger(policy, f"t{n}b"))
        assert book.at_trigger(policy, f"t{n}b") is signals[-1]  # a replayed trigger
    assert signals == [False, False, False, False, True]
    assert [p.version for p in book.plateau] == ["v3", "v4", "v5"]
    assert [p.labels for p in book.plateau] == [200, 200, 200]
    restored = MasteryBook.from_snapshot(orjson.loads(orjson.dumps(book.snapshot())))
    assert restored.stopped and restored.plateau == book.plateau
    assert MasteryBook().at_trigger(policy, "t") is False  # no control labels: no signal


def test_stopping_needs_enough_labels_and_is_off_at_zero() -> None:
    few = MasteryPolicy(stop_triggers=1, stop_min_labels=500)
    off = MasteryPolicy(stop_triggers=0)
    for policy in (few, off):
        book = MasteryBook()
        for n, version in enumerate(["v1", "v2", "v3"]):
            _version(book, policy, version, 90, 1000 * n)
            assert book.at_trigger(policy, f"t{n}") is False


def test_one_version_that_gains_keeps_the_signal_down() -> None:
    policy = MasteryPolicy(stop_triggers=2, stop_min_gain=0.01, stop_min_labels=50)
    entries = [Plateau(f"t{i}", f"v{i}", e, 100) for i, e in enumerate([0.80, 0.85, 0.80])]
    assert plateaued(entries, policy) is False
    assert plateaued([*entries[:1], entries[2], entries[2]], policy) is True


def test_classes_past_the_bound_are_left_out() -> None:
    policy = MasteryPolicy(max_classes=3)
    book = MasteryBook()
    for i in range(10):
        book.apply(policy, f"l{i}", "v1", 2.0, [(f"c{i}", f"c{i}", True)], 0.0)
    assert sorted(book.classes) == ["c0", "c1", "c2"]
    assert sorted(book.versions["v1"]) == ["c0", "c1", "c2"]
