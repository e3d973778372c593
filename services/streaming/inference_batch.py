"""Batch decoding of inference events: one vectorised check for the common shape, the exact decoder
for everything else (the scorer's hot path).

`decode_inference_batch` accepts and rejects exactly what `decode_inference_event` does, with the
same `InvalidEvent` for each rejected value, because the fast path only ever *accepts*: it checks
a whole run of parsed events at once for a shape that is sufficient for validity -- an object
with exactly the required fields (plus `asset_uri`, `metadata`), one prediction holding only a
`scores` distribution -- using C-level passes (`map`, `list.count`, numpy) instead of per-field
Python calls. A run whose only failures are distributions' numbers (range, sum) is cut around
those events; a run that fails any other check is split in two and each half tried again,
within a work budget (`_CHECKS_PER_EVENT`). Runs of at most `_MIN_RUN` events go to the exact
decoder event by event (`read_inference_event` on the object parsed already), which accepts an
event (valid, just not of the fast shape) or raises the exact reason. Accepted fast runs come
out as `ScoreColumns` (no per-event objects); the exact decoder's events as `InferenceEvent`s.

The whole batch is checked first (the usual case: it passes), unless its first event's bytes do
not name `scores` exactly once. A batch that fails, or is not checked whole, is routed: events
whose bytes do not name `scores` exactly once (several predictions, top-1 labels, not JSON) go
to the exact decoder without trying the fast check. So streams of other shapes pay for the byte
scan (~0.2-0.5 us an event) on top of the exact decoder, and a batch that starts with the fast
shape but fails also for a check that fails early (~0.1-0.3 us an event).

A key repeated inside an object (`duplicate_key`) is judged last, on an event otherwise valid:
a run the fast check accepts is let through only when the quote characters of its bytes match
the keys and strings of its parsed events (`_quotes_match`, one numpy pass); otherwise each
event is judged by the exact decoder, which counts them per event (`quote_count`). Metadata
passes the fast check only when flat and within its bounds; any other goes to the exact
decoder, which measures it. So do `sequence_id` and `probe` (any event holding a field besides
the required ones, `asset_uri` and `metadata`): a probe is always an `InferenceEvent` with
`probe` set, never a row of `ScoreColumns` (`DecodedBatch.probe_mask`).

The sum check is the one place where the fast path computes differently (numpy's sum instead of
`math.fsum`): it accepts a row only when its numpy sum is within SUM_TOLERANCE - _SUM_MARGIN of 1.
For k values in [0, 1] summing to about 1 the two sums differ by at most ~k * 2.2e-16 (k < 2**17
under MAX_EVENT_BYTES, so < 3e-11), far inside the margin: a row the fast path accepts, `fsum`
accepts too, and rows near the tolerance go to the exact decoder.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from types import NoneType
from typing import Any

import numpy as np
import orjson

from services.contracts.inference import BATCH_LIMITS
from services.core.events import ScoreColumns
from services.streaming.event_fields import InvalidEvent, check_unique_keys
from services.streaming.input_events import (
    InferenceEvent,
    decode_inference_event,
    quote_count,
    read_inference_event,
)

# The contract's limits, as declared (services/contracts/inference.py).
SCHEMA_VERSION = BATCH_LIMITS.version
MAX_EVENT_BYTES = BATCH_LIMITS.max_bytes
INFERENCE_REQUIRED = BATCH_LIMITS.required
MAX_ID_LENGTH = BATCH_LIMITS.max_id_length
MAX_URI_LENGTH = BATCH_LIMITS.max_uri_length
MAX_TIMESTAMP = BATCH_LIMITS.max_timestamp
MIN_SCORE_CLASSES = BATCH_LIMITS.min_classes
MAX_CLASS_LENGTH = BATCH_LIMITS.max_class_length
MAX_CLASS_BYTES = BATCH_LIMITS.max_class_bytes
SUM_TOLERANCE = BATCH_LIMITS.sum_tolerance
MAX_METADATA_NODES = BATCH_LIMITS.max_metadata_nodes

_MIN_RUN = 16
"""Runs this short are not split further: each event goes to the exact decoder. Bounds the work
wasted on streams whose events are valid but never of the fast shape (~log2(batch / 16) cheap,
early-failing checks per event)."""
_CHECKS_PER_EVENT = 3
"""Fast-check visits a batch may spend per event on splitting runs that failed for reasons other
than a distribution's numbers, before the rest goes to the exact decoder: bounds the cost of
scattered malformed events to ~3 passes (~1 us each) on top of the exact decoder's."""
_SUM_MARGIN = 1e-9
"""Rows whose numpy sum is this close to the tolerance go to the exact decoder (module doc)."""
_SUM_LIMIT = SUM_TOLERANCE - _SUM_MARGIN

