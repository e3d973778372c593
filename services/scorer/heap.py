"""The scorer's two rules for Python's cyclic garbage collector.

- `collection_held`: no automatic collection while one batch is processed.
- `freeze_startup` / `thaw`: what exists when the loop starts (modules, classes, the clients,
  the metrics) is left out of every later full collection.

Both are process-wide, like every `gc` switch.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collection_held() -> Iterator[None]:
    """Python's automatic garbage collection held off while one batch is processed, and
    restored after (also when the batch raises); left alone when it was off already (a caller
    that turned it off, or a nested call).

    Why: a batch allocates a few thousand containers (the parsed events, their columns) that
    stay alive until it ends, so the collections their allocation triggers traverse them and
    promote them to older generations, whose full collections then walk the whole heap. Held
    off, the next collection comes after the batch, when reference counting has freed them:
    ~5% of the broker-free core's CPU (paired A/B, 30 rounds). Memory stays bounded: a batch is
    cut into chunks of at most MAX_CHUNK_BYTES, and cyclic garbage made meanwhile is collected
    after it. Another thread's allocations go uncollected for that time too (never longer than
    a batch)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def freeze_startup() -> None:
    """Collect once, then move every object alive now into the collector's permanent
    generation, which no later collection walks. Call when the loop starts.

    Why: a full (generation 2) collection walks every container alive, and at start that is
    ~40,000 of them, none of which the loop frees (imported modules, classes, functions, the
    Kafka clients and metrics). On Apache Kafka at ~30,000 events/s a full collection came
    every ~4 s and held the GIL -- and so every event in flight -- for 18-29 ms; with the start
    frozen the same collections took 1-3.5 ms (bench/README.md, 2026-12-07).

    Cost: objects frozen here that later become unreachable only through reference cycles stay
    in memory until `thaw`; reference counting frees the rest as usual. Nothing the loop
    creates is frozen."""
    gc.collect()
    gc.freeze()


def thaw() -> None:
    """Undo `freeze_startup` (when the loop ends), so that a process that outlives its
    scorer -- a test, the bench -- collects the scorer's cycles as usual. With two scorers in
    one process, the first to stop thaws both: the other only loses the shorter pauses."""
    gc.unfreeze()
