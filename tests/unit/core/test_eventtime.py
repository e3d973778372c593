"""Event time that one record cannot break: the watermark moves only when two consecutive events
agree, and an event too far ahead of it is refused (the scorer dead-letters it)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core import BudgetPolicy, PredictionBatch, SelectorPolicy, SelectorState, select
from services.core.eventtime import EventTimePolicy, too_far_ahead, watermarks
from tests.unit.core.synth import Event, Pred

FAR = 9.8e9  # year 2280: valid epoch seconds, far ahead of any stream here


def test_one_event_moves_no_watermark_two_agreeing_do() -> None:
    t = np.array([100.0, 101.0, FAR, 102.0, 103.0, FAR, FAR + 1])
    # After each event: the max of the pairwise minima (the first event has no pair: itself).
    assert watermarks(t, None, -math.inf).tolist() == [100, 100, 101, 102, 102, 103, FAR]
    assert watermarks(np.array([5.0, 1.0, 6.0]), 4.0, 4.0).tolist() == [4, 4, 4]  # late: no move


def test_an_event_too_far_ahead_is_refused_and_does_not_count() -> None:
    policy = EventTimePolicy(max_skew_s=3600.0)
    t = np.array([1000.0, 1001.0, FAR, 1002.0, 1000.0 + 3599, 1000.0 + 9000, 1003.0])
    refused, ref = too_far_ahead(policy, t, 999.0, 999.0)
    assert refused.tolist() == [False, False, True, False, False, True, False]
    assert ref[2] == 1000.0 and np.isnan(ref[0])
    assert not too_far_ahead(EventTimePolicy(max_skew_s=None), t, 999.0, 999.0)[0].any()


def test_a_gap_in_a_quiet_partition_is_not_a_skew() -> None:
    """After the partition sat idle for hours, the next events are hours ahead of its
    watermark, but not of their records' timestamps: accepted. An event ahead of both is not."""
    policy = EventTimePolicy(max_skew_s=3600.0)
    t = np.array([1000.0, 1000.0 + 8 * 3600, 1001.0 + 8 * 3600, FAR])
    stamps = [1000.5, 1000.0 + 8 * 3600 + 2, 1001.0 + 8 * 3600 + 1, 1002.0 + 8 * 3600]
    refused, _ = too_far_ahead(policy, t, None, -np.inf, stamps.__getitem__)
    assert refused.tolist() == [False, False, False, True]
    # Without record timestamps, only the watermark is known: the gap looks like a skew.
    assert too_far_ahead(policy, t, None, -np.inf)[0].tolist() == [False, True, True, True]


def test_the_first_event_is_judged_by_its_record_timestamp() -> None:
    """A partition's first event has no watermark to be judged against: its record timestamp
    alone decides; with neither known it is accepted."""
    t = np.array([FAR, 1000.0, 1001.0])
    stamps = [1000.0, 1000.5, 1001.0]
    refused, ref = too_far_ahead(EventTimePolicy(), t, None, -math.inf, stamps.__getitem__)
    assert refused.tolist() == [True, False, False] and ref[0] == 1000.0
    assert not too_far_ahead(EventTimePolicy(), t, None, -math.inf)[0].any()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1e10), min_size=1, max_size=60), st.integers(0, 60),
       st.sampled_from([None, 60.0, 3600.0]))
def test_refusals_do_not_depend_on_how_the_stream_is_cut(times: list[float], cut: int,
                                                        skew: float | None) -> None:
    policy = EventTimePolicy(max_skew_s=skew)
    t = np.array(times)
    whole, _ = too_far_ahead(policy, t, None, -math.inf)
    cut = min(cut, len(times))
    first, _ = too_far_ahead(policy, t[:cut], None, -math.inf)
    kept = t[:cut][~first]
    last = float(kept[-1]) if kept.shape[0] else None
    wm = float(watermarks(kept, None, -math.inf)[-1]) if kept.shape[0] else -math.inf
    second, _ = too_far_ahead(policy, t[cut:], last, wm)
    assert whole.tolist() == first.tolist() + second.tolist()


def _stream(n: int, t0: float, start: int, dt: float = 0.5) -> list[Event]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        p = float(rng.uniform(0.3, 0.7))
        out.append(Event(f"e{i}", f"a{i}", "m", "v1", t0 + (i - start) * dt,
                         (Pred(scores={"a": p, "b": 1.0 - p}),)))
    return out


def _selected(state: SelectorState, events: list[Event]) -> int:
    return sum(len(select(state, PredictionBatch.from_events(events[i:i + 500])).selected)
               for i in range(0, len(events), 500))


def test_one_far_future_event_leaves_the_selection_rate_alone_in_the_selector() -> None:
    """Even without the scorer's refusal (the selector alone), a single event from year 2280
    moves no clock: budget refills, windows and dedupe expiry continue as before."""
    state = SelectorState.create(SelectorPolicy(), 7)
    before = _selected(state, _stream(5000, 1.7e9, 0))
    far = [Event("far", "far", "m", "v1", FAR, (Pred(scores={"a": 0.5, "b": 0.5}),))]
    select(state, PredictionBatch.from_events(far))
    after = _selected(state, _stream(5000, 1.7e9 + 2500.0, 5000))
    assert before > 50 and abs(after - before) <= 0.2 * before, (before, after)


def test_forged_increasing_timestamps_stay_within_the_share_bound() -> None:
    """Each event an hour ahead of the last refills the time bucket every time; the share
    bucket (per asset) still bounds the selections."""
    budget = BudgetPolicy()
    state = SelectorState.create(SelectorPolicy(budget=budget), 3)
    events = _stream(3000, 1.7e9, 0, dt=3590.0)
    n = _selected(state, events)
    assert 0 < n <= budget.share_burst + budget.share * len(events)
