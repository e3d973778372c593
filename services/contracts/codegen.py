"""Compiles a `Shape` (a record's declaration) into Python functions, the way `dataclasses` builds
an `__init__`: its reader (`compile_record`) and its encoder (`compile_encoder`). The reader is
straight-line code with each field's limits inlined as constants, so a valid object
costs one call (measured: a loop over generic per-field closures ran the decoders at ~0.8x the
hand-written ones). Every check that fails, and every value the inlined test does not settle,
goes to the field's reader (`Kind.reader`), which raises the exact `InvalidEvent`; so the
generated code decides nothing the readers would not, it only skips calls on the valid path.

This module knows shapes and the `Kind` interface only: what a kind's value needs on its way to
JSON it says itself (`Kind.json_form`, `Kind.encoder`), so the compiler imports no kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from services.contracts.kinds import as_dict
from services.contracts.shapes import Shape
from services.streaming.event_fields import (
    ErrorCode,
    check_keys,
    child,
    fail,
    not_greater,
    show,
)

_MISSING = object()


def compile_record(record: Shape, ascii_only: bool) -> Callable[[Any, str], Any]:
    """(value, its own path) -> `record.cls(...)`, raising InvalidEvent like the readers."""
    names = {"_M": _MISSING, "_cls": record.cls, "_fail": fail, "_show": show,
             "_WRONG": ErrorCode.WRONG_TYPE, "_check_keys": check_keys,
             "_allowed": record.names, "_required": record.required_order or record.required,
             "_together": _check_together, "_one_of": _check_one_of,
             "_not_greater": not_greater}
    lines = ["def read(raw, path):",
             "    if type(raw) is not dict:",
             "        _fail(path, _WRONG, f'expected an object, got {_show(raw)}')"]
    present = " and ".join([f"{name!r} in raw" for name in record.required] or ["True"])
    lines += [f"    if not (_allowed.issuperset(raw) and {present}):",
              "        _check_keys(raw, _allowed, _required, path)"]
    if record.together is not None:
        a, b = record.together
        lines += [f"    if ({a!r} in raw) != ({b!r} in raw):",
                  f"        _together(raw, path, {a!r}, {b!r})"]
    if record.one_of is not None:
        a, b = record.one_of
        together = record.together or ()
        names["_shown"] = " or ".join(" + ".join(f"`{n}`" for n in (
            together if name in together else (name,))) for name in record.one_of)
        lines += [f"    if ({a!r} in raw) == ({b!r} in raw):",
                  f"        _one_of(raw, path, {a!r}, {b!r}, _shown)"]
    if record.variants is not None:
        names["_variants"] = record.variants.check
        lines.append("    _variants(raw, path)")
    # `left`: optional fields present and not read yet (every key is allowed and every required
    # one present, checked above); once none is left the rest are absent without a lookup.
    lines.append(f"    left = len(raw) - {len(record.required)}")
    args: dict[str, str] = {}  # attribute -> its variable
    variables: dict[str, str] = {}
    for i, field in enumerate(record.check_order()):
        kind, var = field.kind, f"v{i}"
        names[f"_r{i}"], names[f"_a{i}"] = kind.reader(ascii_only), kind.absent
        fast = kind.inline(var)
        read = f"_r{i}({var}, path, {field.name!r})"
        if field.required:
            lines.append(f"    {var} = raw[{field.name!r}]")
            lines += [f"    if not ({fast}):", f"        {var} = {read}"] if fast else \
                [f"    {var} = {read}"]
        else:
            lines += ["    if not left:", f"        {var} = _a{i}", "    else:",
                      f"        {var} = raw.get({field.name!r}, _M)",
                      f"        if {var} is _M:", f"            {var} = _a{i}", "        else:",
                      "            left -= 1"]
            # null is absent for a nullable kind; for any other it goes to the reader (wrong_type)
            test = [f"{var} is None"] if kind.nullable else []
            for n, (cond, then) in enumerate([*[(t, f"_a{i}") for t in test],
                                              *([(f"not ({fast})", read)] if fast else [])]):
                lines += [f"            {'if' if n == 0 else 'elif'} {cond}:",
                          f"                {var} = {then}"]
            if not fast:
                lines += ["            else:" if test else "            if True:",
                          f"                {var} = {read}"]
        args[field.attribute] = var
        variables[field.name] = var
    if record.less_or_equal is not None:
        a, b = record.less_or_equal
        lines += [f"    if {variables[a]} > {variables[b]}:",
                  f"        _not_greater(raw, path, {a!r}, {b!r})"]
    if record.plain:
        lines += _plain_return(record, variables, names)
    else:
        lines.append(f"    return _cls({', '.join(_arguments(record.cls, args))})")
    return _define("read", lines, names)


def _arguments(cls: type | None, args: dict[str, str]) -> list[str]:
    """The constructor call's arguments for `args` (attribute -> variable): by position when
    they are exactly the dataclass's fields, because a class called with keywords gets them as
    a dict (measured: an `AnnotationRequest` built from 14 keywords took ~2x the time of 14
    positions); else by keyword."""
    fields = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []
    if sorted(fields) != sorted(args):
        return [f"{name}={var}" for name, var in args.items()]
    return [args[name] for name in fields]


def _check_together(raw: dict[str, Any], path: str, a: str, b: str) -> None:
    missing = b if a in raw else a
    fail(child(path, missing), ErrorCode.MISSING_FIELD, f"{a} and {b} go together")


def _check_one_of(raw: dict[str, Any], path: str, a: str, b: str, shown: str) -> None:
    code = ErrorCode.CONFLICT if a in raw else ErrorCode.MISSING_FIELD
    fail(path, code, f"needs exactly one of {shown}")


def _plain_return(record: Shape, variables: dict[str, str], names: dict[str, Any]) -> list[str]:
    """A plain record's return: a dict literal of the decoded values in JSON form (JSON names,
    declared order), an optional field left out when absent unless `keep_absent`."""
    required, optional = [], []
    for k, field in enumerate(record.fields):
        var, convert = variables[field.name], field.kind.json_form()
        if convert is not None:
            names[f"_j{k}"] = convert
        value = var if convert is None else f"_j{k}({var})"
        if field.required or record.keep_absent:
            required.append(f"{field.name!r}: {value}")
        else:
            names[f"_p{k}"] = field.kind.absent
            optional += [f"    if {var} is not _p{k}:", f"        out[{field.name!r}] = {value}"]
    return [f"    out = {{{', '.join(required)}}}", *optional, "    return out"]


def compile_encoder(shape: Shape) -> Callable[[Any], Any]:
    """The shape's encoder, compiled like its reader: typed object -> the dict orjson writes as
    the contract's JSON object (literal keys; each field's `Kind.encoder` inlined; a null
    written as null; an optional field left out when it holds its kind's `absent`). Measured
    against the per-field plan it replaces and the hand-built dicts before it: bench/encoders.py.
    A plain shape's encoder takes its dict instead (`_plain_encoder`)."""
    if shape.plain:
        return _plain_encoder(shape)
    names: dict[str, Any] = {}
    items, optional = [], []
    for k, field in enumerate(shape.fields):
        convert, get = field.kind.encoder(), f"v.{field.attribute}"
        if convert is not None:
            names[f"_e{k}"] = convert
        if field.required:
            items.append(f"{field.name!r}: {get}" if convert is None else
                         f"{field.name!r}: None if (x{k} := {get}) is None else _e{k}(x{k})")
            continue
        names[f"_a{k}"] = absent = field.kind.absent
        value = f"x{k}" if convert is None else f"_e{k}(x{k})" if absent is None else \
            f"None if x{k} is None else _e{k}(x{k})"
        optional += [f"    x{k} = {get}", f"    if x{k} is not _a{k}:",
                     f"        out[{field.name!r}] = {value}"]
    lines = ["def encode(v):", f"    out = {{{', '.join(items)}}}", *optional, "    return out"]
    return _define("encode", lines, names)


