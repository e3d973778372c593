"""Where the redundancy gates (redundancy.py) meet the arms (arms.py): an asset's folded
embedding and sequence from a batch view or a reservoir payload, the check before an exploit-lane
grant, the memory of every granted request, and a budget gate wrapper for the threshold scan.

Which grants are remembered: the exploit arms' (reservoir flush, threshold scan) and the random
control arm's, all decided one at a time in stream order. Exploration picks are not: they are
decided for a whole segment ahead of the exploit arms (arms.py), so remembering them would let a
later exploration pick suppress an earlier exploit candidate, and the decisions would depend on
where a batch was cut. Everything here is a no-op when both gates are off.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from services.core.redundancy import fold
from services.core.state import SelectorMemory
from services.core.thresholds import Gate
from services.core.tracks import questions_identity
from services.core.view import BatchView


def active(state: SelectorMemory, view: BatchView) -> bool:
    """A gate is on and the batch has video fields. Query."""
    return state.policy.redundancy.enabled and view.batch.video is not None


def of_asset(state: SelectorMemory, view: BatchView, i: int
             ) -> tuple[np.ndarray | None, str | None]:
    """(folded unit embedding or None, sequence or None) of asset i of the view. Query (the
    folded vectors are cached on the view, which lives for one batch)."""
    video = view.batch.video
    if video is None:
        return None, None
    cache: dict[int, np.ndarray | None] = view.__dict__.setdefault("_folded", {})
    if i not in cache:
        raw = video.embedding[i]
        cache[i] = None if raw is None else fold(raw, state.policy.redundancy.dims)
    return cache[i], video.sequence[i]


def of_payload(payload: Any) -> tuple[np.ndarray | None, str | None]:
    """(vector, sequence) a reservoir payload carries (`payload_extra`); (None, None) if none."""
    if len(payload) < 5:
        return None, None
    blob, sequence = payload[3], payload[4]
    vec = None if blob is None else np.frombuffer(base64.b64decode(blob), dtype="<f4").astype(
        np.float32)
    return vec, sequence


def payload_extra(state: SelectorMemory, view: BatchView, i: int) -> list[Any]:
    """What a held reservoir payload of asset i needs for the gates at a later flush: [] when
    gates are off or the asset has no video field (the payload then keeps its old shape)."""
    if not active(state, view):
        return []
    vec, seq = of_asset(state, view, i)
    if vec is None and seq is None:
        return []
    blob = None if vec is None else base64.b64encode(vec.astype("<f4").tobytes()).decode()
    return [blob, seq]


def reason(state: SelectorMemory, model_id: str, video: tuple[np.ndarray | None, str | None],
           watermark: float, in_doubt: bool = False) -> str | None:
    """Why an exploit-lane candidate would be suppressed, or None. `in_doubt`: its track puts
    its identity in doubt (`asset_in_doubt`, `payload_in_doubt`). Query."""
    if not state.policy.redundancy.enabled or (video[0] is None and video[1] is None):
        return None
    return state.redundancy.reason(model_id, video[0], video[1], watermark, in_doubt)


def asset_in_doubt(view: BatchView, i: int) -> bool:
    """A prediction of asset i puts its track's identity in doubt (tracks.questions_identity).
    Query."""
    if not view.unstable:
        return False
    b = view.batch
    for r in range(int(b.pred_start[i]), int(b.pred_start[i + 1])):
        inst = view.unstable.get(r)
        if inst is not None and questions_identity(inst.signals, inst.score):
            return True
    return False


def payload_in_doubt(view: BatchView, payload: Any) -> bool:
    """`asset_in_doubt` for a reservoir payload: a batch asset index, or a held entry whose
    Selected row carries the track instability that drove it. Query."""
    if isinstance(payload, int):
        return asset_in_doubt(view, payload)
    row = payload[0]
    track = row[12] if len(row) > 12 else None
    if not track:
        return False
    return questions_identity(track["signals"], float(track["score"]))


def remember(state: SelectorMemory, model_id: str, video: tuple[np.ndarray | None, str | None],
             watermark: float) -> None:
    """Record a granted request. Command."""
    if state.policy.redundancy.enabled and (video[0] is not None or video[1] is not None):
        state.redundancy.record(model_id, video[0], video[1], watermark)


class RedundancyGate:
    """The threshold scan's budget gate (`thresholds.Gate`) with the redundancy check folded
    into the class check: a vetoed candidate is skipped like one whose class has no token (not
    labeled, not a miss), and a spend remembers the grant, so the next candidate is checked
    against it. Warm-up candidates (a random arm) are never vetoed. `cand`: the batch asset
    index of each scan candidate."""

    def __init__(self, inner: Gate, state: SelectorMemory, view: BatchView, cand: np.ndarray,
                 warm: np.ndarray) -> None:
        self.inner, self.state, self.view = inner, state, view
        self.cand, self.warm = cand.tolist(), warm.tolist()
        self.vetoed: dict[int, str] = {}  # candidate -> reason at its last check

    def _model(self, i: int) -> str:
        b = self.view.batch
        return b.model_keys[int(b.asset_model[i])][0]

    def _ok(self, j: int) -> bool:
        if self.warm[j]:
            return True
        i = self.cand[j]
        why = reason(self.state, self._model(i), of_asset(self.state, self.view, i),
                     float(self.view.watermark[i]), asset_in_doubt(self.view, i))
        if why is None:
            self.vetoed.pop(j, None)
            return True
        self.vetoed[j] = why
        return False

    def first_available(self, start: int) -> int:
        return self.inner.first_available(start)

    def class_ok(self, start: int, stop: int) -> np.ndarray:
        ok = self.inner.class_ok(start, stop)
        for r in np.flatnonzero(ok).tolist():
            ok[r] = self._ok(start + r)
        return ok

    def class_ok_at(self, i: int) -> bool:
        return self.inner.class_ok_at(i) and self._ok(i)

    def spend(self, i: int, with_class: bool) -> None:
        self.inner.spend(i, with_class)
        a = self.cand[i]
        self.vetoed.pop(i, None)
        remember(self.state, self._model(a), of_asset(self.state, self.view, a),
                 float(self.view.watermark[a]))
