"""Drift detection (core/drift.py): detects a shift, stays quiet on a stationary stream, boosts
the drifting class within its bound and for its time, keeps bounded memory, and is checkpointed
(snapshot round-trip, batch cuts) like the rest of the selector."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from services.core import PredictionBatch, SelectorPolicy, SelectorState, select
from services.core.drift import DriftPolicy, DriftState, ks_distance, psi
from services.core.stats import ConfidenceStatsPolicy, ConfidenceStatsState
from tests.unit.core.synth import batches, top1_events

CLASSES = ["ball", "shoulder", "hip"]


def _stream(n: int, seed: int, shift_at: int | None = None, rate: float = 10.0
            ) -> list[PredictionBatch]:
    """n top-1 events over three classes, `rate` per second; from `shift_at` on, the
    shoulder's confidence drops from Beta(8, 2) to Beta(5, 3)."""
    rng = np.random.default_rng(seed)
    labels = [CLASSES[i] for i in rng.integers(0, 3, n).tolist()]
    conf = rng.beta(8, 2, n)
    if shift_at is not None:
        late = np.arange(n) >= shift_at
        mine = late & (np.array(labels) == "shoulder")
        conf[mine] = rng.beta(5, 3, int(mine.sum()))
    return batches(top1_events(labels, conf, rate=rate), 500)


def _run(policy: SelectorPolicy, bs: list[PredictionBatch], seed: int = 3
         ) -> tuple[SelectorState, list[tuple[str, float]], list[tuple[object, ...]]]:
    state = SelectorState.create(policy, seed)
    events, picked = [], []
    for b in bs:
        picked += [(s.ref, s.strategy, s.class_name, s.priority) for s in select(state, b).selected]
        events += [(e.class_name, e.detected_at) for e in state.take_drift_events()]
    return state, events, picked


def test_detects_a_shift_of_one_class_and_boosts_it_for_its_time() -> None:
    n, shift = 60_000, 36_000  # 10 events/s: the shift comes at t0 + 3600 s
    policy = SelectorPolicy(drift=DriftPolicy(boost=3.0, boost_seconds=1800.0))
    state, events, _ = _run(policy, _stream(n, 1, shift))
    assert [c for c, _ in events] == ["shoulder"]
    t0 = 1_000_000.0
    delay = events[0][1] - (t0 + shift / 10.0)
    assert 0 < delay <= 2 * policy.stats.bucket_seconds  # the first or second bucket close
    book = state.books["m"]
    # the ring still holds pre-shift buckets at the end: the boost still runs, bounded
    assert state.class_weights("m") == {"ball": 1.0, "shoulder": 3.0, "hip": 1.0}
    assert book.feedback.tolist() == [1.0, 1.0, 1.0]


def test_the_boost_ends_after_its_time_once_the_shift_is_the_norm() -> None:
    n, shift = 140_000, 36_000  # 10,400 s after the shift: past the window and the boost
    state, events, _ = _run(SelectorPolicy(drift=DriftPolicy(boost_seconds=600.0)),
                            _stream(n, 2, shift))
    assert [c for c, _ in events] == ["shoulder"]
    assert state.class_weights("m") == {"ball": 1.0, "shoulder": 1.0, "hip": 1.0}


def test_quiet_on_a_stationary_stream() -> None:
    state, events, _ = _run(SelectorPolicy(), _stream(150_000, 3))
    assert events == []
    ratio = state.versions[("m", "v1")].drift.ratio
    assert np.isfinite(ratio).all() and (ratio < 1.0).all()  # tested, and below critical


def test_boost_raises_the_drifting_class_share_of_requests() -> None:
    bs = _stream(60_000, 4, 36_000)

    def shoulder_share(policy: SelectorPolicy) -> float:
        state = SelectorState.create(policy, 3)
        late = [s for i, b in enumerate(bs) for s in select(state, b).selected if i >= 74]
        return sum(s.class_name == "shoulder" for s in late) / max(len(late), 1)
    on = shoulder_share(SelectorPolicy(drift=DriftPolicy(boost=4.0)))
    off = shoulder_share(SelectorPolicy(drift=DriftPolicy(boost=1.0)))
    assert on > off + 0.05


