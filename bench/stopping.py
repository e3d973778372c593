"""The stopping signal on the label-efficiency bench (issue 18, item 5): at which label count each
branch fires, and the accuracy left on the table there.

In process, on digits by default (`--dataset`): the selection core (default policy, its
explore lane widened and given to the control arm, budget `--budget` of the stream) picks, an
oracle labels, the model retrains every `--retrain-every` labels. Two branches of the signal
run on the same loop:

- control-arm accuracy (services/core/mastery.py, the label sink's code): each control-arm label
  is applied to a MasteryBook with its 1/pi weight, `at_trigger` at every retraining; fires when
  K versions in a row beat the one before them by less than `min_gain`;
- prediction stability (services/core/stability.py, the scorer's code): a fixed probe set of
  `--probes` stream assets is re-scored by each new version; fires when the share whose class
  changed since the previous version falls below the threshold.

"Left on the table" = held-out accuracy at the end of the budget minus held-out accuracy of the
model serving when the branch fired (what stopping there would have cost).

    nice .venv/bin/python bench/stopping.py [--seeds 3] [--budget 0.6] [--retrain-every 100]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from services.core import PredictionBatch, SelectorPolicy, SelectorState, with_overrides
from services.core.mastery import MasteryBook, MasteryPolicy
from services.core.stability import ProbeBook, StabilityPolicy
from services.evaluation.datasets import load_dataset, make_split
from services.evaluation.harness import FittedModel
from services.evaluation.strategies import EPOCH, MODEL_ID, SimEvent, SimPrediction


@dataclass
class Fired:
    labels: int | None = None  # labels (seed included) of the model serving when it fired
    accuracy: float | None = None


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, object]:
    data = load_dataset(args.dataset)
    split = make_split(data, np.random.default_rng([0, seed]), 0.3, 50)
    X, y, stream = data.X, data.y, split.stream
    X_test, y_test = X[split.test], y[split.test]
    rng = np.random.default_rng([1, seed])
    probes = stream[rng.choice(stream.shape[0], size=args.probes, replace=False)]
    cap = int(args.budget * stream.shape[0])
    # One event per second of event time: 3,600 labels/hour lets the share be the binding limit.
    overrides = {"budget": {"share": args.budget, "exploration_share": args.control_share,
                            "labels_per_hour": 3600.0},
                 "exploration_rate": 0.0}
    state = SelectorState.create(with_overrides(SelectorPolicy(), overrides), seed)
    mpolicy = MasteryPolicy(stop_triggers=args.k, stop_min_gain=args.min_gain,
                            stop_min_labels=args.stop_min_labels)
    spolicy = StabilityPolicy(threshold=args.threshold, min_probes=min(100, args.probes),
                              max_probes=max(args.probes, 100))
    book, probe_book = MasteryBook(), ProbeBook()
    rows = list(split.seed.tolist())
    model = FittedModel(X[rows], y[rows], 5000)
    curve = [(len(rows), model.accuracy(X_test, y_test))]
    version, acquired, pos = 0, 0, 0
    fired = {"control": Fired(), "stability": Fired()}
    scored = np.empty(stream.shape[0], dtype=object)  # stream position -> (version, class)
    shares: list[float] = []

    def probe(model: FittedModel, version: int) -> None:
        predicted = np.array(model.classes)[model.proba(X[probes]).argmax(axis=1)]
        for row, cls in zip(probes.tolist(), predicted.tolist(), strict=True):
            record = probe_book.observe(spolicy, f"asset-{row}", f"v{version}", str(cls))
            if record is not None:
                shares.append(record.share)
                if record.stable(spolicy) and fired["stability"].labels is None:
                    fired["stability"] = Fired(*curve[-1])

    probe(model, version)
    while pos < stream.shape[0] and acquired < cap:
        hi = min(stream.shape[0], pos + 50)
        proba = model.proba(X[stream[pos:hi]])
        events = [SimEvent(f"e{p}", f"asset-{p}", MODEL_ID, f"v{version}", EPOCH + p,
                         (SimPrediction(dict(zip(model.classes, row, strict=True))),))
                  for p, row in zip(range(pos, hi), proba.tolist(), strict=True)]
        for p, row in zip(range(pos, hi), proba, strict=True):
            scored[p] = (f"v{version}", model.classes[int(np.argmax(row))])
        selection = state.select(PredictionBatch.from_events(events, list(range(pos, hi))))
        for s in selection.selected:
            if acquired >= cap:
                break
            p = int(s.ref)
            truth = str(y[stream[p]])
            rows.append(int(stream[p]))
            acquired += 1
            if s.strategy == "random_control" and s.inclusion_probability:
                scored_by, guess = scored[p]  # the version that scored it, its class
                book.apply(mpolicy, f"l{p}", scored_by, 1.0 / s.inclusion_probability,
                           [(truth, guess, guess == truth)], EPOCH + p)
            if acquired % args.retrain_every == 0:
                version += 1
                stopped = book.at_trigger(mpolicy, f"t{version}")
                if stopped and fired["control"].labels is None:
                    fired["control"] = Fired(*curve[-1])
                model = FittedModel(X[rows], y[rows], 5000)
                curve.append((len(rows), model.accuracy(X_test, y_test)))
                probe(model, version)
        pos = hi
    final = curve[-1][1]
    return {"seed": seed, "final": final, "labels": curve[-1][0], "fired": fired,
            "shares": shares, "plateau": [(p.version, p.estimate, p.labels)
                                          for p in book.plateau]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits",
                    help="a bundled data set or PATH.npz (a longer stream gives the control arm "
                         "enough labels per version for its branch to fire)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--retrain-every", type=int, default=100)
    ap.add_argument("--control-share", type=float, default=0.3)
    ap.add_argument("--probes", type=int, default=300)
    ap.add_argument("--threshold", type=float, default=0.01)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--min-gain", type=float, default=0.005)
    ap.add_argument("--stop-min-labels", type=int, default=30)
    args = ap.parse_args()
    print(f"{args.dataset}, budget {args.budget:.0%} of the stream, "
          f"retrain every {args.retrain_every}, "
          f"control arm {args.control_share:.0%} of the budget; control branch K={args.k}, "
          f"min gain {args.min_gain}, >= {args.stop_min_labels} control labels per version; "
          f"stability branch {args.probes} probes, threshold {args.threshold}")
    print(f"{'seed':>4} {'branch':<10} {'fires at labels':>15} {'acc there':>9} "
          f"{'final acc':>9} {'left':>7}")
    for seed in range(args.seeds):
        r = run_seed(seed, args)
        for name, f in r["fired"].items():  # type: ignore[attr-defined]
            at = "never" if f.labels is None else str(f.labels)
            acc = "—" if f.accuracy is None else f"{f.accuracy:.3f}"
            left = "—" if f.accuracy is None else f"{r['final'] - f.accuracy:+.3f}"
            print(f"{seed:>4} {name:<10} {at:>15} {acc:>9} {r['final']:>9.3f} {left:>7}")
        shares = " ".join(f"{s:.3f}" for s in r["shares"])  # type: ignore[attr-defined]
        print(f"     changed share per version: {shares}")
        plateau = ", ".join(f"{v} {e:.3f}/{n}" for v, e, n in r["plateau"]  # type: ignore[attr-defined]
                            if e is not None)
        print(f"     control estimates (last K+1): {plateau}; {r['labels']} labels at the end")


if __name__ == "__main__":
    main()
