"""The scorer's checkpoint as state-topic records: one record, or, when the state is larger than
one record may be, chunks under keys of their own and a small head naming them. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from services.core import SelectorState
from services.scorer.records import Output
from services.streaming.events import encode_event

CHECKPOINT_FORMAT = "active-stream/scorer-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_CHUNK_BYTES = 3 * 1024 * 1024
"""Largest state-topic record a checkpoint is written as; a larger checkpoint is split into
chunks of this size (`checkpoint_records`). Below the state topic's 8 MiB record limit
(topics.STATE_MAX_MESSAGE_BYTES) with room for Kafka's record overhead and below the 3 x
1 MiB that many clusters' defaults would otherwise refuse in one fetch response."""
CHUNKED_FORMAT = "active-stream/scorer-checkpoint-chunks"
MAX_CHECKPOINT_CHUNKS = 1024
"""A head naming more chunks than this is not ours (3 GiB of state): unusable."""

class Checkpoint(NamedTuple):
    """A usable checkpoint: the state at `offset`, whether it was the `final` one, and the
    chunk slot it was read from (None: one record)."""

    state: SelectorState
    offset: int
    final: bool
    slot: str | None = None
    tiers: dict[str, Any] | None = None  # the tier router's snapshot, when tiers were on
    probes: list[list[Any]] | None = None  # the probe books' snapshot, once a probe arrived


def checkpoint_records(key: bytes, payload: bytes, slot: str | None
                       ) -> tuple[list[list[Output]], str | None]:
    """The state-topic records of the checkpoint `payload` (`PartitionScorer.checkpoint`) kept
    at `key`, as groups to make durable in order, and the chunk slot they use.

    A payload of at most CHECKPOINT_CHUNK_BYTES is one record, as it always was. A larger one is
    split into chunks of that size, written first under keys of their own in the slot (`a` or
    `b`) other than `slot`, the one the current head names, then a small head at `key` naming
    them with their SHA-256: until the head is durable, the previous checkpoint's chunks are
    untouched, so a crash mid-write leaves the previous checkpoint whole. Every record is at
    most CHECKPOINT_CHUNK_BYTES (+ the head's few hundred bytes): a checkpoint fits the state
    topic's record limit whatever the state holds. Pure."""
    if len(payload) <= CHECKPOINT_CHUNK_BYTES:
        return [[Output(key, payload)]], slot
    use = "b" if slot == "a" else "a"
    pieces = [payload[i:i + CHECKPOINT_CHUNK_BYTES]
              for i in range(0, len(payload), CHECKPOINT_CHUNK_BYTES)]
    chunks = [Output(chunk_key(key, use, i), piece) for i, piece in enumerate(pieces)]
    head = encode_event({"format": CHUNKED_FORMAT, "version": CHECKPOINT_VERSION, "slot": use,
                         "chunks": len(pieces), "bytes": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()})
    return [chunks, [Output(key, head)]], use


def chunk_key(key: bytes, slot: str, index: int) -> bytes:
    """The state-topic key of chunk `index` in `slot` of the checkpoint kept at `key`."""
    return key + f"#{slot}/{index}".encode()


def read_checkpoint(raw: bytes, policy: Any,
                    chunk: Callable[[str, int], bytes | None] | None = None
                    ) -> Checkpoint | None:
    """The checkpoint in a state-topic record, or None when it cannot be used with `policy`
    (another format version, a policy whose state layout differs, or a chunked checkpoint whose
    chunks `chunk(slot, index)` -- the latest value at `chunk_key(key, slot, index)` -- cannot
    all give back intact): the caller starts fresh."""
    try:
        data = orjson.loads(raw)
        slot = None
        if data.get("format") == CHUNKED_FORMAT and chunk is not None:
            slot, raw = _assemble(data, chunk)
            data = orjson.loads(raw)
        if data.get("format") != CHECKPOINT_FORMAT or data.get("version") != CHECKPOINT_VERSION:
            return None
        return Checkpoint(SelectorState.from_snapshot(data["state"], policy), int(data["offset"]),
                          data.get("final") is True, slot, data.get("tiers"), data.get("probes"))
    except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
        return None


def _assemble(head: dict[str, Any], chunk: Callable[[str, int], bytes | None]
              ) -> tuple[str, bytes]:
    """(slot, payload) of a chunked checkpoint's head; ValueError when incomplete."""
    if head.get("version") != CHECKPOINT_VERSION or head.get("slot") not in ("a", "b"):
        raise ValueError("unknown chunked checkpoint")
    count = int(head["chunks"])
    if not 0 < count <= MAX_CHECKPOINT_CHUNKS:
        raise ValueError(f"{count} chunks")
    pieces = [chunk(head["slot"], i) for i in range(count)]
    payload = b"".join(p for p in pieces if p is not None)
    if None in pieces or hashlib.sha256(payload).hexdigest() != head["sha256"]:
        raise ValueError("chunks missing or not those of the head")
    return head["slot"], payload
