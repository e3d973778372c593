"""The byte-identity net of the selector: SHA-256 of what `select` decides on fixed streams.

    .venv/bin/python bench/selection_hashes.py [--only NAME ...]

For each stream (the invariance, replay and unit-test streams of tests/, the benchmark's own
stream, and non-default policies: reservoir, threshold arms, LRU churn, adaptive power, drift,
redundancy, tracks, instances, partition budgets, tiers routed after selection) it prints two
digests: `picks`, over every selected request's fields in decision order (`Selected.to_json()`,
batch-relative `asset_index` included) plus each batch's suppressed counts and drift events; and
`snapshots`, over the state's `snapshot()` (JSON, sorted keys) after every batch. A change that
claims to select the same picks byte for byte must leave every line equal
(tests/unit/core/test_selection_hashes.py pins them).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

# Run as `python bench/selection_hashes.py`: the repository root holds tests/ (the streams).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.core import (  # noqa: E402
    BudgetPolicy,
    PredictionBatch,
    SelectorPolicy,
    SelectorState,
    select,
)
from services.core.drift import DriftPolicy  # noqa: E402
from services.core.tiers import CostBudgetPolicy, TierPolicy, TierRouter  # noqa: E402
from tests.synthetic_events import CLASSES, inference_events, probabilities  # noqa: E402
from tests.unit.core.synth import Event, Pred, mixed_events, top1_events  # noqa: E402

Digests = tuple[str, str, int]


def run(policy: SelectorPolicy, seed: int, events: Sequence[Any], sizes: Iterable[int],
        prepare: Callable[[SelectorState], None] | None = None, restore_at: int | None = None,
        router: TierRouter | None = None) -> Digests:
    """Select `events` in consecutive batches of the given sizes (cycled), restoring the state
    from its JSON snapshot before batch `restore_at`; the digests of picks and snapshots (their
    first 64 bits, in hex) and the number of picks."""
    picks, snaps = hashlib.sha256(), hashlib.sha256()
    state = SelectorState.create(policy, seed)
    if prepare is not None:
        prepare(state)
    sizes = list(sizes)
    lo, k, n = 0, 0, 0
    while lo < len(events):
        if k == restore_at:
            state = SelectorState.from_snapshot(json.loads(json.dumps(state.snapshot())), policy)
        hi = min(len(events), lo + sizes[k % len(sizes)])
        chunk = events[lo:hi]
        sel = select(state, PredictionBatch.from_events(chunk, [e.event_id for e in chunk]))
        n += len(sel.selected)
        for s in sel.selected:
            picks.update(orjson.dumps(s.to_json(), option=orjson.OPT_SERIALIZE_NUMPY))
            if router is not None:
                picks.update(repr(router.route(s.model_id, s.class_name, s.score, s.strategy,
                                               s.event_time)).encode())
        picks.update(repr((sel.n_assets, sel.n_predictions, sorted(sel.suppressed.items()),
                           state.take_drift_events())).encode())
        snaps.update(json.dumps(state.snapshot(), sort_keys=True).encode())
        lo, k = hi, k + 1
    return picks.hexdigest()[:16], snaps.hexdigest()[:16], n


@functools.cache
def bench_events(n_preds: int, objects: int = 1, seed: int = 1) -> tuple[Event, ...]:
    """bench/selector.py's stream (tests/synthetic_events.py `probabilities`, 1,000 events per
    second of event time, unique assets), as plain events."""
    rng = np.random.default_rng(seed)
    probs = probabilities(rng, n_preds).tolist()
    return tuple(Event(f"e{i}", f"asset-{i}", "detector", "2024-06", 1.7e9 + i / 1000.0,
                       tuple(Pred(scores=dict(zip(CLASSES, probs[i * objects + j], strict=True)))
                             for j in range(objects)))
                 for i in range(n_preds // objects))


@functools.cache
def decoded_events(n: int, seed: int) -> tuple[Event, ...]:
    """tests/synthetic_events.py `inference_events` (the scorer tests' input) as plain events."""
    out = []
    for _, value in inference_events(n, seed):
        e = orjson.loads(value)
        preds = tuple(Pred(scores=p.get("scores"), label=p.get("label"),
                           confidence=p.get("confidence")) for p in e["predictions"])
        out.append(Event(e["event_id"], e["asset_id"], e["model_id"], e["model_version"],
                         e["timestamp"], preds))
    return tuple(out)


def drift_events(n: int, seed: int, shift_at: int) -> list[Event]:
    """tests/unit/core/test_drift.py's stream: top-1 over three classes, 10 per second; from
    `shift_at` on the shoulder's confidence drops."""
    rng = np.random.default_rng(seed)
    names = ["ball", "shoulder", "hip"]
    labels = [names[i] for i in rng.integers(0, 3, n).tolist()]
    conf = rng.beta(8, 2, n)
    mine = (np.arange(n) >= shift_at) & (np.array(labels) == "shoulder")
    conf[mine] = rng.beta(5, 3, int(mine.sum()))
    return top1_events(labels, conf, rate=10.0)


def partition_events(p: int, n: int) -> list[Event]:
    """Flat two-class events of partition p, 20 per second (test_budget_partitions.py)."""
    return [Event(f"e{p}-{i}", f"a{p}-{i}", "m", "v1", 1_000_000.0 + i / 20.0,
                  (Pred(scores={"a": 0.5, "b": 0.5}),)) for i in range(n)]


def streams() -> dict[str, Callable[[], Digests]]:
    """Every stream of the net by name, each a thunk giving its digests."""
    from tests.unit.core.test_batch_invariance import FEEDBACK, POLICIES
    from tests.unit.core.test_instances import _policy as instance_policy
    from tests.unit.core.test_instances import frames
    from tests.unit.core.test_redundancy import _policy as redundancy_policy
    from tests.unit.core.test_redundancy import video_events
    from tests.unit.core.test_tracks import _policy as track_policy
    from tests.unit.core.test_tracks import clip_events

    default = SelectorPolicy()
    generous = replace(default, budget=BudgetPolicy(labels_per_hour=1e9, burst=1e6))
    reservoir60 = replace(default, mode="reservoir", budget=BudgetPolicy(
        labels_per_hour=1e9, burst=1e6, share_burst=2000.0),
        reservoir=replace(default.reservoir, window_seconds=60.0))
    out: dict[str, Callable[[], Digests]] = {}

    def feedback(state: SelectorState) -> None:
        state.apply_feedback("det", FEEDBACK, {k: 50 for k in FEEDBACK})

    for name, pol in POLICIES.items():  # the invariance streams (hostile mixed events)
        prep = None if name == "default" else feedback
        out[f"invariance/{name}/1000"] = lambda p=pol, f=prep: run(
            p, 12, mixed_events(1011, 3000), [1000], f, restore_at=1)
        out[f"invariance/{name}/37"] = lambda p=pol, f=prep: run(
            p, 48, mixed_events(48, 3000), [37, 0, 1, 250, 5], f, restore_at=20)
    for name, pol in (("default", default), ("share_bound", generous),
                      ("reservoir60", reservoir60)):
        out[f"bench/{name}"] = lambda p=pol: run(p, 0, bench_events(200_000), [1000])
    out["bench/default_4_objects"] = lambda: run(default, 0, bench_events(100_000, 4), [250])
    out["bench/default_odd_batches"] = lambda: run(default, 0, bench_events(200_000)[:60_000],
                                                   [777, 1, 3001], restore_at=5)
    out["synthetic/default"] = lambda: run(default, 5, decoded_events(6000, 5), [500])
    out["synthetic/threshold"] = lambda: run(replace(default, mode="threshold"), 5,
                                             decoded_events(6000, 5), [333], restore_at=4)
    out["synthetic/tiers"] = lambda: run(replace(default, mode="threshold"), 5,
                                         decoded_events(6000, 5), [500],
                                         router=TierRouter(TierPolicy(), CostBudgetPolicy(
                                             units_per_hour=300.0, burst=4.0)))
    drifting = replace(default, drift=DriftPolicy(boost=3.0, boost_seconds=1800.0))
    out["drift/default"] = lambda: run(drifting, 3, drift_events(60_000, 1, 36_000), [500])
    for mode in ("reservoir", "threshold"):
        out[f"redundancy/{mode}"] = lambda m=mode: run(
            replace(redundancy_policy(similarity=0.95, sequence_cap=3), mode=m), 7,
            video_events(3, 1500, with_sequence=True), [100, 7], restore_at=4)
        out[f"tracks/{mode}"] = lambda m=mode: run(replace(track_policy(0.8), mode=m), 3,
                                                   clip_events(2, 1200), [250, 13], restore_at=3)
        out[f"instances/{mode}"] = lambda m=mode: run(instance_policy(mode=m), 11,
                                                      frames(5, 1500), [100, 9], restore_at=2)
    group = BudgetPolicy()
    for p in (0, 5):
        pol = replace(default, budget=group).for_partition(p, 16)
        out[f"partitions/{p}_of_16"] = lambda pp=pol, q=p: run(pp, 1000 + q,
                                                               partition_events(q, 20_000), [500])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="stream names (default: all)")
    args = parser.parse_args(argv)
    for name, thunk in streams().items():
        if args.only and name not in args.only:
            continue
        t0 = time.process_time()
        picks, snaps, n = thunk()
        print(f"{name:<32} picks {picks}  snapshots {snaps}  ({n:,} picks, "
              f"{time.process_time() - t0:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
