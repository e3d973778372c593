"""The dead-letter ceiling judges the last `window` events, however they are batched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.streaming.ceiling import (
    DeadLetterCeiling,
    DeadLetterCeilingExceeded,
    DeadLetterWindow,
)


def test_not_judged_before_the_window_is_full() -> None:
    window = DeadLetterWindow(DeadLetterCeiling(window=100, max_invalid_share=0.5))
    window.record(np.ones(99, dtype=bool))
    window.check()  # 99 invalid of 99: too early to judge
    assert window.invalid_share() == 1.0
    window.record(np.array([True]))
    with pytest.raises(DeadLetterCeilingExceeded, match="100% of the last 100 events"):
        window.check()


def test_recovers_when_good_input_returns() -> None:
    window = DeadLetterWindow(DeadLetterCeiling(window=100, max_invalid_share=0.5))
    window.record(np.ones(60, dtype=bool))
    window.record(np.zeros(40, dtype=bool))
    with pytest.raises(DeadLetterCeilingExceeded):
        window.check()
    window.record(np.zeros(20, dtype=bool))  # the window now holds 40 invalid of 100
    window.check()
    assert window.invalid_share() == pytest.approx(0.4)


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"max_invalid_share": 0.0},
                                    {"max_invalid_share": 1.5}])
def test_rejects_meaningless_ceilings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DeadLetterCeiling(**kwargs)  # type: ignore[arg-type]


@given(st.lists(st.booleans(), max_size=400), st.data())
def test_share_is_that_of_the_last_window_events_for_any_batching(
    outcomes: list[bool], data: st.DataObject
) -> None:
    window = DeadLetterWindow(DeadLetterCeiling(window=50))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(outcomes)), max_size=10)))
    for start, stop in zip([0, *cuts], [*cuts, len(outcomes)], strict=True):
        window.record(np.array(outcomes[start:stop], dtype=bool))
    tail = outcomes[-50:]
    expected = sum(tail) / len(tail) if tail else 0.0
    assert window.invalid_share() == pytest.approx(expected)
