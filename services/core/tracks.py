"""Track instability as a selection signal (issue 16, item 2).

A tracker loses identities when players collide; a model flickers between classes on a track it
is unsure of. Predictions that carry `track_id` feed a per-(model, track) memory of the last
`frames` observations (event time, top class, confidence, box, asset id), from which each new
observation gets an instability score in [0, 1], the largest of:

- **class flip**: its top class differs from the track's previous one (1.0);
- **confidence collapse**: its confidence is below the mean of the track's remembered ones by
  d >= `collapse` / 2: min(1, d / `collapse`);
- **suspected identity switch**: (a) a track seen for the first time starts near where another
  track of the model was last seen within `switch_seconds` (box centres closer than
  `switch_distance` x the larger box side) -- a track ending where another starts; or (b) its box
  overlaps (IoU >= `cross_iou`) the last box of another track seen within `switch_seconds` --
  two tracks crossing: 1.0 with a class flip, else 0.5.

The score joins uncertainty in the ranking: a prediction's priority p becomes
1 - (1 - p) x (1 - `weight` x score) (`weight` 0, the default, leaves every priority as it is).
Every observation updates the memory in stream order, whatever is selected, so the scores are a
function of the event sequence only (invariant to batch boundaries, replayed exactly after a
restore). Memory is bounded: `frames` observations per track, `max_tracks` tracks (the least
recently seen evicted first).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FLIP, COLLAPSE, SWITCH, CROSSING = "class_flip", "confidence_collapse", "identity_switch", \
    "crossing"


@dataclass(frozen=True)
class TrackPolicy:
    """Settings (module docstring). `weight` in [0, 1]: how much instability raises priority."""

    weight: float = 0.0
    frames: int = 8
    max_tracks: int = 512
    collapse: float = 0.3
    switch_seconds: float = 2.0
    switch_distance: float = 1.0
    cross_iou: float = 0.2

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0 or self.frames < 1 or self.max_tracks < 1:
            raise ValueError("weight in [0, 1], frames >= 1 and max_tracks >= 1 are required")
        if self.collapse <= 0 or self.switch_seconds <= 0 or self.switch_distance <= 0:
            raise ValueError("collapse, switch_seconds and switch_distance must be > 0")
        if not 0.0 < self.cross_iou <= 1.0:
            raise ValueError("cross_iou must be in (0, 1]")

    @property
    def enabled(self) -> bool:
        return self.weight > 0.0


Box = tuple[float, float, float, float]
# One observation: (time, class, confidence, box or None, asset id)
Frame = tuple[float, str, float, Box | None, str]


@dataclass(frozen=True)
class Instability:
    """Why one observation scored: its track, the signals that fired, the score, and the
    frames (asset ids, oldest first, this one last) that drove it, including the other track's
    last frame for a switch or a crossing."""

    track_id: str
    score: float
    signals: tuple[str, ...]
    frames: tuple[str, ...]
    other_track: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"track_id": self.track_id, "score": self.score,
                               "signals": list(self.signals), "frames": list(self.frames)}
        if self.other_track is not None:
            out["other_track_id"] = self.other_track
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Instability:
        return cls(data["track_id"], float(data["score"]), tuple(data["signals"]),
                   tuple(data["frames"]), data.get("other_track_id"))


def questions_identity(signals: tuple[str, ...] | list[str], score: float) -> bool:
    """The observation puts the track's identity in doubt: a crossing or a suspected identity
    switch together with a class flip (score 1.0), as opposed to a flicker of the class or of
    the confidence alone (redundancy.py spares such candidates the near-duplicate gate)."""
    return score >= 1.0 and (SWITCH in signals or CROSSING in signals)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, width, height) boxes; 0 when either is empty."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _near(a: Box, b: Box, factor: float) -> bool:
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return math.hypot(dx, dy) <= factor * max(a[2], a[3], b[2], b[3], 1e-9)


class TrackState:
    """The per-(model, track) memory. `observe` is the one command."""

    def __init__(self, policy: TrackPolicy) -> None:
        self.policy = policy
        self.tracks: OrderedDict[tuple[str, str], list[Frame]] = OrderedDict()

    def observe(self, model_id: str, track_id: str, time: float, cls: str, conf: float,
                box: Box | None, asset_id: str) -> Instability | None:
        """Score one observation against the memory, then remember it. Returns None when no
        signal fired. Command."""
        pol = self.policy
        key = (model_id, track_id)
        history = self.tracks.pop(key, None)
        signals: list[str] = []
        score = 0.0
        frames: list[str] = []
        other: str | None = None
        if history:
            last = history[-1]
            frames = [f[4] for f in history]
            if last[1] != cls:
                signals.append(FLIP)
                score = 1.0
            mean = sum(f[2] for f in history) / len(history)
            c = min(1.0, (mean - conf) / pol.collapse)
            if c >= 0.5:  # a drop of half `collapse` or more; smaller ones are noise
                signals.append(COLLAPSE)
                score = max(score, c)
        if box is not None:
            found = self._switch(model_id, track_id, time, box, new=not history)
            if found is not None:
                kind, other, other_frame = found
                signals.append(kind)
                frames.append(other_frame)
                score = max(score, 1.0 if kind == SWITCH or FLIP in signals else 0.5)
        history = (history or []) + [(time, cls, conf, box, asset_id)]
        self.tracks[key] = history[-pol.frames:]
        while len(self.tracks) > pol.max_tracks:
            self.tracks.popitem(last=False)
        if score <= 0.0:
            return None
        return Instability(track_id, min(1.0, score), tuple(signals), tuple(frames + [asset_id]),
                           other)

    def _switch(self, model_id: str, track_id: str, time: float, box: Box, new: bool
                ) -> tuple[str, str, str] | None:
        """(signal, other track, its last asset) of a suspected switch or crossing, or None."""
        pol = self.policy
        for (m, t), hist in reversed(self.tracks.items()):  # most recently seen first
            if m != model_id or t == track_id:
                continue
            last = hist[-1]
            if time - last[0] > pol.switch_seconds:
                break  # ordered by last sighting: every older one is older still
            if last[3] is None:
                continue
            if new and last[0] < time and _near(box, last[3], pol.switch_distance):
                return SWITCH, t, last[4]
            if iou(box, last[3]) >= pol.cross_iou:
                return CROSSING, t, last[4]
        return None

    def size(self) -> int:
        """Remembered observations (for tests of the bound). Query."""
        return sum(len(h) for h in self.tracks.values())

    def snapshot(self) -> dict[str, Any]:
        return {"tracks": [[m, t, [[f[0], f[1], f[2], None if f[3] is None else list(f[3]),
                                    f[4]] for f in hist]]
                           for (m, t), hist in self.tracks.items()]}

    @classmethod
    def from_snapshot(cls, policy: TrackPolicy, data: Mapping[str, Any] | None) -> TrackState:
        state = cls(policy)
        for m, t, hist in (data or {}).get("tracks", []):
            state.tracks[(m, t)] = [(float(f[0]), f[1], float(f[2]),
                                     None if f[3] is None else tuple(f[3]), f[4])  # type: ignore
                                    for f in hist][-policy.frames:]
        while len(state.tracks) > policy.max_tracks:
            state.tracks.popitem(last=False)
        return state
