"""Hypothesis strategies for the contract tests: valid input events built from the contract, any
JSON value, and near-valid events (a valid event with one or two targeted mutations)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

# Short strings keep examples readable; non-ASCII included (lengths count code points).
ids = st.text(min_size=1, max_size=12)
class_names = st.text(min_size=1, max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False)
epoch_seconds = st.one_of(st.floats(0, 1e10), st.integers(0, 10**10))
probabilities = st.one_of(st.floats(0, 1), st.sampled_from([0, 1]))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what orjson round-trips as integers
    finite,
    st.text(max_size=10),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def distributions(draw: st.DrawFn) -> dict[str, float]:
    """class -> probability, 2..6 classes, summing to 1 up to float rounding."""
    names = draw(st.lists(class_names, min_size=2, max_size=6, unique=True))
    weights = draw(st.lists(st.floats(0, 1), min_size=len(names), max_size=len(names)))
    total = sum(weights)
    if total == 0:
        weights, total = [1.0] * len(names), float(len(names))
    return {name: weight / total for name, weight in zip(names, weights, strict=True)}


boxes = st.tuples(finite, finite, st.floats(0, 1e6), st.floats(0, 1e6)).map(list)
_optional_prediction_fields = {
    "instance_id": st.none() | ids,
    "track_id": st.none() | ids,
    "bbox": st.none() | boxes,
    "embedding": st.none() | st.lists(finite | st.integers(-5, 5), min_size=1, max_size=6),
}
predictions = st.one_of(
    st.fixed_dictionaries({"scores": distributions()}, optional=_optional_prediction_fields),
    st.fixed_dictionaries(
        {"label": class_names, "confidence": probabilities}, optional=_optional_prediction_fields
    ),
)
inference_events = st.fixed_dictionaries(
    {
        "schema_version": st.sampled_from([1, 1.0]),
        "event_id": ids,
        "asset_id": ids,
        "model_id": ids,
        "model_version": ids,
        "timestamp": epoch_seconds,
        "predictions": st.lists(predictions, min_size=1, max_size=4),
    },
    optional={
        "asset_uri": st.none() | st.text(min_size=1, max_size=30),
        "metadata": st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=3),
        "probe": st.none() | st.booleans(),
    },
)
annotation_objects = st.fixed_dictionaries(
    {"label": class_names}, optional={"instance_id": st.none() | ids, "bbox": st.none() | boxes}
)
labels = st.fixed_dictionaries(
    {
        "schema_version": st.just(1),
        "label_id": ids,
        "asset_id": ids,
        "annotations": st.lists(annotation_objects, min_size=1, max_size=4),
        "annotator_id": ids,
        "labeled_at": epoch_seconds,
    },
    optional={"request_id": st.none() | ids, "model_id": st.none() | ids},
)

# Field names worth adding where they do not belong (conflicts, misplaced fields) besides noise.
KNOWN_NAMES = ["scores", "label", "confidence", "bbox", "instance_id", "schema_version", "asset_id"]
# Weighted: perturbations and additions probe the subtle rules (sums, ranges, conflicts).
_ADDED_VALUES = st.sampled_from([0.5, "cat", {"a": 0.5, "b": 0.5}, {"a": 1.0}])
_MUTATIONS = ["perturb"] * 2 + ["add"] * 2 + ["retype"] * 2 + [
    "drop", "empty", "oversize", "multibyte", "nest"]
# Strings within 256 characters whose UTF-8 size is at, just over or far over 256 bytes.
_MULTIBYTE = st.sampled_from(["é" * 128, "é" * 129, "😀" * 64, "😀" * 65, "a" + "😀" * 200])
# Values at and just past metadata's depth (8, counting metadata itself) and node (1024) bounds.
_NESTED = st.sampled_from([[[[[[[[0]]]]]]], [[[[[[[[0]]]]]]]], list(range(1023)),
                           list(range(1024)), [{"k": [0] * 600}, [0] * 500]])


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys/indices) of every node below the root."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        found.append((*path, key))
        if isinstance(child, dict | list):
            found += _nodes(child, (*path, key))
    return found


def _containers(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every JSON object, the root included."""
    found = [path] if isinstance(value, dict) else []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        if isinstance(child, dict | list):
            found += _containers(child, (*path, key))
    return found


