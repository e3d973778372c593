"""`active-stream bench label-efficiency`: the label-efficiency benchmark's command line.

    active-stream bench label-efficiency --mode inprocess --dataset digits --seeds 10 --out DIR

Wire-up: `add_parser(subparsers)` adds `label-efficiency` to a `bench` sub-command group and sets
`func`; `main(argv)` runs it stand-alone (also `python -m services.evaluation`). Expected failures
(bad data set, bad option) print one line on stderr and return 2.

`--policy-json` (a JSON object, or @FILE, of `SelectorPolicy` overrides, nested by sub-policy:
{"mode": "threshold"}) is applied after `--budget`, which sets the policy's budget share.
Hidden options (for protocol studies, not in --help): `--batch-size` (events the model service
streams per round, default 50: see harness.py), `--event-spacing` (seconds of event time between
stream events, default 1), `--random-state` (root seed, default 0), `--test-share` (default 0.3).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.streaming.embedded import BrokerUnavailable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("inprocess", "kafka"), default="inprocess",
                   help="inprocess: the selection core driven directly (fast, many seeds); "
                        "kafka: end to end through the services")
    p.add_argument("--scenario", choices=("classification", "video"), default="classification",
                   help="video: clips built from digits (tracks, near-duplicate frames, id "
                        "swaps; services/evaluation/video.py), active-stream with its video "
                        "signals vs uncertainty-only vs random (--mode kafka: active-stream "
                        "through the services)")
    p.add_argument("--dataset", default="digits",
                   help="digits | segments | breast_cancer | wine | iris | synthetic-imbalanced |"
                        " synthetic-noisy | PATH.npz (arrays X: samples x features, y: labels)")
    p.add_argument("--suite", choices=("dev", "holdout"), default=None,
                   help="run a named group of data sets instead of --dataset, one table over "
                        "all (dev: digits, segments, texture, vowel, marketing, "
                        "synthetic-30-classes; holdout: satimage, vehicle, "
                        "synthetic-20-classes, never tuned on; the KEEL sets need the bench "
                        "extra)")
    p.add_argument("--ablate", action="store_true",
                   help="also run the default policy with each of its parts changed "
                        "(services/evaluation/ablations.py), on the same seeds")
    p.add_argument("--seeds", type=int, default=10, help="paired seeds (default 10)")
    p.add_argument("--seed-labels", type=int, default=50,
                   help="random labeled rows the first model is trained on (default 50)")
    p.add_argument("--budget", type=float, default=None,
                   help="hard label cap as a share of the stream (default 0.10; --scenario "
                        "video: 0.015)")
    p.add_argument("--retrain-every", type=int, default=10,
                   help="retrain after this many new labels (default 10)")
    p.add_argument("--strategies", default=None,
                   help="comma-separated: active-stream, random, skactiveml-variable-"
                        "uncertainty, skactiveml-split, river-entropy (default: the first two "
                        "plus every installed peer)")
    p.add_argument("--out", default="label-efficiency", help="output directory")
    p.add_argument("--label-delay", type=float, default=0.0,
                   help="--mode kafka: seconds the oracle annotator waits before answering")
    hidden = argparse.SUPPRESS
    p.add_argument("--policy-json", default=None,
                   help="selector policy overrides, as ACTIVE_STREAM_SCORER_POLICY takes them: "
                        "a JSON object or @FILE, e.g. '{\"mode\": \"threshold\"}'")
    p.add_argument("--batch-size", type=int, default=50, help=hidden)
    p.add_argument("--event-spacing", type=float, default=1.0, help=hidden)
    p.add_argument("--random-state", type=int, default=0, help=hidden)
    p.add_argument("--test-share", type=float, default=0.3, help=hidden)
    # --scenario video: clips in the stream and frames per clip (default: VideoSettings').
    p.add_argument("--clips", type=int, default=None, help=hidden)
    p.add_argument("--frames", type=int, default=None, help=hidden)
    # --mode kafka: the annotator works through a local Label Studio (`demo --label-studio`).
    p.add_argument("--label-studio", action="store_true", help=hidden)
    # --mode kafka: the tier policy (docs/tiers.md) for the scorer and the sink (`demo`: {}).
    p.add_argument("--tiers", default=None, help=hidden)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `label-efficiency` to a sub-parser group (e.g. the one under `bench`)."""
    p = subparsers.add_parser("label-efficiency",
                              help="accuracy vs labels: active-stream vs random (and peers)")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="active-stream bench label-efficiency")
    add_arguments(parser)
    return run(parser.parse_args(argv))