_PREDICTIONS = itemgetter("predictions")
_FIELDS = [itemgetter(name) for name in INFERENCE_REQUIRED if name != "predictions"]
_FIRST = itemgetter(0)
_SCORES = itemgetter("scores")
_SCORES_KEY = b'"scores"'
_QUOTE = ord('"')
_OPTIONAL = ("asset_uri", "metadata")
_ASSET_URI, _METADATA = map(itemgetter, _OPTIONAL)


@dataclass
class DecodedBatch:
    """The outcome of one batch: valid events in input order as `parts` (`ScoreColumns` runs or
    lists of `InferenceEvent`), `index` the input position of each valid event (same order), and
    `errors` as (input position, InvalidEvent) in input order. `objs`: the parsed JSON value of
    each input (None where it did not parse), by input position, so that a consumer can build
    the few events it needs out of columns without decoding their bytes again."""

    parts: list[ScoreColumns | list[InferenceEvent]] = field(default_factory=list)
    index: list[int] = field(default_factory=list)
    errors: list[tuple[int, InvalidEvent]] = field(default_factory=list)
    objs: list[Any] = field(default_factory=list)

    def _add_run(self, start: int, columns: ScoreColumns) -> None:
        self.parts.append(columns)
        self.index.extend(range(start, start + len(columns)))

    def times(self) -> np.ndarray:
        """Event time of each valid event, in `index` order (float64 seconds)."""
        parts = [np.asarray(part.timestamps, dtype=np.float64) if isinstance(part, ScoreColumns)
                 else np.array([e.timestamp for e in part], dtype=np.float64)
                 for part in self.parts]
        return np.concatenate(parts) if parts else np.zeros(0)

    def cells(self) -> int:
        """An upper bound of (predictions x distinct class names) of the valid events: the
        size of the dense matrix they would be laid out in (core/batch.py). Exact when the
        names' count has to be taken."""
        rows, names = 0, 0
        for part in self.parts:
            if isinstance(part, ScoreColumns):
                rows += len(part)
                names += sum(map(len, part.layouts))
            else:
                for event in part:
                    rows += len(event.predictions)
                    names += sum(1 if p.scores is None else len(p.scores)
                                 for p in event.predictions)
        return rows * names

    def distinct_cells(self) -> int:
        """(predictions x distinct class names) of the valid events, exactly."""
        rows, names = 0, set[str]()
        for part in self.parts:
            if isinstance(part, ScoreColumns):
                rows += len(part)
                names.update(chain.from_iterable(part.layouts))
            else:
                for event in part:
                    rows += len(event.predictions)
                    for p in event.predictions:
                        if p.scores is None:
                            names.add(p.label or "")
                        else:
                            names.update(p.scores)
        return rows * len(names)

    def probe_mask(self) -> np.ndarray:
        """True for each valid event (`index` order) that is a probe (`InferenceEvent.probe`).
        Columns hold none: the fast check refuses any event with a `probe` field."""
        if all(isinstance(part, ScoreColumns) for part in self.parts):  # the usual batch
            return np.zeros(len(self.index), dtype=bool)
        return np.concatenate([np.zeros(len(part), dtype=bool) if isinstance(part, ScoreColumns)
                               else np.array([e.probe for e in part], dtype=bool)
                               for part in self.parts])

    def without(self, drop: np.ndarray) -> DecodedBatch:
        """The batch less the valid events flagged in `drop` (bool, `index` order), which
        become no one's: the caller accounts for them. `errors` are kept."""
        out = DecodedBatch(errors=self.errors, objs=self.objs)
        k = 0
        for part in self.parts:
            n = len(part)
            keep = np.flatnonzero(~drop[k:k + n])
            positions = [self.index[k + int(i)] for i in keep]
            if len(keep) == n:
                out.parts.append(part)
            elif len(keep) and isinstance(part, ScoreColumns):
                out.parts.append(_take_columns(part, keep))
            elif len(keep):
                assert isinstance(part, list)
                out.parts.append([part[int(i)] for i in keep])
            out.index.extend(positions)
            k += n
        return out

    def _add_events(self, positions: list[int], events: list[InferenceEvent]) -> None:
        last = self.parts[-1] if self.parts else None
        if isinstance(last, list):
            last.extend(events)
        else:
            self.parts.append(events)
        self.index.extend(positions)


