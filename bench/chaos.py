"""A chaos soak of the whole loop on Apache Kafka (issue 14, item 4). Not a test: it prints
progress, the invariants and figures, and exits 1 if an invariant fails.

    .venv/bin/python -m bench.chaos [--minutes 3] [--rate 100] [--seed 1]   (or `make chaos`)

What runs, on a private Apache Kafka (KRaft, one node, the cached jars): 2 scorer instances
and 2 label-sink workers (`active-stream scorer` / `label-sink` processes, static members,
4 partitions per data topic); a model service streaming `rate` inference events a second for
`minutes`, two models, 1% of the records hostile (issue 13's kinds, bench/chaos_input.py); an
annotator that answers each request once after a seeded random delay (a quarter at once, so
often before the sink has read the request; 5% submitted twice); a trainer that reads exactly
the labels each trigger's manifest names.

The faults, at seeded random times every 10-60 s: SIGKILL one service (started again 0.5-5 s
later, same instance id) or SIGSTOP it for 1-20 s (past its 6-s session: the group moves its
partitions), and one broker restart in the middle of the window. A service that exits by
itself is restarted and reported.

First the same input goes through the same services without any fault (the crash-free
reference run, at full speed); then the soak. After the window the soak drains: every service
up, the input committed, every request answered, each model topped up with backlog labels to a
whole number of triggers (so the manifests must cover every label), every label counted. Then
the invariants (bench/chaos_checks.py): events produced = processed + dead-lettered; the
distinct request ids equal the reference run's; every duplicate request is byte-identical to
its twin; every label counted exactly once (the sink's final counts equal the labels sent, and
the reference's); the manifests cover every counted label, none twice; the budget never
exceeded; each service's peak RSS under `--rss-limit-mib`.

The scorer's decisions must depend on the input alone for that comparison to mean anything,
but class feedback arrives when the faults let it, and a weight changes the reservoir
priorities: two crash-free runs whose feedback lands at other points of the stream select
differently (measured: 32 of 121 requests). So the scorers run with
ACTIVE_STREAM_SCORER_CLASS_FEEDBACK=false; the sink still computes and publishes feedback.

`--sabotage double-count` (the annotator sends one label a second time under a new label id) and
`--sabotage drop-request` (one request id is left out of what the soak read back) exist to show
the checks fail: both must exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ holds the event generator

from bench import chaos_checks as checks  # noqa: E402
from bench.chaos_input import stream  # noqa: E402
from bench.chaos_run import BROKER_START_S, PARTITIONS, Outcome, Run, Settings  # noqa: E402
from services.evaluation.processes import ServiceProcess  # noqa: E402
from services.streaming.apache_kafka import ApacheKafka  # noqa: E402

POLICY: dict[str, Any] = {}  # the default selection policy and budget
TRIGGER_EVERY = 20  # labels per retrain trigger: a few dozen triggers in a 3-minute soak


def say(text: str) -> None:
    """A progress line, at once (the soak runs for minutes, often with its output in a file)."""
    print(text, flush=True)


@dataclass
class Report:
    checks: list[checks.Check]
    reference: Outcome
    soak: Outcome

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def figures(self) -> dict[str, Any]:
        s, r = self.soak, self.reference
        return {"ok": self.ok, "events": s.produced, "requests": len(checks._by_id(s.requests)),
                "duplicate_requests": len(s.requests) - len(checks._by_id(s.requests)),
                "labels": len(s.label_ids), "triggers": len(s.trained),
                "faults": len(s.faults), "exits_by_itself": len(s.exits),
                "early_joined": s.early_joined, "answered_first": s.answered_first,
                "peak_rss_mib": {
                    k: round(v) for k, v in s.peak_mib.items()},
                "soak_s": round(s.seconds), "reference_s": round(r.seconds),
                "failed": [c.name for c in self.checks if not c.ok]}


def soak(kafka: ApacheKafka, *, minutes: float, rate: float = 100.0, seed: int = 1,
         fault_interval: tuple[float, float] = (10.0, 60.0), drain_s: float = 240.0,
         rss_limit_mib: float = 1024.0, sabotage: str = "none", workdir: Path | None = None,
         say: Callable[[str], None] = say) -> Report:
    """The reference run, then the soak, on `kafka` (which the soak restarts once); the
    invariants. Services are reaped even when a run fails half-way."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="active-stream-chaos-"))
    records = stream(int(rate * minutes * 60), seed)
    say(f"chaos soak: {len(records)} records ({sum(r.code is not None for r in records)} "
        f"hostile), {minutes:g} min of faults every {fault_interval[0]:g}-"
        f"{fault_interval[1]:g} s, seed {seed}, broker {kafka.bootstrap}, logs in {workdir}")
    base = Settings(seed=seed, minutes=None, rate=rate, trigger_every=TRIGGER_EVERY,
                    policy=POLICY, fault_interval=fault_interval, drain_s=drain_s)
    before = list(ServiceProcess.started)
    try:
        ref = Run(kafka, records, base, "reference", workdir, say).go()
        say(f"reference run: {ref.seconds:.0f}s")
        out = Run(kafka, records, replace(base, minutes=minutes, sabotage=sabotage), "soak",
                  workdir, say).go()
    finally:
        ServiceProcess.kill_leftovers(keep=before)
    if sabotage == "drop-request":
        dropped = next(iter(checks._by_id(out.requests)))
        out.requests = [v for v in out.requests if dropped.encode() not in v]
    found = [checks.events(out), checks.request_ids(out, ref), checks.twins(out),
             checks.counted_once(out, ref), checks.manifests(out),
             checks.budget(out, POLICY, PARTITIONS), checks.peak_rss(out, rss_limit_mib),
             checks.health(ref), checks.health(out)]
    return Report(found, ref, out)


def print_report(report: Report, say: Callable[[str], None] = say) -> None:
    say("\nfaults:")
    for line in report.soak.faults:
        say(f"  {line}")
    for line in report.soak.exits:
        say(f"  {line}")
    say("\ninvariants:")
    for c in report.checks:
        say(f"  [{'PASS' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    say("JSON " + json.dumps(report.figures(), sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="the fault window")
    parser.add_argument("--rate", type=float, default=100.0, help="input records per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-interval", default="10,60", help="seconds between faults")
    parser.add_argument("--drain-s", type=float, default=240.0,
                        help="how long the drain after the window may take")
    parser.add_argument("--rss-limit-mib", type=float, default=1024.0)
    parser.add_argument("--sabotage", choices=("none", "double-count", "drop-request"),
                        default="none", help="break one thing on purpose: the checks must fail")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="service logs, and the broker's data and server.log in broker/ "
                        "(default: tmp, the broker's removed at the end)")
    args = parser.parse_args(argv)
    lo, hi = (float(x) for x in args.fault_interval.split(","))
    started = time.monotonic()
    # With a workdir the broker's log stays too: the 30-minute run's model-service stall could
    # not be read against the broker's side of the restart, its temporary directory was gone.
    kafka = ApacheKafka(data_dir=args.workdir / "broker" if args.workdir else None)
    try:
        kafka.start(BROKER_START_S)
        report = soak(kafka, minutes=args.minutes, rate=args.rate, seed=args.seed,
                      fault_interval=(lo, hi), drain_s=args.drain_s,
                      rss_limit_mib=args.rss_limit_mib, sabotage=args.sabotage,
                      workdir=args.workdir)
    finally:
        kafka.close()
    print_report(report)
    print(f"wall time {time.monotonic() - started:.0f}s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
