"""`bench label-efficiency --suite NAME`: the benchmark over a named group of data sets.

Each data set runs exactly as a single `--dataset` run would (same protocol, paired seeds, its own
`results.json` and PNG in OUT/<set name>/); the suite then prints one table over all of them -- per
set, each strategy's paired gain against random, its wins, and the labels it needed to reach
random's final accuracy -- and writes it as OUT/suite.json and OUT/suite.md, and the gains as
one chart, OUT/suite.png.

Which peers run: every installed one, except scikit-activeml's probabilistic active learning
(PAL) where its cost does not allow (`pal_affordable`): each of its queries fits a Parzen window
on every label so far, so its time grows with stream x labels x classes (12.7 s a seed on
digits, ~50 min a seed estimated on the 30-class stream of 20,000 events).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.core import SelectorPolicy
from services.evaluation import report
from services.evaluation.datasets import SUITES, Dataset, load_dataset
from services.evaluation.harness import Settings, run_benchmark

PAL = "skactiveml-pal"
PAL_MAX_WORK = 5e6
"""stream events x mean labelled rows x classes above which PAL is skipped (digits: 1.3e6,
about 13 s a seed on this machine; the 30-class stream: 3e8)."""


def pal_work(data: Dataset, settings: Settings) -> float:
    """PAL's cost estimate for one seed of `data` (see PAL_MAX_WORK)."""
    n = data.y.shape[0]
    stream = n - math.ceil(settings.test_share * n) - settings.seed_labels
    labels = settings.seed_labels + settings.budget * stream / 2
    return stream * labels * len(data.classes)


def pal_affordable(data: Dataset, settings: Settings) -> bool:
    return pal_work(data, settings) <= PAL_MAX_WORK


def strategies_for(data: Dataset, settings: Settings, peers: Sequence[str],
                   variants: Sequence[str]) -> tuple[str, ...]:
    """active-stream, random, the variants (`active-stream:NAME`), then the peers that run on
    this set (PAL only where affordable)."""
    run = [p for p in peers if p != PAL or pal_affordable(data, settings)]
    return ("active-stream", "random", *(f"active-stream:{v}" for v in variants), *run)


def run_suite(name: str, base: Settings, policy: SelectorPolicy, peers: Sequence[str],
              variants: Mapping[str, SelectorPolicy], out: Path, settings_doc: Callable[
                  [Settings, Dataset], dict[str, Any]], say: Callable[[str], None]
              ) -> dict[str, Any]:
    """Run every set of suite `name`; write each set's results and PNG, then the suite table.
    Returns the suite document (also written to OUT/suite.json)."""
    sets = SUITES[name]
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for k, set_name in enumerate(sets):
        data = load_dataset(set_name)
        settings = replace(base, dataset=set_name,
                           strategies=strategies_for(data, base, peers, list(variants)))
        say(f"[{k + 1}/{len(sets)}] {set_name}: {data.X.shape[0]} x {data.X.shape[1]}, "
            f"{len(data.classes)} classes; strategies: {', '.join(settings.strategies)}")
        t0 = time.perf_counter()

        def progress(line: str, set_name: str = set_name, t0: float = t0) -> None:
            say(f"  {set_name} {line}  [{time.perf_counter() - t0:.0f}s on this set, "
                f"{time.perf_counter() - started:.0f}s in all]")

        runs = run_benchmark(data, settings, policy, progress=progress, variants=variants)
        doc = report.summarize(runs, settings_doc(settings, data))
        doc["seconds"] = round(time.perf_counter() - t0, 1)
        where = out / data.name  # a path's stem for an .npz set
        where.mkdir(parents=True, exist_ok=True)
        report.write_json(doc, where / "results.json")
        report.plot(doc, where / "label-efficiency.png", title(doc))
        results[data.name] = doc
    suite = {"format": "active-stream/label-efficiency-suite", "version": 1, "suite": name,
             "seconds": round(time.perf_counter() - started, 1), "sets": results}
    (out / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
    (out / "suite.md").write_text(markdown(suite) + "\n")
    plot_gains(suite, out / "suite.png")
    return suite


def plot_gains(suite: dict[str, Any], path: Path) -> None:
    """One horizontal bar per set and strategy: its paired gain against random (points), its
    wins in the label; random itself and strategies a set did not run are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(suite["sets"])
    names = list(dict.fromkeys(n for doc in suite["sets"].values() for n in doc["strategies"]
                               if n != "random"))
    height = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.32 * len(sets) * len(names)), dpi=110)
    for j, name in enumerate(names):
        ys, gains, notes = [], [], []
        for i, set_name in enumerate(sets):
            doc = suite["sets"][set_name]
            e = doc["strategies"].get(name)
            if e is None or e["paired_gain_vs_random"] is None:
                continue
            ys.append(i + j * height)
            gains.append(100 * e["paired_gain_vs_random"])
            notes.append(f"{e['paired_wins_vs_random']}/{doc['settings']['seeds']}")
        ax.barh(ys, gains, height=height * 0.9, label=name)
        for y, g, note in zip(ys, gains, notes, strict=True):
            ax.text(g, y, f" {note} ", va="center", ha="left" if g >= 0 else "right",
                    fontsize=6)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(sets))], sets)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("final accuracy minus random's, points (paired seeds; label: wins)")
    ax.set_title(f"suite {suite['suite']}: gain against random", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def title(doc: dict[str, Any]) -> str:
    st = doc["settings"]
    n = st["seeds"]
    return (f"{st['dataset_name']}: {n} seed{'s' if n > 1 else ''}, {st['seed_labels']} seed "
            f"labels, cap {st['budget']:.0%} of the stream ({st['label_cap']}), retrain every "
            f"{st['retrain_every']}")


def table_rows(suite: dict[str, Any]) -> list[list[str]]:
    """Header + per set one row per strategy: final accuracy, paired gain vs random and wins,
    labels (seed labels included) to reach random's final accuracy."""
    rows = [["set (stream, cap, classes)", "strategy", "final accuracy", "vs random",
             "labels to reach random's final"]]
    for set_name, doc in suite["sets"].items():
        st = doc["settings"]
        where = f"{set_name} ({st['stream_length']}, {st['label_cap']}, {st['n_classes']})"
        for k, (name, e) in enumerate(doc["strategies"].items()):
            gain = e["paired_gain_vs_random"]
            vs = "—" if gain is None else \
                f"{100 * gain:+.1f} pt, {e['paired_wins_vs_random']}/{st['seeds']}"
            reach = e["labels_to_match_random"]
            fa = e["final_accuracy"]
            rows.append([where if k == 0 else "", name, f"{fa['mean']:.3f} ± {fa['std']:.3f}",
                         vs, "never" if reach is None else str(reach)])
    return rows


def markdown(suite: dict[str, Any]) -> str:
    rows = table_rows(suite)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def print_table(suite: dict[str, Any]) -> None:
    """Plain aligned text (the table is wide; rich would wrap its cells)."""
    rows = table_rows(suite)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"suite {suite['suite']} ({suite['seconds']:.0f}s)")
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), flush=True)
