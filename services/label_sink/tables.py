"""What the label sink keeps in its faust tables, as plain JSON rows, and the in-memory ledger
rebuilt from them. Bounded by the dedupe window and the open requests, never by history.

Two changelog-backed tables:

- `requests`: request_id -> `RequestRow` (model, inference time, top-1 prediction per instance,
  source partition). Written by the request reader, read by the label reader for the join; rows
  older than the TTL (event time) are ignored and pruned (tombstones).
- `labels`, four kinds of rows, all written while a record of the internal labels-by-model
  partition p is processed, so all go to changelog partition p, in processing order:
  - `l:<p>:<label_id>` -> `LabelRow`, one per label counted within the dedupe window: what it
    contributes (classes, agreement outcomes, label-topic offset, batch, the trigger it fired)
    and where it was counted (p, labels-by-model offset s). Rows out of the window get
    tombstones (`sweep`).
  - `m:<model_id>` -> the model's compact state (`TriggerState.snapshot()`: counters per
    class, the pending manifest, the class vocabulary) and its frontier on `al.labels.v1`
    (frontier.py) with the offset s of the last label it includes. Written when a trigger
    fires, every `SNAPSHOT_EVERY` labels of the model, and before any row it does not include
    yet is dropped. A `drift` trigger (drift_trigger.py) writes it alone, at the drift
    record's offset, with `d`: the seq of the mastery change it answered.
  - `f:<model_id>` -> the model's frontier alone, written when a label of it is skipped as a
    DUPLICATE (no label row records that decision): so its `al.labels.v1` offset stays
    decided, and a re-forward of it after a crash, past the window, is a replay rather than
    a new label. Its size is the frontier's (a floor and at most `FRONTIER_LIMIT` offsets
    per label partition), one row per model.

Why it is exactly-once: aiokafka keeps one batch in flight per partition, so after a crash
changelog partition p holds a prefix of the writes made. The state rebuilt from it (`Ledger.
rebuild`: each model's row, then the label rows after it in offset order) is the state after
some record. Every record up to the highest offset persisted (`applied(p)`, the highest of the
label rows and state rows: a label row is deleted only once a state row holds its label, so it
never goes back) is skipped as a replay; every later one is processed again against that state
and takes the same decision. A duplicate's verdict depends only on the rows and the
partition's state, never on when a sweep ran (a row out of the window is ignored whether it was
swept or not), so replays are deterministic. Order of writes within a record: trigger
delivered, then the state row of a model whose row is replaced, the label row, the model's
state row when due, then the sweep (state rows before tombstones).

A label the label reader forwards again after its own crash (a new labels-by-model record)
is a REPLAY too when its model's frontier (frontier.py) holds its `al.labels.v1` offset,
however far back the window ends: label rows carry each label's floor, the state row and the
frontier row the frontier, so a rebuild gives the frontier back with the counts (frontiers
merge in any order, so which of these rows came first does not matter).

Dedupe window (`DedupeWindow`): a label whose label_id has a row counted at offset s0 of its
partition is a duplicate at offset s iff s - s0 <= `labels` and the row's `labeled_at` >=
the partition's event-time watermark (the newest `labeled_at` counted there) - `seconds`.
Otherwise it is counted as a new label (docs/label-sink.md, "State").
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from services.core.agreement import outcomes, top_classes
from services.core.triggers import Fired, LabelRecord, TriggerState
from services.label_sink.frontier import FRONTIER_LIMIT, Frontiers
from services.streaming.events import AnnotationRequest, Label

RequestRow = dict[str, Any]
LabelRow = list[Any]  # [p, s, model, label partition, label offset, labeled_at, classes,
#                       outcomes, predicted, batch, fired ([id, rule, at]) or None,
#                       floor (frontier.py; absent or None from a reader before it),
#                       and 1 for a consensus vote (consensus.py; absent otherwise)]

# A model's state row is rewritten after this many of its labels (or a trigger): a rebuild
# replays at most this many label rows per model, and the row (up to a few hundred KB with a
# full manifest) costs at most 1/SNAPSHOT_EVERY of its size per label in changelog bytes.
SNAPSHOT_EVERY = 500
# A partition is swept for rows out of the window after this many labels counted there (at
# least), or a quarter of its rows: the scan of the table is amortised to O(1) a label.
SWEEP_MIN = 1_000

LABEL, MODEL, DECIDED = "l:", "m:", "f:"


@dataclass(frozen=True)
class DedupeWindow:
    """`labels`: records of a labels-by-model partition; `seconds`: event time. Default: the
    last 25,000 records of the partition and one day, whichever is shorter."""

    labels: int = 25_000
    seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if self.labels < 1 or not self.seconds > 0:
            raise ValueError("dedupe window: labels >= 1 and seconds > 0 are required")



class Verdict(Enum):
    NEW = "new"  # count it
    DUPLICATE = "duplicate"  # its label_id was counted within the window
    REPLAY = "replay"  # this record, or this very label forwarded again, was processed before


class Write(NamedTuple):
    """One table write; `value` None is a delete (a tombstone in the changelog)."""

    key: str
    value: Any


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
) -> dict[str, Any] | None:
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


def label_key(p: int, label_id: str) -> str:
    """The row of `label_id` counted in labels-by-model partition `p`. Dedupe is per partition
    (a partition holds whole models): the same label_id under a model of another partition is
    another label, whichever worker owns the two partitions."""
    return f"{LABEL}{p}:{label_id}"


def stored_row(p: int, s: int, joined: dict[str, Any], batch: int,
               fired: Fired | None) -> LabelRow:
    """The row persisted for a counted label (see `LabelRow`)."""
    f = [fired.trigger_id, fired.rule, fired.triggered_at] if fired is not None else None
    return [p, s, joined["m"], joined["q"], joined["o"], joined["t"], joined["c"], joined["r"],
            joined["w"], batch, f, joined.get("f"), *([1] if joined.get("v") else [])]


def to_record(joined: dict[str, Any], batch: int) -> LabelRecord:
    """A joined label as the pure core sees it, counted in `batch`."""
    return LabelRecord(
        label_id=joined["id"], partition=joined["q"], offset=joined["o"],
        labeled_at=joined["t"], classes=tuple(joined["c"]),
        outcomes=tuple((c, bool(a)) for c, a in joined["r"]), predicted=tuple(joined["w"]),
        batch=batch, vote=bool(joined.get("v")))


def _row_record(label_id: str, row: LabelRow) -> LabelRecord:
    f = row[10]
    return LabelRecord(
        label_id=label_id, partition=row[3], offset=row[4], labeled_at=row[5],
        classes=tuple(row[6]), outcomes=tuple((c, bool(a)) for c, a in row[7]),
        predicted=tuple(row[8]), batch=row[9],
        fired=Fired(f[0], f[1], f[2]) if f is not None else None,
        vote=len(row) > 12 and bool(row[12]))


@dataclass
class _Meta:
    """Where a model's state stands against its persisted rows."""

    partition: int
    last: int = -1  # labels-by-model offset of the last label in the state
    folded: int = -1  # ... of the last label in its persisted state row
    unfolded: int = 0  # labels in the state but not in the row (their label rows hold them)
    drift: int = 0  # seq of the last mastery change whose drift trigger was decided (`close`)


