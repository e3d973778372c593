"""Prediction stability (services/core/stability.py): the stopping signal's second branch."""

from __future__ import annotations

import json

import pytest

from services.core.stability import ProbeBook, StabilityPolicy

POLICY = StabilityPolicy(threshold=0.05, min_probes=10, max_probes=50)


def score(book: ProbeBook, version: str, classes: list[str]) -> list[object]:
    return [r for i, c in enumerate(classes)
            if (r := book.observe(POLICY, f"a{i}", version, c)) is not None]


def test_a_version_yields_one_record_once_it_rescored_every_probe() -> None:
    book = ProbeBook()
    assert score(book, "v0", ["x"] * 20) == []  # nothing to compare with
    [r1] = score(book, "v1", ["x"] * 18 + ["y"] * 2)
    assert (r1.model_version, r1.previous_version, r1.probes, r1.changed) == ("v1", "v0", 20, 2)
    assert r1.share == 0.1 and not r1.stable(POLICY)
    assert score(book, "v1", ["x"] * 20) == []  # repeats of counted probes change nothing
    [r2] = score(book, "v2", ["x"] * 18 + ["y"] * 2)
    assert r2.changed == 0 and r2.stable(POLICY)


def test_partial_rescoring_yields_nothing_and_the_bound_holds() -> None:
    book = ProbeBook()
    score(book, "v0", ["x"] * 80)  # 30 past max_probes are left out
    assert len(book.last) == 50
    assert score(book, "v1", ["x"] * 49) == []  # one probe short
    assert score(book, "v1", ["x"] * 50)[0].probes == 50
    few = ProbeBook()
    score(few, "v0", ["x"] * 5)
    [r] = score(few, "v1", ["x"] * 5)
    assert r.changed == 0 and not r.stable(POLICY)  # too few probes to judge


def test_snapshot_round_trips_mid_version_and_replays_identically() -> None:
    book = ProbeBook()
    score(book, "v0", ["x"] * 20)
    score(book, "v1", ["y"] * 10)
    restored = ProbeBook.from_snapshot(json.loads(json.dumps(book.snapshot())))
    assert restored == book
    a = [r for i in range(10, 20) if (r := book.observe(POLICY, f"a{i}", "v1", "x"))]
    b = [r for i in range(10, 20) if (r := restored.observe(POLICY, f"a{i}", "v1", "x"))]
    assert a == b and a[0].changed == 10


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        StabilityPolicy(threshold=0.0)
    with pytest.raises(ValueError):
        StabilityPolicy(min_probes=10, max_probes=5)
