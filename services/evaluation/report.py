"""Aggregate seed runs into results.json, a table and a PNG plot.

Curve aggregation: each seed's curve is a step function (accuracy of the latest model trained on
<= L labels, L counting the seed labels). The mean curve is taken at every label count of any
seed's curve that EVERY seed reached (so each point averages all seeds), then the mean final
accuracy is appended at the mean final label count (so the curve ends at `final_accuracy.mean`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.evaluation.harness import SeedRun

ROUND = 6


def _r(x: float | np.floating) -> float:
    return round(float(x), ROUND)


def _step(curve: Sequence[tuple[int, float]], labels: int) -> float:
    """Accuracy of the latest training with <= `labels` labels."""
    acc = curve[0][1]
    for n, a in curve:
        if n > labels:
            break
        acc = a
    return acc


def mean_curve(runs: Sequence[SeedRun]) -> tuple[list[int], list[float], list[float]]:
    """(labels, mean accuracy, std) — see the module docstring."""
    reach = min(r.curve[-1][0] for r in runs)
    grid = sorted({n for r in runs for n, _ in r.curve if n <= reach})
    means, stds = [], []
    for n in grid:
        accs = np.array([_step(r.curve, n) for r in runs])
        means.append(float(accs.mean()))
        stds.append(float(accs.std()))
    final = np.array([r.final_accuracy for r in runs])
    end = int(round(float(np.mean([r.curve[-1][0] for r in runs]))))
    if grid and grid[-1] == end:
        grid, means, stds = grid[:-1], means[:-1], stds[:-1]
    grid.append(end)
    means.append(float(final.mean()))
    stds.append(float(final.std()))
    return grid, means, stds


def first_reaching(labels: Sequence[int], means: Sequence[float], target: float) -> int | None:
    """First label count whose mean accuracy reaches `target` (1e-9 slack), or None."""
    for n, m in zip(labels, means, strict=True):
        if m >= target - 1e-9:
            return n
    return None


def summarize(runs: Sequence[SeedRun], settings: dict[str, Any]) -> dict[str, Any]:
    """The results.json document (JSON-able, deterministic for equal runs)."""
    names = list(dict.fromkeys(r.strategy for r in runs))
    by = {name: sorted((r for r in runs if r.strategy == name), key=lambda r: r.seed)
          for name in names}
    random_final = None
    if "random" in by:
        random_final = float(np.mean([r.final_accuracy for r in by["random"]]))
    out: dict[str, Any] = {}
    for name, rs in by.items():
        final = np.array([r.final_accuracy for r in rs])
        grid, means, stds = mean_curve(rs)
        entry: dict[str, Any] = {
            "final_accuracy": {"mean": _r(final.mean()), "std": _r(final.std()),
                               "per_seed": [_r(a) for a in final]},
            "labels_used": _r(np.mean([r.labels_used for r in rs])),
            "labels_used_per_seed": [r.labels_used for r in rs],
            "paired_wins_vs_random": None,
            "paired_gain_vs_random": None,
            "labels_to_match_random": None,
            "curve": {str(n): _r(m) for n, m in zip(grid, means, strict=True)},
            "curve_std": {str(n): _r(s) for n, s in zip(grid, stds, strict=True)},
        }
        if random_final is not None:
            rand = {r.seed: r.final_accuracy for r in by["random"]}
            paired = [r.final_accuracy - rand[r.seed] for r in rs if r.seed in rand]
            if name != "random":
                entry["paired_wins_vs_random"] = int(sum(d > 0 for d in paired))
                entry["paired_gain_vs_random"] = _r(np.mean(paired)) if paired else None
            entry["labels_to_match_random"] = first_reaching(grid, means, random_final)
        diag = _diagnostics(rs)
        if diag:
            entry["diagnostics"] = diag
        if any(r.control for r in rs):
            # Per seed, never averaged: each point is one model version's estimate with its
            # own interval, and versions of different seeds are different models.
            entry["control_estimate_per_seed"] = [
                [{k: _r(v) if isinstance(v, float) else v for k, v in c.items()}
                 for c in r.control] for r in rs]
        out[name] = entry
    return {"format": "active-stream/label-efficiency", "version": 1, "mode": "inprocess",
            "settings": settings, "strategies": out}


def _diagnostics(rs: Sequence[SeedRun]) -> dict[str, Any]:
    """Mean per seed of the strategy's numeric diagnostics (nested dicts averaged key-wise)."""
    if not any(r.diagnostics for r in rs):
        return {}

    def mean_of(values: list[Any]) -> Any:
        if all(isinstance(v, dict) for v in values):
            keys = sorted({k for v in values for k in v})
            return {k: mean_of([v.get(k, 0) for v in values]) for k in keys}
        return _r(np.mean(values))

    return mean_of([r.diagnostics for r in rs])


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")  # insertion order: deterministic


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Header + one row per strategy, as strings."""
    rows = [["strategy", "final accuracy", "labels used", "paired vs random",
             "labels to reach random's final"]]
    seed_labels = results["settings"]["seed_labels"]
    n_seeds = results["settings"]["seeds"]
    for name, e in results["strategies"].items():
        fa = e["final_accuracy"]
        if e["paired_gain_vs_random"] is None:
            paired = "—"
        else:
            paired = (f"{100 * e['paired_gain_vs_random']:+.1f} pt, "
                      f"{e['paired_wins_vs_random']}/{n_seeds} wins")
        match = e["labels_to_match_random"]
        rows.append([name, f"{fa['mean']:.3f} ± {fa['std']:.3f}",
                     f"{seed_labels} + {e['labels_used']:.1f}", paired,
                     "never" if match is None else str(match)])
    return rows


def print_table(results: dict[str, Any], title: str) -> None:
    """Rich table when rich is installed, else aligned plain text."""
    rows = table_rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        print(title)
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        return
    table = Table(title=title)
    for i, head in enumerate(rows[0]):
        table.add_column(head, justify="left" if i == 0 else "right")
    for row in rows[1:]:
        table.add_row(*row)
    console = Console()
    console.width = max(console.width, 110)  # not a terminal: rich assumes 80 columns
    console.print(table)


def markdown_table(results: dict[str, Any]) -> str:
    rows = table_rows(results)
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    """Mean test accuracy vs labels (seed + acquired), ± 1 std band, one line per strategy.
    With control-arm estimates (--mode kafka), a second panel sets each model version's
    estimate, with its interval, beside that version's held-out accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    control = {n: e["control_estimate_per_seed"] for n, e in results["strategies"].items()
               if e.get("control_estimate_per_seed")}
    if control:
        fig, (ax, bottom) = plt.subplots(2, 1, figsize=(7.5, 7.6), dpi=120, sharex=True,
                                         height_ratios=(3, 2))
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    colors = {}
    for name, e in results["strategies"].items():
        keys = sorted(e["curve"], key=int)
        xs = [int(k) for k in keys]
        m = np.array([e["curve"][k] for k in keys])
        s = np.array([e["curve_std"][k] for k in keys])
        lw = 2.4 if name == "active-stream" else 1.4
        style = "--" if name == "random" else "-"
        (line,) = ax.plot(xs, m, style, lw=lw, label=f"{name} ({m[-1]:.3f})")
        ax.fill_between(xs, m - s, m + s, color=line.get_color(), alpha=0.12, lw=0)
        colors[name] = line.get_color()
    st = results["settings"]
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    last = ax
    if control:
        for name, seeds in control.items():
            e = results["strategies"][name]
            keys = sorted(e["curve"], key=int)
            bottom.step([int(k) for k in keys], [e["curve"][k] for k in keys], where="post",
                        color=colors[name], lw=1.6, label=f"{name}: held-out accuracy")
            _plot_control(bottom, name, seeds, colors[name])
        bottom.set_ylim(0.0, 1.03)
        bottom.set_ylabel("accuracy of each model version")
        bottom.set_title("stream accuracy estimated from the random control arm's labels "
                         f"({_confidence(results):g}% interval), beside held-out", fontsize=9)
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=7.5, loc="lower right")
        last = bottom
    last.set_xlabel(f"labels (the {st['seed_labels']} seed labels + acquired)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _confidence(results: dict[str, Any]) -> float:
    """The intervals' confidence in percent: the label sink's default (the demo keeps it)."""
    return float(results["settings"].get("control_confidence", 0.95)) * 100


def _plot_control(ax: Any, name: str, seeds: list[list[dict[str, Any]]], color: Any) -> None:
    """Each model version's control-arm accuracy estimate (its stream accuracy, from the random
    control arm's labels) with its interval, at the label count the version was trained on:
    beside the held-out accuracy of the same model."""
    first = True
    for points in seeds:
        if not points:
            continue
        xs = [p["labels"] for p in points]
        est = np.array([p["estimate"] for p in points])
        err = np.array([est - [p["low"] for p in points], [p["high"] for p in points] - est])
        n = sum(p["control_labels"] for p in points)
        label = (f"{name}: control-arm estimate and interval ({n} control labels, "
                 f"{len(points)} versions)") if first else None
        ax.errorbar(xs, est, yerr=np.clip(err, 0.0, None), fmt="o", ms=4, color=color,
                    ecolor=color, elinewidth=1.0, capsize=3, alpha=0.8, label=label)
        first = False


def text_chart(results: dict[str, Any], names: Sequence[str] = ("active-stream", "random"),
               width: int = 64, height: int = 14) -> str:
    """The plot's mean curves of `names` as a terminal chart (step functions, one mark per
    strategy: `#`, `o`, then `+`; where two meet, the first listed shows)."""
    entries = [(n, results["strategies"][n]) for n in names if n in results["strategies"]]
    curves = [([int(k) for k in sorted(e["curve"], key=int)],
               [e["curve"][k] for k in sorted(e["curve"], key=int)]) for _, e in entries]
    if not curves:
        return ""
    x0, x1 = min(c[0][0] for c in curves), max(c[0][-1] for c in curves)
    y0, y1 = min(min(c[1]) for c in curves), max(max(c[1]) for c in curves)
    if x1 == x0 or y1 == y0:
        x1, y1 = x1 + 1, y1 + 1e-9
    grid = [[" "] * width for _ in range(height)]
    for mark, (xs, ys) in reversed(list(zip("#o+", curves, strict=False))):
        for col in range(width):
            x = x0 + (x1 - x0) * col / (width - 1)
            if x > xs[-1]:
                break
            y = _step(list(zip(xs, ys, strict=True)), int(x))
            row = round((y1 - y) / (y1 - y0) * (height - 1))
            grid[row][col] = mark
    lines = [f"{y1 - (y1 - y0) * r / (height - 1):6.3f} |" + "".join(g)
             for r, g in enumerate(grid)]
    lines.append(" " * 7 + "+" + "-" * width)
    lines.append(" " * 8 + f"{x0:<{width // 2}}{x1:>{width - width // 2}}")
    lines.append(" " * 8 + "labels (seed + acquired)   " + "   ".join(
        f"{m} {n}" for m, (n, _) in zip("#o+", entries, strict=False)))
    return "\n".join(lines)


def is_finite_results(results: dict[str, Any]) -> bool:
    """True when no NaN/inf slipped into the numbers (results.json must be strict JSON)."""
    def ok(v: Any) -> bool:
        if isinstance(v, float):
            return math.isfinite(v)
        if isinstance(v, dict):
            return all(ok(x) for x in v.values())
        if isinstance(v, list):
            return all(ok(x) for x in v)
        return True
    return ok(results)
