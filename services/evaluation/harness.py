"""The benchmark loop: one pass over a seed's stream per strategy.

Protocol (fixed by issue 6 and the research anchors): a stratified held-out test split,
`seed_labels` random seed labels from the pool, the rest of the pool streamed once in a random
order, a hard cap of floor(budget x stream length) acquired labels, test accuracy measured after
every (re)training. Seeds are paired: every strategy of a seed sees the same split, seed labels
and stream order. The oracle answers with the true class.

The loop runs in rounds, as the closed loop does over Kafka (`kafka_loop.py`): the model service
streams `batch_size` events with the current model; the selected assets are labeled in selection
order (later picks past the cap are dropped); every `retrain_every`-th label fires a retrain
trigger (the label sink's count rule), and after the round the trainer retrains once per trigger
on the labels up to it, the last model serving the next round, and the scorer gets the class
feedback as of the last trigger. At the end of the stream the labels past the last trigger get
one final retraining.

Deterministic: every random choice derives from (random_state, seed index, strategy name), and
the model runs single-threaded (threadpoolctl), so equal settings give equal results.
"""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core import SelectorPolicy
from services.core.agreement import ClassTally, feedback_classes
from services.core.feedback import FeedbackPolicy
from services.evaluation.datasets import Dataset, Split, make_split
from services.evaluation.strategies import Feedback, SeedContext, Strategy, build


@dataclass(frozen=True)
class Settings:
    """One benchmark run's settings (all recorded in results.json)."""

    dataset: str = "digits"
    seeds: int = 10
    seed_labels: int = 50
    budget: float = 0.10
    retrain_every: int = 10
    strategies: tuple[str, ...] = ("active-stream", "random")
    test_share: float = 0.3
    batch_size: int = 50
    event_spacing: float = 1.0
    random_state: int = 0
    max_iter: int = 5000

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.seed_labels < 1 or self.retrain_every < 1:
            raise ValueError("--seeds, --seed-labels and --retrain-every must be >= 1")
        if not 0.0 < self.budget <= 1.0 or not 0.0 < self.test_share < 1.0:
            raise ValueError("--budget must be in (0, 1] and the test share in (0, 1)")
        if self.batch_size < 1 or self.event_spacing <= 0:
            raise ValueError("batch size must be >= 1 and event spacing > 0")
        if len(set(self.strategies)) != len(self.strategies) or not self.strategies:
            raise ValueError("--strategies must name each strategy once")


def make_estimator(max_iter: int = 5000) -> Any:
    """The benchmark model: StandardScaler + multinomial LogisticRegression (lbfgs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))


class FittedModel:
    """The estimator fitted on (X_train, y_train); `classes` are the classes it has seen."""

    def __init__(self, X_train: np.ndarray, y_train: np.ndarray, max_iter: int) -> None:
        self.X_train, self.y_train = X_train, y_train
        with warnings.catch_warnings():
            # 50 seed labels of a 30-class set: scikit-learn suspects a regression target.
            warnings.filterwarnings("ignore", message="The number of unique classes")
            self.estimator = make_estimator(max_iter).fit(X_train, y_train)
        self.classes: tuple[str, ...] = tuple(str(c) for c in self.estimator.classes_)

    def proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(X))

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.estimator.predict(X) == y))


@dataclass
class SeedRun:
    """One strategy on one seed. `curve`: (labels incl. seed labels, test accuracy) after each
    (re)training; `labels_used`: labels acquired from the stream (seed labels excluded)."""

    strategy: str
    seed: int
    labels_used: int
    curve: list[tuple[int, float]]
    seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)
    picked: list[int] = field(default_factory=list)  # stream positions labeled, in label order
    # Control-arm accuracy estimates of the model versions (--mode kafka: from the triggers'
    # `stopping`): {labels (the version was trained on), model_version, estimate, low, high,
    # control_labels}.
    control: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return self.curve[-1][1]


def strategy_seed(random_state: int, seed: int, name: str) -> int:
    """A strategy's own seed for one seed index, stable across runs and Python processes."""
    ss = np.random.SeedSequence([random_state, seed, zlib.crc32(name.encode())])
    return int(ss.generate_state(1)[0])


class Labels:
    """What the loop has labeled so far, in label order, and the tally of human-model agreement
    per class that the label sink would publish as class feedback."""

    def __init__(self, seed_rows: list[int]) -> None:
        self.rows = list(seed_rows)  # dataset rows: the seed labels, then acquired ones
        self.n_seed = len(seed_rows)
        self.tally = ClassTally()
        self.triggers: list[tuple[int, Feedback]] = []  # (labels acquired, feedback then)

    @property
    def acquired(self) -> int:
        return len(self.rows) - self.n_seed

    def add(self, row: int, human: str, predicted: str, retrain_every: int) -> None:
        """Label one row; every `retrain_every`-th acquired label fires a trigger."""
        self.rows.append(row)
        self.tally.add([human], [(human, human == predicted)])
        if self.acquired % retrain_every == 0:
            self.triggers.append((self.acquired, self.feedback()))

    def feedback(self) -> Feedback:
        stats = feedback_classes(self.tally, {}, FeedbackPolicy())
        return Feedback({c: s.agreement for c, s in stats.items() if s.agreement is not None},
                        {c: self.tally.compared[c] for c in stats if self.tally.compared[c]})


