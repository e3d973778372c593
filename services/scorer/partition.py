"""One input partition's scoring: raw records in, annotation requests and dead letters out.

No Kafka here: the service hands in plain `Record`s and produces what comes back, so the whole
decode -> select -> encode path is unit-testable and byte-for-byte deterministic. A partition's
output is a function of (policy, seed, the partition's records) only: request bytes carry no
wall clock, and dead letters carry the source record's own timestamp.

Memory per batch is bounded whatever the records hold: a batch is decoded and selected in
chunks of at most MAX_CHUNK_BYTES of record values, and a chunk whose events would lay out into
more than MAX_CHUNK_CELLS (prediction, class) cells is split further. The selector decides the
same however the stream is cut (core/selector.py), so this changes no decision.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence

import numpy as np

from services.contracts.dead_letter import encode_dead_letter
from services.core import PredictionBatch, SelectorState
from services.core.eventtime import too_far_ahead
from services.core.stability import ProbeBooks, predicted_class
from services.core.tiers import TierRouter
from services.scorer.builders import build_drift_record, build_request, build_stability_record
from services.scorer.checkpoint_format import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from services.scorer.heap import collection_held
from services.scorer.records import BatchResult, Output, Record
from services.scorer.selected import DecodedEvents, Held, event
from services.streaming.annotation_requests import encode_annotation_request
from services.streaming.events import (
    ErrorCode,
    InferenceEvent,
    InvalidEvent,
    decode_inference_event,
    encode_event,
)
from services.streaming.inference_batch import DecodedBatch, decode_inference_batch

SERVICE = "scorer"
MAX_CHUNK_BYTES = 2 * 1024 * 1024
"""Record bytes decoded at once. Parsed JSON takes up to ~26x its bytes (256 KiB of nested empty
objects: ~6.6 MB), so one chunk's parsed objects stay near 50 MB at worst (measured: a chunk of
16 such events raised a process's peak RSS by ~100 MB, one of 1 by ~21 MB); a usual batch
(1,000 events of ~0.5 KB) is one chunk."""
MAX_CHUNK_CELLS = 2**22
"""(prediction, class) cells of one selector call: its dense score matrix is 8 bytes a cell
(32 MiB here). One event holds at most MAX_SCORE_CELLS (2^20)."""


class DeferredPickUnreadable(RuntimeError):
    """A reservoir pick granted after a restore needs its record again, and reading it back from
    Kafka failed (an error or a timeout, retried): raised by `fetch`, it stops the batch before
    its offsets are committed, so a restart replays it and reads again. (A record that is gone
    for good, below the partition's log start after retention, is not this: `fetch` returns
    None and the pick is counted lost.)"""


def partition_seed(seed: int, partition: int) -> int:
    """The selector seed of one input partition: distinct per partition, fixed per deployment."""
    return seed * 1_000_003 + partition


class PartitionScorer:
    """Selector state of one input partition and the offset it has consumed up to.

    `next_offset` is the offset of the next record to process: a checkpoint of `state` is valid
    for exactly that position. `suppress_below` is the group's committed offset at restore: the
    records below it were already processed, and their output produced, before a crash; they are
    replayed to rebuild the state but produce nothing. `fetch(offset)` returns the raw value of an
    earlier record of this partition (for reservoir picks decided after their batch), None when
    that record is gone for good (removed by retention: the pick is counted lost), and raises
    DeferredPickUnreadable when it could not be read (the batch stops before its commit).
    """

    def __init__(self, topic: str, partition: int, state: SelectorState, next_offset: int,
                 *, service_version: str, fetch: Callable[[int], bytes | None],
                 suppress_below: int = 0, feedback_from: int = 0,
                 tiers: TierRouter | None = None,
                 tier_topics: dict[str, str] | None = None,
                 probes: ProbeBooks | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.state = state
        self.next_offset = next_offset
        self.suppress_below = suppress_below
        # Class feedback the state does not hold yet may be applied from this offset on (the
        # service's rule: after a crash, not inside what the crashed instance may have output).
        self.feedback_from = feedback_from
        self.service_version = service_version
        self.fetch = fetch
        # Labeling tiers (services/core/tiers.py), None when off; part of the checkpoint.
        self.tiers = tiers
        self.tier_topics = tier_topics or {}
        # Probe predictions per model (core/stability.py), None: probes are only kept out of
        # selection. Part of the checkpoint, so a replay yields the same stability records.
        self.probes = probes
        # The events of the records the selector's reservoirs still hold (bounded by their
        # size), by offset: a pick granted in a later batch needs its event, and reading it back
        # from Kafka costs a fetch round trip per pick (slow at low load, when windows span
        # batches). Kept as decoded then (selected.py): never decoded twice.
        self.held: dict[int, Held] = {}

    def process(self, records: Sequence[Record]) -> BatchResult:
        """Decode, select and encode one batch of consecutive records of this partition.

        Records below `next_offset` (a redelivery) are skipped. The batch is cut at
        `suppress_below`, so replayed records and new ones never share a selector call.
        """
        return self.process_columns([r.offset for r in records], [r.value for r in records],
                                    records.__getitem__)

    def process_columns(self, offsets: Sequence[int], values: Sequence[bytes | None],
                        record: Callable[[int], Record]) -> BatchResult:
        """`process` for records given as columns -- `offsets[i]` (ascending), `values[i]` --
        with `record(i)` the whole i-th record, asked for only to dead-letter it. Lets the shell
        hand over a batch without building a `Record` per event."""
        low = min(offsets) if offsets else 0
        if offsets and low < self.next_offset:  # a redelivery: drop what was processed
            keep = [i for i, offset in enumerate(offsets) if offset >= self.next_offset]
            return self.process_columns([offsets[i] for i in keep], [values[i] for i in keep],
                                        lambda j: record(keep[j]))
        result = BatchResult()
        # The records below `suppress_below` (replayed): none in the usual batch, which then
        # skips a Python-level comparison per record.
        n = len(offsets)
        cut = 0 if low >= self.suppress_below else sum(map(self.suppress_below.__gt__, offsets))
        with collection_held():
            for lo, hi, emit in ((0, cut, False), (cut, n, True)):
                for a, b in _chunks(values, lo, hi):
                    self._process(offsets[a:b], values[a:b], record, a, emit, result)
        if n:
            self.next_offset = offsets[-1] + 1
        return result

    def _process(self, offsets: Sequence[int], values: Sequence[bytes | None],
                 record: Callable[[int], Record], first: int, emit: bool,
                 result: BatchResult) -> None:
        """One selector call; `record(first + i)` is the record of `values[i]`. A chunk whose
        events would lay out into more than MAX_CHUNK_CELLS cells is halved instead."""
        decoded = decode_inference_batch(values)
        if len(values) > 1 and decoded.cells() > MAX_CHUNK_CELLS and \
                decoded.distinct_cells() > MAX_CHUNK_CELLS:
            del decoded
            mid = len(values) // 2
            self._process(offsets[:mid], values[:mid], record, first, emit, result)
            self._process(offsets[mid:], values[mid:], record, first + mid, emit, result)
            return
        errors = list(decoded.errors)
        decoded = self._admit(decoded, record, first, errors)
        decoded = self._take_probes(decoded, emit, result)
        errors.sort(key=lambda e: e[0])
        for i, exc in errors:
            result.invalid_codes.append(str(exc.code))
            if emit:
                result.dead_letters.append(self._dead_letter(record(first + i), exc))
        result.valid += len(decoded.index)
        if not emit:
            result.suppressed += len(values)
        refs = list(map(offsets.__getitem__, decoded.index))
        selection = self.state.select(PredictionBatch.from_parts(decoded.parts, refs))
        for reason, count in selection.suppressed.items():
            result.redundant[reason] = result.redundant.get(reason, 0) + count
        # Only the ~2% selected need the event itself: built from what the decoder parsed
        # (selected.py), rather than an object for every event of the batch.
        events = DecodedEvents(decoded)
        for sel in selection.selected:
            event = events[sel.asset_index] if sel.asset_index >= 0 else self._refetch(sel.ref)
            if event is None:
                result.lost_deferred += 1
                continue
            result.selected.append(sel)
            tier = None
            if self.tiers is not None:  # routed in replays too: the cost gate is state
                tier = self.tiers.route(sel.model_id, sel.class_name, sel.score, sel.strategy,
                                        sel.event_time)
                if tier is None:
                    result.withheld += 1
                    continue
            if emit:
                request = build_request(event, sel, self.topic, self.partition, int(sel.ref),
                                        tier)
                out = Output(event.asset_id.encode(), encode_annotation_request(request))
                result.requests.append(out)
                if tier is not None:
                    result.request_tiers.append(tier[0])
                    if tier[0] in self.tier_topics:
                        result.tier_copies.append((self.tier_topics[tier[0]], out))
        for drift in self.state.take_drift_events():  # replayed ones were reported before
            if emit:
                result.drift.append(drift)
                result.drift_records.append(build_drift_record(drift, self.partition))
        self._hold(refs, events)

    def _take_probes(self, decoded: DecodedBatch, emit: bool, result: BatchResult
                     ) -> DecodedBatch:
        """`decoded` less its probe events (never selected, never in the class statistics,
        budgets or drift), which are folded, in input order, into the probe books. A comparison
        a probe completes yields a stability record (when emitting: a replayed one was output
        before the crash). A comparison of no probes (the previous version's all left out by
        the book's bound) is not a measurement: it yields nothing."""
        mask = decoded.probe_mask()
        if not mask.any():
            return decoded
        result.probes += int(mask.sum())
        result.valid += int(mask.sum())  # valid events, for the dead-letter ceiling
        if self.probes is not None:
            for event in _flagged(decoded, mask):
                first = event.predictions[0]
                found = self.probes.observe(event.model_id, event.asset_id,
                                            event.model_version,
                                            predicted_class(first.scores, first.label))
                if found is not None and found.probes and emit:
                    result.stability.append((event.model_id, found))
                    result.stability_records.append(build_stability_record(
                        event.model_id, found, self.partition, event.timestamp))
        return decoded.without(mask)

    def _admit(self, decoded: DecodedBatch, record: Callable[[int], Record], first: int,
               errors: list[tuple[int, InvalidEvent]]) -> DecodedBatch:
        """`decoded` less the events stamped too far ahead of the stream (core/eventtime.py):
        of the partition's watermark and of their record's timestamp. They join `errors` as
        timestamp_out_of_range."""
        state = self.state
        if not decoded.index:
            return decoded

        def stamp(k: int) -> float:
            t = record(first + decoded.index[k]).timestamp
            return t if t > 0 else math.nan  # <= 0: the record carries no timestamp

        times = decoded.times()
        refused, reference = too_far_ahead(state.policy.event_time, times, state.last_time,
                                           state.watermark, stamp)
        if not refused.any():
            return decoded
        skew = state.policy.event_time.max_skew_s
        for k in np.flatnonzero(refused).tolist():
            detail = (f"event time {times[k]:.3f} is more than {skew:g} s ahead of the "
                      f"stream ({reference[k]:.3f}) and of its record's Kafka timestamp")
            errors.append((decoded.index[k], InvalidEvent(
                "timestamp", ErrorCode.TIMESTAMP_OUT_OF_RANGE, detail)))
        return decoded.without(refused)

    def _hold(self, refs: Sequence[int], events: DecodedEvents) -> None:
        """Keep what is needed of the events the reservoirs now hold, drop the rest. `refs`: the
        offsets of this selector call's events (ascending), `events` those events."""
        held: dict[int, Held] = {}
        for ref in self.state.held_refs():
            offset = int(ref)
            if offset in self.held:
                held[offset] = self.held[offset]
                continue
            k = bisect.bisect_left(refs, offset)
            if k < len(refs) and refs[k] == offset:
                held[offset] = events.held(k)
        self.held = held

    def _refetch(self, offset: int) -> InferenceEvent | None:
        """A reservoir pick from an earlier batch: its event as kept then or, after a restore
        (another process decoded it), its record read back from Kafka and decoded (it was
        valid). None: the record is gone for good; DeferredPickUnreadable (from `fetch`)
        propagates: this batch must not be committed."""
        if offset in self.held:
            return event(self.held[offset])
        raw = self.fetch(int(offset))
        return None if raw is None else decode_inference_event(raw)

    def _dead_letter(self, record: Record, exc: InvalidEvent) -> Output:
        letter = encode_dead_letter(record.value, topic=self.topic, partition=self.partition,
                             offset=record.offset, reason=exc.reason, code=str(exc.code),
                             service=SERVICE, service_version=self.service_version,
                             failed_at=record.timestamp, key=record.key)
        return Output(record.key, letter)

    def checkpoint(self, final: bool = False) -> bytes:
        """The state at `next_offset`, as the value of a state-topic record. `final`: written
        when this instance lets the partition go (revoke, shutdown) with its offsets committed,
        so it processed nothing past it."""
        data = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "topic": self.topic,
            "partition": self.partition, "offset": self.next_offset, "final": final,
            "state": self.state.snapshot(),
        }
        if self.tiers is not None:  # absent without tiers: checkpoints keep their bytes
            data["tiers"] = self.tiers.snapshot()
        if self.probes is not None and self.probes.books:  # absent until a probe arrives
            data["probes"] = self.probes.snapshot()
        return encode_event(data)


