"""Labeling tiers against one tier, with simulated annotators, on a real data set (issue 18, 3).

    OMP_NUM_THREADS=1 .venv/bin/python bench/tiers.py [--dataset digits --dataset segments]
        [--seeds 10] [--out docs/img]

Per stream (`--dataset`, repeatable: scikit-learn's digits, 1,797 8x8 images, 10 classes, by
default; River's ImageSegments `segments`, and the other STREAMS; 30% held out, the rest
shuffled per seed into a stream) one selection rule for every arm: each window of `--window`
stream items gives its most uncertain one (least confidence) to the humans, the model
(multinomial logistic regression) is retrained every 10 labels from an initial 2 clean labels
per class. Only the human work differs:

- `annotate`: every request is one full annotation (cost 3, error `--annotate-error`);
- `consensus`: every request goes to 2 annotators (cost 3 each); a disagreement goes to an
  expert (cost 8, error `--expert-error`);
- `tiered`: services/core/tiers.py's `TierRouter` decides per request (review / annotate /
  consensus), fed after each retrain with the class feedback the label sink would publish
  (`Feedback`; `--no-feedback`: none); the consensus join and its escalation are
  services/label_sink/consensus.py's `join`.

Simulated annotators (seeded per stream item, so every arm's humans roll the same dice for the
same item and paired differences measure the tiers): `review` shows the model's pre-label; a
correct pre-label is confirmed (error `--review-error`), a wrong one is caught with probability
`--review-catch` (and then annotated as by `annotate`), otherwise accepted (anchoring). Wrong
labels are a uniformly random other class.

Printed per arm (mean over seeds): labels, cost, share of wrong training labels, held-out
accuracy at the end, cost per accuracy point gained (cost / (final - initial accuracy, in
points)), and the median over seeds of the cost at which a run's accuracy first reaches the
target (the all-annotate arm's final mean accuracy minus `--slack` points), with how many seeds
reached it; then the per-seed paired differences against `annotate` (accuracy in points, cost
in percent: mean, sd, standard error). A PNG of accuracy against cumulative cost per stream goes
to `--out`. Last line `JSON {...}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.core.tiers import TierPolicy, TierRouter, review_band  # noqa: E402
from services.label_sink.consensus import join  # noqa: E402

ARMS = ("annotate", "consensus", "tiered")


@dataclass(frozen=True)
class Crowd:
    annotate_error: float
    review_error: float
    review_catch: float
    expert_error: float


def _wrong(rng: np.random.Generator, truth: int, k: int) -> int:
    return int((truth + rng.integers(1, k)) % k)


def _annotate(rng: np.random.Generator, truth: int, k: int, error: float) -> int:
    return _wrong(rng, truth, k) if rng.random() < error else truth


def _review(rng: np.random.Generator, truth: int, prelabel: int, k: int, crowd: Crowd) -> int:
    if prelabel == truth:
        return _annotate(rng, truth, k, crowd.review_error)
    if rng.random() < crowd.review_catch:
        return _annotate(rng, truth, k, crowd.annotate_error)
    return prelabel


def _consensus(rng: np.random.Generator, truth: int, k: int, crowd: Crowd,
               policy: TierPolicy) -> tuple[int, float, bool]:
    """(label, cost, escalated) through the sink's own join."""
    row: dict[str, Any] = {"k": policy.consensus_k, "w": policy.agreement_quorum, "l": [],
                           "d": None, "a": None}
    cost = 0.0
    for j in range(policy.consensus_k):
        answer = _annotate(rng, truth, k, crowd.annotate_error)
        cost += policy.costs["consensus"]
        row, outcome = join(row, f"l{j}", f"ann-{j}", str(answer))
        if outcome == "agreed":
            return int(row["a"]), cost, False
        if outcome == "escalated":
            break
    return _annotate(rng, truth, k, crowd.expert_error), cost + policy.costs["expert"], True


