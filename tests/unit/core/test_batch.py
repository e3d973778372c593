"""PredictionBatch.from_events: flat arrays, vocabularies, refs, top-1 and multi-object events;
from_parts (column runs) equal to it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.core.codec import stable_hashes64
from services.core.events import ScoreColumns
from tests.unit.core.synth import Event, Pred, dirichlet_events


def _events() -> list[Event]:
    return [
        Event("e1", "img-1", "m", "v1", 10.0, (
            Pred(scores={"ball": 0.9, "shoulder": 0.1}, instance_id="i1"),
            Pred(scores={"shoulder": 0.55, "hip": 0.45}, instance_id="i2"))),
        Event("e2", "img-2", "m", "v1", 11.0, (Pred(label="hip", confidence=0.3),)),
        Event("e3", "img-3", "m", "v2", 12.0, ()),
    ]


def test_flattens_events() -> None:
    b = PredictionBatch.from_events(_events(), [{"p": 0, "o": 1}, {"p": 0, "o": 2}, None])
    assert b.n_predictions == 3 and b.n_assets == 3
    assert b.model_keys == (("m", "v1"), ("m", "v2"))
    assert b.pred_start.tolist() == [0, 2, 3, 3] and b.asset_of.tolist() == [0, 0, 1]
    assert b.position.tolist() == [0, 1, 0]
    assert [b.classes[c] for c in b.top_class] == ["ball", "shoulder", "hip"]
    assert np.allclose(b.top_conf, [0.9, 0.55, 0.3])
    assert b.n_classes.tolist() == [2, 2, 0]
    assert np.isclose(b.probs.sum(axis=1), [1, 1, 0]).all()
    assert b.asset_hash[0] == stable_hashes64(["img-1"])[0]
    assert b.refs[0] == {"p": 0, "o": 1}


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        PredictionBatch.from_events(_events(), [1])
    with pytest.raises(ValueError):
        PredictionBatch.from_events([Event("e", "a", "m", "v", 1.0, (Pred(),))])


def test_empty_and_top1_only_batches_select() -> None:
    state = SelectorState.create(SelectorPolicy(), 0)
    assert len(select(state, PredictionBatch.from_events([]))) == 0
    only_top1 = [Event(f"e{i}", f"a{i}", "m", "v", float(i), (Pred(label="x", confidence=0.5),))
                 for i in range(50)]
    sel = select(state, PredictionBatch.from_events(only_top1, list(range(50))))
    assert all(0.0 <= s.score <= 1.0 for s in sel.selected)


def test_vocabulary_lives_in_state_and_grows() -> None:
    state = SelectorState.create(SelectorPolicy(), 0)
    select(state, PredictionBatch.from_events(_events(), [1, 2, 3]))
    assert state.books["m"].names[:3] == ["ball", "shoulder", "hip"] or \
        set(state.books["m"].names) == {"ball", "shoulder", "hip"}
    more = [Event("e9", "img-9", "m", "v1", 13.0, (Pred(scores={"knee": 0.8, "hip": 0.2}),))]
    select(state, PredictionBatch.from_events(more, [9]))
    data = json.loads(json.dumps(state.snapshot()))
    restored = SelectorState.from_snapshot(data, SelectorPolicy())
    assert "knee" in restored.books["m"].names
    assert restored.books["m"].names == state.books["m"].names


def test_multi_object_selection_reports_driving_instances() -> None:
    policy = SelectorPolicy()
    state = SelectorState.create(policy, 0)
    events = [Event(f"e{i}", f"a{i}", "m", "v", float(i), (
        Pred(scores={"ball": 0.99, "shoulder": 0.01}),
        Pred(scores={"ball": 0.4, "shoulder": 0.6}))) for i in range(200)]
    picks = select(state, PredictionBatch.from_events(events, list(range(200)))).selected
    assert picks
    for s in picks:
        assert s.driving_predictions == (1,) and s.class_name == "shoulder"
        assert np.isclose(s.score, 0.8)


def _columns(events: list[Event]) -> ScoreColumns:
    """`events` (one `scores` prediction each) as the columns a decoder's fast path builds."""
    layouts = list(dict.fromkeys(tuple(e.predictions[0].scores or {}) for e in events))
    rows = [np.asarray([i for i, e in enumerate(events)
                        if tuple(e.predictions[0].scores or {}) == layout], dtype=np.int64)
            for layout in layouts]
    values = [np.asarray([list((events[i].predictions[0].scores or {}).values()) for i in r],
                         dtype=np.float64).reshape(len(r), len(layout))
              for r, layout in zip(rows, layouts, strict=True)]
    return ScoreColumns([e.asset_id for e in events], [e.model_id for e in events],
                        [e.model_version for e in events], [e.timestamp for e in events],
                        tuple(layouts), tuple(rows), tuple(values))