class UsageError(Exception):
    """An expected failure; printed as one line."""


def policy_from_json(text: str | None, budget: float) -> tuple[Any, dict[str, Any]]:
    """(SelectorPolicy, all its overrides). The default policy with its budget share set to
    `budget` (what a user of the scorer sets as its labeling budget), then `text`'s overrides
    (a JSON object or @path, as ACTIVE_STREAM_SCORER_POLICY takes) on top. The overrides
    returned rebuild the policy from the defaults (they go to the scorer in --mode kafka)."""
    from services.core import SelectorPolicy, with_overrides
    from services.streaming.settings import load_policy_overrides

    try:
        overrides = _merge({"budget": {"share": budget}}, load_policy_overrides(text or ""))
        return with_overrides(SelectorPolicy(), overrides), overrides
    except ValueError as exc:
        raise UsageError(f"--policy-json: {exc}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _strategies(spec: str | None, own: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The strategies `--strategies` names (default: `own`, the scenario's own strategies,
    strategies.CORE unless given, plus every installed peer); UsageError for an unknown name or
    a peer whose package is missing."""
    from services.evaluation.strategies import CORE, PEERS, available_peers

    own = CORE if own is None else own
    if spec is None:
        return own + tuple(available_peers())
    names = tuple(s.strip() for s in spec.split(",") if s.strip())
    known = own + PEERS
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown strategy {unknown[0]!r}; known: {', '.join(known)}")
    missing = [n for n in names if n in PEERS and n not in available_peers(expensive=True)]
    if missing:
        raise UsageError(f"strategy {missing[0]!r} needs its package: pip install "
                         "'active-stream[peers]' (scikit-activeml, river)")
    return names


def _video_strategies(spec: str | None) -> tuple[str, ...]:
    """--scenario video: its own three strategies and the installed peers by default."""
    from services.evaluation.video import STRATEGIES

    names = _strategies(spec, STRATEGIES)
    if "active-stream" not in names:  # random spends what active-stream spent
        raise UsageError("--scenario video needs active-stream among --strategies")
    return names


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # The services and the broker were stopped on the way out (their `finally` blocks).
        print("\ninterrupted; every service and the broker are stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the harness also limits threadpools itself
    from services.evaluation import report
    from services.evaluation.datasets import DatasetError, load_dataset
    from services.evaluation.harness import Settings, run_benchmark

    if getattr(args, "scenario", "classification") == "video":
        return _run_video(args)
    if args.budget is None:
        args.budget = 0.10
    policy, overrides = policy_from_json(args.policy_json, args.budget)
    variants = _variants(args, overrides)
    if args.suite is not None:
        if args.mode == "kafka":
            raise UsageError("--suite runs in process; use --dataset for --mode kafka")
        return _run_suite(args, policy, overrides, variants)
    try:
        names = _strategies(args.strategies)
        names += tuple(f"active-stream:{v}" for v in variants)
        settings = Settings(args.dataset, args.seeds, args.seed_labels, args.budget,
                            args.retrain_every, names, args.test_share,
                            args.batch_size, args.event_spacing, args.random_state)
        data = load_dataset(args.dataset)
    except (DatasetError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from None
    print(f"{data.name}: {data.X.shape[0]} x {data.X.shape[1]}, {len(data.classes)} classes; "
          f"{settings.seeds} seeds; strategies: {', '.join(settings.strategies)}",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    status = StatusLine(sys.stderr)
    say = status.say
    try:
        if args.mode == "kafka":
            runs = _run_kafka(data, settings, overrides, out, status, args.label_delay,
                              label_studio=args.label_studio, tiers_json=args.tiers)
        else:
            runs = run_benchmark(data, settings, policy, progress=say, variants=variants)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    results = report.summarize(runs, _settings_doc(settings, data, policy, overrides, args.mode))
    report.write_json(results, out / "results.json")
    seeds = f"{settings.seeds} seed{'s' if settings.seeds > 1 else ''}"
    via = ", active-stream through Kafka" if args.mode == "kafka" else ""
    title = (f"{data.name}: {seeds}{via}, {settings.seed_labels} seed labels, "
             f"cap {settings.budget:.0%} of the stream, retrain every {settings.retrain_every}")
    report.plot(results, out / "label-efficiency.png", title)
    report.print_table(results, title)
    print(report.text_chart(results), flush=True)
    print(f"wrote {out / 'results.json'} and {out / 'label-efficiency.png'} "
          f"in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


def _run_video(args: argparse.Namespace) -> int:
    """`--scenario video` (services/evaluation/video.py); with --mode kafka active-stream runs
    through the services (video_kafka.py), the other strategies in process."""
    from services.evaluation import video, video_report

    if args.label_studio:
        raise UsageError("--scenario video has no Label Studio annotator; drop --label-studio")
    budget = args.budget if args.budget is not None else video.VideoSettings.budget
    sizes = {k: v for k, v in (("clips", args.clips), ("frames", args.frames)) if v is not None}
    try:
        settings = video.VideoSettings(seeds=args.seeds, budget=budget,
                                       retrain_every=args.retrain_every,
                                       random_state=args.random_state,
                                       strategies=_video_strategies(args.strategies), **sizes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror}") from None
    started = time.perf_counter()
    status = StatusLine(sys.stderr)
    with contextlib.ExitStack() as stack:
        runner = None
        if args.mode == "kafka":
            from services.evaluation.video_kafka import VideoKafkaRunner

            runner = VideoKafkaRunner(_bootstrap(stack, out, status), settings, out / "services",
                                      on_round=lambda r: status.update(_round_line(r)),
                                      label_delay_s=args.label_delay)
        try:
            runs = video.run_video_benchmark(settings, progress=status.say, active_runner=runner)
        except BrokerUnavailable as exc:
            raise UsageError(str(exc)) from None
    summary = video_report.summarize(runs, settings)
    summary["settings"]["mode"] = args.mode
    report_json = out / "video-results.json"
    report_json.write_text(json.dumps(summary, indent=1, default=str))
    video_report.plot(summary, out / "video-label-efficiency.png")
    video_report.print_report(summary)
    print(f"wrote {report_json} and {out / 'video-label-efficiency.png'} in "
          f"{time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


def _variants(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """--ablate's policies: each ablation's overrides on top of the run's own."""
    if not args.ablate:
        return {}
    from services.core import SelectorPolicy, with_overrides
    from services.evaluation.ablations import ABLATIONS

    if args.mode == "kafka":
        raise UsageError("--ablate runs in process; drop --mode kafka")
    return {name: with_overrides(SelectorPolicy(), _merge(overrides, extra))
            for name, extra in ABLATIONS.items()}