class Feedback:
    """The class feedback the label sink would publish, as the scorer's tier router gets it:
    per human class, its labels (`labels_total`, every label of the class) and its human-model
    agreement (the share of its labels whose answer equals the model's pre-label), counted
    from the labels that did NOT go through `review` (services/label_sink: a review's answer
    is anchored on the pre-label it shows, so counting it would inflate the agreement that
    widens the review band, a loop feeding itself). The seed labels answer no request and
    count nowhere, as in the sink."""

    def __init__(self) -> None:
        self.labels: dict[int, int] = {}
        self.compared: dict[int, int] = {}
        self.agreed: dict[int, int] = {}

    def add(self, answer: int, prelabel: int, tier: str) -> None:
        self.labels[answer] = self.labels.get(answer, 0) + 1
        if tier != "review":
            self.compared[answer] = self.compared.get(answer, 0) + 1
            self.agreed[answer] = self.agreed.get(answer, 0) + (answer == prelabel)

    def classes(self) -> dict[str, tuple[None, float, int]]:
        """Class feedback as the scorer's reader hands it to the tier router: class -> (state,
        agreement, labels_total), for classes with a compared label (no state: the bench does
        not simulate mastery)."""
        return {str(c): (None, self.agreed[c] / n, self.labels[c])
                for c, n in self.compared.items()}



def run_arm(arm: str, seed: int, data: tuple[np.ndarray, ...], policy: TierPolicy,
            crowd: Crowd, window: int, use_feedback: bool = True,
            trace: list[tuple[Any, ...]] | None = None
            ) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    x_stream, y_stream, x_test, y_test, x_seed, y_seed = data
    k = int(max(y_stream.max(), y_test.max())) + 1
    xs, ys = list(x_seed), list(y_seed)
    model = LogisticRegression(max_iter=300).fit(np.array(xs), np.array(ys))
    acc0 = float(model.score(x_test, y_test))
    curve = [(0.0, acc0)]
    cost, wrong, tiers, escalated = 0.0, 0, {"review": 0, "annotate": 0, "consensus": 0}, 0
    prelabel_right = {"review": 0, "annotate": 0, "consensus": 0}  # picks the model got right
    # The class feedback the scorer would hold (see `Feedback`), published after each retrain.
    book = Feedback()
    router = TierRouter(policy)
    banded = 0  # tiered picks whose review band was not `review_below`
    for start in range(0, len(y_stream) - window + 1, window):
        probs = model.predict_proba(x_stream[start:start + window])
        top = probs.max(axis=1)
        i = int(np.argmin(top))  # most uncertain of the window
        truth = int(y_stream[start + i])
        prelabel = int(model.classes_[int(np.argmax(probs[i]))])
        score = float((1.0 - top[i]) * k / (k - 1))  # least confidence, normalised to [0, 1]
        if arm == "tiered":
            # The scorer's own router, fed as the scorer feeds it: the pick's driving class is
            # the pre-label's, while the sink's agreement is per human class (as in production).
            calibration = router.calibration("m")
            banded += review_band(policy, calibration) != policy.review_below
            state, dis, n = router.classes.get("m", {}).get(str(prelabel), (None, None, None))
            routed = router.route("m", str(prelabel), min(score, 1.0), "uncertainty", 0.0)
            assert routed is not None  # no cost gate here
            tier = routed[0]
        else:
            tier = arm
        # The humans' noise, drawn per stream item: every arm's annotators roll the same dice
        # for the same item (common random numbers), so a paired difference between arms
        # measures their tiers, not their luck.
        rng = np.random.default_rng([seed, start + i])
        tiers[tier] += 1
        prelabel_right[tier] += prelabel == truth  # model was right: what a review leans on
        if trace is not None and arm == "tiered":  # (score, class disagreement, its labels,
            trace.append((score, dis, n, prelabel == truth, tier, calibration))  # right, ...)
        if tier == "review":
            label, spent = _review(rng, truth, prelabel, k, crowd), policy.costs["review"]
        elif tier == "annotate":
            label, spent = _annotate(rng, truth, k, crowd.annotate_error), policy.costs["annotate"]
        else:
            label, spent, up = _consensus(rng, truth, k, crowd, policy)
            escalated += up
        cost += spent
        wrong += label != truth
        book.add(label, prelabel, tier)
        xs.append(x_stream[start + i])
        ys.append(label)
        if (len(ys) - len(y_seed)) % 10 == 0:
            model = LogisticRegression(max_iter=300).fit(np.array(xs), np.array(ys))
            curve.append((cost, float(model.score(x_test, y_test))))
            if use_feedback and arm == "tiered":  # the sink's class feedback after a retrain
                router.set_classes("m", book.classes())
    n = len(ys) - len(y_seed)
    return {"labels": n, "cost": cost, "noise": wrong / max(n, 1), "acc0": acc0,
            "acc": curve[-1][1], "curve": curve, "tiers": tiers, "escalated": escalated,
            "prelabel_right": prelabel_right, "banded": banded}