def _take_columns(cols: ScoreColumns, keep: np.ndarray) -> ScoreColumns:
    """The events `keep` (ascending indices) of `cols`, as columns of their own."""
    pick = keep.tolist()
    new_index = np.full(len(cols), -1, dtype=np.int64)
    new_index[keep] = np.arange(keep.shape[0])
    layouts, rows, values = [], [], []
    for layout, layout_rows, layout_values in zip(cols.layouts, cols.rows, cols.values,
                                                  strict=True):
        mine = new_index[layout_rows] >= 0
        if mine.any():
            layouts.append(layout)
            rows.append(new_index[layout_rows[mine]])
            values.append(layout_values[mine])
    order = sorted(range(len(rows)), key=lambda g: int(rows[g][0]))  # first appearance
    layouts, rows, values = ([seq[g] for g in order] for seq in (layouts, rows, values))
    return ScoreColumns([cols.asset_ids[i] for i in pick], [cols.model_ids[i] for i in pick],
                        [cols.model_versions[i] for i in pick],
                        [cols.timestamps[i] for i in pick], tuple(layouts), tuple(rows),
                        tuple(values))


def decode_inference_batch(values: Sequence[bytes | None]) -> DecodedBatch:
    """Decode record values as `decode_inference_event` would, each on its own: the same events
    accepted, the same `InvalidEvent` (field, code, detail) for each one rejected. Pure."""
    out = DecodedBatch()
    n = len(values)
    if not n:
        return out
    objs = out.objs = _parse(values)
    budget = [_CHECKS_PER_EVENT * n]
    # The usual batch is one run of the fast shape: check it whole first, so that only a batch
    # that fails pays for routing (~0.2 us an event for the byte scan). Unless its first event
    # is not a candidate (see _routes): then the batch is likely all of another shape (top-1
    # labels, several predictions), and checking it whole would only fail.
    whole = n > _MIN_RUN and budget[0] >= n and (values[0] or b"").count(_SCORES_KEY) == 1
    if whole:
        budget[0] -= n
        found = _checked(objs)
        if found is not None:
            _settle(values, objs, 0, n, found, out, budget)
            return out
    for lo, hi, candidate in _routes(values):
        if not candidate or hi - lo <= _MIN_RUN:  # short runs: not worth arrays of their own
            _decode_exact(values, objs, lo, hi, out)
        elif whole and hi - lo == n:  # the whole batch failed above: split it, do not recheck
            _settle(values, objs, lo, hi, None, out, budget)
        else:
            _decode_run(values, objs, lo, hi, out, budget)
    return out


def _routes(values: Sequence[bytes | None]) -> list[tuple[int, int, bool]]:
    """(lo, hi, candidate) runs covering `values`: routing only (the fast check still checks
    everything). Events whose bytes do not name `scores` exactly once cannot pass the fast check,
    so they skip it rather than fail it at every split."""
    try:
        counts = list(map(bytes.count, values, repeat(_SCORES_KEY)))  # type: ignore[arg-type]
    except TypeError:  # a None value (tombstone)
        counts = [value.count(_SCORES_KEY) if value is not None else 0 for value in values]
    n, ones = len(counts), counts.count(1)
    if ones in (0, n):  # the usual cases: the batch is one run
        return [(0, n, ones == n)]
    runs, lo = [], 0
    for hi in range(1, n + 1):
        if hi == n or (counts[hi] == 1) != (counts[lo] == 1):
            runs.append((lo, hi, counts[lo] == 1))
            lo = hi
    return runs


@dataclass(frozen=True, eq=False)
class _CheckedColumns(ScoreColumns):
    """Columns the fast check accepted, with the quote characters their events' JSON text holds
    if no key repeats (`_quotes_match`)."""

    quotes: int = 0


