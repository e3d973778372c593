"""The chaos soak's invariants (bench/chaos.py), each a pure function of what the runs read back
from their topics (chaos_run.Outcome), so each can be shown to fail (tests/unit/
test_chaos_checks.py)."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from services.core import SelectorPolicy, with_overrides
from services.core.budget import LANES


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def events(o: Any) -> Check:
    """Events produced = processed + dead-lettered: every record the model service sent is in
    the input topic once, the scorer's group has committed every partition to its end, and the
    dead letters name exactly the hostile records (each once, with the code it must get)."""
    name = "events produced = processed + dead-lettered"
    hostile = {(p, off): code for p, off, code, _ in o.inputs if code is not None}
    letters: dict[tuple[int, int], set[str]] = defaultdict(set)
    for p, off, code in o.dead_letters:
        letters[(p, off)].add(code)
    in_topic = sum(o.input_ends.values())
    committed = sum(max(0, c) for c in o.committed.values())
    processed = committed - len(letters)
    problems = []
    if not o.produced == in_topic == len(o.inputs):
        problems.append(f"{o.produced} delivered, {in_topic} in the topic, {len(o.inputs)} read")
    behind = {p: (o.committed.get(p), e) for p, e in o.input_ends.items()
              if o.committed.get(p) != e}
    if behind:
        problems.append(f"partitions not committed to their end (committed, end): {behind}")
    wrong = {k: v for k, v in letters.items() if hostile.get(k) not in v or len(v) > 1}
    missing = set(hostile) - set(letters)
    if wrong or missing:
        problems.append(f"{len(missing)} hostile records not dead-lettered, {len(wrong)} dead "
                        "letters for good records or with a wrong code")
    if o.produced != processed + len(letters):
        problems.append(f"{o.produced} != {processed} + {len(letters)}")
    repeats = len(o.dead_letters) - len(letters)
    detail = (f"{o.produced} produced = {processed} processed + {len(letters)} dead-lettered "
              f"({len(hostile)} hostile; {repeats} dead letters written twice)")
    return Check(name, not problems, "; ".join([detail, *problems]))


def _by_id(requests: list[bytes]) -> dict[str, set[bytes]]:
    out: dict[str, set[bytes]] = defaultdict(set)
    for value in requests:
        out[orjson.loads(value)["request_id"]].add(value)
    return out


def request_ids(o: Any, ref: Any) -> Check:
    mine, theirs = set(_by_id(o.requests)), set(_by_id(ref.requests))
    missing, extra = theirs - mine, mine - theirs
    detail = (f"{len(mine)} distinct ids, the crash-free reference {len(theirs)}: "
              f"{len(missing)} missing, {len(extra)} extra")
    return Check("distinct request ids = the crash-free reference's",
                 mine == theirs and bool(mine), detail)


def twins(o: Any) -> Check:
    by_id = _by_id(o.requests)
    differing = [rid for rid, values in by_id.items() if len(values) > 1]
    repeated = len(o.requests) - len(by_id)
    return Check("every duplicate request byte-identical to its twin", not differing,
                 f"{repeated} duplicate records of {len(by_id)} requests, {len(differing)} "
                 "ids with differing bytes")


def counted_once(o: Any, ref: Any) -> Check:
    """The sink's final counts (the last class feedback per model, all-time labels per class)
    equal the labels the annotator sent, each label id once, and the reference's."""
    problems = []
    for run in (o, ref):
        for model in sorted(set(run.expected) | set(run.counted)):
            want, got = run.expected.get(model, {}), run.counted.get(model, {})
            if {k: v for k, v in got.items() if v} != want:
                diff = sum(got.values()) - sum(want.values())
                problems.append(f"{run.name} {model}: counted {sum(got.values())} of "
                                f"{sum(want.values())} labels ({diff:+d}), per class {got} "
                                f"vs {want}")
    if o.counted != ref.counted:
        problems.append("the counts differ from the reference's")
    total = sum(sum(c.values()) for c in o.expected.values())
    detail = f"{total} labels ({len(o.expected)} models), counted " \
             f"{sum(sum(c.values()) for c in o.counted.values())}"
    return Check("every label counted exactly once", not problems and total > 0,
                 "; ".join([detail, *problems]))


