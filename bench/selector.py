"""Selector benchmark: throughput and state memory of services.core (not a test; prints figures).

    .venv/bin/python bench/selector.py [--predictions 1000000] [--long 5000000]

Synthetic stream: the shared one (tests/synthetic_events.py `probabilities`: 10 classes, three
hard, the rest easy; until 2026-12-06 a flat Dirichlet(0.3)), 1,000 events per second of event time,
unique assets, batches of 1,000 predictions. Building the flat arrays from event objects
(`PredictionBatch.from_events`) is timed apart from selection (`select`); creating the synthetic
event objects themselves is not timed. Memory: snapshot size (JSON bytes) and traced Python heap /
RSS after 1M and after 5M predictions, to show the state does not grow with the stream.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
import tracemalloc
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

# Run as `python bench/selector.py`: the repository root holds tests/ (the shared event
# generator), which is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.core import (  # noqa: E402
    BudgetPolicy,
    PredictionBatch,
    SelectorPolicy,
    SelectorState,
    select,
)
from services.streaming.events import InferenceEvent, Prediction  # noqa: E402
from tests.synthetic_events import CLASSES, probabilities  # noqa: E402


def make_events(rng: np.random.Generator, start: int, n_preds: int, objects: int,
                rate: float = 1000.0) -> list[InferenceEvent]:
    """n_preds predictions in n_preds / objects events (`rate` per second of event time),
    assets numbered from `start`."""
    probs = probabilities(rng, n_preds).tolist()
    out = []
    for i in range(n_preds // objects):
        k = start + i
        preds = tuple(Prediction(dict(zip(CLASSES, probs[i * objects + j], strict=True)))
                      for j in range(objects))
        out.append(InferenceEvent(1, f"e{k}", f"asset-{k}", None, "detector", "2024-06",
                                  1.7e9 + k / rate, preds, None))
    return out


@dataclass
class Run:
    predictions: int = 0
    selected: int = 0
    build_cpu: float = 0.0
    select_cpu: float = 0.0
    select_wall: float = 0.0


def drive(state: SelectorState, rng: np.random.Generator, n_preds: int, objects: int,
          run: Run, label: str, batch: int = 1000, chunk: int = 50, rate: float = 1000.0
          ) -> None:
    """Feed n_preds predictions in batches of `batch`: events for `chunk` batches are made, then
    built (timed: builder), then selected (timed: selector), so each figure is measured apart."""
    n_batches = n_preds // batch
    report = max(n_batches // 10, 1)
    for lo in range(0, n_batches, chunk):
        todo = range(lo, min(lo + chunk, n_batches))
        events = [make_events(rng, (run.predictions + (b - lo) * batch) // objects, batch,
                              objects, rate) for b in todo]
        t0 = time.process_time()
        built = [PredictionBatch.from_events(
            evs, [{"partition": 0, "offset": int(e.asset_id[6:])} for e in evs]) for evs in events]
        t1, w1 = time.process_time(), time.perf_counter()
        for pb in built:
            run.selected += len(select(state, pb))
        run.select_cpu += time.process_time() - t1
        run.select_wall += time.perf_counter() - w1
        run.build_cpu += t1 - t0
        for b in todo:
            run.predictions += batch
            if (b + 1) % report == 0:
                print(f"  {label}: {run.predictions:>9,} predictions", file=sys.stderr,
                      flush=True)


def memory(state: SelectorState) -> tuple[int, int, int, float]:
    """(snapshot JSON bytes, traced heap bytes, current RSS bytes, ms per snapshot + dumps)."""
    gc.collect()
    state.snapshot()  # fill the encoding memo, as a per-batch checkpoint loop would have
    t0 = time.process_time()
    snap = len(json.dumps(state.snapshot()))
    snap_ms = (time.process_time() - t0) * 1e3
    traced = tracemalloc.get_traced_memory()[0]
    with open("/proc/self/statm") as f:  # Linux; current, not peak, resident set
        rss = int(f.read().split()[1]) * resource.getpagesize()
    return snap, traced, rss, snap_ms


def per_thousand(seconds: float, predictions: int) -> str:
    return f"{predictions / seconds:>10,.0f} pred/s ({seconds / (predictions / 1000) * 1e3:.3f} ms)"


def throughput(name: str, policy: SelectorPolicy, n: int, objects: int = 1) -> None:
    rng = np.random.default_rng(1)
    state = SelectorState.create(policy, 0)
    drive(state, rng, 20_000, objects, Run(), f"{name} (warm-up)")  # past the cold start
    run = Run()
    drive(state, rng, n, objects, run, name)
    print(f"  {name:<40} select {per_thousand(run.select_cpu, run.predictions)} cpu, "
          f"{per_thousand(run.select_wall, run.predictions)} wall | build "
          f"{per_thousand(run.build_cpu, run.predictions)} cpu | selected {run.selected:,}",
          flush=True)


def memory_run(name: str, policy: SelectorPolicy, marks: list[int]) -> None:
    """Traced heap = what is still allocated since the run started: the state (the batch in
    flight is dropped before measuring). RSS also holds the interpreter and numpy."""
    tracemalloc.start()
    state = SelectorState.create(policy, 0)
    rng, run = np.random.default_rng(2), Run()
    for mark in marks:
        drive(state, rng, mark - run.predictions, 1, run, name, chunk=5, rate=100.0)
        snap, traced, rss, snap_ms = memory(state)
        print(f"  {name:<30} after {mark:>9,}: snapshot {snap:>8,} B ({snap_ms:.2f} ms) | heap "
              f"{traced / 1e6:6.2f} MB | RSS {rss / 1e6:6.1f} MB | dedupe keys "
              f"{len(state.dedupe):>6,} | selected {run.selected:>6,}", flush=True)
    tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--long", type=int, default=5_000_000)
    args = parser.parse_args()
    default = SelectorPolicy()
    generous = replace(default, budget=BudgetPolicy(labels_per_hour=1e9, burst=1e6))
    print(f"services.core selector benchmark (numpy {np.__version__}, one process; cpu = process"
          f" time, robust to other load; wall = elapsed)\n", flush=True)
    print(f"Throughput over {args.predictions:,} 10-class predictions, batches of 1,000 "
          "(ms per 1,000 predictions):", flush=True)
    throughput("default policy (time budget binds)", default, args.predictions)
    throughput("share-bound budget (2% selected)", generous, args.predictions)
    throughput("default policy, 4 objects per asset", default, args.predictions, objects=4)
    reservoir = replace(default, mode="reservoir", budget=BudgetPolicy(
        labels_per_hour=1e9, burst=1e6, share_burst=2000.0),
        reservoir=replace(default.reservoir, window_seconds=60.0))
    throughput("reservoir mode, 60 s windows", reservoir, args.predictions)
    marks = sorted({args.predictions, args.long})
    print("\nState memory (100 events/s of event time, so the 1 h quantile window is full by 1M;"
          " unique assets):", flush=True)
    memory_run("default policy", default, marks)
    print("  (the only growth is dedupe keys: one per selection, kept for the 7-day ttl, capped"
          " at max_entries; with a 1 h ttl the state is flat:)", flush=True)
    memory_run("default policy, dedupe ttl 1 h", replace(
        default, dedupe=replace(default.dedupe, ttl_seconds=3600.0)), marks)


if __name__ == "__main__":
    main()