def run_one(strategy: Strategy, data: Dataset, split: Split, ctx: SeedContext,
            settings: Settings, seed: int) -> SeedRun:
    """Stream `split.stream` once through `strategy` under the hard cap `ctx.cap` (module
    docstring: rounds, triggers, retraining)."""
    started = time.perf_counter()
    X, y = data.X, data.y
    X_test, y_test = X[split.test], y[split.test]
    stream = split.stream
    labels = Labels(split.seed.tolist())
    model = FittedModel(X[labels.rows], y[labels.rows], settings.max_iter)
    curve = [(labels.n_seed, model.accuracy(X_test, y_test))]
    strategy.start(ctx, model)
    taken = np.zeros(stream.shape[0], dtype=bool)
    predicted = np.empty(stream.shape[0], dtype=object)  # the model's class when streamed
    picked: list[int] = []
    version = used = 0  # used: triggers already trained on
    pos, n = 0, stream.shape[0]
    while pos < n and labels.acquired < ctx.cap:
        hi = min(n, pos + settings.batch_size)
        proba = model.proba(X[stream[pos:hi]])
        predicted[pos:hi] = np.array(model.classes, dtype=object)[proba.argmax(axis=1)]
        for p in strategy.choose(np.arange(pos, hi), X[stream[pos:hi]], proba, model):
            if labels.acquired >= ctx.cap:
                break  # the hard cap: later picks are dropped, never labeled
            if p >= hi or taken[p]:
                raise RuntimeError(f"{strategy.name} picked stream position {p} twice or early")
            taken[p] = True
            picked.append(int(p))
            labels.add(int(stream[p]), str(y[stream[p]]), str(predicted[p]),
                       settings.retrain_every)
        pos = hi
        for upto, _ in labels.triggers[used:]:
            version += 1
            rows = labels.rows[: labels.n_seed + upto]
            model = FittedModel(X[rows], y[rows], settings.max_iter)
            curve.append((len(rows), model.accuracy(X_test, y_test)))
        if len(labels.triggers) > used:
            used = len(labels.triggers)
            if pos < n and labels.acquired < ctx.cap:
                strategy.retrained(model, version, labels.triggers[-1][1])
    if labels.acquired > (labels.triggers[-1][0] if labels.triggers else 0):
        model = FittedModel(X[labels.rows], y[labels.rows], settings.max_iter)
        curve.append((len(labels.rows), model.accuracy(X_test, y_test)))
    diagnostics = strategy.diagnostics()
    return SeedRun(strategy.name, seed, labels.acquired, curve, time.perf_counter() - started,
                   diagnostics, picked)


Runner = Callable[[Dataset, Split, SeedContext, int], SeedRun]
"""Runs `active-stream` for one seed some other way (e.g. `KafkaLoop.run_seed`)."""


def run_benchmark(data: Dataset, settings: Settings, policy: SelectorPolicy | None = None,
                  progress: Callable[[str], None] | None = None,
                  active_runner: Runner | None = None,
                  variants: Mapping[str, SelectorPolicy] | None = None) -> list[SeedRun]:
    """Every strategy on every seed (paired). `random` spends exactly what `active-stream` did
    in the same seed (the cap when active-stream is not run). `active_runner`, if given, runs
    active-stream instead of the in-process loop. `variants`: the policies of strategies named
    `active-stream:NAME` (in process). Single-threaded BLAS/OpenMP."""
    from threadpoolctl import threadpool_limits

    order = _order(settings.strategies)
    runs: list[SeedRun] = []
    with threadpool_limits(limits=1):
        for seed in range(settings.seeds):
            rng = np.random.default_rng([settings.random_state, seed])
            split = make_split(data, rng, settings.test_share, settings.seed_labels)
            n = split.stream.shape[0]
            cap = int(np.floor(settings.budget * n + 1e-9))
            quota = cap
            for name in order:
                ctx = SeedContext(strategy_seed(settings.random_state, seed, name),
                                  data.classes, n, settings.budget, cap, quota)
                if name == "active-stream" and active_runner is not None:
                    run = active_runner(data, split, ctx, seed)
                else:
                    strategy = build(name, lambda: make_estimator(settings.max_iter), policy,
                                     settings.event_spacing, variants)
                    run = run_one(strategy, data, split, ctx, settings, seed)
                if name == "active-stream":
                    quota = run.labels_used
                runs.append(run)
                if progress is not None:
                    progress(f"seed {seed + 1}/{settings.seeds}  {name:<32} "
                             f"labels {run.labels_used:>4}/{cap}  "
                             f"final acc {run.final_accuracy:.3f}  ({run.seconds:.1f}s)")
    return runs


def _order(names: Sequence[str]) -> list[str]:
    """active-stream first (random's quota depends on it), then random, then the rest."""
    first = [n for n in ("active-stream", "random") if n in names]
    return first + [n for n in names if n not in first]
