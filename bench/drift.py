"""Drift detection (services/core/drift.py): detection delay on synthetic shifts, and false
alarms on a stationary stream of 1M events, for the KS test at several alphas and for PSI at
its customary thresholds (0.1 "moderate", 0.25 "significant") on the same windows.

The stream runs through the code the selector runs at its refresh points: the rolling stats
(stats.py, default policy: 1,000 bins, 12 buckets of 5 min) folded every 500 events, then the
drift check on each closed bucket. Ten classes with shares ~ 1/(k+1) (the rarest class sees
~7x fewer confidences than the commonest), confidences ~ Beta(8, 2).

    .venv/bin/python bench/drift.py [--events 1000000] [--rate 20] [--seeds 5]
    .venv/bin/python bench/drift.py --stationary-only --events 20000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from services.core.drift import DriftPolicy, DriftState, ks_distance, psi, windows
from services.core.stats import ConfidenceStatsPolicy, ConfidenceStatsState

CLASSES = 10
REFRESH = 500  # the selector's default refresh_every
T0 = 1_700_000_000.0
SHIFTS = {  # name -> Beta parameters of the shifted class after the shift (before: (8, 2))
    "small (mean 0.80 -> 0.78)": (7.0, 2.0),
    "medium (mean 0.80 -> 0.71)": (6.0, 2.5),
    "large (mean 0.80 -> 0.63)": (5.0, 3.0),
}
ALPHAS = (1e-2, 1e-3, 1e-4)
PSI_LEVELS = (0.1, 0.25)


def stream(rng: np.random.Generator, n: int, shifted: tuple[float, float] | None = None,
           shift_at: int = 0, target: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classes and confidences of n events; class `target`'s confidences follow `shifted`
    from event `shift_at` on."""
    share = 1.0 / np.arange(1, CLASSES + 1)
    cls = rng.choice(CLASSES, n, p=share / share.sum()).astype(np.int64)
    conf = rng.beta(8.0, 2.0, n)
    if shifted is not None:
        moved = (np.arange(n) >= shift_at) & (cls == target)
        conf[moved] = rng.beta(*shifted, int(moved.sum()))
    return cls, conf


def tests(cls: np.ndarray, conf: np.ndarray, rate: float, min_count: int):  # type: ignore[no-untyped-def]
    """Yield (watermark, tested mask, KS distance, n_ref, n_rec, PSI) at each bucket close."""
    stats = ConfidenceStatsState(ConfidenceStatsPolicy())
    checked = -1
    times = T0 + np.arange(cls.shape[0]) / rate
    for lo in range(0, cls.shape[0], REFRESH):
        hi = min(lo + REFRESH, cls.shape[0])
        wm = float(times[hi - 1])
        stats.update(cls[lo:hi], conf[lo:hi], times[lo:hi], wm)
        if stats.current <= checked:
            continue
        checked = stats.current
        ref, rec = windows(stats, 1)
        n, m = ref.sum(axis=1), rec.sum(axis=1)
        tested = (n >= min_count) & (m >= min_count)
        yield wm, tested, ks_distance(ref, rec), n, m, psi(ref, rec)


