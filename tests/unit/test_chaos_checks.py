"""The chaos soak's invariants (bench/chaos_checks.py) pass on a consistent outcome and each
fails when the one thing it guards is broken: a check that cannot fail would prove nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bench import chaos_checks as checks
from bench.chaos_run import Outcome

PARTITIONS = 4


def _request(rid: str, partition: int, offset: int, t: float, note: str = "") -> bytes:
    return orjson.dumps({"request_id": rid, "event_timestamp": t, "note": note,
                         "source": {"topic": "in", "partition": partition, "offset": offset}})


def _outcome(name: str) -> Outcome:
    o = Outcome(name, f"{name}.")
    for p in range(PARTITIONS):
        for off in range(50):
            o.inputs.append((p, off, None, 1000.0 + off))
        o.inputs.append((p, 50, "not_json", None))
        o.dead_letters.append((p, 50, "not_json"))
        o.input_ends[p] = o.committed[p] = 51
        o.requests += [_request(f"r{p}-{k}", p, 10 + 20 * k, 1010.0 + 20 * k) for k in range(2)]
    o.produced = 4 * 51
    o.requests.append(o.requests[0])  # a byte-identical duplicate (a replay)
    o.expected = {"m": {"a": 2, "b": 1}}
    o.counted = {"m": {"a": 2, "b": 1}}
    o.label_ids = {"l1", "l2", "l3"}
    o.trained = {"t1": [("l1", "a", None), ("l2", "a", None), ("l3", "b", None)]}
    o.trigger_records = {"t1": {b"trigger t1"}}
    o.peak_mib = {"scorer-0": 70.0, "sink-0": 80.0}
    o.stop_codes = {"scorer-0": 0, "sink-0": 0}
    o.drained = True
    return o


def _all(o: Outcome, ref: Outcome) -> dict[str, checks.Check]:
    found = [checks.events(o), checks.request_ids(o, ref), checks.twins(o),
             checks.counted_once(o, ref), checks.manifests(o),
             checks.budget(o, {}, PARTITIONS), checks.peak_rss(o, 1024.0), checks.health(o)]
    return {c.name: c for c in found}


def test_a_consistent_outcome_passes_every_check() -> None:
    found = _all(_outcome("soak"), _outcome("reference"))
    assert [c.detail for c in found.values() if not c.ok] == []


def _drop_dead_letter(o: Outcome) -> None:
    o.dead_letters.pop()


def _behind(o: Outcome) -> None:
    o.committed[2] = 40


def _drop_request(o: Outcome) -> None:
    o.requests = [v for v in o.requests if b'"r3-1"' not in v]


def _differing_twin(o: Outcome) -> None:
    o.requests.append(_request("r1-0", 1, 10, 1010.0, note="changed"))


def _double_count(o: Outcome) -> None:
    o.counted["m"]["a"] += 1


def _label_in_two_manifests(o: Outcome) -> None:
    o.trained["t2"] = [("l1", "a", None)]


def _label_in_no_manifest(o: Outcome) -> None:
    o.trained["t1"].pop()


def _trigger_twins_differ(o: Outcome) -> None:
    o.trigger_records["t1"].add(b"trigger t1, other counts")


def _overspend(o: Outcome) -> None:
    # The reference selects them too (an overspend in both runs): only the budget check sees it.
    o.requests += [_request(f"x{k}", 0, 40 + k, 1040.0 + k) for k in range(6)]


def _fat(o: Outcome) -> None:
    o.peak_mib["sink-0"] = 2048.0


def _unclean_stop(o: Outcome) -> None:
    o.stop_codes["sink-0"] = -15


@pytest.mark.parametrize(("breaks", "check"), [
    (_drop_dead_letter, "events produced = processed + dead-lettered"),
    (_behind, "events produced = processed + dead-lettered"),
    (_drop_request, "distinct request ids = the crash-free reference's"),
    (_differing_twin, "every duplicate request byte-identical to its twin"),
    (_double_count, "every label counted exactly once"),
    (_label_in_two_manifests, "the trigger manifests cover every counted label"),
    (_label_in_no_manifest, "the trigger manifests cover every counted label"),
    (_trigger_twins_differ, "the trigger manifests cover every counted label"),
    (_overspend, "the budget never exceeded"),
    (_fat, "each service's peak RSS (<= 1024 MiB)"),
    (_unclean_stop, "soak: drained and stopped cleanly"),
])
def test_each_check_fails_when_its_invariant_is_broken(breaks: Callable[[Outcome], Any],
                                                       check: str) -> None:
    o, ref = _outcome("soak"), _outcome("reference")
    broken = copy.deepcopy(o)
    breaks(broken)
    if breaks is _overspend:
        breaks(ref)
    found = _all(broken, ref)
    assert not found[check].ok, found[check].detail
    others = [c.name for name, c in found.items() if name != check and not c.ok]
    assert others == [], "breaking one invariant should fail only its check"