STREAMS = ("digits", "segments", "wine", "breast_cancer", "synthetic-imbalanced",
           "synthetic-20-classes")
"""Streams `--dataset` takes: digits as it always was here, and any of these from
services/evaluation/datasets.py (no download; features standardised on the pool)."""


def load(seed: int, name: str = "digits") -> tuple[np.ndarray, ...]:
    """(stream X, stream y, test X, test y, seed X, seed y): 30% held out (stratified), the
    rest shuffled per seed, 2 clean seed labels per class (the same for every arm)."""
    from sklearn.model_selection import train_test_split

    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = x / 16.0
    else:
        from services.evaluation.datasets import load_dataset

        data = load_dataset(name)
        x, y = data.X, np.unique(data.y, return_inverse=True)[1]
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, random_state=seed,
                                                      stratify=y)
    if name != "digits":  # pixel intensities need no scaling; other features do
        mu, sd = x_pool.mean(axis=0), x_pool.std(axis=0)
        sd[sd == 0] = 1.0
        x_pool, x_test = (x_pool - mu) / sd, (x_test - mu) / sd
    order = np.random.default_rng(seed).permutation(len(y_pool))
    x_pool, y_pool = x_pool[order], y_pool[order]
    seed_idx = np.concatenate([np.flatnonzero(y_pool == c)[:2] for c in np.unique(y)])
    rest = np.setdiff1d(np.arange(len(y_pool)), seed_idx)
    return x_pool[rest], y_pool[rest], x_test, y_test, x_pool[seed_idx], y_pool[seed_idx]


def paired(tiered: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, float]:
    """Per-seed differences tiered - base (same seed, same stream): accuracy in points and cost
    in percent, each as mean, sd over seeds and standard error of the mean; wins = seeds where
    tiered's accuracy is at least base's."""
    dacc = np.array([(t["acc"] - b["acc"]) * 100 for t, b in zip(tiered, base, strict=True)])
    dcost = np.array([(t["cost"] / b["cost"] - 1) * 100 for t, b in zip(tiered, base,
                                                                        strict=True)])
    n = len(dacc)
    sd_a = float(dacc.std(ddof=1)) if n > 1 else 0.0
    sd_c = float(dcost.std(ddof=1)) if n > 1 else 0.0
    return {"dacc": float(dacc.mean()), "dacc_sd": sd_a, "dacc_se": sd_a / np.sqrt(n),
            "dcost": float(dcost.mean()), "dcost_sd": sd_c, "dcost_se": sd_c / np.sqrt(n),
            "wins": int((dacc >= 0).sum()), "n": n}


def mean_curve(curves: list[list[tuple[float, float]]], grid: np.ndarray) -> np.ndarray:
    """Accuracy at each cost of `grid` (a step function: the last retrain at or below it),
    averaged over seeds; NaN past a seed's last cost."""
    out = []
    for c in curves:
        costs, accs = np.array([p[0] for p in c]), np.array([p[1] for p in c])
        idx = np.searchsorted(costs, grid, side="right") - 1
        vals = accs[np.clip(idx, 0, None)]
        vals[grid > costs[-1]] = np.nan
        out.append(vals)
    with warnings.catch_warnings():  # a grid cost past every seed's end: NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.array(out), axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", choices=STREAMS,
                    help="a stream to run (repeat for several; default digits)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--annotate-error", type=float, default=0.10)
    ap.add_argument("--review-error", type=float, default=0.01)
    ap.add_argument("--review-catch", type=float, default=0.7)
    ap.add_argument("--expert-error", type=float, default=0.02)
    ap.add_argument("--review-below", type=float, default=TierPolicy().review_below)
    ap.add_argument("--consensus-from", type=float, default=TierPolicy().consensus_from)
    ap.add_argument("--slack", type=float, default=0.5, help="points below the target")
    ap.add_argument("--no-feedback", action="store_true",
                    help="the tiered arm gets no class feedback (as before it was simulated)")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    args = ap.parse_args(argv)
    crowd = Crowd(args.annotate_error, args.review_error, args.review_catch, args.expert_error)
    policy = TierPolicy(review_below=args.review_below, consensus_from=args.consensus_from)
    report = {name: stream(name, args, policy, crowd) for name in args.dataset or ["digits"]}
    print("JSON " + json.dumps(report if len(report) > 1 else next(iter(report.values()))))
    return 0


