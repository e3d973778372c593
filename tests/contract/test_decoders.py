"""The decoders agree with the schemas: on every example (same verdict, same blamed field), on their
limits (constants equal the schema values), on their field sets, and on Hypothesis-generated
near-valid events (the jsonschema verdict equals the decoder verdict)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.streaming import events
from services.streaming.annotation_requests import (
    MAX_ANNOTATORS,
    MAX_COST,
    MAX_STRATEGY_LENGTH,
    REASON_FIELDS,
    REQUEST_FIELDS,
    SOURCE_FIELDS,
    TIER_FIELDS,
    TIER_NAMES,
)
from services.streaming.control_events import (
    CHANGE_FIELDS,
    CLASS_STATS_FIELDS,
    CLASS_STATS_REQUIRED,
    CONTROL_FIELDS,
    DRIFT_FIELDS,
    FEEDBACK_FIELDS,
    FEEDBACK_REQUIRED,
    INTERVAL_FIELDS,
    MANIFEST_FIELDS,
    MASTERY_FIELDS,
    MAX_DETAIL_LENGTH,
    MAX_RANGES,
    PLATEAU_FIELDS,
    PLATEAU_REQUIRED,
    RANGE_FIELDS,
    STABILITY_FIELDS,
    STABLE_FIELDS,
    STOPPING_FIELDS,
    STOPPING_REQUIRED,
    TRIGGER_FIELDS,
    TRIGGER_REQUIRED,
)
from services.streaming.event_fields import (
    MAX_CLASS_BYTES,
    MAX_COUNT,
    MAX_METADATA_DEPTH,
    MAX_METADATA_NODES,
    MAX_OFFSET,
    MAX_PARTITION,
    MAX_SCORE_CELLS,
    MAX_TOPIC_LENGTH,
)
from services.streaming.events import ErrorCode, InvalidEvent
from services.streaming.input_events import (
    ANNOTATION_FIELDS,
    ANNOTATION_REQUIRED,
    INFERENCE_FIELDS,
    INFERENCE_REQUIRED,
    LABEL_FIELDS,
    LABEL_REQUIRED,
    PREDICTION_FIELDS,
)
from services.streaming.request_annotate import ANNOTATE_FIELDS, INSTANCE_FIELDS
from tests.contract import strategies
from tests.contract.schema_support import (
    blamed_fields,
    example_files,
    example_id,
    load_schema,
    validator,
)

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "inference-event": events.decode_inference_event,
    "label": events.decode_label,
    "annotation-request": events.decode_annotation_request,
    "retrain-trigger": events.decode_retrain_trigger,
    "class-feedback": events.decode_class_feedback,
}

# For every invalid example of a decoded event, the (code, field) its decoder must report, keyed
# by event and by the file name between `invalid-` and `.json`. A new example without an entry
# fails `test_every_invalid_example_has_an_expectation`.
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "inference-event": {
        "bbox-negative-width": ("out_of_range", "predictions[0].bbox[2]"),
        "bbox-three-numbers": ("out_of_range", "predictions[0].bbox"),
        "both-scores-and-label": ("conflict", "predictions[0]"),
        "confidence-above-one": ("out_of_range", "predictions[1].confidence"),
        "confidence-boolean": ("wrong_type", "predictions[0].confidence"),
        "embedding-string-item": ("wrong_type", "predictions[0].embedding[1]"),
        "empty-event_id": ("empty", "event_id"),
        "empty-predictions": ("empty", "predictions"),
        "label-without-confidence": ("missing_field", "predictions[1].confidence"),
        "metadata-not-object": ("wrong_type", "metadata"),
        "metadata-too-deep": ("out_of_range", "metadata"),
        "metadata-too-many-values": ("out_of_range", "metadata"),
        "class-name-too-many-bytes": ("out_of_range", "predictions[0].scores"),
        "too-many-score-cells": ("out_of_range", "predictions"),
        "missing-asset_id": ("missing_field", "asset_id"),
        "missing-predictions": ("missing_field", "predictions"),
        "missing-schema_version": ("missing_field", "schema_version"),
        "neither-scores-nor-label": ("missing_field", "predictions[0]"),
        "not-an-object": ("wrong_type", "$"),
        "payload-too-large": ("too_large", "$"),
        "score-above-one": ("out_of_range", "predictions[0].scores.cat"),
        "score-negative": ("out_of_range", "predictions[0].scores.bird"),
        "scores-not-normalised": ("not_normalised", "predictions[0].scores"),
        "scores-percentages": ("out_of_range", "predictions[0].scores.cat"),
        "scores-single-class": ("out_of_range", "predictions[0].scores"),
        "timestamp-milliseconds": ("out_of_range", "timestamp"),
        "unknown-field-camelcase": ("unknown_field", "modelVersion"),
        "unknown-field-in-prediction": ("unknown_field", "predictions[0].mask"),
        "unknown-schema_version": ("unknown_version", "schema_version"),
        "wrong-type-model_version": ("wrong_type", "model_version"),
        "wrong-type-timestamp": ("wrong_type", "timestamp"),
        "empty-sequence_id": ("empty", "sequence_id"),
        "wrong-type-sequence_id": ("wrong_type", "sequence_id"),
        "wrong-type-probe": ("wrong_type", "probe"),
    },
    "label": {
        "annotation-has-confidence": ("unknown_field", "annotations[0].confidence"),
        "bbox-five-numbers": ("out_of_range", "annotations[0].bbox"),
        "bbox-negative-width": ("out_of_range", "annotations[1].bbox[2]"),
        "empty-annotation-label": ("empty", "annotations[0].label"),
        "empty-annotations": ("empty", "annotations"),
        "empty-request_id": ("empty", "request_id"),
        "labeled_at-milliseconds": ("out_of_range", "labeled_at"),
        "labeled_at-negative": ("out_of_range", "labeled_at"),
        "missing-annotation-label": ("missing_field", "annotations[1].label"),
        "missing-annotator_id": ("missing_field", "annotator_id"),
        "payload-too-large": ("too_large", "$"),
        "unknown-field": ("unknown_field", "comment"),
        "unknown-schema_version": ("unknown_version", "schema_version"),
        "wrong-type-annotations": ("wrong_type", "annotations"),
        "wrong-type-labeled_at": ("wrong_type", "labeled_at"),
        "keypoint-visibility": ("out_of_range", "annotations[0].keypoints[0].visibility"),
    },
    "annotation-request": {
        "inclusion-probability-zero": ("out_of_range", "reason.inclusion_probability"),
        "missing-reason-threshold": ("missing_field", "reason.threshold"),
        "missing-source": ("missing_field", "source"),
        "negative-offset": ("out_of_range", "source.offset"),
        "priority-above-one": ("out_of_range", "priority"),
        "scores-not-normalised": ("not_normalised", "predictions[0].scores"),
        "unknown-tier": ("out_of_range", "tier.name"),
        "tier-no-annotators": ("out_of_range", "tier.annotators"),
        "track-unknown-signal": ("out_of_range", "reason.track.signals[0]"),
        "track-no-frames": ("empty", "reason.track.frames"),
        "annotate-no-instances": ("empty", "annotate.instances"),
        "annotate-zero-cost": ("out_of_range", "annotate.cost"),
        "annotate-unknown-instance-field": ("unknown_field", "annotate.instances[0].box"),
        "annotate-negative-box-width": ("out_of_range", "annotate.instances[1].bbox[2]"),
    },
    "retrain-trigger": {
        "empty-ranges": ("empty", "manifest.ranges"),
        "fractional-total": ("wrong_type", "total"),
        "negative-count": ("out_of_range", "counts.shoulder"),
        "range-end-before-start": ("out_of_range", "manifest.ranges[1].end_offset"),
        "unknown-rule": ("out_of_range", "rule"),
        "stable-changed-exceeds-probes": ("out_of_range", "stopping.stable.probes"),
    },
    "class-feedback": {
        "agreement-above-one": ("out_of_range", "classes.person.agreement"),
        "missing-weight": ("missing_field", "classes.person.weight"),
        "since-trigger-exceeds-total": ("out_of_range", "classes.shoulder.labels_total"),
        "weight-zero": ("out_of_range", "classes.shoulder.weight"),
        "drift-without-drift": ("missing_field", "drift"),
        "drift-boost-above-ten": ("out_of_range", "drift.boost"),
        "feedback-with-drift": ("missing_field", "kind"),
        "stability-without-stability": ("missing_field", "stability"),
        "stability-changed-exceeds-probes": ("out_of_range", "stability.probes"),
        "drift-with-stability": ("out_of_range", "kind"),
    },
}


def _expected(path: Path) -> tuple[str, str]:
    return EXPECTED[path.parent.name][path.stem.removeprefix("invalid-")]


def _decoded(prefix: str) -> list[Path]:
    return [p for p in example_files(prefix) if p.parent.name in DECODERS]


def _decode(path: Path) -> Any:
    return DECODERS[path.parent.name](path.read_bytes())


# --- examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _decoded("valid-"), ids=example_id)
def test_decoder_accepts_valid_example(path: Path) -> None:
    assert _decode(path).schema_version == 1


@pytest.mark.parametrize("path", _decoded("invalid-"), ids=example_id)
def test_decoder_rejects_invalid_example_naming_the_field(path: Path) -> None:
    code, field = _expected(path)
    with pytest.raises(InvalidEvent) as caught:
        _decode(path)
    assert (caught.value.code, caught.value.field) == (code, field), caught.value.reason
    assert caught.value.reason.startswith(f"{field}: ")


@pytest.mark.parametrize("path", _decoded("invalid-"), ids=example_id)
def test_schema_blames_the_field_the_decoder_names(path: Path) -> None:
    instance = orjson.loads(path.read_bytes())
    _, field = _expected(path)
    assert field in blamed_fields(validator(path.parent.name).iter_errors(instance))


def test_every_invalid_example_has_an_expectation() -> None:
    listed = sorted(
        f"{event}/invalid-{name}.json" for event in EXPECTED for name in EXPECTED[event]
    )
    assert listed == sorted(example_id(p) for p in _decoded("invalid-"))
    assert {code for rows in EXPECTED.values() for code, _ in rows.values()} <= set(ErrorCode)


# --- constants and field sets against the schemas ----------------------------------------------


def _node(event: str, pointer: str) -> Any:
    node: Any = load_schema(event)
    for part in filter(None, pointer.split("/")):
        node = node[part]
    return node


INPUT = ("inference-event", "label")
OUTPUT = ("annotation-request", "retrain-trigger", "class-feedback")
LIMITS = (
    [(events.MAX_EVENT_BYTES, event, "/x-max-bytes") for event in INPUT]
    + [(events.MAX_OUTPUT_EVENT_BYTES, event, "/x-max-bytes") for event in OUTPUT]
    + [
        (events.SUM_TOLERANCE, "inference-event", "/$defs/scores/x-sum-to/tolerance"),
        (1, "inference-event", "/$defs/scores/x-sum-to/value"),
        (events.MIN_SCORE_CLASSES, "inference-event", "/$defs/scores/minProperties"),
        (events.MAX_PREDICTIONS, "inference-event", "/properties/predictions/maxItems"),
        (events.MAX_PREDICTIONS, "annotation-request", "/properties/predictions/maxItems"),
        (events.MAX_ANNOTATIONS, "label", "/properties/annotations/maxItems"),
        (
            events.MAX_EMBEDDING,
            "inference-event",
            "/$defs/prediction/properties/embedding/maxItems",
        ),
        (events.MAX_ID_LENGTH, "inference-event", "/$defs/id/maxLength"),
        (events.MAX_ID_LENGTH, "inference-event", "/$defs/optional_id/maxLength"),
        (events.MAX_ID_LENGTH, "inference-event", "/$defs/class_name/maxLength"),
        (MAX_CLASS_BYTES, "inference-event", "/$defs/class_name/x-max-utf8-bytes"),
        (MAX_METADATA_DEPTH, "inference-event", "/properties/metadata/x-max-depth"),
        (MAX_METADATA_NODES, "inference-event", "/properties/metadata/x-max-nodes"),
        (MAX_SCORE_CELLS, "inference-event", "/properties/predictions/x-max-cells"),
        (events.MAX_URI_LENGTH, "inference-event", "/$defs/optional_uri/maxLength"),
        (events.MAX_TIMESTAMP, "inference-event", "/$defs/epoch_seconds/maximum"),
        (events.MAX_REASON_LENGTH, "dead-letter", "/properties/reason/maxLength"),
        (MAX_STRATEGY_LENGTH, "annotation-request", "/$defs/reason/properties/strategy/maxLength"),
        (MAX_ANNOTATORS, "annotation-request", "/$defs/tier/properties/annotators/maximum"),
        (MAX_COST, "annotation-request", "/$defs/tier/properties/cost/maximum"),
        (MAX_DETAIL_LENGTH, "retrain-trigger", "/properties/detail/maxLength"),
        (MAX_RANGES, "retrain-trigger", "/$defs/manifest/properties/ranges/maxItems"),
        (MAX_TOPIC_LENGTH, "annotation-request", "/$defs/source/properties/topic/maxLength"),
        (MAX_PARTITION, "annotation-request", "/$defs/source/properties/partition/maximum"),
        (MAX_OFFSET, "annotation-request", "/$defs/source/properties/offset/maximum"),
        (MAX_OFFSET, "retrain-trigger", "/$defs/range/properties/end_offset/maximum"),
        (MAX_COUNT, "retrain-trigger", "/properties/total/maximum"),
        (MAX_COUNT, "class-feedback", "/$defs/class_stats/properties/labels_total/maximum"),
    ]
)


@pytest.mark.parametrize(("constant", "event", "pointer"), LIMITS, ids=lambda v: str(v))
def test_decoder_constant_equals_schema_value(constant: float, event: str, pointer: str) -> None:
    assert _node(event, pointer) == constant


@pytest.mark.parametrize("event", [*INPUT, *OUTPUT, "dead-letter"])
def test_schema_version_constant(event: str) -> None:
    assert _node(event, "/properties/schema_version/const") == events.SCHEMA_VERSION


FIELD_SETS = [
    ("inference-event", "", INFERENCE_FIELDS, INFERENCE_REQUIRED),
    ("inference-event", "/$defs/prediction", PREDICTION_FIELDS, ()),
    ("label", "", LABEL_FIELDS, LABEL_REQUIRED),
    ("label", "/$defs/annotation", ANNOTATION_FIELDS, ANNOTATION_REQUIRED),
    ("annotation-request", "", REQUEST_FIELDS, REQUEST_FIELDS - {"asset_uri", "tier", "annotate"}),
    ("annotation-request", "/$defs/annotate", ANNOTATE_FIELDS, {"instances", "cost"}),
    ("annotation-request", "/$defs/instance", INSTANCE_FIELDS, {"position", "label", "confidence"}),
    ("annotation-request", "/$defs/tier", TIER_FIELDS, TIER_FIELDS - {"escalated_from"}),
    ("annotation-request", "/$defs/reason", REASON_FIELDS, REASON_FIELDS - {"track"}),
    ("annotation-request", "/$defs/source", SOURCE_FIELDS, SOURCE_FIELDS),
    ("retrain-trigger", "", TRIGGER_FIELDS, TRIGGER_REQUIRED),
    ("retrain-trigger", "/$defs/mastery", MASTERY_FIELDS, MASTERY_FIELDS),
    ("retrain-trigger", "/$defs/change", CHANGE_FIELDS, CHANGE_FIELDS),
    ("retrain-trigger", "/$defs/stopping", STOPPING_FIELDS, STOPPING_REQUIRED),
    ("retrain-trigger", "/$defs/stable", STABLE_FIELDS, STABLE_FIELDS),
    ("retrain-trigger", "/$defs/plateau", PLATEAU_FIELDS, PLATEAU_REQUIRED),
    ("retrain-trigger", "/$defs/manifest", MANIFEST_FIELDS, MANIFEST_FIELDS),
    ("retrain-trigger", "/$defs/range", RANGE_FIELDS, RANGE_FIELDS),
    ("class-feedback", "", FEEDBACK_FIELDS, FEEDBACK_REQUIRED),
    ("class-feedback", "/$defs/drift", DRIFT_FIELDS, DRIFT_FIELDS),
    ("class-feedback", "/$defs/stability", STABILITY_FIELDS, STABILITY_FIELDS),
    ("class-feedback", "/$defs/class_stats", CLASS_STATS_FIELDS, CLASS_STATS_REQUIRED),
    ("class-feedback", "/$defs/control", CONTROL_FIELDS, CONTROL_FIELDS),
    ("class-feedback", "/$defs/interval", INTERVAL_FIELDS, INTERVAL_FIELDS),
]


@pytest.mark.parametrize(("event", "pointer", "fields", "required"), FIELD_SETS)
def test_decoder_fields_equal_schema_properties(
    event: str, pointer: str, fields: frozenset[str], required: Any
) -> None:
    node = _node(event, pointer)
    assert set(node["properties"]) == set(fields)
    assert set(node.get("required", ())) == set(required)


def test_enums_equal_schema_enums() -> None:
    assert set(_node("dead-letter", "/properties/code/enum")) == set(ErrorCode)
    assert set(_node("retrain-trigger", "/properties/rule/enum")) == set(events.TriggerRule)
    assert list(_node("annotation-request", "/$defs/tier/properties/name/enum")) == \
        list(TIER_NAMES)


# --- schema-vs-decoder differential -----------------------------------------------------------


def _verdicts(event: str, instance: Any) -> tuple[set[str] | None, InvalidEvent | None]:
    """(fields the schema blames or None if valid, decoder error or None if it decoded)."""
    data = orjson.dumps(instance)
    parsed = orjson.loads(data)  # exactly what the decoder parses
    errors = list(validator(event).iter_errors(parsed))
    try:
        DECODERS[event](data)
    except InvalidEvent as exc:
        return (blamed_fields(errors) if errors else None), exc
    return (blamed_fields(errors) if errors else None), None


def _assert_agree(event: str, instance: Any) -> None:
    blamed, error = _verdicts(event, instance)
    if blamed is None:
        assert error is None, f"schema accepts, decoder rejects: {error}"
    else:
        assert error is not None, f"decoder accepts, schema rejects at {sorted(blamed)}"
        assert error.field in blamed, f"decoder blames {error.reason!r}, schema {sorted(blamed)}"


DIFFERENTIAL = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@DIFFERENTIAL
@given(strategies.near_valid(strategies.inference_events))
def test_differential_inference_event(instance: dict) -> None:
    _assert_agree("inference-event", instance)


@DIFFERENTIAL
@given(strategies.near_valid(strategies.labels))
def test_differential_label(instance: dict) -> None:
    _assert_agree("label", instance)


def _valid_examples() -> list[tuple[str, Any]]:
    return [(p.parent.name, orjson.loads(p.read_bytes())) for p in _decoded("valid-")]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_valid_examples()).flatmap(
    lambda pair: strategies.near_valid(st.just(pair[1])).map(lambda inst: (pair[0], inst))
))  # fmt: skip
def test_differential_from_every_valid_example(case: tuple[str, dict]) -> None:
    _assert_agree(*case)


@settings(max_examples=100, deadline=None)
@given(st.one_of(strategies.inference_events.map(lambda e: ("inference-event", e)),
                 strategies.labels.map(lambda e: ("label", e))))  # fmt: skip
def test_generated_valid_events_pass_both(case: tuple[str, dict]) -> None:
    event, instance = case
    blamed, error = _verdicts(event, instance)
    assert blamed is None and error is None, (blamed, error)
