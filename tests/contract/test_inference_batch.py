"""decode_inference_batch (the scorer's fast path) against decode_inference_event, event by event:
the same events accepted, the same InvalidEvent (field, code, detail) for each rejected one, and a
PredictionBatch equal, array for array and bit for bit, to the one built from the exact decoder's
events."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core import PredictionBatch
from services.core.events import ScoreColumns
from services.streaming import inference_batch
from services.streaming.event_fields import SUM_TOLERANCE
from services.streaming.events import InvalidEvent, decode_inference_event
from services.streaming.inference_batch import decode_inference_batch, score_columns
from tests.contract import strategies

BATCHES = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Valid values at the limits (256 characters for ids and class names, 2048 for asset_uri).
_ids = st.one_of(strategies.ids, strategies.ids, st.just("x" * 256))
_names = st.one_of(strategies.class_names, strategies.class_names, st.just("c" * 256))
# Offsets of the sum from 1 around the tolerance, where numpy's sum and math.fsum could disagree.
_sum_offsets = st.one_of(
    st.just(0.0),
    st.sampled_from([SUM_TOLERANCE, -SUM_TOLERANCE, SUM_TOLERANCE * (1 + 1e-12),
                     SUM_TOLERANCE * (1 - 1e-12), SUM_TOLERANCE - 1e-9, SUM_TOLERANCE - 2e-9,
                     SUM_TOLERANCE + 1e-9, 5e-4, 2e-3]),
    st.floats(-2e-3, 2e-3),
)


@st.composite
def _distribution(draw: st.DrawFn) -> dict[str, Any]:
    """2..12 classes summing to 1 + an offset near the tolerance; sometimes 0/1 as integers."""
    names = draw(st.lists(_names, min_size=2, max_size=12, unique=True))
    if len(names) == 2 and draw(st.integers(0, 4)) == 0:
        return dict(zip(names, draw(st.sampled_from([[1, 0], [0, 1], [1.0, 0]])), strict=True))
    weights = draw(st.lists(st.floats(0, 1), min_size=len(names), max_size=len(names)))
    total = sum(weights)
    values = [w / total if total else 1.0 / len(names) for w in weights]
    values[0] = min(1.0, max(0.0, values[0] + draw(_sum_offsets)))
    return dict(zip(names, values, strict=True))


fast_shaped = st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([1, 1, 1.0]),
        "event_id": _ids,
        "asset_id": st.one_of(st.sampled_from(["a1", "a2", "a3"]), _ids),  # repeats, too
        "model_id": st.sampled_from(["m", "n"]),
        "model_version": st.sampled_from(["v1", "v2"]),
        "timestamp": st.one_of(strategies.epoch_seconds, st.sampled_from([0, 0.0, 1e10, 10**10])),
        "predictions": st.lists(st.fixed_dictionaries({"scores": _distribution()}),
                                min_size=1, max_size=1),
    },
    optional={
        "asset_uri": st.none() | st.sampled_from(["s3://b/k", "u" * 2048]),
        "metadata": st.none() | st.just({"camera": 3}),
    },
)
"""Events of the fast path's shape, mostly valid: values at the valid side of each limit."""

# Values just past a limit, for each place the fast path checks one.
_PAST_LIMITS: list[tuple[tuple[Any, ...], list[Any]]] = [
    (("schema_version",), [True, False, 2, 0, 1.5, "1", None]),
    (("event_id",), ["", "x" * 257, 7, None]),
    (("asset_id",), ["", "x" * 257, ["a"]]),
    (("model_version",), ["", "x" * 257, 1.5]),
    (("timestamp",), [1e10 + 1, 10**10 + 1, -1e-300, -1, True, False, "1"]),
    (("asset_uri",), ["", "u" * 2049, 7, 0, True]),
    (("metadata",), [[1], "m", 0, True, {"a": [[[[[[[0]]]]]]]}, {"a": [[[[[[[[0]]]]]]]]},
                     {"a": list(range(1023))}, {"a": list(range(1024))}, {"a": {"b": 1}},
                     {f"k{i}": i for i in range(1025)}]),
    (("predictions",), [[], {}, None]),
    (("predictions", 0), [[], None, {"scores": {"a": 1.0}, "label": "a"}]),
    (("predictions", 0, "scores"), [{}, {"a": 1.0}, {"": 0.5, "b": 0.5}, {"c" * 257: 0.5, "b": 0.5},
                                    {"a": True, "b": 0}, {"a": 0.5, "b": "0.5"},
                                    {"a": 1.5, "b": -0.5}, {"a": 0.5, "b": None}, [],
                                    {"a": 0.0, "b": True}, {"a": 0.5, "b": 0.5, "c": False},
                                    {"a": 0.5, "b": 0.5, "c": "0"}, {"a": 1.0005, "b": 0.0},
                                    {"a": -1e-300, "b": 1.0}, {"é" * 128: 0.5, "b": 0.5},
                                    {"é" * 129: 0.5, "b": 0.5}, {"b": 0.5, "😀" * 65: 0.5}]),
    (("extra",), [1, None]),
]