def _quotes_match(values: Sequence[bytes | None], found: _CheckedColumns) -> bool:
    """True when no event of a run that the fast check accepted (`found`) repeats a key.

    Without an escaped quote (`\\"`) in the bytes, JSON text holds two quote characters per key
    and per string value, so the run's quote count equals twice the keys and strings of the
    parsed events exactly when no key was repeated (a repeat drops a key, and its value). The
    fast shape fixes what those are (counted by `_columns` from lists it builds anyway): the
    event's keys, `scores`, the class names, four ids, `asset_uri` when a string, and the flat
    `metadata`'s keys and strings. One numpy pass over the joined bytes, ~0.05 us an event.
    False means "check each event" (the exact decoder does), not "repeated"."""
    joined = b"".join(values)  # type: ignore[arg-type]  # the fast check saw only objects
    if b"\\" in joined and b'\\"' in joined:  # memchr first: the 2-byte search is slower
        return False
    return int(np.count_nonzero(np.frombuffer(joined, dtype=np.uint8) == _QUOTE)) == found.quotes


def _parse(values: Sequence[bytes | None]) -> list[Any]:
    """orjson.loads of each value; None where only the exact decoder can say what is wrong."""
    try:
        if all(values) and max(map(len, values)) <= MAX_EVENT_BYTES:  # type: ignore[arg-type]
            return list(map(orjson.loads, values))  # type: ignore[arg-type]
    except orjson.JSONDecodeError:  # a value that is not JSON
        pass
    return [_parse_one(value) for value in values]


def _parse_one(value: bytes | None) -> Any:
    if not value or len(value) > MAX_EVENT_BYTES:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _decode_run(values: Sequence[bytes | None], objs: list[Any], lo: int, hi: int,
                out: DecodedBatch, budget: list[int]) -> None:
    """The fast check on objs[lo:hi], then `_settle`. `budget` holds the fast-check visits left
    for the batch: when spent, runs go to the exact decoder."""
    if budget[0] < hi - lo:
        _decode_exact(values, objs, lo, hi, out)
        return
    budget[0] -= hi - lo
    _settle(values, objs, lo, hi, _checked(objs[lo:hi]), out, budget)


def _settle(values: Sequence[bytes | None], objs: list[Any], lo: int, hi: int,
            found: ScoreColumns | list[int] | None, out: DecodedBatch, budget: list[int]) -> None:
    """Act on the fast check's verdict `found` on objs[lo:hi]: keep the columns, or split where
    it failed and recurse."""
    if isinstance(found, _CheckedColumns) and _quotes_match(values[lo:hi], found):
        out._add_run(lo, found)
    elif isinstance(found, ScoreColumns):  # some event may repeat a key: judge each
        _decode_exact(values, objs, lo, hi, out)
    elif found is None and hi - lo <= _MIN_RUN:
        _decode_exact(values, objs, lo, hi, out)
    elif found is None:  # something else failed somewhere: halve
        mid = (lo + hi) // 2
        _decode_run(values, objs, lo, mid, out, budget)
        _decode_run(values, objs, mid, hi, out, budget)
    else:  # only these distributions failed the numeric checks: cut them out
        cuts = [lo + bad for bad in found]
        for start, end in zip([lo] + [cut + 1 for cut in cuts], [*cuts, hi], strict=True):
            if end - start > _MIN_RUN:
                _decode_run(values, objs, start, end, out, budget)
            else:
                _decode_exact(values, objs, start, end, out)
            if end < hi:
                _decode_exact(values, objs, end, end + 1, out)


def _decode_exact(values: Sequence[bytes | None], objs: list[Any], lo: int, hi: int,
                  out: DecodedBatch) -> None:
    """The exact decoder, event by event; an object parsed already is not parsed again (an
    object from at most MAX_EVENT_BYTES is what `load_object` would have returned)."""
    positions, events = [], []
    for i in range(lo, hi):
        obj = objs[i]
        try:
            if type(obj) is dict:
                event = read_inference_event(obj, ascii_only=values[i].isascii())  # type: ignore[union-attr]
                check_unique_keys(values[i], obj, quote_count(obj))  # type: ignore[arg-type]
            else:
                event = decode_inference_event(values[i] or b"")
        except InvalidEvent as exc:
            # Without its traceback: the frames it holds reference this batch's parsed objects
            # and `out`, which holds the error, a cycle only the garbage collector would break.
            out.errors.append((i, exc.with_traceback(None)))
            continue
        events.append(event)
        positions.append(i)
    if events:
        out._add_events(positions, events)


def score_columns(objs: list[Any]) -> ScoreColumns | None:
    """The events of `objs` (parsed JSON values) as columns when every one is a valid inference
    event of the fast shape; otherwise None (then some may still be valid). Never raises."""
    found = _checked(objs)
    return found if isinstance(found, ScoreColumns) else None


