"""`bench label-efficiency --scenario video --mode kafka`: the video benchmark's active-stream
through the real scorer and label sink selects exactly the clip rows the in-process run selects
(same seed, one partition): the video fields (embedding, track, box, sequence) reach the
scorer's redundancy gate and track signal, its class feedback comes back from the sink, and the
trainer trains on exactly the labels the triggers' manifests name. Plus the command and the demo
end to end on a small stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services import cli as service_cli
from services.evaluation import cli
from services.evaluation.video import VideoSettings, run_video_benchmark
from services.evaluation.video_kafka import VideoKafkaRunner

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]

SMALL = dict(clips=6, frames=20, budget=0.1, seed_labels=20, retrain_every=5, batch_size=30)


def test_video_kafka_selects_what_the_in_process_run_selects(kafka: Any,
                                                             tmp_path: Path) -> None:
    settings = VideoSettings(seeds=2, strategies=("active-stream", "random"), **SMALL)
    inprocess = run_video_benchmark(settings)
    rounds: list[Any] = []
    runner = VideoKafkaRunner(kafka.bootstrap, settings, tmp_path / "services",
                              on_round=rounds.append)
    through = run_video_benchmark(settings, active_runner=runner)
    assert [(r.strategy, r.seed) for r in through] == [(r.strategy, r.seed) for r in inprocess]
    for a, k in zip(inprocess, through, strict=True):
        assert a.labeled == k.labeled, (a.strategy, a.seed)  # the same rows, in the same order
        assert a.curve == k.curve  # the same labels per retraining => the same models
        assert (a.caught, a.distinct_objects) == (k.caught, k.distinct_objects)
    for run in (k for k in through if k.strategy == "active-stream"):
        # the comparison is only as strong as the loop it exercised: triggers, retrainings
        # (hence class feedback), and the scorer's redundancy gate firing on the video fields
        assert run.labels_used >= 15 and len(run.curve) >= 4
        assert run.suppressed.get("near_duplicate", 0) > 0
        assert run.suppressed == next(a.suppressed for a in inprocess
                                      if (a.strategy, a.seed) == ("active-stream", run.seed))
    assert len(rounds) >= 6


def test_video_kafka_command_prints_the_table_and_writes_its_plot(
        broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    out = tmp_path / "out"
    code = cli.main(["--scenario", "video", "--mode", "kafka", "--seeds", "1",
                     "--budget", "0.1", "--retrain-every", "5", "--clips", "6", "--frames", "20",
                     # the installed peers would join by default; they run in process anyway
                     "--strategies", "active-stream,uncertainty-only,random",
                     "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    doc = json.loads((out / "video-results.json").read_text())
    assert doc["settings"]["mode"] == "kafka"
    st = doc["strategies"]
    assert set(st) == {"active-stream", "uncertainty-only", "random"}
    assert st["active-stream"]["labels_used"] == st["random"]["labels_used"] > 0
    assert st["active-stream"]["suppressed"]["near_duplicate"] > 0
    assert "uncertainty-only" in printed.out and "goal beat_uncertainty_only" in printed.out
    assert "[kafka] events" in printed.err  # progress per round
    assert (out / "video-label-efficiency.png").stat().st_size > 10_000
    assert (out / "services" / "seed-0" / "scorer.log").exists()


def test_video_demo_runs_on_the_embedded_broker(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # the demo's own broker
    out = tmp_path / "demo"
    code = service_cli.main(["demo", "--scenario", "video", "--label-delay", "0",
                             "--clips", "6", "--frames", "20", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    assert "embedded Kafka-protocol broker" in printed.err
    assert f"plot: {out / 'video-label-efficiency.png'}" in printed.out
    assert (out / "video-label-efficiency.png").stat().st_size > 10_000
    doc = json.loads((out / "video-results.json").read_text())
    assert doc["settings"]["mode"] == "kafka" and doc["settings"]["seeds"] == 1
    assert doc["strategies"]["active-stream"]["labels_used"] > 0