@st.composite
def _past_a_limit(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(fast_shaped)
    path, choices = draw(st.sampled_from(_PAST_LIMITS))
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = draw(st.sampled_from(choices))
    return event


_payloads = st.one_of(
    fast_shaped.map(orjson.dumps),
    fast_shaped.map(orjson.dumps),
    fast_shaped.map(orjson.dumps),
    _past_a_limit().map(orjson.dumps),
    strategies.near_valid(fast_shaped).map(orjson.dumps),
    strategies.inference_events.map(orjson.dumps),
    strategies.near_valid(strategies.inference_events).map(orjson.dumps),
    st.sampled_from([None, b"", b"{", b"[]", b"null", b"1e999", b"x" * (256 * 1024 + 1)]),
    fast_shaped.map(orjson.dumps).map(lambda b: b'{"timestamp":0,' + b[1:]),  # a repeated key
)


def _exact(values: list[bytes | None]) -> tuple[list[tuple[int, Any]], list[tuple]]:
    accepted, rejected = [], []
    for i, value in enumerate(values):
        try:
            accepted.append((i, decode_inference_event(value or b"")))
        except InvalidEvent as exc:
            rejected.append((i, exc.field, exc.code, exc.detail))
    return accepted, rejected


def _assert_equal_batches(a: PredictionBatch, b: PredictionBatch) -> None:
    assert (a.classes, a.model_keys, a.refs, a.layouts) == (b.classes, b.model_keys, b.refs,
                                                             b.layouts)
    for name in ("probs", "n_classes", "top_class", "top_conf", "asset_of", "position",
                 "pred_start", "asset_time", "asset_model", "asset_hash", "repeat", "pred_layout"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes()), name


def _assert_agrees(values: list[bytes | None]) -> None:
    got = decode_inference_batch(values)
    accepted, rejected = _exact(values)
    assert [(i, e.field, e.code, e.detail) for i, e in got.errors] == rejected
    assert got.index == [i for i, _ in accepted]
    # Probes (never selected, never in stats) are told apart exactly as the exact decoder does.
    assert got.probe_mask().tolist() == [e.probe for _, e in accepted]
    refs = [values[i] for i in got.index]
    _assert_equal_batches(PredictionBatch.from_parts(got.parts, refs),
                          PredictionBatch.from_events([e for _, e in accepted], refs))


@BATCHES
@given(st.lists(_payloads, max_size=70))
def test_batch_decoder_agrees_with_the_exact_decoder(values: list[bytes | None]) -> None:
    _assert_agrees(values)
    with mock.patch.object(inference_batch, "_MIN_RUN", 1):  # split down to single events
        _assert_agrees(values)


@BATCHES
@given(st.lists(fast_shaped | _past_a_limit(), min_size=1, max_size=40))
def test_fast_path_only_accepts_what_the_exact_decoder_accepts(objs: list[dict]) -> None:
    """Whole runs straight into the fast check (no splitting): when it accepts, every event is
    valid and the columns equal the exact decoder's events."""
    _assert_columns_sound(objs)


def _assert_columns_sound(objs: list[dict]) -> None:
    payloads = [orjson.dumps(obj) for obj in objs]
    columns = score_columns([orjson.loads(p) for p in payloads])
    if columns is None:
        return
    events = [decode_inference_event(p) for p in payloads]  # raises if the fast path was wrong
    refs = list(range(len(events)))
    _assert_equal_batches(PredictionBatch.from_parts([columns], refs),
                          PredictionBatch.from_events(events, refs))


# Distributions over a small pool of class names: layouts repeat, differ only in order, or hold a
# subset or superset of another's classes (the one-layout shortcut must see every difference).
_pooled = st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True).map(
    lambda names: {name: 1.0 / len(names) for name in names})
_pooled_events = fast_shaped.flatmap(lambda event: _pooled.map(
    lambda scores: {**event, "predictions": [{"scores": scores}]}))


@BATCHES
@given(st.lists(_pooled_events, min_size=1, max_size=40), st.data())
def test_layouts_are_told_apart(objs: list[dict], data: st.DataObject) -> None:
    """Batches mostly of one layout, some events of a reordered, smaller or larger one."""
    common = data.draw(_pooled_events)
    objs = [common if data.draw(st.booleans()) else obj for obj in objs] * 2
    _assert_agrees([orjson.dumps(obj) for obj in objs])
    _assert_columns_sound(objs)


