"""How far the video benchmark's first goal is reachable at all (issue 16, item 4): "reach
random's final accuracy with <= 50% of its labels". `python -m services.evaluation.video_ceiling
[--seeds N] [--step S]` prints, per seed and as medians over seeds, the labels (seed labels
included) at which four hindsight references first reach random's final accuracy:

- `seen`: a model given every instance the stream has shown by the latest position at which a
  policy that spends the cap can hold its k-th label (`latest_position`), and, separately, one
  frame of every object shown by then (the better of the two counts): what a stream policy could
  know at k labels if it labeled everything it saw. `seen now`: the same at the earliest
  position (`earliest_position`), where a policy that spends each token as soon as it has it
  (as active-stream's does) holds its k-th label.
- `paced`: greedy margin over distinct objects with look-back over every instance shown by then
  (a stream policy only sees a reservoir window back), retrained every `step` labels.
- `pool`: the same greedy with the whole stream available from the first label (pool-based
  active learning, no stream).

Why `latest_position`: the budget grants at most C + s x n labels over any n assets
(budget.py: C the lanes' count capacities, s the share), and the benchmark's cap is s x N of a
stream of N, so a policy that ends with the cap has granted at least s x n - C by position n: its
k-th label comes at or before (k + C) / s (plus s x N - cap < 1 label of rounding). `random` is
the benchmark's (the cap, uniform over the stream), as when active-stream spends the cap (every
seed at the defaults). Deterministic.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import numpy as np

from services.core import BudgetPolicy
from services.core.budget import LANES
from services.evaluation.harness import strategy_seed
from services.evaluation.video import (
    VideoSeed,
    VideoSettings,
    fit,
    run_seed,
    video_policy,
    video_seeds,
)

INF = float("inf")


def latest_position(budget: BudgetPolicy, k: int, n: int, cap: int) -> int:
    """The latest stream position (assets seen, at most n) at which a policy that ends a stream
    of n assets with `cap` labels can hold its k-th label: the rest of the stream can grant at
    most C + s x (n - position) of them (module docstring). Pure."""
    capacity = sum(budget.lane(lane)[1] for lane in LANES)
    slack = budget.share * n - cap  # < 1: the cap is floor(s x n)
    return min(n, math.ceil((k + capacity + slack) / budget.share - 1e-9))


def earliest_position(budget: BudgetPolicy, k: int, n: int) -> int:
    """The earliest stream position (assets seen, at most n) at which any policy can hold its
    k-th label: the budget grants at most C + s x position by then. Pure."""
    capacity = sum(budget.lane(lane)[1] for lane in LANES)
    return min(n, max(0, math.ceil((k - capacity) / budget.share - 1e-9)))


def _reach(vs: VideoSeed, target: float, settings: VideoSettings,
           accuracy_at: Callable[[int], float]) -> float:
    """Labels (seed included) at the first k = 0, step, 2 step, ... <= cap whose
    `accuracy_at(k)` reaches `target`; inf if none."""
    for k in range(0, vs.cap + 1, settings.retrain_every):
        if accuracy_at(k) >= target - 1e-12:
            return float(settings.seed_labels + k)
    return INF


def seen_reach(vs: VideoSeed, target: float, settings: VideoSettings, now: bool = False
               ) -> float:
    """`seen` (`seen now` with `now`) of the module docstring."""
    budget, clips, seed = video_policy(settings).budget, vs.clips, vs.seed_rows.tolist()
    middle = {int(o): int(np.flatnonzero(clips.obj == o)[settings.frames // 2])
              for o in np.unique(clips.obj)}

    def accuracy_at(k: int) -> float:
        n = earliest_position(budget, k, clips.n) if now else \
            latest_position(budget, k, clips.n, vs.cap)
        every = seed + list(range(n))
        one = seed + [middle[o] for o in sorted(set(clips.obj[:n].tolist()))]
        return max(fit(clips.X[r], clips.y[r]).accuracy(vs.X_test, vs.y_test)
                   for r in (every, one))

    return _reach(vs, target, settings, accuracy_at)


def margin_curve(vs: VideoSeed, settings: VideoSettings, paced: bool
                 ) -> tuple[list[int], list[tuple[int, float]]]:
    """`paced` (True) or `pool` (False) of the module docstring: each label is the most
    uncertain instance (margin) among those shown by then of an object not labeled yet (any
    instance once every object shown is labeled), the model refitted every `retrain_every`.
    Returns the rows labeled (in order) and (labels incl. seed, test accuracy) after each fit."""
    budget, clips = video_policy(settings).budget, vs.clips
    rows = vs.seed_rows.tolist()
    labeled = np.isin(clips.obj, clips.obj[rows])
    model = fit(clips.X[rows], clips.y[rows])
    curve = [(len(rows), model.accuracy(vs.X_test, vs.y_test))]
    for k in range(1, vs.cap + 1):
        if (k - 1) % settings.retrain_every == 0:
            p = np.sort(model.proba(clips.X), axis=1)
            margin = p[:, -1] - p[:, -2] if p.shape[1] > 1 else np.ones(clips.n)
        n = latest_position(budget, k, clips.n, vs.cap) if paced else clips.n
        fresh = np.flatnonzero(~labeled[:n])
        pick = int(fresh[np.argmin(margin[fresh])]) if fresh.size else \
            int(np.argmin(margin[:n]))
        rows.append(pick)
        margin[pick] = np.inf
        labeled |= clips.obj == clips.obj[pick]
        if k % settings.retrain_every == 0 or k == vs.cap:
            model = fit(clips.X[rows], clips.y[rows])
            curve.append((len(rows), model.accuracy(vs.X_test, vs.y_test)))
    return rows[len(vs.seed_rows):], curve


def margin_reach(vs: VideoSeed, target: float, settings: VideoSettings, paced: bool) -> float:
    """Labels (seed included) at which `margin_curve` first reaches `target`; inf if never."""
    return next((float(n) for n, acc in margin_curve(vs, settings, paced)[1]
                 if acc >= target - 1e-12), INF)


def ceiling(settings: VideoSettings) -> list[dict[str, float]]:
    """Per seed: random's final accuracy and labels, and each reference's labels to reach it
    (inf: never within the cap)."""
    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(limits=1):
        for vs in video_seeds(settings):
            rnd = run_seed("random", vs, vs.cap, settings,
                           strategy_seed(settings.random_state, vs.seed, "random"))
            target = rnd.final_accuracy
            out.append({"seed": vs.seed, "random_final": target,
                        "random_labels": float(settings.seed_labels + rnd.labels_used),
                        "seen now": seen_reach(vs, target, settings, now=True),
                        "seen": seen_reach(vs, target, settings),
                        "paced": margin_reach(vs, target, settings, paced=True),
                        "pool": margin_reach(vs, target, settings, paced=False)})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.evaluation.video_ceiling",
                                description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--step", type=int, default=10, help="retrain every (default 10)")
    args = p.parse_args(argv)
    settings = VideoSettings(seeds=args.seeds, retrain_every=args.step)
    rows = ceiling(settings)
    keys = ("seen now", "seen", "paced", "pool")
    print(f"{'seed':>4} {'rnd final':>9} " + " ".join(f"{k:>8}" for k in keys))
    for r in rows:
        print(f"{int(r['seed']):>4} {r['random_final']:>9.3f} "
              + " ".join(f"{r[k]:>8.0f}" for k in keys))
    random_labels = float(np.mean([r["random_labels"] for r in rows]))
    for k in keys:
        med = float(np.median([r[k] for r in rows]))
        print(f"{k:<8} median {med:.0f} labels = {med / random_labels:.3f} of random's "
              f"{random_labels:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