def _checked(objs: list[Any]) -> ScoreColumns | list[int] | None:
    """`score_columns`, but when the events pass every check except the numeric checks of some
    distributions, the ascending indices of those events (non-empty) instead of None."""
    try:
        return _columns(objs)
    except (KeyError, TypeError, IndexError, ValueError, OverflowError):
        return None  # a shape the checks below do not expect: not ours to judge


def _columns(objs: list[Any]) -> ScoreColumns | list[int] | None:
    if not objs or not _all(objs, dict):
        return None
    # The prediction first: events of other shapes (several predictions, top-1 labels) fail here,
    # before the costlier checks of every field.
    predictions = list(map(_PREDICTIONS, objs))  # KeyError: no predictions
    if not (_all(predictions, list) and _all_sized(predictions, 1)):
        return None
    preds = list(map(_FIRST, predictions))
    if not (_all(preds, dict) and _all_sized(preds, 1)):
        return None
    scores = list(map(_SCORES, preds))  # KeyError: the one field is not `scores`
    if not _all(scores, dict):
        return None
    version, event_ids, asset_ids, model_ids, model_versions, times = (
        list(map(get, objs)) for get in _FIELDS)  # KeyError: a required field is missing
    # Keys and strings, for `_quotes_match`: each event's keys, its prediction's one key
    # (`scores`), the four ids; the class names are added by `_distributions`.
    sizes = list(map(len, objs))
    quoted = sum(sizes) + 5 * len(objs)
    if sizes.count(len(INFERENCE_REQUIRED)) != len(objs):
        extra = _optional_quoted(objs)
        if extra is None:
            return None
        quoted += extra
    if not (_numbers(version) and version.count(SCHEMA_VERSION) == len(version)):
        return None
    ids = event_ids + asset_ids + model_ids + model_versions  # one pass per check, not four
    if not (_all(ids, str) and all(ids) and max(map(len, ids)) <= MAX_ID_LENGTH):  # all: no ""
        return None
    if not (_numbers(times) and 0.0 <= min(times) <= max(times) <= MAX_TIMESTAMP):
        return None
    return _distributions(scores, asset_ids, model_ids, model_versions, times, quoted)


def _all(items: list[Any], kind: type) -> bool:
    """Every item is exactly of type `kind` (orjson makes no subclasses; bool is not an int)."""
    return list(map(type, items)).count(kind) == len(items)  # count tries identity first


def _all_sized(items: list[Any], size: int) -> bool:
    """Every item has len `size`."""
    return list(map(len, items)).count(size) == len(items)


def _numbers(items: list[Any]) -> bool:
    """Every item is an int or a float (exact types: bool is not a number)."""
    kinds = list(map(type, items))
    floats = kinds.count(float)
    return floats == len(kinds) or floats + kinds.count(int) == len(kinds)


def _optional_quoted(objs: list[dict[str, Any]]) -> int | None:
    """None unless every field besides the required ones (which every event of `objs` holds) is
    `asset_uri` (a 1..MAX_URI_LENGTH string or null) or `metadata` (null, or an object within
    its bounds whose values are scalars: the exact decoder measures any other): then the strings
    and keys these fields add to the events (`asset_uri` strings, metadata keys and strings),
    for `_quotes_match`."""
    n = len(objs)
    if _all_sized(objs, len(INFERENCE_REQUIRED) + len(_OPTIONAL)):  # both in every event, usually
        try:
            uris, metadata = list(map(_ASSET_URI, objs)), list(map(_METADATA, objs))
        except KeyError:  # an event without one of them has another field in its place
            return None
    else:
        # An event's len - len(INFERENCE_REQUIRED) extra fields include those of _OPTIONAL it
        # holds: when the totals are equal, no event holds any other.
        found = sum(list(map(dict.__contains__, objs, repeat(name))).count(True)
                    for name in _OPTIONAL)
        if sum(map(len, objs)) - n * len(INFERENCE_REQUIRED) != found:
            return None
        uris = list(map(dict.get, objs, repeat("asset_uri")))  # None: null or absent
        metadata = list(map(dict.get, objs, repeat("metadata")))
    kinds = list(map(type, uris))
    texts = kinds.count(str)
    if texts + kinds.count(NoneType) != n:
        return None
    present = list(filter(None, uris))  # the strings, less any empty one
    if len(present) != texts or max(map(len, present), default=0) > MAX_URI_LENGTH:
        return None
    kinds = list(map(type, metadata))
    if kinds.count(dict) + kinds.count(NoneType) != n:
        return None
    present = list(filter(None, metadata))
    if not present:
        return texts
    if max(map(len, present)) > MAX_METADATA_NODES:
        return None
    kinds = list(map(type, chain.from_iterable(map(dict.values, present))))
    if kinds.count(dict) or kinds.count(list):
        return None
    return texts + sum(map(len, present)) + kinds.count(str)