def _run_suite(args: argparse.Namespace, policy: Any, overrides: dict[str, Any],
               variants: dict[str, Any]) -> int:
    from services.evaluation import suite
    from services.evaluation.datasets import SUITES, DatasetError
    from services.evaluation.harness import Settings
    from services.evaluation.strategies import CORE, available_peers

    names = _strategies(args.strategies)
    if args.strategies is None:  # PAL joins by default only where it is affordable
        names += tuple(p for p in available_peers(expensive=True) if p not in names)
    peers = [n for n in names if n not in CORE]
    try:
        base = Settings(SUITES[args.suite][0], args.seeds, args.seed_labels, args.budget,
                        args.retrain_every, CORE, args.test_share, args.batch_size,
                        args.event_spacing, args.random_state)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = StatusLine(sys.stderr)
    status.say(f"suite {args.suite}: {', '.join(SUITES[args.suite])}; {args.seeds} paired seeds"
               f"; peers: {', '.join(peers) or 'none installed'}"
               f"{'; ablations: ' + ', '.join(variants) if variants else ''}")

    def doc(settings: Any, data: Any) -> dict[str, Any]:
        return _settings_doc(settings, data, policy, overrides, "inprocess")

    try:
        result = suite.run_suite(args.suite, base, policy, peers, variants, out, doc, status.say)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    suite.print_table(result)
    print(f"wrote {out}/suite.json, {out}/suite.md and per set results.json and "
          f"label-efficiency.png in {result['seconds']:.0f}s", file=sys.stderr)
    return 0