_LIMIT = SUM_TOLERANCE - inference_batch._SUM_MARGIN
# Sums one ulp either side of 1 -/+ the limit, as the rows [s - 0.5, 0.5] hold them exactly.
_SUMS_AT_LIMIT = [float(np.nextafter(s, s + d)) for s in (1.0 - _LIMIT, 1.0 + _LIMIT)
                  for d in (-1.0, 0.0, 1.0)]
_edges = st.sampled_from([0.0, -0.0, 1.0, 1e-300, -1e-300, float(np.nextafter(1.0, 2.0)),
                          float(np.nextafter(0.0, -1.0))])


@st.composite
def _rows(draw: st.DrawFn, k: int) -> list[float]:
    """A row of k values summing to about 1 (+ an offset near the tolerance), some at a limit."""
    if k == 2 and draw(st.integers(0, 3)) == 0:  # one value at a limit, the sum about 1
        return draw(st.sampled_from([[s - 0.5, 0.5] for s in _SUMS_AT_LIMIT] + [
            [float(np.nextafter(1.0, 2.0)), 0.0], [1.0 + _LIMIT / 2, 0.0], [-1e-300, 1.0]]))
    weights = draw(st.lists(st.floats(0, 1), min_size=k, max_size=k))
    total = sum(weights)
    row = [w / total if total else 1.0 / k for w in weights]
    row[0] += draw(_sum_offsets)
    if draw(st.integers(0, 4)) == 0:
        row[draw(st.integers(0, k - 1))] = draw(_edges)
    return row


@BATCHES
@given(st.integers(2, 5).flatmap(lambda k: st.lists(_rows(k), min_size=1, max_size=30)))
def test_numeric_checks_agree_row_by_row(rows: list[list[float]]) -> None:
    """The whole-array bounds decide exactly as the per-row checks would."""
    _assert_rows_judged_alike(rows)


def test_sums_one_ulp_either_side_of_the_limit() -> None:
    for total in _SUMS_AT_LIMIT:
        _assert_rows_judged_alike([[0.25, 0.75], [total - 0.5, 0.5]])


def _assert_rows_judged_alike(rows: list[list[float]]) -> None:
    values = np.array(rows, dtype=np.float64)
    ok = ((values >= 0.0) & (values <= 1.0)).all(axis=1)
    ok &= np.abs(values.sum(axis=1) - 1.0) <= _LIMIT
    failed = inference_batch._failed_rows(values)
    assert (failed is None) == bool(ok.all())
    if failed is not None:
        assert failed.tolist() == np.flatnonzero(~ok).tolist()


def _bench_event(i: int, **changes: Any) -> dict[str, Any]:
    event = {"schema_version": 1, "event_id": f"e{i}", "asset_id": f"a{i}", "model_id": "m",
             "model_version": "v1", "timestamp": 1.7e9 + i,
             "predictions": [{"scores": {"cat": 0.25, "dog": 0.75}}]}
    return {**event, **changes}


@pytest.mark.parametrize("optional", [{}, {"asset_uri": "s3://x", "metadata": {"k": 1}}])
def test_each_value_past_a_limit_is_refused_among_valid_events(optional: dict[str, Any]) -> None:
    """Each value of _PAST_LIMITS in one event of a batch otherwise valid and of the fast shape,
    so the whole-batch check meets it with nothing else to fail on."""
    for path, choices in _PAST_LIMITS:
        for choice in choices:
            objs = [_bench_event(i, **optional) for i in range(40)]
            target = objs[23]
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = choice
            _assert_agrees([orjson.dumps(obj) for obj in objs])
            _assert_columns_sound(objs)


@pytest.mark.parametrize("missing", ["asset_uri", "metadata"])
def test_an_unknown_field_in_place_of_an_optional_one_is_refused(missing: str) -> None:
    """As many fields as an event with both optional ones, but one of them is not in the contract
    (the fast check counts fields)."""
    objs = [_bench_event(i, asset_uri="s3://x", metadata=None) for i in range(40)]
    del objs[23][missing]
    objs[23]["extra"] = None
    _assert_agrees([orjson.dumps(obj) for obj in objs])
    _assert_columns_sound(objs)
    for obj in objs[:10]:  # some events without optional fields: counted the other way
        del obj["asset_uri"], obj["metadata"]
    _assert_agrees([orjson.dumps(obj) for obj in objs])
    _assert_columns_sound(objs)


def test_common_shape_takes_the_fast_path() -> None:
    values = [orjson.dumps(_bench_event(i, asset_uri="s3://x") if i % 3 else _bench_event(i))
              for i in range(1000)]
    got = decode_inference_batch(values)
    assert not got.errors and got.index == list(range(1000))
    assert len(got.parts) == 1 and isinstance(got.parts[0], ScoreColumns)


