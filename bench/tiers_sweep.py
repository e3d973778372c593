"""Which default tier bands pay: a sweep of (review_below, consensus_from) against one tier.

    OMP_NUM_THREADS=1 .venv/bin/python bench/tiers_sweep.py --dataset digits --dataset segments \
        [--seeds 20] [--review-below 0.6,0.7,0.8] [--consensus-from 0.9,1.0]

For each stream and seed, bench/tiers.py's `annotate` arm (every request one full annotation)
runs once, and its `tiered` arm once per pair of bands, on the same stream, the same picks'
rule and the same simulated annotators (bench/tiers.py's flags). Printed per stream and pair:
the per-seed paired differences tiered - annotate, accuracy in points and cost in percent, as
mean, sd over seeds and standard error, and the seeds where tiered's accuracy was not lower;
then the same pooled over the streams (each stream's seeds weighted alike). "Same accuracy" is
for the reader to judge from the spread: a band pair whose mean accuracy difference is within
about two standard errors of 0 on every stream. Last line `JSON {...}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.tiers import STREAMS, Crowd, load, paired, run_arm  # noqa: E402
from services.core.tiers import TierPolicy  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def sweep(name: str, seeds: range, policies: dict[str, TierPolicy], crowd: Crowd,
          window: int, use_feedback: bool = True, progress: Any = None
          ) -> dict[str, dict[str, Any]]:
    """Per policy: the paired differences against `annotate` and the tiered arm's mix."""
    base: list[dict[str, Any]] = []
    tiered: dict[str, list[dict[str, Any]]] = {b: [] for b in policies}
    for seed in seeds:
        data = load(seed, name)
        base.append(run_arm("annotate", seed, data, TierPolicy(), crowd, window))
        for label, policy in policies.items():
            tiered[label].append(run_arm("tiered", seed, data, policy, crowd, window,
                                         use_feedback))
        if progress is not None:
            progress(f"{name} seed {seed} done")
    out = {}
    for band, rs in tiered.items():
        mix = {t: int(sum(r["tiers"][t] for r in rs)) for t in rs[0]["tiers"]}
        out[band] = {**paired(rs, base), "mix": mix,
                     "banded": int(sum(r["banded"] for r in rs)),
                     "acc": float(np.mean([r["acc"] for r in rs])),
                     "base_acc": float(np.mean([r["acc"] for r in base])),
                     "dacc_seeds": [(t["acc"] - b["acc"]) * 100 for t, b in zip(rs, base,
                                                                                 strict=True)],
                     "dcost_seeds": [(t["cost"] / b["cost"] - 1) * 100
                                     for t, b in zip(rs, base, strict=True)]}
    return out


def _variant(text: str) -> dict[str, Any]:
    """`key=value,key=value` of TierPolicy fields as keyword arguments (numbers; `none`)."""
    out: dict[str, Any] = {}
    for item in (t for t in text.split(",") if t.strip()):
        key, value = (v.strip() for v in item.split("=", 1))
        if value.lower() == "none":
            out[key] = None
        else:
            number = float(value)
            out[key] = int(number) if key.endswith("_labels") else number
    return out


def _row(label: str, r: dict[str, Any]) -> str:
    mix = r.get("mix")
    share = "" if mix is None else " ".join(
        f"{t[0]}{100 * v / max(sum(mix.values()), 1):.0f}%" for t, v in mix.items())
    if mix is not None:
        share += f" banded{100 * r['banded'] / max(sum(mix.values()), 1):.0f}%"
    return (f"{r['dacc']:+7.2f} {r['dacc_sd']:5.2f} {r['dacc_se']:5.2f} "
            f"{r['dcost']:+7.1f} {r['dcost_sd']:5.1f} {r['wins']:3d}/{r['n']:<3d} {share}  "
            f"{label}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", choices=STREAMS)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds first..first+seeds-1 (fresh seeds confirm a pick made on others)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--review-below", default="0.5,0.6,0.65,0.7,0.75,0.8,0.85")
    ap.add_argument("--consensus-from", default="0.9,0.95,1.0")
    ap.add_argument("--policy", action="append",
                    help="more TierPolicy fields, `key=value,...` (repeat for several variants, "
                         "each crossed with the bands; default: none)")
    ap.add_argument("--no-feedback", action="store_true",
                    help="the tiered arm gets no class feedback (as before it was simulated)")
    ap.add_argument("--log", type=Path, help="append progress lines to this file")
    ap.add_argument("--annotate-error", type=float, default=0.10)
    ap.add_argument("--review-error", type=float, default=0.01)
    ap.add_argument("--review-catch", type=float, default=0.7)
    ap.add_argument("--expert-error", type=float, default=0.02)
    args = ap.parse_args(argv)
    names = args.dataset or ["digits", "segments"]
    crowd = Crowd(args.annotate_error, args.review_error, args.review_catch, args.expert_error)
    bands = [(rb, cf) for cf in _floats(args.consensus_from) for rb in _floats(args.review_below)
             if rb <= cf]
    policies = {}
    for rb, cf in bands:
        for extra in args.policy or [""]:
            label = f"{rb:.2f}|{cf:.2f}" + (f" {extra}" if extra else "")
            policies[label] = TierPolicy(review_below=rb, consensus_from=cf, **_variant(extra))

    def progress(line: str) -> None:
        if args.log is not None:
            with args.log.open("a") as f:
                f.write(line + "\n")

    print(f"seeds {args.first_seed}..{args.first_seed + args.seeds - 1}, window {args.window}; "
          f"annotate error {crowd.annotate_error}, review error {crowd.review_error} "
          f"(catch {crowd.review_catch}), expert error {crowd.expert_error}; class feedback "
          f"{'off' if args.no_feedback else 'on'}; paired tiered - annotate: dacc in points, "
          "dcost in percent; banded = picks whose review band was not review_below")
    head = (f"{'dacc':>7} {'sd':>5} {'se':>5} {'dcost':>7} {'sd':>5} "
            f"{'wins':>7} mix (review/annotate/consensus)  review<|cons>= [policy]")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with warnings.catch_warnings():  # LogisticRegression's ConvergenceWarning on tiny sets
        warnings.simplefilter("ignore")
        for name in names:
            seeds = range(args.first_seed, args.first_seed + args.seeds)
            results[name] = sweep(name, seeds, policies, crowd, args.window,
                                  not args.no_feedback, progress)
            print(f"\n{name} (annotate's mean accuracy "
                  f"{next(iter(results[name].values()))['base_acc']:.4f})")
            print(head)
            for label, r in results[name].items():
                print(_row(label, r))
            progress("\n".join(_row(f"{name} {label}", r) for label, r in results[name].items()))
    if len(names) > 1:
        print(f"\npooled over {', '.join(names)} (stream-mean of each stream's mean; se "
              "combined as sqrt(sum se^2)/streams)")
        print(head)
        for label in policies:
            rs = [results[n][label] for n in names]
            pooled = {"dacc": float(np.mean([r["dacc"] for r in rs])),
                      "dacc_sd": float(np.mean([r["dacc_sd"] for r in rs])),
                      "dacc_se": float(np.sqrt(sum(r["dacc_se"] ** 2 for r in rs)) / len(rs)),
                      "dcost": float(np.mean([r["dcost"] for r in rs])),
                      "dcost_sd": float(np.mean([r["dcost_sd"] for r in rs])),
                      "wins": sum(r["wins"] for r in rs), "n": sum(r["n"] for r in rs)}
            print(_row(label, pooled))
    print("JSON " + json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
