"""compiled_init (services/contracts/typed.py) builds the same objects as the dataclass `__init__`
it replaces: same fields, order, defaults and errors; the class stays frozen and hashable."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from services.contracts.annotation_request import (
    AnnotationRequest,
    RequestTier,
    SelectionReason,
    Source,
)
from services.contracts.class_feedback import (
    ClassFeedback,
    ClassStats,
    ControlEstimate,
    DriftNotice,
    Interval,
    StabilityNotice,
)
from services.contracts.dead_letter import DeadLetter, DeadLetterSource
from services.contracts.inference import InferenceEvent, Prediction
from services.contracts.label import Annotation, Keypoint, Label
from services.contracts.retrain_trigger import Manifest, OffsetRange, RetrainTrigger
from services.contracts.typed import compiled_init

COMPILED = [AnnotationRequest, RequestTier, SelectionReason, Source, ClassFeedback, DriftNotice,
            StabilityNotice, DeadLetter, DeadLetterSource, Manifest, OffsetRange, RetrainTrigger,
            ClassStats, ControlEstimate, Interval, InferenceEvent, Prediction, Annotation, Keypoint,
            Label]


def _stock(cls: type) -> type:
    """A twin of `cls` with the dataclass's own `__init__`."""
    namespace = {"__annotations__": cls.__annotations__,
                 **{f.name: f.default for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING}}
    return dataclasses.dataclass(frozen=True, slots=True)(type(cls.__name__, (), namespace))


@pytest.mark.parametrize("cls", COMPILED, ids=lambda c: c.__name__)
def test_compiled_init_sets_what_the_dataclass_init_sets(cls: type) -> None:
    assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"  # ours is installed
    fields = dataclasses.fields(cls)
    values = [f"value-{i}" for i in range(len(fields))]
    required = [f for f in fields if f.default is dataclasses.MISSING]
    twin = _stock(cls)
    for args in (values, values[:len(required)]):  # every field given; defaults left out
        ours, theirs = cls(*args), twin(*args)
        assert [getattr(ours, f.name) for f in fields] == [getattr(theirs, f.name) for f in fields]
        by_name = cls(**{f.name: v for f, v in zip(fields, args, strict=False)})
        assert by_name == ours and hash(by_name) == hash(ours)
        assert pickle.loads(pickle.dumps(ours)) == ours
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(ours, fields[0].name, "changed")
    with pytest.raises(TypeError):
        cls(*values, "one too many")
    if required:
        with pytest.raises(TypeError):
            cls()
    assert dataclasses.replace(ours, **{fields[0].name: "new"}) != ours


def test_unsupported_fields_are_refused_at_import() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        items: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(AssertionError):
        compiled_init(WithFactory)
