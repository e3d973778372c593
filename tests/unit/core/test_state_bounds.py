"""State that always fits its bounds (issue 13, H2): feedback creates no model table past
`max_models` and no class past `max_classes`; class names are bounded in bytes by the decoders."""

from __future__ import annotations

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.core.registry import OTHER_CLASS
from tests.unit.core.synth import Event, Pred


def _seen(state: SelectorState, model: str) -> None:
    evs = [Event(f"{model}-{i}", f"a{i}", model, "v1", 1_700_000_000.0 + i,
                 (Pred(scores={"x": 0.4, "y": 0.6}),)) for i in range(3)]
    select(state, PredictionBatch.from_events(evs))


def test_feedback_for_unknown_models_stays_within_max_models() -> None:
    state = SelectorState.create(SelectorPolicy(max_models=3), 0)
    _seen(state, "live")
    applied = [state.set_class_weights(f"m{i}", {"x": 2.0}) for i in range(50)]
    assert len(state.books) == 3 and "live" in state.books
    assert applied == [True] * 50  # each one in place of an older feedback-only book
    assert list(state.books) == ["live", "m48", "m49"]
    for name in ("a", "b"):
        _seen(state, name)  # the stream's models take the feedback-only books' places
    assert set(state.books) == {"live", "a", "b"}
    assert not state.set_class_weights("m99", {"x": 2.0})  # all shown by the stream: refused
    assert set(state.books) == {"live", "a", "b"}


def test_feedback_classes_stay_within_max_classes() -> None:
    state = SelectorState.create(SelectorPolicy(max_classes=8), 0)
    state.set_class_weights("m", {f"c{i}": 1.5 for i in range(100)})
    book = state.books["m"]
    assert len(book.names) == 8 and book.names[-1] == OTHER_CLASS
    assert book.weights.shape[0] == 8 and book.buckets.level.shape[0] == 8
    restored = SelectorState.from_snapshot(state.snapshot(), state.policy)
    assert restored.books["m"].names == book.names