def stream(name: str, args: argparse.Namespace, policy: TierPolicy, crowd: Crowd
           ) -> dict[str, Any]:
    """Every arm on every seed of one stream; prints its table and the paired differences."""
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    with warnings.catch_warnings():  # LogisticRegression's ConvergenceWarning on small sets
        warnings.simplefilter("ignore")
        for seed in range(args.seeds):
            data = load(seed, name)
            for arm in ARMS:
                runs[arm].append(run_arm(arm, seed, data, policy, crowd, args.window,
                                         not args.no_feedback))
    top = max(r["cost"] for rs in runs.values() for r in rs)
    grid = np.linspace(0.0, top, 400)
    curves = {arm: mean_curve([r["curve"] for r in rs], grid) for arm, rs in runs.items()}
    target = float(np.mean([r["acc"] for r in runs["annotate"]])) - args.slack / 100.0
    print(f"{name}, {args.seeds} seeds, window {args.window}, costs {dict(policy.costs)}, "
          f"bands review < {policy.review_below} <= annotate < {policy.consensus_from} <= "
          f"consensus (review < {policy.wide_review_below} at a calibration ratio <= "
          f"{policy.confident_ratio}; class feedback {'off' if args.no_feedback else 'on'}); "
          f"annotate error {crowd.annotate_error}, review error "
          f"{crowd.review_error} (catch {crowd.review_catch}), expert error {crowd.expert_error}")
    print(f"target accuracy {target:.4f} (annotate's final mean - {args.slack} pt)")
    print(f"{'arm':10} {'labels':>7} {'cost':>8} {'noise':>6} {'acc':>7} {'±sd':>6} "
          f"{'cost/pt':>8} {'cost@target (seeds)':>15}  tiers (escalated)")
    summary: dict[str, Any] = {}
    for arm, rs in runs.items():
        acc = np.array([r["acc"] for r in rs])
        gain = np.array([(r["acc"] - r["acc0"]) * 100 for r in rs])
        cost = np.array([r["cost"] for r in rs])
        reached = [next((c for c, a in r["curve"] if a >= target), None) for r in rs]
        hits = [c for c in reached if c is not None]
        at = float(np.median(hits)) if hits else None
        tiers = {t: int(sum(r["tiers"][t] for r in rs)) for t in rs[0]["tiers"]}
        esc = int(sum(r["escalated"] for r in rs))
        per_pt = float(np.mean(cost / gain))
        summary[arm] = {"labels": float(np.mean([r["labels"] for r in rs])),
                        "cost": float(cost.mean()),
                        "noise": float(np.mean([r["noise"] for r in rs])),
                        "accuracy": float(acc.mean()), "accuracy_sd": float(acc.std()),
                        "cost_per_point": per_pt, "cost_at_target": at,
                        "seeds_at_target": len(hits), "tiers": tiers, "escalated": esc}
        print(f"{arm:10} {summary[arm]['labels']:7.1f} {cost.mean():8.1f} "
              f"{summary[arm]['noise']:6.3f} {acc.mean():7.4f} {acc.std():6.4f} {per_pt:8.2f} "
              f"{'never' if at is None else f'{at:.0f}':>6} ({len(hits)}/{len(rs)})  {tiers} "
              f"({esc})")
    diffs = {arm: paired(runs[arm], runs["annotate"]) for arm in ("consensus", "tiered")}
    for arm, d in diffs.items():
        print(f"paired {arm} - annotate over {d['n']} seeds: accuracy {d['dacc']:+.2f} pt "
              f"(sd {d['dacc_sd']:.2f}, se {d['dacc_se']:.2f}; not lower in {d['wins']}/"
              f"{d['n']}), cost {d['dcost']:+.1f}% (sd {d['dcost_sd']:.1f})")
    _plot(grid, curves, target, args.out / f"tiers-{name}.png", args.seeds, name)
    return {"target": target, "arms": summary, "paired": diffs}


def _plot(grid: np.ndarray, curves: dict[str, np.ndarray], target: float, path: Path,
          seeds: int, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, curve in curves.items():
        ax.plot(grid, curve, label={"annotate": "one tier: annotate",
                                    "consensus": "one tier: consensus + expert",
                                    "tiered": "tiered (review / annotate / consensus)"}[arm])
    ax.axhline(target, color="grey", lw=0.8, ls="--", label="target")
    ax.set_xlabel("cumulative labeling cost (units: review 1, annotate 3, expert 8)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"{name}, simulated annotators, mean of {seeds} seeds")
    ax.set_ylim(max(0.5, float(np.nanmin([np.nanmin(c) for c in curves.values()]))), 1.0)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
