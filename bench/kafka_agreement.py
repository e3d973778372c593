"""Does `bench label-efficiency --mode kafka` select what the in-process run selects? (not a
test; prints figures)

    .venv/bin/python bench/kafka_agreement.py [--dataset digits] [--seeds 2] [--policy-json J]

Per seed, active-stream runs once in process (services/core driven directly) and once through
the real scorer and label sink on the embedded broker (or KAFKA_BOOTSTRAP_SERVERS), with the
default policy (or --policy-json's overrides, as `bench label-efficiency` takes them) and the
benchmark's default protocol. Printed per seed: labels acquired, the
assets picked (in label order) equal or the first position where they differ, and the final
accuracies. tests/integration/test_label_efficiency_kafka.py asserts the same on a small set;
this runs it on a real one (about a minute a seed on digits).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="digits")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--policy-json", default=None)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from services.evaluation import cli
    from services.evaluation.datasets import load_dataset
    from services.evaluation.harness import Settings, run_benchmark
    from services.evaluation.kafka_loop import KafkaLoop
    from services.streaming.embedded import EmbeddedBroker

    settings = Settings(args.dataset, seeds=args.seeds, strategies=("active-stream",))
    policy, overrides = cli.policy_from_json(args.policy_json, settings.budget)
    data = load_dataset(args.dataset)
    started = time.perf_counter()
    inprocess = run_benchmark(data, settings, policy)
    print(f"in process: {time.perf_counter() - started:.1f}s", flush=True)
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        loop = KafkaLoop(bootstrap, settings, overrides, workdir=work)
        started = time.perf_counter()
        kafka = run_benchmark(data, settings, active_runner=loop.run_seed)
        print(f"through Kafka: {time.perf_counter() - started:.1f}s", flush=True)
    same = 0
    for a, k in zip(inprocess, kafka, strict=True):
        n = min(len(a.picked), len(k.picked))
        diff = next((i for i in range(n) if a.picked[i] != k.picked[i]),
                    None if len(a.picked) == len(k.picked) else n)
        verdict = "same assets, same order" if diff is None else f"first difference at pick {diff}"
        same += diff is None
        print(f"seed {a.seed + 1}: labels {a.labels_used} / {k.labels_used}; {verdict}; final "
              f"accuracy {a.final_accuracy:.4f} / {k.final_accuracy:.4f} (in process / Kafka)",
              flush=True)
    print(f"{same}/{len(inprocess)} seeds selected the same assets")
    return 0 if same == len(inprocess) else 1


if __name__ == "__main__":
    sys.exit(main())