def _plain_encoder(shape: Shape) -> Callable[[Any], Any]:
    """A plain shape's encoder: its dict (any mapping) as given, keys and nulls kept, each
    non-null value converted where its kind's `Kind.encoder` says; a key the shape does not
    declare raises ValueError (a bug in the producer, never input)."""
    names: dict[str, Any] = {"_allowed": shape.names, "_unknown": _unknown_keys,
                             "_as_dict": as_dict, "_proxy": MappingProxyType}
    converted = []
    for k, field in enumerate(shape.fields):
        convert = field.kind.encoder()
        if convert is not None:
            names[f"_e{k}"] = convert
            converted += [f"    x{k} = out.get({field.name!r})", f"    if x{k} is not None:",
                          f"        out[{field.name!r}] = _e{k}(x{k})"]
    # Copied only when a value changes (or the mapping is no dict): orjson reads it right away.
    copy = "v.copy() if type(v) is dict or type(v) is _proxy else dict(v)" if converted else \
        "_as_dict(v)"
    lines = ["def encode(v):", "    if not _allowed.issuperset(v):",
             "        _unknown(v, _allowed)", f"    out = {copy}", *converted, "    return out"]
    return _define("encode", lines, names)


def _unknown_keys(value: Any, allowed: frozenset[str]) -> None:
    raise ValueError(f"keys {sorted(set(value) - allowed)} are not fields of {sorted(allowed)}")


def _define(name: str, lines: list[str], names: dict[str, Any]) -> Callable[..., Any]:
    exec("\n".join(lines), names)  # noqa: S102  # our own declarations, never input
    compiled: Callable[..., Any] = names[name]
    return compiled