def _flagged(decoded: DecodedBatch, mask: np.ndarray) -> list[InferenceEvent]:
    """The events of `decoded` flagged in `mask` (`index` order), in input order. Flagged
    events are probes, never rows of columns (DecodedBatch.probe_mask)."""
    out: list[InferenceEvent] = []
    k = 0
    for part in decoded.parts:
        if isinstance(part, list):
            out.extend(e for e, flag in zip(part, mask[k:k + len(part)].tolist(), strict=True)
                       if flag)
        k += len(part)
    return out


def _chunks(values: Sequence[bytes | None], lo: int, hi: int) -> list[tuple[int, int]]:
    """[lo, hi) cut into runs of at most MAX_CHUNK_BYTES of values (a longer value alone)."""
    if hi <= lo:
        return []
    try:  # the usual batch: no tombstone (None), one pass in C
        if sum(map(len, values[lo:hi])) <= MAX_CHUNK_BYTES:  # type: ignore[arg-type]
            return [(lo, hi)]
    except TypeError:
        pass
    sizes = [len(v) if v else 0 for v in values[lo:hi]]
    if sum(sizes) <= MAX_CHUNK_BYTES:
        return [(lo, hi)]
    out, start, total = [], lo, 0
    for i, size in enumerate(sizes, lo):
        if total and total + size > MAX_CHUNK_BYTES:
            out.append((start, i))
            start, total = i, 0
        total += size
    out.append((start, hi))
    return out