def test_from_parts_equals_from_events_array_for_array() -> None:
    """Column runs mixed with event lists (top-1, multi-object, empty), repeated assets within
    and across parts, two layouts in one run and a layout first seen in a later part."""
    rng = np.random.default_rng(3)
    run1 = dirichlet_events(rng, 40, n_classes=4, model=("m", "v1"))
    run1 += dirichlet_events(rng, 10, n_classes=3, start=5, model=("m", "v2"))  # a5.. repeat
    run1.insert(7, run1[2])  # the same asset and version twice in one run
    run2 = dirichlet_events(rng, 20, n_classes=4, start=30, model=("m", "v1"))  # a30.. repeat
    parts: list[Any] = [_events(), _columns(run1), _events()[1:], _columns(run2)]
    flat = [*_events(), *run1, *_events()[1:], *run2]
    refs = list(range(len(flat)))
    a, b = PredictionBatch.from_parts(parts, refs), PredictionBatch.from_events(flat, refs)
    assert (a.classes, a.model_keys, a.refs, a.layouts) == (b.classes, b.model_keys, b.refs,
                                                             b.layouts)
    assert a.repeat.any()
    for name in ("probs", "n_classes", "top_class", "top_conf", "asset_of", "position",
                 "pred_start", "asset_time", "asset_model", "asset_hash", "repeat", "pred_layout"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes()), name
    with pytest.raises(ValueError, match="refs"):
        PredictionBatch.from_parts(parts, refs[1:])


def test_column_fast_paths_equal_the_general_layout() -> None:
    """The builder's shortcuts for the usual batch -- one model version a run, a layout that is
    the whole vocabulary in order (written as whole rows), one prediction an asset -- give
    the arrays the general code would: checked against arrays built here by hand, for a batch
    that takes every shortcut and for one whose layout is not the vocabulary in order (a top-1
    label came first) and whose assets hold 0-2 predictions."""
    rng = np.random.default_rng(5)
    events = dirichlet_events(rng, 30, n_classes=4, model=("m", "v1"))
    b = PredictionBatch.from_parts([_columns(events)], list(range(30)))
    names = tuple(events[0].predictions[0].scores or {})
    vals = np.array([[(e.predictions[0].scores or {})[c] for c in names] for e in events])
    assert b.classes == names and b.model_keys == (("m", "v1"),)
    expected = {
        "probs": vals, "n_classes": np.full(30, 4, dtype=np.int32),
        "top_class": vals.argmax(axis=1).astype(np.int32),
        "top_conf": np.clip(vals.max(axis=1), 0.0, 1.0), "asset_of": np.arange(30),
        "position": np.zeros(30, dtype=np.int32), "pred_start": np.arange(31),
        "asset_model": np.zeros(30, dtype=np.int32), "pred_layout": np.zeros(30, np.int32)}
    for name, want in expected.items():
        got = getattr(b, name)
        assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape,
                                                          want.tobytes()), name
    # A top-1 label first: the run's layout is columns 3..6 of a 7-class vocabulary.
    mixed = [*_events(), *events[:5]]
    c = PredictionBatch.from_parts([_events(), _columns(events[:5])], list(range(8)))
    assert c.classes[0] == "hip" and c.classes[3:] == names
    at = c.classes.index
    probs = np.zeros((8, len(c.classes)))
    probs[0, [at("ball"), at("shoulder")]] = (0.9, 0.1)
    probs[1, [at("shoulder"), at("hip")]] = (0.55, 0.45)
    probs[np.arange(3, 8)[:, None], [at(n) for n in names]] = vals[:5]
    assert c.probs.tobytes() == probs.tobytes()
    assert c.asset_of.tolist() == [0, 0, 1, 3, 4, 5, 6, 7] and c.position.tolist() == [
        0, 1, 0, 0, 0, 0, 0, 0]
    assert len(mixed) == c.n_assets


def _reference_hash(text: str) -> int:
    """stable_hashes64 of one string, as its docstring states it, in plain integers."""
    mask = (1 << 64) - 1
    raw = text.encode()
    h = 0xCBF29CE484222325
    for j in range(0, len(raw), 8):
        word = int.from_bytes(raw[j:j + 8].ljust(8, b"\0"), "little")
        h = ((h ^ word) * 0x100000001B3) & mask
        h ^= h >> 29
    x = (h ^ len(raw)) ^ 0x9E3779B97F4A7C15
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return x ^ (x >> 31)


@pytest.mark.parametrize("texts", [
    [f"asset-{i}" for i in range(100_000, 100_040)],  # one length: every id reaches each word
    ["", "a", "a\x00", "\x00", "é", "12345678", "123456789", "x" * 17, "asset-1\x00\x00"],
])
def test_stable_hashes64_matches_its_definition(texts: list[str]) -> None:
    """The vectorised hashes (zero padding, the per-word select) equal the plain definition."""
    assert stable_hashes64(texts).tolist() == [_reference_hash(t) for t in texts]
