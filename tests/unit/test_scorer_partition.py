"""PartitionScorer: the scorer's decode -> select -> encode path, without Kafka."""

from __future__ import annotations

import base64

import orjson
import pytest

from services.core import SelectorPolicy, SelectorState
from services.scorer.builders import request_id
from services.scorer.checkpoint_format import read_checkpoint
from services.scorer.partition import PartitionScorer, Record, partition_seed
from services.streaming.events import decode_annotation_request
from tests.synthetic_events import inference_events

TOPIC = "al.inference-events.v1"
POLICY = SelectorPolicy()


def _records(n: int, seed: int = 5, bad_every: int = 0) -> list[Record]:
    out = []
    for i, (key, value) in enumerate(inference_events(n, seed)):
        if bad_every and i % bad_every == bad_every - 1:
            value = b'{"broken": '
        out.append(Record(i, key, value, 1_700_000_000.0 + i))
    return out


def _scorer(next_offset: int = 0, suppress_below: int = 0,
            records: list[Record] | None = None) -> PartitionScorer:
    by_offset = {r.offset: r.value for r in records or []}
    return PartitionScorer(TOPIC, 0, SelectorState.create(POLICY, partition_seed(0, 0)),
                           next_offset, service_version="test", fetch=by_offset.get,
                           suppress_below=suppress_below)


def test_request_ids_are_deterministic_per_asset_and_model_version() -> None:
    assert request_id("a1", "m", "v1") == request_id("a1", "m", "v1")
    assert len({request_id("a1", "m", "v1"), request_id("a1", "m", "v2"),
                request_id("a2", "m", "v1"), request_id("a1", "n", "v1")}) == 4
    # parts are delimited: moving characters between fields changes the id
    assert request_id("b", "ma", "v") != request_id("ab", "m", "v")


def test_requests_are_valid_contract_events_with_source_coordinates() -> None:
    records = _records(2000)
    result = _scorer(records=records).process(records)
    assert result.valid == 2000 and result.requests
    by_offset = {r.offset: r for r in records}
    for out in result.requests:
        request = decode_annotation_request(out.value)
        assert request.source.topic == TOPIC and request.source.partition == 0
        source = orjson.loads(by_offset[request.source.offset].value)
        assert out.key == source["asset_id"].encode() == request.asset_id.encode()
        assert request.request_id == request_id(source["asset_id"], "digits", "v1")
        assert [p.to_dict() for p in request.predictions] == source["predictions"]


def test_same_records_same_bytes() -> None:
    records = _records(1500, bad_every=50)
    first, second = _scorer().process(records), _scorer().process(records)
    assert first.requests == second.requests and first.requests
    assert first.dead_letters == second.dead_letters and len(first.dead_letters) == 30


def test_dead_letters_carry_the_original_and_the_record_timestamp() -> None:
    records = _records(100, bad_every=10)
    result = _scorer().process(records)
    assert result.invalid_codes == ["not_json"] * 10
    letter = orjson.loads(result.dead_letters[0].value)
    assert base64.b64decode(letter["original_b64"]) == b'{"broken": '
    assert letter["source"] == {"topic": TOPIC, "partition": 0, "offset": 9}
    assert letter["failed_at"] == records[9].timestamp


def test_redelivered_records_are_skipped() -> None:
    records = _records(300)
    scorer = _scorer()
    scorer.process(records[:200])
    again = scorer.process(records[100:300])
    assert again.valid == 100 and scorer.next_offset == 300


def test_replayed_records_rebuild_state_without_output() -> None:
    records = _records(1200)
    uninterrupted = _scorer(records=records)
    uninterrupted.process(records[:700])
    after_crash_point = uninterrupted.process(records[700:]).requests
    replay = _scorer(suppress_below=700, records=records)
    result = replay.process(records)
    assert result.suppressed == 700
    # everything decided from offset 700 on, including reservoir picks of earlier assets
    assert result.requests == after_crash_point and after_crash_point
    assert replay.state.snapshot() == uninterrupted.state.snapshot()


def test_checkpoint_restores_state_and_offset() -> None:
    records = _records(1000)
    scorer = _scorer(records=records)
    scorer.process(records[:600])
    restored = read_checkpoint(scorer.checkpoint(), POLICY)
    assert restored is not None
    state, offset, final = restored.state, restored.offset, restored.final
    assert offset == 600 and state.snapshot() == scorer.state.snapshot() and not final
    assert read_checkpoint(scorer.checkpoint(final=True), POLICY).final  # type: ignore[union-attr]
    resumed = PartitionScorer(TOPIC, 0, state, offset, service_version="test",
                              fetch={r.offset: r.value for r in records}.get)
    assert resumed.process(records).requests == scorer.process(records).requests


@pytest.mark.parametrize("raw", [b"not json", b"{}", orjson.dumps({"format": "other"})])
def test_unusable_checkpoints_mean_a_fresh_start(raw: bytes) -> None:
    assert read_checkpoint(raw, POLICY) is None


