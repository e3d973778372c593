"""Compare selector policies on several data sets, each under several selector seeds.

At 10 data seeds a set's gain moves by up to ~1 pt with the selector's own seed alone
(docs/label-efficiency.md, "How much a difference means"), so a policy is judged here by its mean
over `--selector-seeds` runs: the same policy under the names `active-stream:NAME#0`, `#1`, ...
(the harness derives a strategy's seed from its name), each paired with random on the same data
seeds. Prints, per set and policy: the mean gain against random (points), its range over the
selector seeds, the wins out of the data seeds of each selector seed, and the labels at which
the mean curve over all selector seeds first reaches random's final accuracy (then the same for
each selector seed's mean curve alone).

    nice -n 15 .venv/bin/python bench/policy_search.py --sets vowel,marketing \
        --policies '{"default": {}, "margin": {"measure": "margin"}}' --selector-seeds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from services.evaluation import report
from services.evaluation.cli import policy_from_json
from services.evaluation.datasets import load_dataset
from services.evaluation.harness import Settings, run_benchmark


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", required=True, help="comma-separated data sets")
    ap.add_argument("--policies", required=True,
                    help="JSON object NAME -> policy overrides, or @FILE")
    ap.add_argument("--selector-seeds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    args = ap.parse_args(argv)
    text = args.policies
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    specs: dict[str, Any] = json.loads(text)
    # each policy as --policy-json gives it: the budget share set to the cap (10%) first
    policies = {name: policy_from_json(json.dumps(o), 0.10)[0] for name, o in specs.items()}
    variants = {f"{name}#{s}": pol for name, pol in policies.items()
                for s in range(args.selector_seeds)}
    summary: dict[str, Any] = {}
    for set_name in args.sets.split(","):
        data = load_dataset(set_name)
        settings = Settings(dataset=set_name, seeds=args.seeds,
                            strategies=("random", *(f"active-stream:{v}" for v in variants)))
        t0 = time.perf_counter()
        runs = run_benchmark(data, settings, variants=variants)
        doc = report.summarize(runs, {"seeds": args.seeds})
        rand = doc["strategies"]["random"]
        random_final = rand["final_accuracy"]["mean"]
        rows = {}
        for name in policies:
            mine = [r for r in runs if r.strategy.startswith(f"active-stream:{name}#")]
            gains = [doc["strategies"][f"active-stream:{name}#{s}"]["paired_gain_vs_random"]
                     for s in range(args.selector_seeds)]
            wins = [doc["strategies"][f"active-stream:{name}#{s}"]["paired_wins_vs_random"]
                    for s in range(args.selector_seeds)]
            grid, means, _ = report.mean_curve(mine)
            reach = report.first_reaching(grid, means, random_final)
            each = [report.first_reaching(*report.mean_curve(
                [r for r in mine if r.strategy.endswith(f"#{s}")])[:2], random_final)
                for s in range(args.selector_seeds)]
            rows[name] = {"gain": float(np.mean(gains)), "gains": gains, "wins": wins,
                          "labels_to_random": reach, "labels_to_random_each": each}
        summary[set_name] = {"random_reaches": rand["labels_to_match_random"],
                             "random_final": random_final, "policies": rows,
                             "seconds": round(time.perf_counter() - t0, 1)}
        print(f"\n{set_name}: random final {random_final:.4f}, reached at "
              f"{rand['labels_to_match_random']} ({summary[set_name]['seconds']} s)")
        for name, r in rows.items():
            g = r["gains"]
            print(f"  {name:<28} {100 * r['gain']:+5.2f} pt  [{100 * min(g):+.1f}, "
                  f"{100 * max(g):+.1f}]  wins {r['wins']}  reaches {r['labels_to_random']} "
                  f"(each: {r['labels_to_random_each']})")
        sys.stdout.flush()
        if args.out is not None:
            args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
