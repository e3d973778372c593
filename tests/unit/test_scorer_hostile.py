"""PartitionScorer under hostile input (issue 13): event time one record cannot break, repeated
keys, memory bounded per batch whatever the records hold. No Kafka: plain Records."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tracemalloc
from unittest import mock

import orjson
import pytest

from services.core import SelectorPolicy, SelectorState
from services.scorer import partition
from services.scorer.checkpoint_format import read_checkpoint
from services.scorer.partition import PartitionScorer, Record, partition_seed
from tests.synthetic_events import inference_events

TOPIC = "al.inference-events.v1"
NOW = 1_765_000_000.0  # the records' Kafka timestamps: when the producer sent them
FAR = 9.8e9  # event time in year 2280 (valid epoch seconds)


def _scorer(policy: SelectorPolicy | None = None) -> PartitionScorer:
    state = SelectorState.create(policy or SelectorPolicy(), partition_seed(0, 0))
    return PartitionScorer(TOPIC, 0, state, 0, service_version="test", fetch=lambda _: None)


def _records(values: list[bytes], start: int = 0) -> list[Record]:
    return [Record(start + i, None, v, NOW + (start + i) * 0.01) for i, v in enumerate(values)]


def _event(i: int, t: float, **changes: object) -> bytes:
    return orjson.dumps({**orjson.loads(inference_events(1, seed=i, t0=t)[0][1]), **changes})


def _run(scorer: PartitionScorer, records: list[Record], batch: int = 500) -> tuple[list, list]:
    requests, letters = [], []
    for lo in range(0, len(records), batch):
        result = scorer.process(records[lo:lo + batch])
        requests += result.requests
        letters += result.dead_letters
    return requests, letters


def _far_future_stream(first: bool) -> list[Record]:
    good = [v for _, v in inference_events(10_000, seed=3, t0=1.7e9, dt=0.5)]
    far = _event(99_999, FAR)
    values = [far, *good] if first else [*good[:5000], far, *good[5000:]]
    return _records(values)


@pytest.mark.parametrize("first", [False, True], ids=["mid-stream", "first-record"])
def test_one_far_future_event_does_not_starve_selection(first: bool) -> None:
    """The issue's case: after one valid event stamped in year 2283, the 5,000 ordinary events
    got 13 requests where the 5,000 before it got 504. Now it is dead-lettered, also as a
    partition's very first record (judged by its record timestamp, there being no watermark)."""
    good = [v for _, v in inference_events(10_000, seed=3, t0=1.7e9, dt=0.5)]
    far = _event(99_999, FAR)
    values = [far, *good] if first else [*good[:5000], far, *good[5000:]]
    records = _records(values)
    scorer = _scorer()
    by_offset: dict[int, int] = {}
    for lo in range(0, len(records), 500):
        for out in scorer.process(records[lo:lo + 500]).requests:
            offset = orjson.loads(out.value)["source"]["offset"]
            by_offset[offset] = by_offset.get(offset, 0) + 1
    far_at = 0 if first else 5000
    before = sum(n for o, n in by_offset.items() if o < far_at or (first and o <= 5000))
    after = sum(n for o, n in by_offset.items() if o > max(far_at, 5000 if first else 0))
    assert far_at not in by_offset
    assert before > 20 and abs(after - before) <= 0.2 * before, (before, after)


def test_a_far_future_event_is_dead_lettered_with_its_reason() -> None:
    records = _far_future_stream(first=False)
    _, letters = _run(_scorer(), records)
    assert len(letters) == 1
    letter = orjson.loads(letters[0].value)
    assert letter["code"] == "timestamp_out_of_range"
    assert letter["source"]["offset"] == 5000
    assert letter["reason"].startswith("timestamp: event time 9800000000.000 is more than 3600 s")


def test_refusals_and_requests_do_not_depend_on_batching() -> None:
    records = _far_future_stream(first=False)
    records.insert(7000, Record(7000, None, _event(5, FAR), NOW))
    records = [r._replace(offset=i) for i, r in enumerate(records)]
    one = _run(_scorer(), records, batch=len(records))
    small = _run(_scorer(), records, batch=37)
    assert one == small and len(one[1]) == 2


def test_a_quiet_partition_s_next_event_is_not_a_skew() -> None:
    """Hours without events: the next event is far ahead of the watermark, but not of its
    record's timestamp. Accepted."""
    t0 = 1.7e9
    values = [v for _, v in inference_events(200, seed=4, t0=t0)]
    later = [v for _, v in inference_events(200, seed=5, t0=t0 + 8 * 3600)]
    records = [Record(i, None, v, t0 + i) for i, v in enumerate(values)]
    records += [Record(200 + i, None, v, t0 + 8 * 3600 + i) for i, v in enumerate(later)]
    _, letters = _run(_scorer(), records)
    assert letters == []


def test_a_repeated_key_is_dead_lettered() -> None:
    values = [v for _, v in inference_events(100, seed=6)]
    values[40] = b'{"timestamp":1,' + values[40][1:]
    _, letters = _run(_scorer(), _records(values))
    assert [orjson.loads(x.value)["code"] for x in letters] == ["duplicate_key"]