def test_snapshot_round_trip_and_batch_cuts_give_the_same_decisions() -> None:
    events = top1_events(*_labels_conf(30_000, 5, 18_000), rate=10.0)
    whole = batches(events, 1000)
    policy = SelectorPolicy(drift=DriftPolicy(boost=3.0))
    ref_state, ref_events, ref_picked = _run(policy, whole)
    assert [c for c, _ in ref_events] == ["shoulder"]
    # other cuts, and a checkpoint / restore in the middle of the drifting part
    cut = batches(events, 317)
    state = SelectorState.create(policy, 3)
    got_events, got_picked = [], []
    for i, b in enumerate(cut):
        if i % 20 == 7:
            data = orjson.loads(orjson.dumps(state.snapshot()))
            state = SelectorState.from_snapshot(data, policy)
        got_picked += [(s.ref, s.strategy, s.class_name, s.priority)
                       for s in select(state, b).selected]
        got_events += [(e.class_name, e.detected_at) for e in state.take_drift_events()]
    assert got_events == ref_events
    assert got_picked == ref_picked
    assert orjson.dumps(state.snapshot()) == orjson.dumps(ref_state.snapshot())


def _labels_conf(n: int, seed: int, shift_at: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = [CLASSES[i] for i in rng.integers(0, 3, n).tolist()]
    conf = rng.beta(8, 2, n)
    mine = (np.arange(n) >= shift_at) & (np.array(labels) == "shoulder")
    conf[mine] = rng.beta(5, 3, int(mine.sum()))
    return labels, conf


def test_a_checkpoint_from_before_drift_loads_fresh() -> None:
    policy = SelectorPolicy()
    state, _, _ = _run(policy, _stream(5_000, 6))
    data = orjson.loads(orjson.dumps(state.snapshot()))
    for v in data["versions"]:
        del v["drift"]
    again = SelectorState.from_snapshot(data, policy)
    assert again.versions[("m", "v1")].drift.checked == -1


def test_memory_is_bounded_by_classes_not_stream_length() -> None:
    policy = SelectorPolicy()
    state = SelectorState.create(policy, 0)
    sizes = []
    for i, b in enumerate(_stream(80_000, 7, 40_000)):
        select(state, b)
        state.take_drift_events()
        if i % 40 == 39:
            sizes.append(len(orjson.dumps(state.versions[("m", "v1")].drift.snapshot())))
    drift = state.versions[("m", "v1")].drift
    assert drift.until.shape == drift.ratio.shape == (3,)
    assert max(sizes) < 400  # three arrays of three classes, whatever the stream length
    assert state.drift_events == []


def test_statistics() -> None:
    ref = np.array([[50, 50, 0, 0], [10, 0, 0, 0]])
    rec = np.array([[0, 0, 50, 50], [5, 0, 0, 0]])
    assert ks_distance(ref, rec).tolist() == [1.0, 0.0]
    assert psi(ref, rec, groups=2)[1] == 0.0 and psi(ref, rec, groups=2)[0] > 1.0
    p = DriftPolicy(alpha=0.05)
    assert p.critical(np.array([1e6]), np.array([1e6]))[0] == pytest.approx(
        1.3581 * np.sqrt(2e-6), rel=1e-3)  # the textbook c(0.05) = 1.358


def test_windows_exclude_the_open_bucket_and_need_min_count() -> None:
    stats = ConfidenceStatsState(ConfidenceStatsPolicy(bins=10, bucket_seconds=10, buckets=4))
    state, policy = DriftState(), DriftPolicy(min_count=5, boost=1.0)
    cls = np.zeros(20, dtype=np.int64)
    for t, c in ((0.0, 0.9), (10.0, 0.9), (20.0, 0.1)):
        stats.update(cls, np.full(20, c), np.full(20, t), t)
        assert state.check(policy, stats, t) == []  # the 0.1s sit in the open bucket
    stats.update(cls[:1], np.full(1, 0.9), np.full(1, 30.0), 30.0)  # closes the 0.1 bucket
    fired = state.check(policy, stats, 30.0)
    assert [(c, d, n_rec, n_ref) for c, d, _, n_rec, n_ref in fired] == [(0, 1.0, 20, 40)]
    assert state.check(policy, stats, 30.0) == []  # once per closed bucket


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"boost": 0.5}, {"boost": 11.0},
                                 {"recent_buckets": 0}, {"min_count": 0}])
def test_policy_rejects_bad_settings(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DriftPolicy(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SelectorPolicy(drift=DriftPolicy(recent_buckets=11))