def test_a_batch_of_another_shape_skips_the_fast_check() -> None:
    """Routing only: a batch that starts with an event of another shape is not checked whole
    (it would only fail); one of the common shape is checked once, whole."""
    top1 = [orjson.dumps(_variants(i)) for i in range(3000) if i * 7919 % 23 == 3][:40]
    common = [orjson.dumps(_bench_event(i)) for i in range(40)]
    for values, checks in ((top1, 0), (common, 1), (top1[:1] + common, 1)):
        with mock.patch.object(inference_batch, "_checked", wraps=inference_batch._checked) as m:
            _assert_agrees(values)
        assert m.call_count == checks


def test_one_bad_event_costs_only_a_short_run_of_exact_decoding() -> None:
    values: list[bytes | None] = [orjson.dumps(_bench_event(i)) for i in range(1000)]
    values[500] = orjson.dumps(_bench_event(500, timestamp=1.7e12))  # milliseconds by mistake
    values[501] = None
    got = decode_inference_batch(values)
    assert [(i, e.code) for i, e in got.errors] == [(500, "out_of_range"), (501, "empty")]
    exact = sum(len(part) for part in got.parts if not isinstance(part, ScoreColumns))
    assert exact <= 16
    _assert_agrees(values)


def test_sums_at_the_tolerance_are_judged_by_fsum() -> None:
    """Rows the numpy sum cannot settle go to the exact decoder, whichever way it decides."""
    near = [SUM_TOLERANCE + d for d in (-1e-12, 0.0, 1e-12, -2e-9, 2e-9)]
    values = [orjson.dumps(_bench_event(i, predictions=[{"scores": {
        "a": 0.5, "b": float(np.nextafter(0.5 + s, 1.0)) if i % 2 else 0.5 + s}}]))
        for i, s in enumerate(near * 10)]
    _assert_agrees(values)


def _variants(i: int) -> dict[str, Any]:
    """Event i of a mixed stream: mostly the fast shape, sometimes invalid or of other shapes."""
    kind = i * 7919 % 23
    scores = {"cat": 0.25, "dog": 0.75}
    changes: dict[str, Any] = {
        0: {"predictions": [{"scores": {"cat": 0.75, "dog": 0.75}}]},  # not normalised
        1: {"asset_id": ""},  # empty
        2: {"predictions": [{"scores": scores}, {"scores": scores}]},  # valid, two objects
        3: {"predictions": [{"label": "cat", "confidence": 0.5}]},  # valid, top-1
        4: {"predictions": [{"scores": {"cat": -0.25, "dog": 1.25}}]},  # out of range
        5: {"timestamp": 1.7e12},  # milliseconds
    }.get(kind, {})
    return _bench_event(i, **changes)


def test_mixed_streams_agree_whichever_route_each_event_takes() -> None:
    """Routing by shape, cutting runs around bad distributions and splitting within (and past)
    the work budget all give the exact decoder's verdicts."""
    values: list[bytes | None] = [orjson.dumps(_variants(i)) for i in range(3000)]
    values[17], values[1200] = None, b"{"
    for batch in (values[:1000], values[1000:1017], values[1017:], values[::7]):
        _assert_agrees(batch)
        with mock.patch.object(inference_batch, "_CHECKS_PER_EVENT", 0):
            _assert_agrees(batch)
    clean = [orjson.dumps(_bench_event(i, predictions=[{"scores": {"a": 0.5, "b": 0.5}}]))
             for i in range(1000)]
    clean[300] = orjson.dumps(_variants(0))
    got = decode_inference_batch(clean)
    assert [i for i, _ in got.errors] == [300]
    assert sum(len(p) for p in got.parts if not isinstance(p, ScoreColumns)) <= 32


def test_probes_are_told_apart_in_a_batch_of_the_fast_shape() -> None:
    """`probe` true, false, null or of a wrong type among events of the fast shape: the same
    verdicts as the exact decoder, and exactly the events with `probe: true` flagged."""
    flags: list[Any] = [True, False, None, "true", 1, True]
    objs = [_bench_event(i, probe=flags[i % 7]) if i % 7 < 6 else _bench_event(i)
            for i in range(200)]
    values: list[bytes | None] = [orjson.dumps(obj) for obj in objs]
    _assert_agrees(values)
    got = decode_inference_batch(values)
    flagged = [got.index[k] for k in np.flatnonzero(got.probe_mask()).tolist()]
    assert flagged == [i for i in range(200) if i % 7 in (0, 5)]
    assert [i for i, e in got.errors] == [i for i in range(200) if i % 7 in (3, 4)]
    assert all(e.code == "wrong_type" and e.field == "probe" for _, e in got.errors)
