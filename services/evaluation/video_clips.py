"""Video clips built from a real data set that ships in scikit-learn (digits), for the video
label-efficiency benchmark (issue 16, item 4).

Each clip shows `objects` digits (distinct images of the pool) as tracks over `frames` frames.
Every frame redraws each object with small perturbations (pixel noise, a brightness
flicker), so consecutive frames are near duplicates. Objects move left to right along a lane; at a
"collision" two objects meet (their boxes overlap) and, from the next frame on, their track ids
are swapped (the tracker lost them). One instance of one frame is one asset and one label. Its
embedding comes from a fixed feature map (a seeded random projection of the pixels, the same for
every run). Everything derives from the seed: equal seeds give equal clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EMBEDDING_DIMS = 16
FEATURE_SEED = 20161  # the fixed feature map's seed: never changes between runs


@dataclass(frozen=True)
class Clips:
    """The stream, one row per instance in stream order (frame by frame, clip by clip).

    `X`: pixels (n x 64); `y`: true class (str); `image`: the pool row drawn; `clip`, `frame`
    (index within the clip), `time` (event time, s); `track`: the track id the tracker reports;
    `obj`: the true object (clip-unique); `bbox` (n x 4); `embedding` (n x EMBEDDING_DIMS).
    `switches`: (clip, frame, track a, track b) of every id swap (from `frame` on)."""

    X: np.ndarray
    y: np.ndarray
    image: np.ndarray
    clip: np.ndarray
    frame: np.ndarray
    time: np.ndarray
    track: tuple[str, ...]
    obj: np.ndarray
    bbox: np.ndarray
    embedding: np.ndarray
    switches: tuple[tuple[int, int, str, str], ...]

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


def feature_map(X: np.ndarray) -> np.ndarray:
    """The fixed embedding: a seeded Gaussian projection of centred pixels (64 -> 16)."""
    proj = np.random.default_rng(FEATURE_SEED).normal(size=(X.shape[1], EMBEDDING_DIMS))
    return (X - 8.0) @ proj / np.sqrt(X.shape[1])


def _perturb(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Sensor noise and a brightness flicker: what changes between consecutive frames. (A
    one-pixel shift of an 8 x 8 digit moves it by an eighth of its width: not a small change.)"""
    gain = 1.0 + rng.normal(0.0, 0.05)
    return np.clip(img * gain + rng.normal(0.0, noise, img.shape[0]), 0.0, 16.0)


def make_clips(X: np.ndarray, y: np.ndarray, pool: np.ndarray, rng: np.random.Generator,
               clips: int = 60, frames: int = 20, objects: int = 3, noise: float = 1.0,
               collide: float = 0.6, spacing: float = 1.0) -> Clips:
    """`clips` clips from pool rows `pool` (each object a distinct row while rows last); each
    clip has one collision with probability `collide`, between two of its objects at a random
    middle frame. Frames are `spacing` seconds apart; clips follow one another."""
    rows = rng.permutation(pool)
    out: dict[str, list] = {k: [] for k in ("X", "y", "image", "clip", "frame", "time", "track",
                                            "obj", "bbox")}
    switches: list[tuple[int, int, str, str]] = []
    t = 0.0
    for c in range(clips):
        imgs = [int(rows[(c * objects + k) % rows.shape[0]]) for k in range(objects)]
        ids = [f"c{c}-t{k}" for k in range(objects)]
        hit = rng.uniform() < collide and objects >= 2
        at = int(rng.integers(frames // 3, 2 * frames // 3)) if hit else -1
        pair = rng.choice(objects, 2, replace=False).tolist() if hit else []
        for f in range(frames):
            if f == at:
                a, b = pair
                ids[a], ids[b] = ids[b], ids[a]
                switches.append((c, f, ids[a], ids[b]))
            for k in range(objects):
                x = 20.0 * k + 2.0 * f
                if hit and k in pair and abs(f - at) <= 1:  # the two meet around the swap
                    x = 20.0 * pair[0] + 2.0 * f + 3.0 * (k == pair[1])
                out["X"].append(_perturb(X[imgs[k]], rng, noise))
                out["y"].append(str(y[imgs[k]]))
                out["image"].append(imgs[k])
                out["clip"].append(c)
                out["frame"].append(f)
                out["time"].append(t)
                out["track"].append(ids[k])
                out["obj"].append(c * objects + k)
                out["bbox"].append((x, 10.0 * k if not (hit and k in pair and abs(f - at) <= 1)
                                    else 0.0, 8.0, 8.0))
            t += spacing
    Xs = np.asarray(out["X"])
    return Clips(Xs, np.asarray(out["y"]), np.asarray(out["image"]), np.asarray(out["clip"]),
                 np.asarray(out["frame"]), np.asarray(out["time"]), tuple(out["track"]),
                 np.asarray(out["obj"]), np.asarray(out["bbox"], dtype=float), feature_map(Xs),
                 tuple(switches))