def false_alarms(events: int, rate: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cls, conf = stream(rng, events)
    pol = DriftPolicy()
    n_tests = 0
    ks_hits = dict.fromkeys(ALPHAS, 0)
    psi_hits = dict.fromkeys(PSI_LEVELS, 0)
    small_psi = 0  # PSI alarms (0.1) in the smaller half of the windows
    sizes: list[int] = []
    started = time.perf_counter()
    for _, tested, d, n, m, p in tests(cls, conf, rate, pol.min_count):
        n_tests += int(tested.sum())
        sizes += m[tested].tolist()
        for a in ALPHAS:
            ks_hits[a] += int((tested & (d > DriftPolicy(alpha=a).critical(n, m))).sum())
        for level in PSI_LEVELS:
            psi_hits[level] += int((tested & (p > level)).sum())
        small_psi += int((tested & (p > 0.1) & (m < 600)).sum())
    seconds = time.perf_counter() - started
    print(f"\nstationary stream: {events:,} events, {rate:g}/s of event time "
          f"({events / rate / 3600:.1f} h), {CLASSES} classes, seed {seed}")
    print(f"  class tests run: {n_tests:,} (recent-window sizes {min(sizes)}-{max(sizes)}, "
          f"median {int(np.median(sizes))}); stats + tests took {seconds:.1f} s")
    for a in ALPHAS:
        print(f"  KS alpha={a:g}: {ks_hits[a]} false alarms = {ks_hits[a] / n_tests:.2e} per "
              f"test (expected <= {a:g}), {ks_hits[a] / events * 1e6:.1f} per 1M events")
    for level in PSI_LEVELS:
        print(f"  PSI > {level:g}: {psi_hits[level]} false alarms = "
              f"{psi_hits[level] / n_tests:.2e} per test, "
              f"{psi_hits[level] / events * 1e6:.1f} per 1M events")
    print(f"  (PSI > 0.1 alarms on recent windows under 600 confidences: {small_psi})")


def delays(rate: float, seeds: int) -> None:
    pol = DriftPolicy()
    shift_at = int(2 * 3600 * rate)  # after 2 h: the ring is full
    n = shift_at + int(2 * 3600 * rate)
    print(f"\ndetection delay: shift of one class at event {shift_at:,} (2 h at {rate:g}/s), "
          f"{seeds} seeds per row; delay in event seconds (bucket = 300 s) and in confidences "
          f"of the shifted class since the shift; '-' = not detected within 2 h")
    for target, label in ((0, "commonest class (34% of events)"),
                          (CLASSES - 1, "rarest class (3.4% of events)")):
        for name, beta in SHIFTS.items():
            ks_d, psi_d, ks_n = [], [], []
            for seed in range(seeds):
                rng = np.random.default_rng(100 + seed)
                cls, conf = stream(rng, n, beta, shift_at, target)
                t_shift = T0 + shift_at / rate
                ks_t = psi_t = None
                for wm, tested, d, nr, m, p in tests(cls, conf, rate, pol.min_count):
                    if wm < t_shift or not tested[target]:
                        continue
                    if ks_t is None and d[target] > pol.critical(nr, m)[target]:
                        ks_t = wm
                    if psi_t is None and p[target] > 0.25:
                        psi_t = wm
                if ks_t is not None:
                    ks_d.append(ks_t - t_shift)
                    times = T0 + np.arange(n) / rate
                    ks_n.append(int(((times >= t_shift) & (times <= ks_t) &
                                     (cls == target)).sum()))
                if psi_t is not None:
                    psi_d.append(psi_t - t_shift)
            print(f"  {label:32s} {name:28s} KS(alpha=1e-4): "
                  f"{_fmt(ks_d, seeds)} s, {_fmt(ks_n, seeds)} conf.;  "
                  f"PSI>0.25: {_fmt(psi_d, seeds)} s")


def _fmt(values: list[float] | list[int], seeds: int) -> str:
    if not values:
        return "-"
    med = float(np.median(values))
    miss = f" ({seeds - len(values)} missed)" if len(values) < seeds else ""
    return f"median {med:.0f} / max {max(values):.0f}{miss}"


def check_cost() -> None:
    for classes in (10, 1000):
        stats = ConfidenceStatsState(ConfidenceStatsPolicy(), classes)
        rng = np.random.default_rng(0)
        for b in range(12):
            c = rng.integers(0, classes, 20_000)
            t = np.full(20_000, T0 + b * 300.0)
            stats.update(c, rng.beta(8, 2, 20_000), t, float(t[0]))
        state, pol = DriftState(), DriftPolicy()
        started = time.perf_counter()
        reps = 20
        for _ in range(reps):
            state.checked = -1
            state.check(pol, stats, T0 + 11 * 300.0)
        ms = (time.perf_counter() - started) / reps * 1e3
        print(f"  one drift check (once per closed 5-min bucket), {classes} classes: {ms:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=20.0, help="events per second of event time")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--stationary-only", action="store_true",
                    help="only the false-alarm run (e.g. --events 20000000 to resolve 1e-4)")
    args = ap.parse_args()
    if not args.stationary_only:
        print("cost:")
        check_cost()
    false_alarms(args.events, args.rate, seed=1)
    if not args.stationary_only:
        delays(args.rate, args.seeds)


if __name__ == "__main__":
    main()