def _at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def _perturbed(draw: st.DrawFn, value: Any) -> Any:
    if not _is_number(value):
        return draw(json_values)
    new = draw(
        st.one_of(
            st.floats(-0.01, 0.01).map(lambda d: value + d),  # near the sum tolerance
            st.sampled_from([-value, value * 1000, value + 1, -1e-9, 1 + 1e-9, 1e10 + 1]),
            st.just(float(value)),
        )
    )
    return new if -(2**63) <= new < 2**64 else float(new)  # orjson writes 64-bit ints only


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mutate(draw: st.DrawFn, event: Any) -> None:
    kind = draw(st.sampled_from(_MUTATIONS))
    if kind == "nest":  # metadata near its bounds (made an object if need be), or elsewhere
        if "event_id" in event and draw(st.integers(0, 3)):
            if not isinstance(event.get("metadata"), dict):
                event["metadata"] = {}
            target = event["metadata"]
        else:
            target = _at(event, draw(st.sampled_from(_containers(event))))
        target[draw(st.sampled_from(["n", *KNOWN_NAMES]))] = copy.deepcopy(draw(_NESTED))
        return
    if kind == "multibyte":  # a long-in-bytes class name (a `scores` key) or string value
        # Only free-form keys are renamed: an unknown field's name is cut short in the reason.
        free = [p for p in _containers(event) if p and p[-1] in ("scores", "metadata", "counts",
                                                                 "classes")]
        target = _at(event, draw(st.sampled_from(free))) if free else {}
        if target and draw(st.booleans()):
            old = draw(st.sampled_from(sorted(target)))
            target[draw(_MULTIBYTE)] = target.pop(old)
        else:
            strings = [p for p in _nodes(event) if isinstance(_at(event, p), str)]
            if strings:
                where = draw(st.sampled_from(strings))
                _at(event, where[:-1])[where[-1]] = draw(_MULTIBYTE)
        return
    if kind == "add":
        target = _at(event, draw(st.sampled_from(_containers(event))))
        name = draw(st.sampled_from(KNOWN_NAMES) | st.text(max_size=12))
        target[name] = copy.deepcopy(draw(_ADDED_VALUES | json_values))  # never share objects
        return
    # Shallow nodes (fields, predictions, their fields) three times as likely as deep ones, so the
    # many numbers inside scores, boxes and embeddings do not drown the top-level fields.
    nodes = _nodes(event)
    nodes += [path for path in nodes if len(path) <= 3] * 2
    numbers = [path for path in nodes if _is_number(_at(event, path))]
    path = draw(st.sampled_from(numbers if kind == "perturb" and numbers else nodes))
    parent, key = _at(event, path[:-1]), path[-1]
    if kind == "drop":
        del parent[key]
    elif kind == "retype":
        parent[key] = draw(json_values)
    elif kind == "perturb":
        parent[key] = _perturbed(draw, parent[key])
    elif kind == "empty":
        parent[key] = copy.deepcopy(draw(st.sampled_from(["", [], {}, None, 0])))
    else:
        value = parent[key]
        grown: dict[type, Callable[[Any], Any]] = {
            str: lambda v: v + "x" * 257,
            list: lambda v: v * (1001 // max(len(v), 1) + 1),
        }
        parent[key] = grown.get(type(value), lambda v: "x" * 2049)(value)


@st.composite
def near_valid(draw: st.DrawFn, valid: st.SearchStrategy[dict]) -> dict:
    """A valid event with one or two mutations: most results are invalid, some stay valid."""
    event = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(1, 2))):
        if isinstance(event, dict) and event:
            _mutate(draw, event)
    return event