def _bomb(i: int, size: int = 250 * 1024) -> bytes:
    """A valid-JSON event whose metadata is ~`size` bytes of nested empty objects: ~26x its
    size once parsed. Over metadata's bounds (dead-lettered), but parsed all the same."""
    head = _event(i, 1.7e9 + i)[:-1]
    return head + b',"metadata":{"m":[' + b"{}," * (size // 3) + b"{}]}}"


_MEMORY_SCRIPT = """
import sys
from unittest import mock
sys.path.insert(0, {root!r})
from tests.unit.test_scorer_hostile import _bomb, _records, _scorer, inference_events, partition

def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))

good = [v for _, v in inference_events(600, seed=8)]
values = [*good[:300], *(_bomb(i) for i in range(40)), *good[300:]]
records = _records(values)
scorer = _scorer()
_scorer().process(_records(good[:50]))  # warm up (imports, caches)
before = hwm()
with mock.patch.object(partition, "MAX_CHUNK_BYTES", 300_000, create=True):
    result = scorer.process(records)
print(hwm() - before, len(result.dead_letters), len(result.requests))
"""


def test_decoded_memory_per_batch_is_capped() -> None:
    """40 events of 250 KB worst-case metadata parse to ~6.6 MB each: decoded whole, a batch of
    them takes ~260 MB, and a batch of 1,000 would take 6.6 GB. Decoded in chunks of at most
    MAX_CHUNK_BYTES (made small here), the peak is a chunk's worth; every bomb is
    dead-lettered and the good events around them are selected from. Measured as the growth of
    a fresh process's peak RSS (tracemalloc overcounts orjson's output buffers)."""
    root = str(pathlib.Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT.format(root=root)], check=True,
                         capture_output=True, text=True, timeout=300).stdout.split()
    growth_kb, letters, requests = map(int, out)
    # Measured: ~21 MiB in chunks of one such event; ~240 MiB decoded whole.
    assert growth_kb < 64 * 1024, f"peak RSS grew by {growth_kb / 1024:.0f} MiB"
    assert letters == 40 and requests > 0


def test_a_batch_of_wide_vocabularies_is_split_before_it_is_laid_out() -> None:
    """Events each naming 200 new classes: a batch of 400 would lay out into a dense
    400 x 80,000 matrix (256 MB). It is split into selector calls of at most MAX_CHUNK_CELLS
    cells, and decides exactly as the unsplit batch (selection is invariant to cuts)."""
    values = []
    for i in range(400):
        names = [f"e{i}-c{k}" for k in range(200)]
        scores = dict.fromkeys(names, 0.0)
        scores[names[0]] = 1.0
        values.append(_event(i, 1.7e9 + i, predictions=[{"scores": scores}]))
    records = _records(values)
    tracemalloc.start()
    try:
        split = _scorer().process(records)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20, peak / 2**20
    with mock.patch.object(partition, "MAX_CHUNK_CELLS", 2**40):
        whole = _scorer().process(records)
    assert split.requests == whole.requests and split.valid == whole.valid == 400


def _restored_with_held_picks() -> tuple[bytes, list[Record], int, list]:
    """A checkpoint taken while the reservoirs hold picks of earlier records, the records
    after it, and the requests an uninterrupted run makes from them."""
    records = _records([v for _, v in inference_events(400, seed=9)])
    whole = _scorer()
    expected = [o for lo in range(0, 400, 7) for o in whole.process(records[lo:lo + 7]).requests]
    scorer = _scorer()
    produced = []
    for lo in range(0, 133, 7):  # a cut found to leave a pick to grant from before it
        produced += scorer.process(records[lo:lo + 7]).requests
    assert scorer.state.held_refs(), "no pick is held across the checkpoint"
    return scorer.checkpoint(), records, scorer.next_offset, expected[len(produced):]


def _from_checkpoint(raw: bytes, fetch: object) -> PartitionScorer:
    restored = read_checkpoint(raw, SelectorPolicy())
    assert restored is not None
    return PartitionScorer(TOPIC, 0, restored.state, restored.offset, service_version="test",
                           fetch=fetch)  # type: ignore[arg-type]


def test_a_held_pick_that_cannot_be_read_back_stops_the_batch_and_is_not_dropped() -> None:
    """After a restore a held pick's record is read back from Kafka; when that fails the batch
    raises (the service then stops before committing), instead of dropping the pick with its
    budget spent. The retry after the restart produces what the uninterrupted run did."""
    raw, records, offset, expected = _restored_with_held_picks()

    def failing(_: int) -> bytes | None:
        raise partition.DeferredPickUnreadable("broker unreachable")

    scorer = _from_checkpoint(raw, failing)
    with pytest.raises(partition.DeferredPickUnreadable):
        for lo in range(offset, 400, 7):
            scorer.process(records[lo:lo + 7])
    by_offset = {r.offset: r.value for r in records}
    retried = _from_checkpoint(raw, by_offset.get)
    again = [o for lo in range(offset, 400, 7)
             for o in retried.process(records[lo:lo + 7]).requests]
    assert again == expected


def test_a_held_pick_gone_for_good_is_counted_lost() -> None:
    raw, records, offset, _ = _restored_with_held_picks()
    scorer = _from_checkpoint(raw, lambda _: None)
    lost = sum(scorer.process(records[lo:lo + 7]).lost_deferred for lo in range(offset, 400, 7))
    assert lost >= 1