class StatusLine:
    """Progress on a stream: `say` prints a line; `update` rewrites one status line in place
    at a terminal (one line per update elsewhere, e.g. in CI logs)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.pending = False

    def update(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self.pending = True
        else:
            self.say(text)

    def say(self, line: str) -> None:
        if self.pending:
            self.stream.write("\n")
            self.pending = False
        print(line, file=self.stream, flush=True)


def round_lines(r: Any, triggered: bool) -> list[str]:
    """The permanent lines a round of the closed loop adds to the progress display: each change
    of a class's mastery state, and after a trigger the classes' states, the spend per tier and
    the newest control-arm estimate (loop_view.py)."""
    from services.evaluation.loop_view import change_lines, spend_text, stable_text, states_text

    lines = change_lines(r.changes)
    if triggered:
        parts = [p for p in (states_text(r.states or {}), spend_text(r.spend or {})) if p]
        c = r.control
        if c is not None:
            parts.append(f"control-arm accuracy of {c.version} {c.estimate:.2f} "
                         f"[{c.low:.2f}, {c.high:.2f}] on {c.labels} labels")
        if getattr(r, "stable", None):  # the stopping signal's stability branch
            parts.append(stable_text(r.stable))
        if parts:
            lines.append(f"  model {r.model_version}: " + "; ".join(parts))
    return lines


def _round_line(r: Any) -> str:
    """One closed-loop round (kafka_loop.RoundReport) as a status line."""
    return (f"  seed {r.seed + 1} [kafka] events {r.events}/{r.stream}  requests {r.requests}  "
            f"labels {r.labels}/{r.cap}  triggers {r.triggers}  model {r.model_version}  "
            f"held-out accuracy {r.accuracy:.3f}")


def _bootstrap(stack: contextlib.ExitStack, out: Path, status: StatusLine) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else an embedded broker started on `stack` (stopped with it)."""
    from services.streaming.embedded import EmbeddedBroker

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap:
        return bootstrap
    broker = stack.enter_context(EmbeddedBroker())
    status.say(f"embedded Kafka-protocol broker at {broker.bootstrap}; service logs in "
               f"{out / 'services'}")
    return str(broker.bootstrap)


def _run_kafka(data: Any, settings: Any, overrides: dict[str, Any], out: Path,
               status: StatusLine, label_delay_s: float, label_studio: bool = False,
               tiers_json: str | None = None) -> list[Any]:
    """active-stream through the services on the embedded broker (or the cluster in
    KAFKA_BOOTSTRAP_SERVERS), the other strategies in process on the same seeds."""
    from services.evaluation.harness import run_benchmark
    from services.evaluation.kafka_loop import KafkaLoop, RoundReport
    from services.streaming.embedded import BrokerUnavailable

    last = {"triggers": 0}

    def on_round(r: RoundReport) -> None:
        status.update(_round_line(r))
        triggered = r.triggers > last["triggers"]
        last["triggers"] = r.triggers
        for line in round_lines(r, triggered):
            status.say(line)

    with contextlib.ExitStack() as stack:
        try:
            bootstrap = _bootstrap(stack, out, status)
            annotator = None
            if label_studio:
                from services.label_studio.demo import LabelStudioAnnotator

                annotator = LabelStudioAnnotator(out / "services", data.classes, status.say)
                stack.callback(annotator.close)
            if tiers_json is not None and annotator is not None:
                raise UsageError("--tiers needs the oracle annotator (drop --label-studio)")
            loop = KafkaLoop(bootstrap, settings, overrides, workdir=out / "services",
                             on_round=on_round, label_delay_s=label_delay_s,
                             annotator=annotator, tiers_json=tiers_json)
            return run_benchmark(data, settings, progress=status.say,
                                 active_runner=loop.run_seed, policy=None)
        except BrokerUnavailable as exc:
            raise UsageError(str(exc)) from None


def _settings_doc(settings: Any, data: Any, policy: Any, overrides: dict[str, Any],
                  mode: str) -> dict[str, Any]:
    from services.evaluation.harness import make_estimator

    doc = dataclasses.asdict(settings)
    doc["strategies"] = list(settings.strategies)
    n_test = math.ceil(settings.test_share * data.y.shape[0])  # sklearn's rounding
    stream = data.y.shape[0] - n_test - settings.seed_labels
    doc.update({
        "dataset_name": data.name, "n_samples": int(data.X.shape[0]),
        "n_features": int(data.X.shape[1]), "n_classes": len(data.classes),
        "n_test": n_test, "stream_length": stream,
        "label_cap": int(settings.budget * stream + 1e-9),
        "model": repr(make_estimator(settings.max_iter)),
        "policy": dataclasses.asdict(policy), "policy_overrides": overrides,
        "mode": mode,
        "versions": _versions(),
    })
    return doc


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("numpy", "scikit-learn", "scikit-activeml", "river"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
