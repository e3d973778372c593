"""State that always fits its topic (issue 13, H2): a checkpoint larger than one state-topic
record is written as bounded chunks plus a head, and a crash in the middle of writing one
leaves the previous checkpoint whole. Before: 96 events with emoji class names made a 15.9 MB
checkpoint against the topic's 8 MiB limit, a stop that every restart repeated."""

from __future__ import annotations

import numpy as np
import orjson

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.scorer.checkpoint_format import (
    CHECKPOINT_CHUNK_BYTES,
    checkpoint_records,
    chunk_key,
    read_checkpoint,
)
from services.scorer.partition import PartitionScorer, partition_seed
from services.streaming.event_fields import MAX_CLASS_BYTES
from services.streaming.topics import STATE_MAX_MESSAGE_BYTES
from tests.unit.core.synth import Event, Pred

KEY = b"group/al.inference-events.v1/0"


def _name(model: int, cls: int) -> str:
    """A class name of exactly MAX_CLASS_BYTES UTF-8 bytes (4-byte characters)."""
    tag = f"{model}.{cls}."
    return tag + "\U0001F426" * ((MAX_CLASS_BYTES - len(tag)) // 4) + "x" * (
        (MAX_CLASS_BYTES - len(tag)) % 4)


def _worst_state() -> SelectorState:
    """Every model at its class cap with the longest class names the decoders accept, a model
    version whose stats hold every class in every bucket, a full dedupe memory."""
    policy = SelectorPolicy()
    state = SelectorState.create(policy, partition_seed(0, 0))
    for m in range(policy.max_models):
        state.set_class_weights(f"model-{m}", {_name(m, c): 1.5 for c in range(policy.max_classes)})
    assert all(len(n.encode()) == MAX_CLASS_BYTES for n in state.books["model-0"].names[:-1])
    rng = np.random.default_rng(0)
    names = state.books["model-0"].names[:64]
    events = [Event(f"e{i}", f"a{i}", "model-0", "v1", 1_700_000_000.0 + i,
                    (Pred(scores={names[i % 64]: 0.6, names[(i + 1) % 64]: 0.4}),))
              for i in range(1000)]
    select(state, PredictionBatch.from_events(events))
    stats = state.versions[("model-0", "v1")].stats
    stats.hist[:] = rng.integers(0, 2**31, size=stats.hist.shape, dtype=np.uint32)
    stats._encoded = [None] * len(stats._encoded)
    keys = rng.integers(0, 2**64 - 1, policy.dedupe.max_entries, dtype=np.uint64)
    state.dedupe.add(policy.dedupe, keys)
    return state


def _scorer(state: SelectorState) -> PartitionScorer:
    return PartitionScorer("al.inference-events.v1", 0, state, 1000, service_version="test",
                           fetch=lambda _: None)


def _write(topic: dict[bytes, bytes], groups: list, upto: int | None = None) -> None:
    for group in groups[:upto]:
        for out in group:
            topic[out.key] = out.value


def _read(topic: dict[bytes, bytes]) -> bytes:
    """The state the topic's checkpoint restores, as sorted JSON."""
    restored = read_checkpoint(topic[KEY], SelectorPolicy(),
                               lambda slot, i: topic.get(chunk_key(KEY, slot, i)))
    assert restored is not None
    return _json(restored.state.snapshot())


def _json(snapshot: object) -> bytes:
    return orjson.dumps(snapshot, option=orjson.OPT_SORT_KEYS)


def test_a_checkpoint_at_the_caps_is_written_in_records_the_state_topic_accepts() -> None:
    state = _worst_state()
    payload = _scorer(state).checkpoint()
    assert len(payload) > STATE_MAX_MESSAGE_BYTES  # one record would be refused
    groups, slot = checkpoint_records(KEY, payload, None)
    records = [out for group in groups for out in group]
    assert max(len(out.value) for out in records) <= CHECKPOINT_CHUNK_BYTES
    assert CHECKPOINT_CHUNK_BYTES < STATE_MAX_MESSAGE_BYTES * 0.5  # room for record overhead
    topic: dict[bytes, bytes] = {}
    _write(topic, groups)
    assert _read(topic) == _json(state.snapshot())


def test_a_crash_while_writing_chunks_leaves_the_previous_checkpoint_whole() -> None:
    state = _worst_state()
    scorer = _scorer(state)
    first = scorer.checkpoint()
    topic: dict[bytes, bytes] = {}
    groups, slot = checkpoint_records(KEY, first, None)
    _write(topic, groups)
    state.dedupe.add(state.policy.dedupe, np.array([1, 2, 3], dtype=np.uint64))
    second = scorer.checkpoint()
    groups2, slot2 = checkpoint_records(KEY, second, slot)
    assert slot2 != slot
    _write(topic, groups2, upto=1)  # the chunks, not the head: a crash in between
    assert _read(topic) == _json(orjson.loads(first)["state"])
    _write(topic, groups2)
    assert _read(topic) == _json(orjson.loads(second)["state"])
    third, _ = checkpoint_records(KEY, scorer.checkpoint(), slot2)  # back to the first slot
    _write(topic, third, upto=1)
    assert _read(topic) == _json(orjson.loads(second)["state"])


def test_missing_or_foreign_chunks_make_the_checkpoint_unusable_not_wrong() -> None:
    payload = b'{"format": "x"}' + b" " * (2 * CHECKPOINT_CHUNK_BYTES)
    groups, _ = checkpoint_records(KEY, payload, None)
    topic: dict[bytes, bytes] = {}
    _write(topic, groups)
    topic[chunk_key(KEY, "a", 1)] = b"tampered"
    assert read_checkpoint(topic[KEY], SelectorPolicy(),
                           lambda slot, i: topic.get(chunk_key(KEY, slot, i))) is None
    del topic[chunk_key(KEY, "a", 1)]
    assert read_checkpoint(topic[KEY], SelectorPolicy(),
                           lambda slot, i: topic.get(chunk_key(KEY, slot, i))) is None


def test_a_small_checkpoint_stays_one_record_as_before() -> None:
    scorer = _scorer(SelectorState.create(SelectorPolicy(), 1))
    payload = scorer.checkpoint()
    groups, slot = checkpoint_records(KEY, payload, "b")
    assert groups == [[(KEY, payload)]] and slot == "b"
    assert read_checkpoint(payload, SelectorPolicy()) is not None