def manifests(o: Any) -> Check:
    """The triggers' manifests (each trigger id once; its twins byte-identical) name every
    counted label exactly once, each manifest as many records as its total, with its counts."""
    problems = list(o.trainer_problems)
    differing = [t for t, records in o.trigger_records.items() if len(records) > 1]
    if differing:
        problems.append(f"{len(differing)} trigger ids with differing records")
    named = Counter(lid for labels in o.trained.values() for lid, _, _ in labels)
    twice = [lid for lid, n in named.items() if n > 1]
    want = set(o.label_ids)
    if twice:
        problems.append(f"{len(twice)} labels in two manifests")
    if set(named) != want:
        problems.append(f"{len(want - set(named))} counted labels in no manifest, "
                        f"{len(set(named) - want)} named labels not sent")
    repeats = sum(len(r) for r in o.trigger_records.values())
    detail = (f"{len(o.trained)} triggers ({repeats} distinct records) name "
              f"{sum(named.values())} labels of {len(want)}")
    return Check("the trigger manifests cover every counted label", not problems and bool(want),
                 "; ".join([detail, *problems]))


def budget(o: Any, policy: Mapping[str, Any], partitions: int) -> Check:
    """No selection past the budget (services/core/budget.py's guarantee, per partition and
    lane: over a coordinate interval of length d at most capacity + rate x d grants, a phased
    lane at most 2 + rate x d). A request is granted at or after its asset (reservoir picks are
    granted at a later flush), so the check takes the requests of every suffix of the stream
    (those of assets at or after a point were all granted in the interval from there to the
    end): count buckets in assets seen, time buckets in event time."""
    base = with_overrides(SelectorPolicy(), policy)
    good: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for p, off, code, t in o.inputs:
        if code is None and t is not None:
            good[p].append((off, t))
    picks: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for values in _by_id(o.requests).values():
        req = orjson.loads(next(iter(values)))
        picks[req["source"]["partition"]].append((req["source"]["offset"],
                                                  req["event_timestamp"]))
    worst, problems = (0.0, ""), []
    for p in range(partitions):
        b = base.for_partition(p, partitions).budget
        lanes = [b.lane(lane) for lane in LANES]
        count_cap = sum(cc for _, cc, _, _ in lanes)
        time_cap = sum(tc if tc >= 1 else 2.0 for _, _, _, tc in lanes)
        offsets = [off for off, _ in good[p]]
        n_p = len(offsets)
        end_t = max((t for _, t in good[p]), default=0.0)
        ranks = sorted(bisect.bisect_left(offsets, off) for off, _ in picks[p])
        times = sorted(t for _, t in picks[p])
        for j, rank in enumerate(ranks):
            used, bound = len(ranks) - j, count_cap + b.share * (n_p - rank - 1)
            worst = max(worst, (used / bound, f"partition {p} count: {used} of {bound:.1f}"))
            if used > bound:
                problems.append(f"partition {p}: {used} requests from asset {rank} on, "
                                f"bound {bound:.1f}")
        for j, t in enumerate(times):
            used = len(times) - j
            bound = time_cap + b.labels_per_hour * (end_t - t) / 3600
            worst = max(worst, (used / bound, f"partition {p} time: {used} of {bound:.1f}"))
            if used > bound:
                problems.append(f"partition {p}: {used} requests from event time {t} on, "
                                f"bound {bound:.1f}")
    total = sum(len(v) for v in picks.values())
    detail = f"{total} requests; tightest suffix: {worst[1]} ({worst[0]:.0%})"
    return Check("the budget never exceeded", not problems and total > 0,
                 "; ".join([detail, *problems[:5]]))


def peak_rss(o: Any, limit_mib: float) -> Check:
    over = {k: v for k, v in o.peak_mib.items() if v > limit_mib}
    detail = ", ".join(f"{k} {v:.0f} MiB" for k, v in sorted(o.peak_mib.items()))
    return Check(f"each service's peak RSS (<= {limit_mib:.0f} MiB)", not over, detail)


def health(o: Any) -> Check:
    """The run finished its drain, every service stopped cleanly and no actor failed."""
    problems = []
    if not o.drained:
        problems.append("the drain timed out (see the progress lines)")
    bad = {k: v for k, v in o.stop_codes.items() if v != 0}
    if bad:
        problems.append(f"exit codes at the graceful stop: {bad}")
    problems += o.actor_errors
    first = "?" if o.answered_first is None else o.answered_first
    detail = (f"{len(o.faults)} faults, {len(o.exits)} exits by itself; {first} labels sent "
              f"before the sink had stored their request, {o.early_joined} seen waiting for it")
    return Check(f"{o.name}: drained and stopped cleanly", not problems,
                 "; ".join([detail, *problems]))