def test_picks_granted_after_their_batch_need_no_read_back_from_kafka() -> None:
    """Small batches (low load): windows span batches, so many reservoir picks are granted in a
    later batch. Their records are kept at hand; the output equals one big batch's."""
    records = _records(3000)
    whole = _scorer(records=records).process(records)
    fetched: list[int] = []
    by_offset = {r.offset: r.value for r in records}

    def fetch(offset: int) -> bytes | None:
        fetched.append(offset)
        return by_offset.get(offset)

    scorer = PartitionScorer(TOPIC, 0, SelectorState.create(POLICY, partition_seed(0, 0)), 0,
                             service_version="test", fetch=fetch)
    requests, deferred = [], 0
    for lo in range(0, 3000, 7):
        result = scorer.process(records[lo:lo + 7])
        requests += result.requests
        deferred += sum(s.asset_index < 0 for s in result.selected)
    assert deferred > 10  # the case this is about happened
    assert fetched == []
    assert requests == whole.requests
    assert len(scorer.held) <= POLICY.reservoir.per_class * 10 + POLICY.reservoir.control_size


def test_a_checkpoint_with_the_dedupe_memory_full_fits_the_state_topics_record_limit() -> None:
    """The dedupe memory (up to `max_entries` random 64-bit keys, incompressible) dominates a
    checkpoint: ~2.6 MB at the default cap, over Kafka's ~1 MB default record limit. The state
    topic is created with a limit above it (Kafka refuses larger records; the embedded broker
    does not, docs/brokers.md quirk 10), so a full memory must still fit, with room to spare."""
    import numpy as np

    from services.streaming.topics import SCORER_STATE, STATE_MAX_MESSAGE_BYTES, loop_topics

    scorer = _scorer(records=_records(2000))
    scorer.process(_records(2000))  # books, stats and reservoirs as in service
    dedupe, policy = scorer.state.dedupe, POLICY.dedupe
    keys = np.random.default_rng(1).integers(0, 2**64 - 1, policy.max_entries, dtype=np.uint64)
    dedupe.add(policy, keys)
    assert len(dedupe) == policy.max_entries
    size = len(scorer.checkpoint())
    assert 2_000_000 < size < STATE_MAX_MESSAGE_BYTES / 2, size
    spec = next(s for s in loop_topics() if s.name == SCORER_STATE)
    assert int(spec.configs["max.message.bytes"]) == STATE_MAX_MESSAGE_BYTES
    assert spec.configs["cleanup.policy"] == "compact"


def test_video_fields_through_the_partition_scorer() -> None:
    """Near-duplicate frames (one clip, same embedding) are suppressed and counted by reason in
    the batch result; a checkpoint of the video state restores."""
    from dataclasses import replace

    from services.core.redundancy import RedundancyPolicy
    from services.core.tracks import TrackPolicy

    records = []
    for i in range(600):
        scene = i // 100
        event = {"schema_version": 1, "event_id": f"e{i}", "asset_id": f"f{i}",
                 "model_id": "cam", "model_version": "v1", "timestamp": 1_700_000_000 + i,
                 "sequence_id": f"clip{scene}",
                 "predictions": [{"scores": {"a": 0.55, "b": 0.45}, "track_id": f"t{scene}",
                                  "bbox": [float(i % 100), 0.0, 5.0, 5.0],
                                  "embedding": [1.0, float(scene), 0.0, 0.001 * (i % 3)]}]}
        records.append(Record(i, f"f{i}".encode(), orjson.dumps(event), 1_700_000_000.0 + i))
    policy = replace(POLICY, redundancy=RedundancyPolicy(similarity=0.95, horizon_seconds=1e6),
                     tracks=TrackPolicy(weight=0.5))
    state = SelectorState.create(policy, 3)
    scorer = PartitionScorer(TOPIC, 0, state, 0, service_version="test",
                             fetch={r.offset: r.value for r in records}.get)
    result = scorer.process(records)
    assert result.redundant.get("near_duplicate", 0) > 0
    reservoir = [s for s in result.selected if s.strategy == "reservoir"]
    assert len(reservoir) <= 6  # one per scene at most: the others are near duplicates
    snap = state.snapshot()
    assert "redundancy" in snap and "tracks" in snap
    assert SelectorState.from_snapshot(orjson.loads(orjson.dumps(snap)), policy).snapshot() == \
        snap


def test_garbage_collection_is_held_off_for_a_batch_and_restored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Automatic collection is off while a batch is processed, back on after it (also after a
    batch that raised), and left off when the caller had turned it off."""
    import gc

    records = _records(300)
    seen: list[bool] = []
    inner = PartitionScorer._process

    def spy(self: PartitionScorer, *args: object) -> None:
        seen.append(gc.isenabled())
        inner(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(PartitionScorer, "_process", spy)
    assert gc.isenabled()
    plain = _scorer().process(records)
    assert seen and not any(seen) and gc.isenabled()

    def broken(self: PartitionScorer, *args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(PartitionScorer, "_process", broken)
    with pytest.raises(RuntimeError):
        _scorer().process(records)
    assert gc.isenabled()

    monkeypatch.setattr(PartitionScorer, "_process", spy)
    gc.disable()
    try:
        seen.clear()
        again = _scorer().process(records)
        assert seen and not any(seen) and not gc.isenabled()
    finally:
        gc.enable()
    assert [o.value for o in again.requests] == [o.value for o in plain.requests]
