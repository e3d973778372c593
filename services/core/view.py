"""`BatchView`: the per-batch working set of `select` — scores, classes, budget coordinates and
eligibility of every asset, computed vectorised once — and the one place that turns an asset into
a `Selected`. Lives for one batch only; never stored in state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from services.core.batch import PredictionBatch
from services.core.codec import combine64
from services.core.registry import ModelBook, VersionState
from services.core.selection import Selected
from services.core.uncertainty import Aggregation, aggregate, driving_predictions, score_predictions


class BatchView:
    """Derived arrays of one batch. Prediction level: `u` (uncertainty), `priority` (class-weighted
    u), `gcls` (class index in the model's vocabulary). Asset level: `asset_priority`, `driver`
    (prediction index, -1 if none), `asset_cls`, `n_seen` / `watermark` (budget coordinates),
    `dkey` (dedupe key), `free` (eligible and not selected yet in this batch)."""

    def __init__(self, batch: PredictionBatch, books: list[ModelBook],
                 versions: list[VersionState], measure: Any, aggregation: Aggregation,
                 top_k: int, assets_seen: int, watermark: float) -> None:
        self.batch, self.books, self.versions = batch, books, versions
        self.aggregation, self.top_k = aggregation, top_k
        self.single_model = len(versions) == 1
        self.u = score_predictions(measure, batch.probs, batch.n_classes, batch.top_conf)
        self.gcls, weights = self._classes()
        self.priority = self.u if weights is None else 1.0 - (1.0 - self.u) ** weights
        self.asset_priority, self.driver = aggregate(
            self.priority, self.gcls, batch.pred_start, aggregation, top_k)
        has = self.driver >= 0
        self.asset_cls = np.where(has, self.gcls[np.maximum(self.driver, 0)], -1) if \
            self.gcls.shape[0] else np.full(batch.n_assets, -1)
        a = batch.n_assets
        self.n_seen = assets_seen + 1.0 + np.arange(a, dtype=np.float64)
        self.watermark = np.maximum.accumulate(np.maximum(batch.asset_time, watermark))
        self.dkey = self._dedupe_keys()
        self.free = np.ones(a, dtype=bool)
        self.taken: set[int] = set()

    def _classes(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Map batch-local top classes to each model's vocabulary (adds new names there: all of
        the batch's classes for a one-model batch, else only each model's top-1 classes)."""
        b = self.batch
        n_local = len(b.classes)
        if self.single_model:
            lut = self.books[0].lookup(b.classes)
            weights = self.books[0].weights[lut]
            gcls = lut[b.top_class] if n_local else np.zeros(0, dtype=np.int64)
            if n_local == 0 or bool((weights == 1.0).all()):
                return gcls, None
            return gcls, weights[b.top_class]
        lut = np.full((len(self.versions), max(n_local, 1)), -1, dtype=np.int64)
        wlut = np.ones(lut.shape)
        pred_model = b.asset_model[b.asset_of]
        for k, book in enumerate(self.books):
            top = b.top_class[pred_model == k]
            for c in np.flatnonzero(np.bincount(top, minlength=n_local)).tolist():
                lut[k, c] = book.class_index(b.classes[c])
            used = lut[k] >= 0
            wlut[k, used] = book.weights[lut[k, used]]
        gcls, w = lut[pred_model, b.top_class], wlut[pred_model, b.top_class]
        return gcls, (None if bool((wlut == 1.0).all()) else w)

    def _dedupe_keys(self) -> np.ndarray:
        b = self.batch
        if self.single_model:
            return combine64(b.asset_hash, self.versions[0].key_hash)
        out = np.zeros(b.n_assets, dtype=np.uint64)
        for k, version in enumerate(self.versions):
            mask = b.asset_model == k
            out[mask] = combine64(b.asset_hash[mask], version.key_hash)
        return out

    def assets_of(self, k: int) -> np.ndarray:
        """Boolean mask of the assets of batch model key k. Query."""
        if self.single_model:
            return np.ones(self.batch.n_assets, dtype=bool)
        return self.batch.asset_model == k

    def predictions_of(self, k: int) -> np.ndarray | slice:
        """Index (mask or full slice) of the predictions of batch model key k. Query."""
        if self.single_model:
            return slice(None)
        return self.batch.asset_model[self.batch.asset_of] == k

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
        return Selected(
            ref=b.refs[i], asset_index=i, model_id=self.versions[k].model_id,
            model_version=self.versions[k].version, strategy=strategy, score=score,
            threshold=threshold,
            class_name=self.books[k].names[int(self.gcls[d])] if d >= 0 else None,
            driving_predictions=tuple(int(b.position[j]) for j in drivers), priority=priority,
            inclusion_probability=inclusion, event_time=float(b.asset_time[i]))

    def can_take(self, i: int) -> bool:
        """Asset i is eligible and neither it nor a same-key asset was taken this batch. Query."""
        return bool(self.free[i]) and int(self.dkey[i]) not in self.taken

    def take(self, i: int) -> None:
        """Mark asset i selected for the rest of the batch."""
        self.free[i] = False
        self.taken.add(int(self.dkey[i]))
