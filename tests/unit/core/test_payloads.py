"""A reservoir entry's payload (flush.py) is built once, when the entry outlives its batch: not
at every segment cut inside the batch (refresh points, window closes off the batch's grid),
where most entries are then displaced or drained by the window's close. Building them at every
cut cost ~1/8 of the selector's time once windows and batches stopped lining up."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from services.core import BudgetPolicy, SelectorPolicy, SelectorState, flush
from tests.unit.core.synth import batches, dirichlet_events, mixed_events


def test_payloads_are_built_only_for_entries_that_outlive_the_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Refresh points every 125 assets: inside the 50-asset windows at 125, 375, 625, 875, so a
    # batch is cut there with the windows' entries held.
    policy = replace(SelectorPolicy(), refresh_every=125,
                     budget=BudgetPolicy(labels_per_hour=1e9, burst=1e6))
    state = SelectorState.create(policy, 0)
    events = dirichlet_events(np.random.default_rng(3), 1025)
    state.select(batches(events[:25], 25)[0])
    second = batches(events[25:], 1000)[0]  # ends at 1,025: inside a window too
    built: list[int] = []
    real = flush._payloads

    def counting(state: Any, view: Any, strategy: str, idx: np.ndarray) -> list[Any]:
        built.extend(int(i) for i in idx)
        return real(state, view, strategy, idx)

    monkeypatch.setattr(flush, "_payloads", counting)
    held_before = state.weighted.payload + state.control.payload
    selection = state.select(second)
    held = [p for p in state.weighted.payload + state.control.payload if p not in held_before]
    assert selection.selected, "nothing was selected: the stream does not exercise the windows"
    assert held, "no entry outlives the batch: the stream does not exercise the payloads"
    # Every payload built is one the batch leaves held, or one granted from a held entry at a
    # flush (flush._restore describes those directly: none is built for it).
    assert len(built) == len(held), (len(built), len(held))
    assert all(isinstance(p, list) for p in state.weighted.payload + state.control.payload)


@pytest.mark.parametrize("stream", ["dirichlet", "mixed", "objects"])
def test_fast_payloads_equal_the_described_ones(monkeypatch: pytest.MonkeyPatch,
                                                stream: str) -> None:
    """Every payload the fast path gathers (BatchView.held_rows) equals the one `describe`
    builds, field for field, on streams whose windows end inside batches: one model, two models
    with assets without predictions and top-1 predictions, and several objects per asset."""
    policy = replace(SelectorPolicy(), refresh_every=125,
                     budget=BudgetPolicy(labels_per_hour=1e9, burst=1e6))
    events = {"dirichlet": lambda: dirichlet_events(np.random.default_rng(5), 3000),
              "mixed": lambda: mixed_events(11, 3000),
              "objects": lambda: dirichlet_events(np.random.default_rng(6), 1500, objects=3)
              }[stream]()
    state = SelectorState.create(policy, 0)
    compared: list[int] = []
    real = flush._payloads

    def both(state: Any, view: Any, strategy: str, idx: np.ndarray) -> list[Any]:
        out = real(state, view, strategy, idx)
        if view.plain_rows():
            assert out == flush._described(state, view, strategy, idx)
            compared.extend(int(i) for i in idx)
        return out

    monkeypatch.setattr(flush, "_payloads", both)
    for batch in batches(events, 137):
        state.select(batch)
    assert len(compared) > 100, len(compared)