def _distributions(scores: list[dict[str, Any]], asset_ids: Sequence[str],
                   model_ids: Sequence[str], model_versions: Sequence[str],
                   times: Sequence[float], quoted: int) -> ScoreColumns | list[int] | None:
    """Group the distributions by class layout and check them with numpy per layout. `quoted`:
    the events' keys and strings other than the class names (`_CheckedColumns.quotes`)."""
    layouts, groups = _layouts(scores)
    for layout in layouts:
        if len(layout) < MIN_SCORE_CLASSES or not 0 < min(map(len, layout)) <= max(
                map(len, layout)) <= MAX_CLASS_LENGTH:
            return None
        if not all(map(str.isascii, layout)) and max(
                map(len, map(str.encode, layout))) > MAX_CLASS_BYTES:
            return None
    rows_out, values_out, bad = [], [], []
    for (rows, dists), layout in zip(groups, layouts, strict=True):
        flat = list(chain.from_iterable(map(dict.values, dists)))
        if not _numbers(flat):
            return None
        values = np.empty((len(dists), len(layout)), dtype=np.float64)
        # Bit for bit np.array(flat), in half the time: the types are known (checked above), so
        # numpy's discovery of types and shapes is wasted work. OverflowError: a huge int.
        struct.pack_into(f"{len(flat)}d", values.data, 0, *flat)
        failed = _failed_rows(values)
        if failed is not None:
            bad.extend(rows[failed].tolist())
        rows_out.append(rows)
        values_out.append(values)
    if bad:
        return sorted(bad)
    quoted += sum(len(layout) * len(rows) for layout, rows in zip(layouts, rows_out, strict=True))
    return _CheckedColumns(asset_ids, model_ids, model_versions, times, tuple(layouts),
                           tuple(rows_out), tuple(values_out), quotes=2 * quoted)


def _layouts(scores: list[dict[str, Any]]
             ) -> tuple[list[tuple[str, ...]], list[tuple[np.ndarray, list[dict[str, Any]]]]]:
    """The distinct class layouts in order of first appearance, and for each the ascending rows
    holding it and their distributions."""
    n, first = len(scores), tuple(scores[0])
    # One layout (the usual case) when all the keys, end to end, are `first` n times over. That
    # is enough: a dict's keys are distinct, so no dict holds more than len(first) of them, so
    # each holds exactly len(first), lined up with a copy of `first`. The comparison is cheap:
    # orjson hands out the same str object for a repeated short key, and `==` tries identity.
    if list(chain.from_iterable(scores)) == [*first] * n:
        return [first], [(np.arange(n, dtype=np.int64), scores)]
    names = list(map(tuple, scores))
    members: dict[tuple[str, ...], list[int]] = {}
    for i, layout in enumerate(names):
        members.setdefault(layout, []).append(i)
    groups = [(np.asarray(rows, dtype=np.int64), [scores[i] for i in rows])
              for rows in members.values()]
    return list(members), groups


def _failed_rows(values: np.ndarray) -> np.ndarray | None:
    """Indices of the rows with a value outside [0, 1] or a sum further than _SUM_LIMIT from 1;
    None when there are none (the usual case: decided by whole-array bounds, without per-row
    temporaries). The bounds are exact: rounding is monotonic, so `sums.min() - 1.0` is the
    least of `sums - 1.0` and `sums.max() - 1.0` the greatest."""
    sums = values.sum(axis=1)
    if (values.min() >= 0.0 and values.max() <= 1.0
            and sums.min() - 1.0 >= -_SUM_LIMIT and sums.max() - 1.0 <= _SUM_LIMIT):
        return None
    ok = ((values >= 0.0) & (values <= 1.0)).all(axis=1)
    ok &= np.abs(sums - 1.0) <= _SUM_LIMIT
    return np.flatnonzero(~ok)
