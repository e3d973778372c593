"""What the label sink keeps in its faust tables, as plain JSON rows, and the in-memory ledger
rebuilt from them.

Two changelog-backed tables:

- `requests`: request_id -> `RequestRow` (model, inference time, top-1 prediction per instance,
  source partition). Written by the request reader, read by the label reader for the join; rows
  older than the TTL (event time) are ignored and pruned.
- `labels`: label_id -> `LabelRow`: everything one counted label contributes (classes, agreement
  outcomes, offsets, trigger batch, and the trigger it fired if any). This is the ONLY state the
  counting needs: per-model counts, pending manifests and the last trigger are a function of the
  set of rows (`TriggerState.from_records`). One label = one changelog record, so a crash can
  never persist "seen" without "counted" or the reverse; that is the sink's idempotence.

Rows use short keys: the labels table holds one row per label ever counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from services.core.agreement import outcomes, top_classes
from services.core.triggers import Fired, LabelRecord, TriggerState
from services.streaming.events import AnnotationRequest, Label

RequestRow = dict[str, Any]
LabelRow = dict[str, Any]


def request_row(request: AnnotationRequest, partition: int) -> RequestRow:
    """The part of an annotation request the join needs."""
    return {
        "m": request.model_id,
        "t": request.event_timestamp,
        "p": [list(pair) for pair in top_classes(request.predictions)],
        "q": partition,
    }


def joined_label(
    label: Label, partition: int, offset: int, request: RequestRow | None
) -> LabelRow | None:
    """The label reader's output for one decoded label, or None if no model can be named.

    The model is the request's (when the label answers a known request), else the label's own
    `model_id` (audit labels). Without a request nothing is compared: no agreement outcomes."""
    model_id = request["m"] if request is not None else label.model_id
    if model_id is None:
        return None
    # [instance, class] or, for a detection, [instance, class, bbox] (core/agreement.py)
    predicted = [tuple(p) for p in request["p"]] if request is not None else []
    return {
        "id": label.label_id,
        "m": model_id,
        "q": partition,
        "o": offset,
        "t": label.labeled_at,
        "c": [a.label for a in label.annotations],
        "r": [list(pair) for pair in outcomes(predicted, label.annotations)],  # type: ignore
        "w": sorted({p[1] for p in predicted}),
        "ta": label.labeled_at - request["t"] if request is not None else None,
    }


def to_record(row: LabelRow, batch: int | None = None) -> LabelRecord:
    """A label row as the pure core sees it; `batch` overrides the row's (for new labels)."""
    fired = row.get("f")
    return LabelRecord(
        label_id=row["id"],
        partition=row["q"],
        offset=row["o"],
        labeled_at=row["t"],
        classes=tuple(row["c"]),
        outcomes=tuple((c, bool(a)) for c, a in row["r"]),
        predicted=tuple(row["w"]),
        batch=row.get("b", 0) if batch is None else batch,
        fired=Fired(fired["id"], fired["rule"], fired["at"]) if fired else None,
    )


def stored_row(row: LabelRow, batch: int, fired: Fired | None) -> LabelRow:
    """The row persisted in the labels table: the joined label plus its batch and trigger."""
    out = {k: v for k, v in row.items() if k != "ta"}
    out["b"] = batch
    if fired is not None:
        out["f"] = {"id": fired.trigger_id, "rule": fired.rule, "at": fired.triggered_at}
    return out


class Ledger:
    """Per-model `TriggerState`, kept in memory and rebuilt from the labels table on demand.

    `invalidate()` after a rebalance (partitions, hence rows, may have moved); the next `get`
    rebuilds every model from the rows then present, in one pass."""

    def __init__(self) -> None:
        self._models: dict[str, TriggerState] | None = None

    @property
    def valid(self) -> bool:
        return self._models is not None

    def invalidate(self) -> None:
        self._models = None

    def rebuild(self, rows: Iterable[LabelRow]) -> None:
        by_model: dict[str, list[LabelRecord]] = {}
        for row in rows:
            by_model.setdefault(row["m"], []).append(to_record(row))
        self._models = {m: TriggerState.from_records(recs) for m, recs in by_model.items()}

    def get(self, model_id: str) -> TriggerState:
        if self._models is None:
            raise RuntimeError("ledger used before rebuild()")
        return self._models.setdefault(model_id, TriggerState())

    def items(self) -> Iterator[tuple[str, TriggerState]]:
        return iter(list((self._models or {}).items()))
