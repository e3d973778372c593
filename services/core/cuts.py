"""`Cuts`: where the segments of a batch end (selector.py walks a batch segment by segment).

A segment is a run of assets inside which nothing changes that a decision depends on: it ends
where an event-time or count window closes, at the stats refresh point, where the dedupe
generation moves, where an asset repeats within the segment, or (lazy creation) where a model
version not in the state appears.
"""

from __future__ import annotations

import numpy as np

from services.core.state import SelectorMemory
from services.core.view import BatchView


class Cuts:
    """Where the next segment of the batch ends: the first position after `j` at which a window
    closes, the stats refresh point is reached, the dedupe generation changes, an asset repeats
    within the segment, or (lazy creation) a model version not in the state appears."""

    def __init__(self, state: SelectorMemory, view: BatchView, lazy: bool) -> None:
        pol = state.policy
        self.state, self.view, self.lazy = state, view, lazy
        a = view.batch.n_assets
        self.a = a
        wm = view.watermark
        self.tid = np.floor(wm / pol.reservoir.window_seconds).astype(np.int64)
        self.gen = np.floor(wm / pol.dedupe.generation_seconds).astype(np.int64)
        self.repeats: list[tuple[int, int]] = []
        sk = np.sort(view.dkey)  # a plain sort first: a quarter of the stable argsort's cost
        if (sk[1:] == sk[:-1]).any():  # (position, previous position of the same key)
            order = np.argsort(view.dkey, kind="stable")
            sk = view.dkey[order]
            dup = np.flatnonzero(sk[1:] == sk[:-1])
            self.repeats = sorted(zip(order[dup + 1].tolist(), order[dup].tolist(), strict=True))
        self._positions: dict[int, np.ndarray] = {}
        # Where the window / generation of a given id ends (several segments share one).
        self._window_end: dict[int, int] = {}
        self._generation_end: dict[int, int] = {}

    def next(self, j: int) -> int:
        state, pol, a = self.state, self.state.policy, self.a
        first = self.view.first
        end = min(a, j + pol.refresh_every - (first + j) % pol.refresh_every)
        if pol.reservoir.window_assets:
            end = min(end, j + max(pol.reservoir.window_assets - state.window_count, 1))
        wid, gen = state.window_id, state.dedupe.generation
        if wid is not None:
            if wid not in self._window_end:
                self._window_end[wid] = int(np.searchsorted(self.tid, wid, side="right"))
            end = min(end, self._window_end[wid])
        if gen not in self._generation_end:
            self._generation_end[gen] = int(np.searchsorted(self.gen, gen, side="right"))
        end = min(end, self._generation_end[gen])
        for r, prev in self.repeats:
            if r > j and prev >= j:
                end = min(end, r)
                break
        if self.lazy:
            view = self.view
            for k in range(len(view.batch.model_keys)):
                if view.versions[k] is None or view.books[k] is None:
                    pos = self._positions.get(k)
                    if pos is None:
                        pos = self._positions[k] = np.flatnonzero(view.batch.asset_model == k)
                    p = int(np.searchsorted(pos, j, side="right"))
                    if p < pos.shape[0]:
                        end = min(end, int(pos[p]))
        return max(end, j + 1)
