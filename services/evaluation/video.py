"""The video label-efficiency benchmark (issue 16, item 4):
`active-stream bench label-efficiency --scenario video [--mode kafka]`.

The stream: clips from digits (video_clips.py), one instance of one frame per inference event,
with `track_id`, `bbox`, `embedding` and the clip as `sequence_id`; one label is one instance.
Protocol as the classification harness: a stratified 30% held-out test split of the digits
images, `seed_labels` random seed labels (instances of the pool's images), the clips streamed
once in batches of `batch_size` events scored by the current model, a hard cap of `budget` x
stream length labels, retraining every `retrain_every` labels (the model version bumped, the
selector given the class feedback the label sink publishes then), test accuracy after every
retraining. In --mode kafka active-stream runs through the real scorer and label sink
(video_kafka.py), the others run here.

Strategies: `active-stream` (the default policy plus the redundancy gates and track
instability: `video_policy`), `uncertainty-only` (the default policy as it is), `random`
(exactly the labels active-stream spent, uniform over the stream), and the installed peers of
the classification benchmark (scikit-activeml's VariableUncertainty and Split, river's entropy
sampler), each instance a candidate, with their own budget managers at the same share. A
suspected identity switch counts as caught when a labeled instance is on one of the two swapped
tracks within `CATCH_FRAMES` frames of the swap. Deterministic per (random_state, seed, strategy).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select, with_overrides
from services.evaluation.harness import FittedModel, Labels, make_estimator, strategy_seed
from services.evaluation.strategies import SeedContext, SimEvent, SimPrediction, build
from services.evaluation.video_clips import Clips, make_clips
from services.scorer.partition import partition_seed
from services.streaming.event_fields import SCHEMA_VERSION

STRATEGIES = ("active-stream", "uncertainty-only", "random")
"""The video benchmark's own strategies; the classification peers (strategies.PEERS) run
beside them, one instance at a time, when installed (`--strategies` names any of them)."""
CATCH_FRAMES = 2
EPOCH = 1_700_000_000.0
MODEL_ID = "video-bench"


def video_overrides(settings: VideoSettings) -> dict[str, Any]:
    """active-stream's policy as ACTIVE_STREAM_SCORER_POLICY overrides: the default policy at
    the benchmark's budget share with the video signals on (`settings`: similarity, horizon,
    sequence cap, track weight). The in-process run and the scorer in --mode kafka both build
    their policy from these."""
    return {**baseline_overrides(settings.budget),
            "redundancy": {"similarity": settings.similarity,
                           "horizon_seconds": settings.horizon_seconds,
                           "sequence_cap": settings.sequence_cap,
                           "sequence_seconds": settings.sequence_seconds},
            "tracks": {"weight": settings.track_weight}}


def baseline_overrides(budget: float) -> dict[str, Any]:
    """The default policy with its share set to the benchmark's budget (as the classification
    harness does)."""
    return {"budget": {"share": budget}}


def video_policy(settings: VideoSettings) -> SelectorPolicy:
    return with_overrides(SelectorPolicy(), video_overrides(settings))


def baseline_policy(budget: float) -> SelectorPolicy:
    return with_overrides(SelectorPolicy(), baseline_overrides(budget))


@dataclass(frozen=True)
class VideoSettings:
    seeds: int = 5
    seed_labels: int = 30
    budget: float = 0.015
    retrain_every: int = 10
    clips: int = 40
    frames: int = 60
    objects: int = 3
    batch_size: int = 50
    random_state: int = 0
    strategies: tuple[str, ...] = STRATEGIES
    # active-stream's video settings: near duplicates (cosine >= similarity within the horizon
    # of event time) skipped, at most sequence_cap requests per clip per sequence_seconds (0:
    # off), track instability at track_weight.
    similarity: float = 0.93
    horizon_seconds: float = 120.0
    sequence_cap: int = 0
    sequence_seconds: float = 60.0
    track_weight: float = 0.5


@dataclass
class VideoRun:
    strategy: str
    seed: int
    labels_used: int
    curve: list[tuple[int, float]]
    switches: int
    caught: int
    distinct_objects: int
    suppressed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    labeled: list[int] = field(default_factory=list)  # clip rows labeled, in label order

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1][1]


@dataclass(frozen=True)
class VideoSeed:
    """One seed's paired inputs, the same for every strategy: the clips (the stream, in
    order), the held-out test images, the clip rows labeled before the stream (`seed_rows`) and
    the hard label cap."""

    seed: int
    clips: Clips
    X_test: np.ndarray
    y_test: np.ndarray
    seed_rows: np.ndarray
    cap: int


VideoRunner = Callable[[VideoSeed, int], VideoRun]
"""Runs `active-stream` on one seed some other way (--mode kafka: video_kafka.py), given the
seed's inputs and the strategy's seed."""


def event_dicts(clips: Clips, lo: int, hi: int, proba: np.ndarray, version: int
                ) -> list[dict[str, Any]]:
    """Inference events (the contract's JSON fields) for clip rows [lo, hi): one instance each,
    the model's distribution over all ten digits as `scores`, its track, box and embedding, the
    clip as `sequence_id`. `proba`: rows lo..hi-1 from `class_proba`."""
    return [{"schema_version": SCHEMA_VERSION, "event_id": f"e{i}", "asset_id": f"asset-{i}",
             "model_id": MODEL_ID, "model_version": f"v{version}",
             "timestamp": EPOCH + float(clips.time[i]),
             "sequence_id": f"clip-{int(clips.clip[i])}",
             "predictions": [{"scores": dict(zip(CLASSES, proba[i - lo].tolist(), strict=True)),
                              "track_id": clips.track[i], "bbox": clips.bbox[i].tolist(),
                              "embedding": clips.embedding[i].tolist()}]}
            for i in range(lo, hi)]


def _events(dicts: list[dict[str, Any]]) -> list[SimEvent]:
    """The same events as the selection core's input (what the scorer decodes them to)."""
    out = []
    for e in dicts:
        p = e["predictions"][0]
        pred = SimPrediction(p["scores"], track_id=p["track_id"], bbox=tuple(p["bbox"]),
                             embedding=tuple(p["embedding"]))
        out.append(SimEvent(e["event_id"], e["asset_id"], e["model_id"], e["model_version"],
                            e["timestamp"], (pred,), e["sequence_id"]))
    return out


def fit(X: np.ndarray, y: np.ndarray) -> Any:
    """The benchmark model (the classification harness's, max_iter 5000)."""
    return FittedModel(X, y, 5000)


def run_seed(name: str, vs: VideoSeed, quota: int, settings: VideoSettings,
             strategy_seed: int) -> VideoRun:
    """One strategy over one seed's clips, in process (module docstring). The selector is
    seeded as the scorer seeds input partition 0 with ACTIVE_STREAM_SCORER_SEED=strategy_seed
    and gets the class feedback the label sink publishes with each trigger (agreement of each
    label with the predictions its request carried), so --mode kafka (one partition) decides
    exactly as this does."""
    started = time.perf_counter()
    clips, n, cap = vs.clips, vs.clips.n, vs.cap
    labels = Labels(vs.seed_rows.tolist())
    model = fit(clips.X[labels.rows], clips.y[labels.rows])
    curve = [(labels.n_seed, model.accuracy(vs.X_test, vs.y_test))]
    suppressed: dict[str, int] = {}
    state, peer = None, None
    wanted: set[int] = set()
    if name in ("active-stream", "uncertainty-only"):
        policy = video_policy(settings) if name == "active-stream" else \
            baseline_policy(settings.budget)
        state = SelectorState.create(policy, partition_seed(strategy_seed, 0))
    elif name == "random":
        rng = np.random.default_rng(strategy_seed)
        wanted = set(rng.choice(n, size=min(quota, n), replace=False).tolist())
    else:  # a peer: one instance at a time, as on a classification stream
        peer = build(name, lambda: make_estimator(5000), None, 1.0)
        peer.start(SeedContext(strategy_seed, CLASSES, n, settings.budget, cap, quota), model)
    version = used = 0  # used: triggers already trained on
    # The model's class for each row when it was streamed: a reservoir window can grant rows of
    # an earlier round, and the sink compares a label with the predictions its request carries.
    predicted = np.zeros(n, dtype=int)
    for lo in range(0, n, settings.batch_size):
        if labels.acquired >= cap:
            break
        hi = min(n, lo + settings.batch_size)
        proba = class_proba(model, clips.X[lo:hi])
        predicted[lo:hi] = proba.argmax(axis=1)  # ties: the smallest class name, as the sink
        if state is not None:
            events = _events(event_dicts(clips, lo, hi, proba, version))
            sel = select(state, PredictionBatch.from_events(events, list(range(lo, hi))))
            for r, c in sel.suppressed.items():
                suppressed[r] = suppressed.get(r, 0) + c
            picks = [int(s.ref) for s in sel.selected]
        elif peer is not None:
            picks = peer.choose(np.arange(lo, hi), clips.X[lo:hi], model.proba(clips.X[lo:hi]),
                                model)
        else:
            picks = [i for i in range(lo, hi) if i in wanted]
        for i in picks:
            if labels.acquired >= cap:
                break  # the hard cap: later picks are never labeled
            labels.add(i, str(clips.y[i]), CLASSES[int(predicted[i])], settings.retrain_every)
        for upto, _ in labels.triggers[used:]:
            version += 1
            rows = labels.rows[: labels.n_seed + upto]
            model = fit(clips.X[rows], clips.y[rows])
            curve.append((len(rows), model.accuracy(vs.X_test, vs.y_test)))
        if len(labels.triggers) > used:
            used = len(labels.triggers)
            feedback = labels.triggers[-1][1]
            if peer is not None:
                peer.retrained(model, version, feedback)
            if state is not None and hi < n and labels.acquired < cap and feedback.agreement:
                state.apply_feedback(MODEL_ID, dict(feedback.agreement),
                                     {c: float(k) for c, k in feedback.counts.items()})
    if labels.acquired > (labels.triggers[-1][0] if labels.triggers else 0):
        model = fit(clips.X[labels.rows], clips.y[labels.rows])
        curve.append((len(labels.rows), model.accuracy(vs.X_test, vs.y_test)))
    return finish(name, vs, labels.rows[labels.n_seed:], curve, suppressed,
                  time.perf_counter() - started)


def finish(name: str, vs: VideoSeed, labeled: list[int], curve: list[tuple[int, float]],
           suppressed: dict[str, int], seconds: float) -> VideoRun:
    """A strategy's run from the clip rows it labeled (in label order) and its curve."""
    return VideoRun(name, vs.seed, len(labeled), curve, len(vs.clips.switches),
                    caught_switches(vs.clips, labeled),
                    len({int(vs.clips.obj[i]) for i in labeled}), suppressed, seconds,
                    list(labeled))


CLASSES = tuple(str(c) for c in range(10))


def class_proba(model: Any, X: np.ndarray) -> np.ndarray:
    """Probabilities over all ten digits (classes the model has not seen get 0)."""
    p = model.proba(X)
    out = np.zeros((X.shape[0], len(CLASSES)))
    for j, c in enumerate(model.classes):
        out[:, CLASSES.index(c)] = p[:, j]
    return out


def caught_switches(clips: Clips, labeled: list[int]) -> int:
    """Swaps with a labeled instance on one of the two tracks within CATCH_FRAMES frames."""
    caught = 0
    for c, f, a, b in clips.switches:
        if any(int(clips.clip[i]) == c and abs(int(clips.frame[i]) - f) <= CATCH_FRAMES
               and clips.track[i] in (a, b) for i in labeled):
            caught += 1
    return caught


def video_seeds(settings: VideoSettings) -> Iterator[VideoSeed]:
    """Each seed's paired inputs (VideoSeed), seed 0 first: the digits split 70/30
    (stratified) into the clips' pool and the test images, the clips, the seed labels and the
    cap, all drawn from the seed's own generator. Deterministic per (random_state, seed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X, y = digits.data.astype(float), digits.target.astype(str)
    for seed in range(settings.seeds):
        rng = np.random.default_rng([settings.random_state, seed])
        pool, test = train_test_split(np.arange(X.shape[0]), test_size=0.3, stratify=y,
                                      random_state=int(rng.integers(2 ** 31)))
        clips = make_clips(X, y, pool, rng, settings.clips, settings.frames, settings.objects)
        seed_rows = rng.choice(clips.n, settings.seed_labels, replace=False)
        cap = int(np.floor(settings.budget * clips.n + 1e-9))
        yield VideoSeed(seed, clips, X[test], y[test], seed_rows, cap)


def run_video_benchmark(settings: VideoSettings,
                        progress: Callable[[str], None] | None = None,
                        active_runner: VideoRunner | None = None) -> list[VideoRun]:
    """Every strategy on every seed (paired: same split, seed labels and clips). `random`
    spends exactly what active-stream did in the same seed. `active_runner`, if given, runs
    active-stream instead of the in-process loop."""
    from threadpoolctl import threadpool_limits

    runs: list[VideoRun] = []
    order = ["active-stream"] + [s for s in settings.strategies if s != "active-stream"]
    with threadpool_limits(limits=1):
        for vs in video_seeds(settings):
            seed, cap = vs.seed, vs.cap
            quota = cap
            for name in order:
                if name not in settings.strategies:
                    continue
                s_seed = strategy_seed(settings.random_state, seed, name)
                if name == "active-stream" and active_runner is not None:
                    run = active_runner(vs, s_seed)
                else:
                    run = run_seed(name, vs, quota, settings, s_seed)
                if name == "active-stream":
                    quota = run.labels_used
                runs.append(run)
                if progress is not None:
                    progress(f"seed {seed + 1}/{settings.seeds}  {name:<18} labels "
                             f"{run.labels_used:>3}/{cap}  final acc {run.final_accuracy:.3f}  "
                             f"switches caught {run.caught}/{run.switches}  ({run.seconds:.1f}s)")
    return runs
