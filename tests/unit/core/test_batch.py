"""PredictionBatch.from_events: flat arrays, vocabularies, refs, top-1 and multi-object events."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.core.codec import stable_hashes64
from tests.unit.core.synth import Event, Pred


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
