"""`BatchView`: the per-batch working set of `select` — scores, classes, stream positions and budget
coordinates of every asset, computed vectorised once — and the one place that turns an asset into
a `Selected`. Lives for one batch only; never stored in state.

Every per-prediction and per-asset value here is a function of that prediction/asset, the state's
feedback weights and vocabularies, and its absolute stream position — never of its batch-mates —
which is what makes `select` invariant to batch boundaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.core.batch import PredictionBatch
from services.core.budget import BudgetPolicy, BudgetState
from services.core.codec import combine64
from services.core.eventtime import watermarks
from services.core.instances import InstancePolicy, cost, targets
from services.core.registry import OTHER_CLASS, ModelBook, VersionState
from services.core.selection import Selected
from services.core.uncertainty import Aggregation, aggregate, driving_predictions, score_predictions


class BatchView:
    """Derived arrays of one batch. Prediction level: `u` (uncertainty), `priority` (class-weighted
    u), `gcls` (class index in the model's vocabulary). Asset level: `asset_priority`, `driver`
    (prediction index, -1 if none), `asset_cls`, `pos` (absolute stream position, 0-based),
    `n_seen` / `watermark` (budget coordinates; the watermark after each asset, see
    eventtime.py), `dkey` (dedupe key). `books` / `versions`: the
    state objects of each batch model key (None until created). `instances` / `cost_unit`:
    instance-level requests and the budget's unit (instances.py); with the unit `instances`,
    `n_seen` counts the predictions seen (from `units_seen` before the batch), not assets."""

    def __init__(self, batch: PredictionBatch, books: list[ModelBook | None],
                 versions: list[VersionState | None], measure: Any, aggregation: Aggregation,
                 top_k: int, assets_seen: int, watermark: float,
                 last_time: float | None = None, instances: InstancePolicy | None = None,
                 cost_unit: str = "assets", units_seen: float = 0.0) -> None:
        self.batch, self.books, self.versions = batch, books, versions
        self.aggregation, self.top_k = aggregation, top_k
        self.instances, self.cost_unit = instances, cost_unit
        self.single_model = len(versions) == 1
        self.u = score_predictions(measure, batch.probs, batch.n_classes, batch.top_conf)
        a = batch.n_assets
        self.first = assets_seen
        self.pos = assets_seen + np.arange(a, dtype=np.int64)
        if cost_unit == "instances":  # the count buckets refill per instance seen
            self.n_seen: np.ndarray = units_seen + np.cumsum(np.diff(batch.pred_start)).astype(
                np.float64)
        else:
            self.n_seen = self.pos + 1.0
        # Two consecutive events must agree to move the watermark (eventtime.py).
        self.watermark = watermarks(batch.asset_time, last_time, watermark)
        self.pred_model = (np.zeros(batch.n_predictions, dtype=np.int32) if self.single_model
                           else batch.asset_model[batch.asset_of])
        self.gcls = np.full(batch.n_predictions, -1, dtype=np.int64)
        self.weight = np.ones(batch.n_predictions)
        self.reg_max = np.full(batch.n_predictions, -1, dtype=np.int64)
        mapped: set[str] = set()
        for k, book in enumerate(books):
            if book is not None and batch.model_keys[k][0] not in mapped:
                mapped.add(batch.model_keys[k][0])
                self.map_model(k, book, 0)
        self.boost: np.ndarray | None = None  # track instability per prediction (tracks.py)
        self.unstable: dict[int, Any] = {}  # prediction -> tracks.Instability
        self._derive()
        self.dkey = self._dedupe_keys()
        # Answers kept for the whole batch (arms.py): (dedupe changes, first asset, not
        # remembered per asset from it), and the positions whose exploration draw is below the
        # probability.
        self.eligible: tuple[int, int, np.ndarray] | None = None
        self.explorable: list[int] | None = None
        # Predictions of the one model not yet held for its stats: from this asset on, or None
        # when each segment holds its own (selector.py `_after`).
        self.pending_from: int | None = None
        # Per budget lane: (budget spends, first asset, `open_from` answers from it).
        self._open: dict[str, tuple[int, int, list[bool]]] = {}

    def lane_open(self, budget: BudgetState, policy: BudgetPolicy, lane: str, i: int) -> bool:
        """`budget.available(policy, lane, ...)` at asset i's coordinates, answered from one
        vectorised pass over the rest of the batch kept until the budget spends (a window asks
        its lanes a few times, and a lane spends a few times a batch). Query."""
        cached = self._open.get(lane)
        if cached is not None and cached[0] == budget.spends and i >= cached[1]:
            return cached[2][i - cached[1]]
        opened = None
        # A lane that spent within a few windows of its last pass (one that grants most
        # windows) is asked one query at a time: a pass costs several queries.
        if cached is None or i - cached[1] >= _PASS_EVERY:
            opened = budget.open_from(policy, lane, self.n_seen[i:], self.watermark[i:])
        if opened is None:
            return budget.available(policy, lane, float(self.n_seen[i]), float(self.watermark[i]))
        self._open[lane] = (budget.spends, i, opened)
        return opened[0]

    def rows_of(self, keys: list[int], from_asset: int = 0) -> np.ndarray | slice:
        """Predictions of batch model keys `keys` (of assets >= from_asset). Query."""
        start = int(self.batch.pred_start[from_asset])
        if self.single_model:
            return slice(start, None)
        return start + np.flatnonzero(np.isin(self.pred_model[start:], keys))

    def map_model(self, k: int, book: ModelBook, from_asset: int) -> None:
        """Use `book` for model key k and every other key of its model: register the classes of
        their predictions from asset `from_asset` on (stream order, all versions of the model
        together: they share the vocabulary), then map their rows to the book's vocabulary."""
        b = self.batch
        model_id = b.model_keys[k][0]
        keys = [kk for kk, (m, _) in enumerate(b.model_keys) if m == model_id]
        for kk in keys:
            self.books[kk] = book
        if not all(name in book.index for name in b.classes):
            rows = self.rows_of(keys, from_asset)
            lay, top = b.pred_layout[rows], b.top_class[rows]
            if lay.shape[0] != top.shape[0]:  # a batch built without layouts
                lay = np.full(top.shape[0], -1, dtype=np.int32)
            key = np.where(lay >= 0, lay, -1 - top)
            _, first = np.unique(key, return_index=True)
            first.sort()
            book.register(b.layouts, b.classes, lay[first], top[first])
        rows = self.rows_of(keys, from_asset)  # earlier rows are decided already
        top = b.top_class[rows]
        if self.single_model and from_asset == 0:
            lut = book.lookup(b.classes) if b.classes else np.zeros(0, dtype=np.int64)
        else:
            lut = np.full(max(len(b.classes), 1), -1, dtype=np.int64)
            for c in np.unique(top).tolist():
                lut[c] = book.class_index(b.classes[c])
        g = lut[top] if top.shape[0] else np.zeros(0, dtype=np.int64)
        self.gcls[rows] = g
        lay = b.pred_layout[rows] if b.pred_layout.shape[0] else np.full(g.shape[0], -1)
        if (lay >= 0).any():  # the highest vocabulary index each row's classes reached
            lay_max = np.array([max(book.index.get(b.classes[c], book.index.get(
                OTHER_CLASS, 0)) for c in names) for names in b.layouts], dtype=np.int64)
            self.reg_max[rows] = np.where(lay >= 0, lay_max[np.maximum(lay, 0)], g)
        else:
            self.reg_max[rows] = g
        self.weight[rows] = book.weights[g] if g.shape[0] else 1.0

    def _derive(self) -> None:
        """Priorities and each asset's aggregate, driver and class. A prediction's priority is
        its uncertainty when its class weight is 1, else 1 - (1 - u) ** weight."""
        # Per-asset reservoir inputs of the whole batch (offers.py) and the running maximum of
        # the vocabulary index reached (selector.py), derived from what follows.
        self.offer_cache: dict[str, Any] | None = None
        self.reach: np.ndarray | None = None
        w = self.weight
        if bool((w == 1.0).all()):
            self.priority = self.u
        else:
            self.priority = np.where(w == 1.0, self.u, 1.0 - (1.0 - self.u) ** w)
        if self.boost is not None:  # instability joins uncertainty (tracks.py)
            self.priority = 1.0 - (1.0 - self.priority) * (1.0 - self.boost)
        b = self.batch
        self.asset_priority, self.driver = aggregate(  # (-1: a model not created yet)
            self.priority, np.maximum(self.gcls, 0), b.pred_start, self.aggregation, self.top_k)
        has = self.driver >= 0
        self.asset_cls = np.where(has, self.gcls[np.maximum(self.driver, 0)], -1) if \
            self.gcls.shape[0] else np.full(b.n_assets, -1)

    def add_instability(self, weight: float, unstable: dict[int, Any]) -> None:
        """Raise the priorities of unstable predictions (tracks.py) and re-derive. Command."""
        if not unstable:
            return
        boost = np.zeros(self.batch.n_predictions)
        for r, inst in unstable.items():
            boost[r] = weight * inst.score
        self.boost, self.unstable = boost, unstable
        self._derive()

    def rebook(self, k: int, book: ModelBook, from_asset: int) -> None:
        """Model key k got a new (recreated) book at asset `from_asset`: remap and re-derive."""
        self.map_model(k, book, from_asset)
        self._derive()

    def _dedupe_keys(self) -> np.ndarray:
        b = self.batch
        hashes = [_key_hash(m, v) for m, v in b.model_keys]
        if self.single_model:
            return combine64(b.asset_hash, hashes[0])
        out = np.zeros(b.n_assets, dtype=np.uint64)
        for k, h in enumerate(hashes):
            mask = b.asset_model == k
            out[mask] = combine64(b.asset_hash[mask], h)
        return out

    def assets_of(self, k: int) -> np.ndarray:
        """Boolean mask of the assets of batch model key k. Query."""
        if self.single_model:
            return np.ones(self.batch.n_assets, dtype=bool)
        return self.batch.asset_model == k

    def predictions_in(self, lo: int, hi: int, k: int) -> np.ndarray | slice:
        """Index of the predictions of model key k among assets lo:hi. Query."""
        p0, p1 = int(self.batch.pred_start[lo]), int(self.batch.pred_start[hi])
        if self.single_model:
            return slice(p0, p1)
        return p0 + np.flatnonzero(self.pred_model[p0:p1] == k)

    def cost_of(self, i: int) -> int:
        """Budget units asset i costs when selected by its own driver (instances.py); 1 when
        the budget counts assets. Query."""
        if self.cost_unit == "assets":
            return 1
        b = self.batch
        lo, hi = int(b.pred_start[i]), int(b.pred_start[i + 1])
        if self.instances is None or not self.instances.requests:
            return cost(self.cost_unit, hi - lo, None)
        drivers = driving_predictions(self.priority, self.gcls, lo, hi, int(self.driver[i]),
                                      self.aggregation, self.top_k)
        rows = targets(self.instances, self.priority, lo, hi, drivers, self.unstable)
        return cost(self.cost_unit, hi - lo, len(rows))

    def describe(self, i: int, strategy: str, threshold: float | None = None,
                 inclusion: float | None = None, driver: int | None = None) -> Selected:
        """The `Selected` record of asset i of this batch. Query."""
        b = self.batch
        k = int(b.asset_model[i])
        lo, hi = int(b.pred_start[i]), int(b.pred_start[i + 1])
        d = int(self.driver[i]) if driver is None else driver
        drivers = driving_predictions(self.priority, self.gcls, lo, hi, d, self.aggregation,
                                      self.top_k)
        score = sum(float(self.u[j]) for j in drivers) / len(drivers) if drivers else 0.0
        priority = float(self.asset_priority[i] if driver is None else self.priority[d])
        model_id, version = b.model_keys[k]
        book = self.books[k]
        assert book is not None
        unstable = self.unstable.get(d) if d >= 0 and self.unstable else None
        named = None
        if self.instances is not None and self.instances.requests:
            rows = targets(self.instances, self.priority, lo, hi, drivers, self.unstable)
            named = tuple(int(b.position[j]) for j in rows)
        return Selected(
            ref=b.refs[i], asset_index=i, model_id=model_id, model_version=version,
            strategy=strategy, score=score, threshold=threshold,
            class_name=book.names[int(self.gcls[d])] if d >= 0 else None,
            driving_predictions=tuple(int(b.position[j]) for j in drivers), priority=priority,
            inclusion_probability=inclusion, event_time=float(b.asset_time[i]),
            track=None if unstable is None else unstable.to_json(), targets=named,
            cost=cost(self.cost_unit, hi - lo, None if named is None else len(named)))

    def plain_rows(self) -> bool:
        """True when `describe(i, strategy).to_json()` of every asset is the 12-field row
        `held_rows` builds: one driver per asset (`max`), no instance targets, no track, each
        request costing 1. Query."""
        return (self.aggregation == "max" and not self.unstable and self.cost_unit == "assets"
                and (self.instances is None or not self.instances.requests))

    def held_rows(self, idx: np.ndarray, strategy: str) -> list[list[Any]]:
        """`[describe(i, strategy).to_json() for i in idx]` with asset_index -1, gathered with
        one numpy pass per column instead of a `Selected` per asset; only when `plain_rows()`
        (test_payloads.py compares the two). Query."""
        b = self.batch
        d = self.driver[idx]
        has = (d >= 0).tolist()
        if b.n_predictions:
            dd = np.maximum(d, 0)
            u, cls, position = (self.u[dd].tolist(), self.gcls[dd].tolist(),
                                b.position[dd].tolist())
        else:  # assets without predictions: no driver, nothing to gather
            u = cls = position = [0] * len(has)
        models = b.asset_model[idx].tolist()
        keys, books = [b.model_keys[k] for k in models], [self.books[k] for k in models]
        out = []
        for n, (i, prio, t) in enumerate(zip(idx.tolist(), self.asset_priority[idx].tolist(),
                                             b.asset_time[idx].tolist(), strict=True)):
            model_id, version = keys[n]
            book = books[n]
            assert book is not None
            if has[n]:
                # describe's score, the mean over one driver: `sum(...) / 1` (0 + -0.0 is 0.0)
                out.append([b.refs[i], -1, model_id, version, strategy, (0 + u[n]) / 1, None,
                            book.names[cls[n]], [position[n]], prio, None, t])
            else:
                out.append([b.refs[i], -1, model_id, version, strategy, 0.0, None, None, [],
                            prio, None, t])
        return out


_PASS_EVERY = 200
"""Assets after a lane's last vectorised pass before a spend may trigger another (`lane_open`)."""

_KEY_HASHES: dict[tuple[str, str], int] = {}


def _key_hash(model_id: str, version: str) -> int:
    """`VersionState.key_hash` of a model version (cached; a pure function of the names)."""
    h = _KEY_HASHES.get((model_id, version))
    if h is None:
        from services.core.codec import stable_hash64

        if len(_KEY_HASHES) > 4096:
            _KEY_HASHES.clear()
        h = _KEY_HASHES[(model_id, version)] = stable_hash64(f"{model_id}\x1f{version}")
    return h
