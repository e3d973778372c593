"""Lossless JSON-able encodings for snapshots, and the stable 64-bit hashes keyed state relies on.

Snapshots must survive `json`/`orjson` round trips bit-for-bit, so arrays travel as base64 of
zlib-compressed little-endian bytes (exact, compact) and the RNG's 128-bit integers as strings
(orjson rejects integers wider than 64 bits). Python's built-in `hash()` is salted per process and
must never key state; `stable_hash64` is the same in every process and on every machine.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

import numpy as np

_MASK64 = (1 << 64) - 1


def stable_hash64(text: str) -> int:
    """64-bit BLAKE2b digest of `text` (UTF-8) as an unsigned int; identical across processes."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def stable_hashes64(texts: list[str]) -> np.ndarray:
    """Stable 64-bit hashes of many strings at once (uint64 array; identical in every process
    and on every platform).

    Each string's UTF-8 bytes, zero-padded to whole little-endian 64-bit words, are folded with
    FNV-style steps h = ((h ^ word) * prime) ^ (... >> 29), vectorised one word column at a time;
    the byte length and a splitmix64 finaliser are mixed in last, so strings that differ only by
    trailing NULs differ too. Each step is a bijection of h, so two ids of equal length that
    differ in a single word never collide.
    """
    raw = list(map(str.encode, texts))  # C-level passes: this runs once per event of a batch
    n = len(raw)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=n)
    words = (int(lengths.max()) + 7) // 8
    h = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if words:
        # Zero-padded to `width` bytes in one C pass: numpy's fixed-width bytes dtype pads
        # with NULs, the same bytes as ljust + join (~2x faster at 250 ids).
        width = 8 * words
        cols = np.array(raw, dtype=f"S{width}").view("<u8").reshape(n, words)
        shortest = int(lengths.min())
        for j in range(words):
            mixed = (h ^ cols[:, j]) * _FNV_PRIME
            mixed ^= mixed >> np.uint64(29)
            # Every string reaches word j (the usual batch: ids of one length): no select.
            h = mixed if shortest > 8 * j else np.where(lengths > 8 * j, mixed, h)
    return combine64(h ^ lengths.astype(np.uint64), 0x9E3779B97F4A7C15)


def combine64(a: np.ndarray, b: int) -> np.ndarray:
    """Mix uint64 hashes `a` with one uint64 `b` (splitmix64 finaliser); a fresh uint64 array.

    Deterministic and vectorised; used to key (model version, asset) pairs for dedupe.
    """
    x = np.asarray(a, dtype=np.uint64) ^ np.uint64(b & _MASK64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """Exact JSON-able form of `a` (dtype, shape, base64(zlib(bytes))). Inverse: `decode_array`."""
    arr = np.ascontiguousarray(a)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    raw = arr.astype(dtype, copy=False).tobytes()
    return {
        "dtype": dtype.str,
        "shape": list(arr.shape),
        "data": base64.b64encode(zlib.compress(raw, 1)).decode("ascii"),  # fast; mostly zeros
    }


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """Writable array equal (dtype, shape, bytes) to the one given to `encode_array`."""
    raw = zlib.decompress(base64.b64decode(d["data"]))
    return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def _stringify_ints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stringify_ints(v) for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return {"int": str(value)}


def _restore_ints(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"int"}:
            return int(value["int"])
        return {k: _restore_ints(v) for k, v in value.items()}
    return value


def encode_rng(rng: np.random.Generator) -> dict[str, Any]:
    """JSON-able state of `rng` (its bit generator's full state, integers as strings)."""
    return _stringify_ints(rng.bit_generator.state)


def decode_rng(d: dict[str, Any]) -> np.random.Generator:
    """A Generator whose future draws equal those of the one passed to `encode_rng`."""
    state = _restore_ints(d)
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
