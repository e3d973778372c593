"""`PredictionBatch`: a batch of inference events flattened into the arrays the selector reads.

Building is the only per-prediction Python loop in the core; it is measured separately from
selection (bench/selector.py). Class names are mapped to a batch-local vocabulary here; the selector
maps that to each model's persistent vocabulary, which lives in `SelectorState`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.core.codec import stable_hashes64
from services.core.events import InferenceEventLike, ScoreColumns


@dataclass(frozen=True, eq=False)
class PredictionBatch:
    """Flat arrays for n predictions of a assets (one asset per event), in event order.

    Prediction arrays (length n): `probs` (n x len(classes), zeros outside a row's distribution and
    on top-1 rows), `n_classes` (distribution size, 0 for top-1 rows), `top_class` (batch-local
    class index), `top_conf` (top-1 probability in [0, 1]), `asset_of` (non-decreasing asset index)
    and `position` (index in the event's `predictions`). Asset arrays (length a): `pred_start`
    (a + 1 offsets: asset i owns predictions pred_start[i]:pred_start[i+1]), `asset_time` (event
    time, epoch s), `asset_model` (index into `model_keys`), `asset_hash` (`codec.stable_hashes64`
    of asset_id), `repeat` (True when an earlier event of this batch has the same asset and model
    version; informational, the selector dedupes by stream position) and `refs` (the caller's
    opaque value per asset, returned with its selection).
    Everything the selector derives from one prediction depends on that prediction only, never on
    its batch-mates: `top_class` breaks ties by the event's own class order, and batch-local class
    indices never reach the state (the selector registers classes per model in stream order).
    `video`: the optional video fields (`VideoColumns`), None when no event of the batch has any.
    Treat every array as read-only.
    """

    classes: tuple[str, ...]
    model_keys: tuple[tuple[str, str], ...]
    probs: np.ndarray
    n_classes: np.ndarray
    top_class: np.ndarray
    top_conf: np.ndarray
    asset_of: np.ndarray
    position: np.ndarray
    pred_start: np.ndarray
    asset_time: np.ndarray
    asset_model: np.ndarray
    asset_hash: np.ndarray
    repeat: np.ndarray
    refs: tuple[Any, ...]
    layouts: tuple[tuple[int, ...], ...] = ()
    pred_layout: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    video: VideoColumns | None = None

    @property
    def n_predictions(self) -> int:
        return int(self.top_conf.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.asset_time.shape[0])

    @classmethod
    def from_events(
        cls, events: Sequence[InferenceEventLike], refs: Sequence[Any] | None = None
    ) -> PredictionBatch:
        """Flatten `events` (one asset each) with one caller `ref` per event (default: None).

        Pure: reads the events, never mutates them. Raises ValueError when `refs` has the wrong
        length or a prediction carries neither `scores` nor `label` + `confidence`.
        """
        if refs is None:
            refs = [None] * len(events)
        if len(refs) != len(events):
            raise ValueError(f"{len(refs)} refs for {len(events)} events")
        builder = _Builder()
        for event in events:
            builder.add(event)
        return builder.build(tuple(refs))

    @classmethod
    def from_parts(
        cls, parts: Sequence[Sequence[InferenceEventLike] | ScoreColumns], refs: Sequence[Any]
    ) -> PredictionBatch:
        """Like `from_events` over the events of `parts` in order, where a part is a sequence of
        events or a `ScoreColumns` run; `refs` has one entry per event. Equal, array for array,
        to `from_events` of the same events. Pure; raises ValueError as `from_events` does."""
        builder = _Builder()
        for part in parts:
            if isinstance(part, ScoreColumns):
                builder.add_columns(part)
            else:
                for event in part:
                    builder.add(event)
        if len(refs) != len(builder.times):
            raise ValueError(f"{len(refs)} refs for {len(builder.times)} events")
        return builder.build(tuple(refs))


@dataclass(frozen=True, eq=False)
class VideoColumns:
    """The optional video fields of a batch (issue 16), present only when some event has one.

    Per asset: `embedding` (the mean of its predictions' unit embeddings, float64, or None when
    none of its predictions has one), `sequence` (the event's `sequence_id` or None). Per
    prediction: `track` (`track_id` or None), `instance` (`instance_id` or None) and `bbox`
    (n x 4 of x, y, width, height; NaN where absent). `asset_id`: every asset's id."""

    embedding: tuple[np.ndarray | None, ...]
    sequence: tuple[str | None, ...]
    asset_id: tuple[str, ...]
    track: tuple[str | None, ...]
    instance: tuple[str | None, ...]
    bbox: np.ndarray


def _asset_embedding(vectors: list[Any]) -> np.ndarray | None:
    """Mean of the unit-normalised vectors (zero vectors skipped); None if there are none."""
    units = []
    for v in vectors:
        a = np.asarray(v, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # 1e300-sized values: inf, skipped
            norm = float(np.sqrt(a @ a))
        if norm > 0 and np.isfinite(norm):
            units.append(a / norm)
    if not units or len({u.shape[0] for u in units}) != 1:
        return None if not units else units[0]
    return np.mean(units, axis=0) if len(units) > 1 else units[0]


_Bucket = tuple[list[int], list[list[float]], list[np.ndarray], list[np.ndarray]]


class _Builder:
    """Accumulates one batch; rows sharing a class-key tuple are written into `probs` together."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.models: dict[tuple[str, str], int] = {}
        # class tuple -> (rows, value rows) of single events, (rows, values) arrays of columns
        self.layouts: dict[tuple[str, ...], _Bucket] = {}
        self.top1_rows: list[int] = []
        self.top1_class: list[int] = []
        self.top1_conf: list[float] = []
        self.starts: list[int] = [0]
        self.times: list[float] = []
        self.asset_models: list[int] = []
        self.asset_ids: list[str] = []
        self.seen: set[tuple[str, int]] = set()
        self.repeats: list[int] = []
        self.video: list[tuple[Any, ...]] | None = None  # per asset once any video field is seen

    def add(self, event: InferenceEventLike) -> None:
        """Append one event; the per-prediction work is one tuple, one dict lookup, one list."""
        key = (event.model_id, event.model_version)
        model = self.models.setdefault(key, len(self.models))
        self.asset_models.append(model)
        asset = (event.asset_id, model)
        if asset in self.seen:
            self.repeats.append(len(self.times))
        self.seen.add(asset)
        self.times.append(float(event.timestamp))
        self.asset_ids.append(event.asset_id)
        row = self.starts[-1]
        layouts = self.layouts
        self._add_video(event)
        for pred in event.predictions:
            scores = pred.scores
            if scores is None:
                self._add_top1(row, pred)
            else:
                names = tuple(scores)
                bucket = layouts.get(names)
                if bucket is None:
                    bucket = layouts[names] = ([], [], [], [])
                bucket[0].append(row)
                bucket[1].append(list(scores.values()))
            row += 1
        self.starts.append(row)

    def _add_video(self, event: InferenceEventLike) -> None:
        """Collect the event's optional video fields (read with getattr: the protocol does not
        require them); nothing is stored for a batch that has none."""
        sequence = getattr(event, "sequence_id", None)
        preds = event.predictions
        extra = [(getattr(p, "embedding", None), getattr(p, "track_id", None),
                  getattr(p, "instance_id", None), getattr(p, "bbox", None)) for p in preds]
        if self.video is None:
            if sequence is None and not any(any(x is not None for x in e) for e in extra):
                return
            self.video = [(None, None, (None,) * (self.starts[a + 1] - self.starts[a]))
                          for a in range(len(self.times) - 1)]
        vectors = [e[0] for e in extra if e[0] is not None]
        self.video.append((_asset_embedding(vectors) if vectors else None, sequence,
                           tuple(e[1:] for e in extra)))

    def add_columns(self, cols: ScoreColumns) -> None:
        """Append a run of single-distribution events; per event only C-level passes (map,
        zip, extend) unless an asset repeats."""
        n, first, row = len(cols), len(self.times), self.starts[-1]
        ids, versions = cols.model_ids, cols.model_versions
        if n and len(ids) == len(versions) == n and ids.count(ids[0]) == n and \
                versions.count(versions[0]) == n:
            # One model version (the usual run): no key tuple per event. `count` compares by
            # identity first, and orjson hands out one str object for a repeated short value.
            model = self.models.setdefault((ids[0], versions[0]), len(self.models))
            models = [model] * n
        else:
            keys = list(zip(ids, versions, strict=True))
            for key in dict.fromkeys(keys):  # register new model versions in order of appearance
                self.models.setdefault(key, len(self.models))
            models = list(map(self.models.__getitem__, keys))
        self.asset_models.extend(models)
        assets = list(zip(cols.asset_ids, models, strict=True))
        fresh = set(assets)
        if len(fresh) == n and self.seen.isdisjoint(fresh):
            if self.seen:
                self.seen |= fresh
            else:  # the batch's first run (the usual case): no second set built
                self.seen = fresh
        else:
            for i, asset in enumerate(assets, first):
                if asset in self.seen:
                    self.repeats.append(i)
                self.seen.add(asset)
        self.times.extend(map(float, cols.timestamps))
        if self.video is not None:  # column events carry no video field
            self.video.extend((None, None, (None,)) for _ in range(n))
        self.asset_ids.extend(cols.asset_ids)
        self.starts.extend(range(row + 1, row + n + 1))
        for names, rows, values in zip(cols.layouts, cols.rows, cols.values, strict=True):
            bucket = self.layouts.get(names)
            if bucket is None:
                bucket = self.layouts[names] = ([], [], [], [])
            bucket[2].append(rows + row)
            bucket[3].append(values)

    def _add_top1(self, row: int, pred: Any) -> None:
        if pred.label is None or pred.confidence is None:
            raise ValueError("prediction has neither scores nor label + confidence")
        self.top1_rows.append(row)
        self.top1_class.append(self.vocab.setdefault(pred.label, len(self.vocab)))
        self.top1_conf.append(float(pred.confidence))

    def _fill(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                     tuple[tuple[int, ...], ...]]:
        """(probs, n_classes, top_class, top_conf, pred_layout, layouts): rows sharing a class
        tuple are written with one fancy index; each row's top class is its first maximum in the
        event's own class order, so ties never depend on the batch's vocabulary."""
        columns = {names: [self.vocab.setdefault(c, len(self.vocab)) for c in names]
                   for names in self.layouts}
        probs = np.zeros((n, len(self.vocab)), dtype=np.float64)
        whole = list(range(len(self.vocab)))
        n_classes = np.zeros(n, dtype=np.int32)
        top_class = np.zeros(n, dtype=np.int32)
        top_conf = np.zeros(n, dtype=np.float64)
        pred_layout = np.full(n, -1, dtype=np.int32)
        for layout, (names, (rows, values, row_runs, value_runs)) in enumerate(
                self.layouts.items()):
            cols = np.asarray(columns[names], dtype=np.int64)
            idx = np.asarray(rows, dtype=np.int64)
            vals = np.asarray(values, dtype=np.float64).reshape(len(rows), len(names))
            if row_runs:  # row order within a layout is free: every row is written on its own
                idx = np.concatenate([idx, *row_runs])
                vals = np.concatenate([vals, *value_runs])
            if columns[names] == whole:  # the layout is the vocabulary, in order: whole rows
                probs[idx] = vals
            else:
                probs[idx[:, None], cols] = vals
            n_classes[idx] = len(names)
            best = vals.argmax(axis=1)
            top_class[idx] = cols[best]
            top_conf[idx] = vals[np.arange(idx.shape[0]), best]
            pred_layout[idx] = layout
        if self.top1_rows:
            top_class[self.top1_rows] = self.top1_class
            top_conf[self.top1_rows] = self.top1_conf
        layouts = tuple(tuple(columns[names]) for names in self.layouts)
        return probs, n_classes, top_class, top_conf, pred_layout, layouts

    def build(self, refs: tuple[Any, ...]) -> PredictionBatch:
        n = self.starts[-1]
        probs, n_classes, top_class, top_conf, pred_layout, layouts = self._fill(n)
        starts = np.asarray(self.starts, dtype=np.int64)
        a = len(self.times)
        if n == a and bool((starts[1:] - starts[:-1] == 1).all()):  # one prediction an asset
            asset_of = np.arange(a, dtype=np.int64)
            position = np.zeros(n, dtype=np.int32)
        else:
            asset_of = np.repeat(np.arange(a, dtype=np.int64), np.diff(starts))
            position = (np.arange(n) - starts[asset_of]).astype(np.int32)
        repeat = np.zeros(len(self.times), dtype=bool)
        repeat[self.repeats] = True
        video = self._video_columns(n)
        return PredictionBatch(
            classes=tuple(self.vocab),
            model_keys=tuple(self.models),
            probs=probs,
            n_classes=n_classes,
            top_class=top_class,
            top_conf=np.clip(top_conf, 0.0, 1.0),
            asset_of=asset_of,
            position=position,
            pred_start=starts,
            asset_time=np.asarray(self.times, dtype=np.float64),
            asset_model=np.asarray(self.asset_models, dtype=np.int32),
            asset_hash=stable_hashes64(self.asset_ids),
            repeat=repeat,
            refs=refs,
            layouts=layouts,
            pred_layout=pred_layout,
            video=video,
        )

    def _video_columns(self, n: int) -> VideoColumns | None:
        if self.video is None:
            return None
        while len(self.video) < len(self.times):  # column runs added after the last event
            self.video.append((None, None, (None,)))
        per_pred = [x for _, _, preds in self.video for x in preds]
        bbox = np.full((n, 4), np.nan)
        for r, x in enumerate(per_pred):
            if x is not None and x[2] is not None:
                bbox[r] = x[2]
        return VideoColumns(
            embedding=tuple(v[0] for v in self.video), sequence=tuple(v[1] for v in self.video),
            asset_id=tuple(self.asset_ids),
            track=tuple(None if x is None else x[0] for x in per_pred),
            instance=tuple(None if x is None else x[1] for x in per_pred), bbox=bbox)