@dataclass
class Ledger:
    """Per-model `TriggerState` and per-partition progress, in memory, rebuilt from the labels
    table (`rebuild`) after a rebalance (`invalidate`). The shell applies the `Write`s the
    commands return to the table, in order.

    Queries: `valid`, `verdict`, `applied`, `watermark`, `frontier`, `get`, `items`,
    `sweep_due`.
    Commands: `rebuild`, `count`, `skip`, `persist`, `sweep`."""

    window: DedupeWindow = field(default_factory=DedupeWindow)
    snapshot_every: int = SNAPSHOT_EVERY
    sweep_min: int = SWEEP_MIN
    frontier_limit: int = FRONTIER_LIMIT
    _frontiers: Frontiers = field(default_factory=Frontiers)
    _models: dict[str, TriggerState] | None = None
    _meta: dict[str, _Meta] = field(default_factory=dict)
    _applied: dict[int, int] = field(default_factory=dict)
    _watermark: dict[int, float] = field(default_factory=dict)
    _since_sweep: dict[int, int] = field(default_factory=dict)
    _rows: dict[int, int] = field(default_factory=dict)  # label rows per partition

    def __post_init__(self) -> None:
        self._frontiers = Frontiers(self.frontier_limit)

    @property
    def valid(self) -> bool:
        return self._models is not None

    def invalidate(self) -> None:
        self._models = None

    def rebuild(self, items: Iterable[tuple[str, Any]],
                partitions: Container[int] | None = None) -> None:
        """From the table's rows: each model's state row, then its label rows past it in offset
        order. Cost: the rows in the window, and at most `snapshot_every` replays a model.

        `partitions`: the labels-by-model partitions this worker owns now; rows of any other
        are left out. The in-memory table can still hold rows of a partition taken away at a
        rebalance (faust drops them only once the next recovery completes), and a state built
        from them is another worker's past: published as class feedback it went back in time
        (seen in the rolling-restart test: 60/60 labels, then 26/26)."""
        models: dict[str, TriggerState] = {}
        meta: dict[str, _Meta] = {}
        applied: dict[int, int] = {}
        rows_in: dict[int, int] = {}
        frontiers = Frontiers(self.frontier_limit)
        deltas: dict[str, list[tuple[int, str, LabelRow]]] = {}
        for key, value in items:
            if isinstance(value, dict) and "id" in value:
                continue  # a row of the format before the window (keyed by label_id): ignored
            if key.startswith(MODEL):
                if partitions is not None and value["p"] not in partitions:
                    continue
                model_id = key[len(MODEL):]
                models[model_id] = TriggerState.from_snapshot(value["st"])
                meta[model_id] = _Meta(value["p"], value["s"], value["s"],
                                       drift=value.get("d", 0))
                frontiers.merge(model_id, value.get("f"))
                applied[value["p"]] = max(applied.get(value["p"], -1), value["s"])
            elif key.startswith(DECIDED):
                frontiers.merge(key[len(DECIDED):], value)
            elif key.startswith(LABEL):
                if partitions is not None and value[0] not in partitions:
                    continue
                label_id = key[len(LABEL):].split(":", 1)[1]
                deltas.setdefault(value[2], []).append((value[1], label_id, value))
                applied[value[0]] = max(applied.get(value[0], -1), value[1])
                rows_in[value[0]] = rows_in.get(value[0], 0) + 1
        for model_id, rows in deltas.items():
            state = models.setdefault(model_id, TriggerState())
            m = meta.setdefault(model_id, _Meta(rows[0][2][0]))
            for s, label_id, row in sorted(rows, key=lambda r: r[0]):
                if s > m.folded:
                    state.replay(_row_record(label_id, row))
                    frontiers.add(model_id, row[3], row[4], row[11] if len(row) > 11 else None)
                    m.last, m.unfolded, m.partition = s, m.unfolded + 1, row[0]
        watermark: dict[int, float] = {}
        for model_id, state in models.items():
            p = meta[model_id].partition
            if state.clock is not None:
                watermark[p] = max(watermark.get(p, state.clock), state.clock)
        self._models, self._meta, self._applied = models, meta, applied
        self._frontiers = frontiers
        self._watermark, self._since_sweep, self._rows = watermark, {}, rows_in

    def applied(self, p: int) -> int:
        """Every labels-by-model record of `p` up to this offset has its effect in the state."""
        return self._applied.get(p, -1)

    def watermark(self, p: int) -> float | None:
        """The newest `labeled_at` counted in partition `p`."""
        return self._watermark.get(p)

    def verdict(self, p: int, s: int, found: LabelRow | None,
                joined: dict[str, Any] | None = None) -> Verdict:
        """What to do with the record at offset `s` of partition `p`; `found`: the table's row
        for its label_id, if any; `joined`: the record (its model's frontier is asked whether
        its `al.labels.v1` offset was counted already). Query."""
        if s <= self.applied(p):
            return Verdict.REPLAY
        if joined is not None and self._frontiers.seen(joined["m"], joined["q"], joined["o"]):
            return Verdict.REPLAY
        return Verdict.DUPLICATE if found is not None and self._live(found, p, s) else Verdict.NEW

    def _live(self, row: LabelRow, p: int, s: int) -> bool:
        """Whether `row` is in the window of the record at (`p`, `s`). Monotone: a row out of
        the window of a record is out of the window of every later one."""
        mark = self._watermark.get(p)
        if mark is not None and row[5] < mark - self.window.seconds:
            return False
        return s - row[1] <= self.window.labels

    def frontier(self, model_id: str) -> dict[str, list[Any]]:
        """The model's frontier on `al.labels.v1` as its state row keeps it (frontier.py)."""
        return self._frontiers.dump(model_id)

    def get(self, model_id: str) -> TriggerState:
        if self._models is None:
            raise RuntimeError("ledger used before rebuild()")
        return self._models.setdefault(model_id, TriggerState())

    def items(self) -> Iterator[tuple[str, TriggerState]]:
        return iter(list((self._models or {}).items()))

    def partition_of(self, model_id: str) -> int | None:
        """The labels-by-model partition whose rows hold `model_id`'s state, None if unknown.
        Rows of a partition revoked from this worker can stay in its tables (faust keeps them):
        the shell asks this before it speaks for a model."""
        m = (self._meta or {}).get(model_id) if self._models is not None else None
        return m.partition if m is not None else None

    def count(self, p: int, s: int, joined: dict[str, Any]) -> tuple[TriggerState, LabelRecord]:
        """Record the label of (`p`, `s`) in its model's state; returns the state (to ask for a
        trigger, and `fire` it) and the record (its batch)."""
        model_id = joined["m"]
        state = self.get(model_id)
        record = to_record(joined, state.batch)
        state.record(record)
        self._frontiers.add(model_id, joined["q"], joined["o"], joined.get("f"))
        m = self._meta.setdefault(model_id, _Meta(p))
        m.partition, m.last, m.unfolded = p, s, m.unfolded + 1
        self._applied[p] = s
        mark = self._watermark.get(p)
        self._watermark[p] = record.labeled_at if mark is None else max(mark, record.labeled_at)
        self._since_sweep[p] = self._since_sweep.get(p, 0) + 1
        return state, record

    def skip(self, joined: dict[str, Any]) -> list[Write]:
        """The label just judged a DUPLICATE (its label_id counted within the window): its
        `al.labels.v1` offset is decided as surely as a counted one's, so it joins its model's
        frontier, and the frontier row is written (no label row holds the decision). Without
        it, a re-forward of this offset after a crash, further back than the window by then,
        would be counted as a new label (tests/unit/test_label_sink_frontier.py)."""
        if joined.get("f") is None:
            return []  # from a reader before the frontier: it says nothing about offsets
        model_id = joined["m"]
        self._frontiers.add(model_id, joined["q"], joined["o"], joined["f"])
        return [Write(DECIDED + model_id, self._frontiers.dump(model_id))]

    def persist(self, p: int, s: int, joined: dict[str, Any], record: LabelRecord,
                fired: Fired | None, found: LabelRow | None) -> list[Write]:
        """The writes for the label just counted (after its trigger, if any, was delivered):
        the state row of the model whose row `found` is replaced if that row is not in it yet,
        the label row, and the model's state row when due."""
        writes = []
        if found is not None and found[1] > self._folded(found[2]):
            writes.append(self._snapshot(found[2]))
        if found is None:
            self._rows[p] = self._rows.get(p, 0) + 1
        writes.append(Write(label_key(p, joined["id"]),
                            stored_row(p, s, joined, record.batch, fired)))
        m = self._meta[joined["m"]]
        if m.unfolded and (fired is not None or m.unfolded >= self.snapshot_every):
            writes.append(self._snapshot(joined["m"]))
        return writes

    def sweep_due(self, p: int) -> bool:
        return self._since_sweep.get(p, 0) >= self.sweep_every(p)

    def sweep_every(self, p: int) -> int:
        """Labels counted in partition `p` between two sweeps of it: so a partition holds at
        most the rows of its window, plus `sweep_min` or a third of them."""
        return max(self.sweep_min, self._rows.get(p, 0) // 4)

    def sweep(self, p: int, s: int, items: Iterable[tuple[str, Any]]) -> list[Write]:
        """Tombstones for the label rows of `p` out of the window of every record after `s`,
        preceded by the state rows of the models that do not include them yet."""
        self._since_sweep[p] = 0
        mark = self._watermark.get(p)
        oldest = mark - self.window.seconds if mark is not None else None
        dead = [(key, row) for key, row in items if key.startswith(LABEL) and row[0] == p
                and (s + 1 - row[1] > self.window.labels or (oldest is not None
                                                             and row[5] < oldest))]
        if not dead:
            return []
        stale = sorted({row[2] for _, row in dead if row[1] > self._folded(row[2])})
        writes = [self._snapshot(model_id) for model_id in stale]
        writes.extend(Write(key, None) for key, _ in dead)
        self._rows[p] = self._rows.get(p, 0) - len(dead)
        return writes

    def _folded(self, model_id: str) -> int:
        m = self._meta.get(model_id)
        return m.folded if m is not None else -1

    def _snapshot(self, model_id: str) -> Write:
        m = self._meta[model_id]
        m.folded, m.unfolded = m.last, 0
        value = {"p": m.partition, "s": m.last, "st": self.get(model_id).snapshot(),
                 "f": self._frontiers.dump(model_id)}
        if m.drift:  # absent before the model's first drift trigger: the same bytes as before
            value["d"] = m.drift
        return Write(MODEL + model_id, value)

    def drift_fired(self, model_id: str) -> int:
        """The seq of the last mastery change whose drift trigger was fired and closed here
        (`close`); 0 if none. Query."""
        m = self._meta.get(model_id)
        return m.drift if m is not None else 0

    def close(self, p: int, s: int, model_id: str, seq: int) -> list[Write]:
        """The writes after a trigger that no label fired (rule `drift`, fired by the
        labels-by-model record at (`p`, `s`) and its state `fire`d): the model's state row, at
        offset `s`, holding the closed batch and `seq`, the mastery change it answered. One
        row, so a crash leaves both or neither: the record replayed finds the batch open and
        fires the same trigger again (the same id), or finds `seq` and fires nothing."""
        m = self._meta[model_id]
        m.partition, m.last, m.drift = p, s, seq
        self._applied[p] = max(self._applied.get(p, -1), s)
        return [self._snapshot(model_id)]
