"""A faster constructor for the events' typed forms (frozen, slotted dataclasses).

A frozen dataclass's `__init__` sets each field through `object.__setattr__(self, name, value)`,
the generic attribute path, because its own `__setattr__` refuses. The output events are built
once per record a service writes, and building an `AnnotationRequest` with its reason and source
that way cost more than encoding it (bench/encoders.py). `compiled_init` replaces that
`__init__` with one that calls each slot's own descriptor (`member_descriptor.__set__`, the C
setter behind the slot): the same fields, defaults, order and result, in about 0.6 of the time
(bench/encoders.py prints both). The class stays what `dataclass` made it: frozen (assignment
still raises), hashable, compared, pickled and printed field by field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def compiled_init(cls: type[T]) -> type[T]:
    """Give `cls`, a `@dataclass(frozen=True, slots=True)` class, the descriptor-setting
    `__init__` (apply above the `dataclass` decorator). Only plain fields are supported (no
    default factories, keyword-only fields, InitVars or `__post_init__`): anything else is a
    programming error, refused at import."""
    params = dataclasses.fields(cls)  # type: ignore[arg-type]
    assert dataclasses.is_dataclass(cls) and "__slots__" in cls.__dict__, cls
    assert not hasattr(cls, "__post_init__"), f"{cls.__name__}: __post_init__ unsupported"
    names: dict[str, Any] = {}
    signature, body = [], []
    for i, field in enumerate(params):
        assert field.init and not field.kw_only, f"{cls.__name__}.{field.name}"
        assert field.default_factory is dataclasses.MISSING, f"{cls.__name__}.{field.name}"
        names[f"_set{i}"] = cls.__dict__[field.name].__set__
        if field.default is dataclasses.MISSING:
            signature.append(field.name)
        else:
            names[f"_default{i}"] = field.default
            signature.append(f"{field.name}=_default{i}")
        body.append(f"    _set{i}(self, {field.name})")
    source = "\n".join([f"def __init__(self, {', '.join(signature)}):", *(body or ["    pass"])])
    exec(source, names)  # noqa: S102  # our own class's fields, never input
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
