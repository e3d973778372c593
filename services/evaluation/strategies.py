"""Strategies the harness compares, all behind one interface (`Strategy`).

Each strategy sees the stream in order, in batches of stream positions with the current model's
probabilities, and answers which positions it wants labeled. The harness owns the hard label cap,
the oracle, the model and its retrain cadence; a strategy only chooses.

- `active-stream`: the selection core (`SelectorState` + `select`) fed inference events exactly
  as the scorer receives them: one event per asset, the model's full distribution as `scores`,
  `model_version` bumped at every retrain, class feedback (`apply_feedback`) after each retrain.
- `random`: exactly `quota` positions drawn uniformly from the whole stream, revealed in order.
- peers (when importable): scikit-activeml's stream VariableUncertainty and Split, and River's
  EntropySampler, each over the same model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from services.core import PredictionBatch, SelectorPolicy, SelectorState
from services.scorer.partition import partition_seed

MODEL_ID = "bench-model"
EPOCH = 1_700_000_000.0  # event time of stream position 0 (any fixed epoch works)


@dataclass(frozen=True)
class SeedContext:
    """What a strategy learns about one seed's run before it starts.

    `seed`: its own randomness for this seed; `classes`: every class name of the data set;
    `n_stream`: events in the stream; `budget`: the label share of the stream; `cap`: the hard
    label cap; `quota`: labels a fixed-quota strategy (random) spends (<= cap)."""

    seed: int
    classes: tuple[str, ...]
    n_stream: int
    budget: float
    cap: int
    quota: int


class Model(Protocol):
    """The harness's current classifier (read-only for strategies)."""

    classes: tuple[str, ...]
    X_train: np.ndarray
    y_train: np.ndarray

    def proba(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Feedback:
    """Per human class, over the labels acquired so far: share of them the model (at selection
    time) agreed with, and how many were compared."""

    agreement: Mapping[str, float]
    counts: Mapping[str, int]


class Strategy(Protocol):
    name: str

    def start(self, ctx: SeedContext, model: Model) -> None:
        """Reset for a new seed; `model` is the seed-label model (version 0)."""

    def choose(self, positions: np.ndarray, X: np.ndarray, proba: np.ndarray, model: Model
               ) -> list[int]:
        """Stream positions to label among `positions` (rows `X`, model probabilities `proba`
        whose columns are `model.classes`); positions of earlier batches are allowed (deferred
        picks). The harness labels them in the returned order until the cap."""

    def retrained(self, model: Model, version: int, feedback: Feedback) -> None:
        """The model was retrained to `version` (1, 2, ...) on every label so far."""

    def diagnostics(self) -> dict[str, Any]:
        """JSON-able figures about this seed's run (may be empty)."""


# -- active-stream ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimPrediction:
    """A prediction as the selection core reads it (what the scorer decodes one to): the
    benchmarks' stand-in, video fields included (None when the stream has none)."""

    scores: Mapping[str, float] | None
    label: str | None = None
    confidence: float | None = None
    instance_id: str | None = None
    track_id: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    embedding: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class SimEvent:
    """An inference event as the selection core reads it (see SimPrediction)."""

    event_id: str
    asset_id: str
    model_id: str
    model_version: str
    timestamp: float
    predictions: tuple[SimPrediction, ...]
    sequence_id: str | None = None


class ActiveStream:
    """The selection core under `policy` (default: `SelectorPolicy()`), one partition.

    Event time: stream position p happens at EPOCH + p x `spacing` seconds (see the CLI's
    --event-spacing for why 1 s)."""

    def __init__(self, policy: SelectorPolicy | None = None, name: str = "active-stream",
                 spacing: float = 1.0) -> None:
        self.name = name
        self.policy = policy if policy is not None else SelectorPolicy()
        self.spacing = spacing
        self.state: SelectorState | None = None
        self.version = 0
        self.arms: Counter[str] = Counter()
        self.ready_versions = 0
        self.versions = 0

    def start(self, ctx: SeedContext, model: Model) -> None:
        # Seeded as the scorer seeds input partition 0 with ACTIVE_STREAM_SCORER_SEED=ctx.seed,
        # so --mode kafka (one partition) decides exactly as this does.
        self.state = SelectorState.create(self.policy, partition_seed(ctx.seed, 0))
        self.version, self.arms = 0, Counter()
        self.ready_versions, self.versions = 0, 1

    def choose(self, positions: np.ndarray, X: np.ndarray, proba: np.ndarray, model: Model
               ) -> list[int]:
        assert self.state is not None, "start() first"
        version = f"v{self.version}"
        events = [
            SimEvent(f"e{p}", f"asset-{p}", MODEL_ID, version, EPOCH + p * self.spacing,
                   (SimPrediction(dict(zip(model.classes, row, strict=True))),))
            for p, row in zip(positions.tolist(), proba.tolist(), strict=True)
        ]
        selection = self.state.select(PredictionBatch.from_events(events, positions.tolist()))
        self.arms.update(s.strategy for s in selection.selected)
        return [int(s.ref) for s in selection.selected]

    def retrained(self, model: Model, version: int, feedback: Feedback) -> None:
        assert self.state is not None, "start() first"
        self.ready_versions += int(self._ready())
        self.version, self.versions = version, self.versions + 1
        if feedback.agreement:
            self.state.apply_feedback(MODEL_ID, dict(feedback.agreement),
                                      {c: float(n) for c, n in feedback.counts.items()})

    def _ready(self) -> bool:
        assert self.state is not None
        v = self.state.versions.get((MODEL_ID, f"v{self.version}"))
        return bool(v is not None and v.ready)

    def diagnostics(self) -> dict[str, Any]:
        ready = self.ready_versions + int(self._ready())
        return {"selected_by_arm": dict(sorted(self.arms.items())),
                "model_versions": self.versions, "versions_ready": ready}


# -- random ----------------------------------------------------------------------------------


class RandomQuota:
    """Exactly `ctx.quota` labels, positions uniform over the whole stream, revealed in order."""

    name = "random"

    def __init__(self) -> None:
        self.picks: set[int] = set()

    def start(self, ctx: SeedContext, model: Model) -> None:
        rng = np.random.default_rng(ctx.seed)
        self.picks = set(rng.choice(ctx.n_stream, size=ctx.quota, replace=False).tolist())

    def choose(self, positions: np.ndarray, X: np.ndarray, proba: np.ndarray, model: Model
               ) -> list[int]:
        return [p for p in positions.tolist() if p in self.picks]

    def retrained(self, model: Model, version: int, feedback: Feedback) -> None:
        pass

    def diagnostics(self) -> dict[str, Any]:
        return {}


# -- peers -----------------------------------------------------------------------------------


class SkactivemlStream:
    """A scikit-activeml stream query strategy (`kind`: variable_uncertainty | split) with its
    default budget manager at `ctx.budget`, querying one candidate at a time through its public
    `query`/`update` API, over the harness's model refitted in a skactiveml SklearnClassifier on
    the same labels at the same retrain points."""

    KINDS = {"variable_uncertainty": "VariableUncertainty", "split": "Split"}

    def __init__(self, kind: str, make_estimator: Any, name: str) -> None:
        from skactiveml import stream  # ImportError = peer not installed

        self.cls = getattr(stream, self.KINDS[kind])
        self.make_estimator = make_estimator
        self.name = name
        self.qs: Any = None
        self.clf: Any = None
        self.classes: tuple[str, ...] = ()
        self.seed = 0

    def start(self, ctx: SeedContext, model: Model) -> None:
        self.qs = self.cls(budget=ctx.budget, random_state=ctx.seed)
        self.classes, self.seed = ctx.classes, ctx.seed
        self._fit(model)

    def _fit(self, model: Model) -> None:
        from skactiveml.classifier import SklearnClassifier

        self.clf = SklearnClassifier(self.make_estimator(), classes=np.array(self.classes),
                                     missing_label=None, random_state=self.seed)
        self.clf.fit(model.X_train, model.y_train.astype(object))

    def choose(self, positions: np.ndarray, X: np.ndarray, proba: np.ndarray, model: Model
               ) -> list[int]:
        out = []
        for k, p in enumerate(positions.tolist()):
            cand = X[k: k + 1]
            queried = self.qs.query(cand, clf=self.clf)
            self.qs.update(cand, queried)
            if len(queried):
                out.append(p)
        return out

    def retrained(self, model: Model, version: int, feedback: Feedback) -> None:
        self._fit(model)

    def diagnostics(self) -> dict[str, Any]:
        return {}


class SkactivemlPAL(SkactivemlStream):
    """scikit-activeml's StreamProbabilisticAL (Kottke et al.'s probabilistic active learning)
    with an RBF Parzen window over the labels so far (its documented set-up for a classifier
    without label frequencies), queried one candidate at a time like the other skactiveml peers.
    Each query fits the Parzen window on every label so far: its cost grows with labels x
    candidates x classes, so the suite runs it only where that stays affordable (suite.py)."""

    def __init__(self, make_estimator: Any, name: str) -> None:
        from skactiveml import stream  # ImportError = peer not installed

        self.cls = stream.StreamProbabilisticAL
        self.make_estimator = make_estimator
        self.name = name
        self.qs = self.clf = None
        self.classes, self.seed = (), 0
        self.X_train = np.zeros((0, 0))
        self.y_train = np.zeros(0, dtype=object)

    def start(self, ctx: SeedContext, model: Model) -> None:
        self.qs = self.cls(budget=ctx.budget, random_state=ctx.seed, metric="rbf")
        self.classes, self.seed = ctx.classes, ctx.seed
        self._fit(model)

    def _fit(self, model: Model) -> None:
        super()._fit(model)
        self.X_train, self.y_train = model.X_train, model.y_train.astype(object)

    def choose(self, positions: np.ndarray, X: np.ndarray, proba: np.ndarray, model: Model
               ) -> list[int]:
        out = []
        for k, p in enumerate(positions.tolist()):
            cand = X[k: k + 1]
            queried, utilities = self.qs.query(cand, clf=self.clf, X=self.X_train,
                                               y=self.y_train, return_utilities=True)
            # Its budget manager learns the utilities' quantiles from what update() passes.
            self.qs.update(cand, queried, budget_manager_param_dict={"utilities": utilities})
            if len(queried):
                out.append(p)
        return out


class _RiverAdapter:
    """The harness's current model as a River classifier (`predict_proba_one`)."""

    def __init__(self) -> None:
        self.model: Model | None = None

    def predict_proba_one(self, x: dict[int, float], **kwargs: Any) -> dict[str, float]:
        assert self.model is not None
        row = np.array([[x[i] for i in range(len(x))]])
        return dict(zip(self.model.classes, self.model.proba(row)[0].tolist(), strict=True))

    def learn_one(self, x: dict[int, float], y: str) -> None:
        pass  # the harness retrains the model on its own cadence


class RiverEntropy:
    """River's `active.EntropySampler` (defaults: discount_factor 3) around the same model."""

    name = "river-entropy"

    def __init__(self) -> None:
        from river import active  # ImportError = peer not installed

        self.active = active
        self.adapter = _RiverAdapter()
        self.sampler: Any = None

    def start(self, ctx: SeedContext, model: Model) -> None:
        self.adapter.model = model
        # River types its classifier argument nominally; the adapter has every method it calls.
        self.sampler = self.active.EntropySampler(self.adapter,  # type: ignore[arg-type]
                                                  seed=ctx.seed)

    def choose(self, positions: np.ndarray, X: np.ndarray, proba: np.ndarray, model: Model
               ) -> list[int]:
        out = []
        for k, p in enumerate(positions.tolist()):
            _, ask = self.sampler.predict_proba_one(dict(enumerate(X[k].tolist())))
            if ask:
                out.append(p)
        return out

    def retrained(self, model: Model, version: int, feedback: Feedback) -> None:
        self.adapter.model = model

    def diagnostics(self) -> dict[str, Any]:
        return {}


PEERS = ("skactiveml-variable-uncertainty", "skactiveml-split", "skactiveml-pal",
         "river-entropy")
CORE = ("active-stream", "random")


VARIANT = "active-stream:"
"""Prefix of a policy variant's strategy name (`active-stream:NAME`, an ablation or a candidate
policy run beside the default on the same seeds)."""


def build(name: str, make_estimator: Any, policy: SelectorPolicy | None, spacing: float,
          variants: Mapping[str, SelectorPolicy] | None = None) -> Strategy:
    """The strategy called `name`; ImportError when a peer's package is missing. A name
    `active-stream:V` is the selection core under `variants[V]`."""
    if name == "active-stream":
        return ActiveStream(policy, name, spacing)
    if name.startswith(VARIANT) and variants and name[len(VARIANT):] in variants:
        return ActiveStream(variants[name[len(VARIANT):]], name, spacing)
    if name == "random":
        return RandomQuota()
    if name == "skactiveml-variable-uncertainty":
        return SkactivemlStream("variable_uncertainty", make_estimator, name)
    if name == "skactiveml-split":
        return SkactivemlStream("split", make_estimator, name)
    if name == "skactiveml-pal":
        return SkactivemlPAL(make_estimator, name)
    if name == "river-entropy":
        return RiverEntropy()
    raise ValueError(f"unknown strategy {name!r}; known: {', '.join(CORE + PEERS)}")


def available_peers(expensive: bool = False) -> list[str]:
    """Peers whose packages import; `expensive` adds PAL (run by default only by the suite,
    where its cost allows; a single run names it in --strategies)."""
    out = []
    for name, module in (("skactiveml-variable-uncertainty", "skactiveml"),
                         ("skactiveml-split", "skactiveml"), ("skactiveml-pal", "skactiveml"),
                         ("river-entropy", "river")):
        if name == "skactiveml-pal" and not expensive:
            continue
        try:
            __import__(module)
        except ImportError:
            continue
        out.append(name)
    return out
