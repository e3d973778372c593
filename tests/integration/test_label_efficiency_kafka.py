"""`bench label-efficiency --mode kafka`: the closed loop through the real scorer and label sink on
the embedded broker selects exactly the assets the in-process run selects (same seed, one
partition), and its trainer trains on exactly the labels the triggers' manifests name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.evaluation import cli
from services.evaluation.datasets import load_dataset
from services.evaluation.harness import Settings, run_benchmark
from services.evaluation.kafka_loop import KafkaLoop

pytestmark = pytest.mark.broker


def _blobs(path: Path) -> Path:
    rng = np.random.default_rng(4)
    y = np.arange(300) % 3
    X = rng.normal(size=(300, 4)) + 1.2 * np.eye(3, 4)[y]
    np.savez(path, X=X, y=y)
    return path


def test_kafka_mode_selects_what_the_in_process_run_selects(any_broker: object,
                                                            tmp_path: Path) -> None:
    """On both brokers: the closed loop is the embedded broker's smoke test."""
    bootstrap = any_broker.bootstrap  # type: ignore[attr-defined]
    data = load_dataset(str(_blobs(tmp_path / "blobs.npz")))
    settings = Settings(str(tmp_path / "blobs.npz"), seeds=2, seed_labels=10, budget=0.2,
                        retrain_every=5, strategies=("active-stream", "random"))
    policy, overrides = cli.policy_from_json(None, settings.budget)
    inprocess = run_benchmark(data, settings, policy)
    rounds: list[object] = []
    loop = KafkaLoop(bootstrap, settings, overrides, workdir=tmp_path / "services",
                     on_round=rounds.append)
    kafka = run_benchmark(data, settings, active_runner=loop.run_seed)
    assert [r.strategy for r in kafka] == [r.strategy for r in inprocess]
    for a, k in zip(inprocess, kafka, strict=True):
        assert a.labels_used == k.labels_used
        assert a.picked == k.picked, (a.strategy, a.seed)  # the same assets, in the same order
        assert a.curve == k.curve  # same labels per retraining => the same models
    active = [k for k in kafka if k.strategy == "active-stream"]
    for run in active:  # the comparison is only as strong as the loop it exercised
        assert run.labels_used >= 20 and run.diagnostics["triggers"] >= 4
        assert run.diagnostics["requests"] >= run.labels_used
    assert rounds and len(rounds) >= 6
    # The model service's probes reach the triggers: once a second model version has been
    # served, the triggers carry the stability branch (its comparison with the one before on
    # the probes: every held-out row, 90 here, since the test split is below PROBES).
    stable = [r.stable for r in rounds if r.stable]  # type: ignore[attr-defined]
    assert len({s["model_version"] for s in stable}) >= 2
    assert all(s["probes"] == 90 and s["partitions"] == 1 for s in stable)


def test_kafka_mode_command_writes_results(broker: object, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)  # type: ignore[attr-defined]
    out = tmp_path / "out"
    code = cli.main(["--mode", "kafka", "--dataset", str(_blobs(tmp_path / "b.npz")),
                     "--seeds", "1", "--seed-labels", "10", "--budget", "0.2",
                     "--retrain-every", "5", "--strategies", "active-stream,random",
                     "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["mode"] == "kafka"
    used = doc["strategies"]["active-stream"]["labels_used_per_seed"]
    assert used == doc["strategies"]["random"]["labels_used_per_seed"] and used[0] > 0
    assert (out / "label-efficiency.png").stat().st_size > 10_000
    assert (out / "services" / "seed-0" / "scorer.log").exists()


def test_tiered_loop_trains_one_row_per_consensus_request_and_shows_spend_and_estimates(
        broker: object, tmp_path: Path) -> None:
    """`demo`'s loop with tiers: the oracle answers a consensus request with its k votes, the
    trainer takes one row per request (so the models equal the untiered in-process run's), each
    round reports spend per tier, and the triggers' control-arm estimates reach the results."""
    bootstrap = broker.bootstrap  # type: ignore[attr-defined]
    data = load_dataset(str(_blobs(tmp_path / "blobs.npz")))
    settings = Settings(str(tmp_path / "blobs.npz"), seeds=1, seed_labels=10, budget=0.2,
                        retrain_every=5, strategies=("active-stream",))
    demo_policy = json.dumps({"budget": {"exploration_share": 0.3}, "exploration_rate": 0.0})
    policy, overrides = cli.policy_from_json(demo_policy, settings.budget)
    inprocess = run_benchmark(data, settings, policy)
    rounds: list[object] = []
    loop = KafkaLoop(bootstrap, settings, overrides, workdir=tmp_path / "services",
                     on_round=rounds.append,
                     # Bands named, not the defaults: the default has no consensus band, and
                     # this test is about how consensus votes train and are spent. No review
                     # band (nor its widening): the sink leaves reviews out of the agreement
                     # the class weights come from, so with reviews the picks would differ
                     # from the untiered run's (docs/tiers.md, "A review is counted, not
                     # compared").
                     tiers_json=json.dumps({"consensus_k": 2, "review_below": 0.0,
                                            "confident_ratio": 0.0, "consensus_from": 0.9}))
    [run] = run_benchmark(data, settings, active_runner=loop.run_seed)
    assert run.picked == inprocess[0].picked and run.curve == inprocess[0].curve
    spend = rounds[-1].spend  # type: ignore[attr-defined]
    assert spend and spend.get("consensus", 0) > 0 and spend.get("annotate", 0) > 0
    assert set(spend) <= {"review", "annotate", "consensus"}
    assert run.control and all(c["low"] <= c["estimate"] <= c["high"] for c in run.control)
    versions = [c["model_version"] for c in run.control]
    trained_at = dict(zip([f"v{i}" for i in range(len(run.curve))],
                          [n for n, _ in run.curve], strict=False))
    assert all(c["labels"] == trained_at[c["model_version"]] for c in run.control), versions
    states = rounds[-1].states  # type: ignore[attr-defined]
    assert states and set(states.values()) <= {"learning", "mastered", "reopened"}
