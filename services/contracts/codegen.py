"""Compiles a `Record` declaration into one Python function, the way `dataclasses` builds an
`__init__`: straight-line code with each field's limits inlined as constants, so a valid object
costs one call (measured: a loop over generic per-field closures ran the decoders at ~0.8x the
hand-written ones). Every check that fails, and every value the inlined test does not settle,
goes to the field's reader (`Kind.reader`), which raises the exact `InvalidEvent`; so the
generated code decides nothing the readers would not, it only skips calls on the valid path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from services.contracts.kinds import Kind, Shared
from services.streaming.event_fields import (
    ErrorCode,
    check_keys,
    child,
    fail,
    not_greater,
    show,
)

if TYPE_CHECKING:
    from services.contracts.records import Record

_MISSING = object()


def compile_record(record: Record, ascii_only: bool) -> Callable[[Any, str], Any]:
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
    args: list[str] = []
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
        args.append(f"{field.attribute}={var}")
        variables[field.name] = var
    if record.less_or_equal is not None:
        a, b = record.less_or_equal
        lines += [f"    if {variables[a]} > {variables[b]}:",
                  f"        _not_greater(raw, path, {a!r}, {b!r})"]
    if record.plain:
        lines += _plain_return(record, variables, names)
    else:
        lines.append(f"    return _cls({', '.join(args)})")
    exec("\n".join(lines), names)  # noqa: S102  # our own declarations, never input
    compiled: Callable[[Any, str], Any] = names["read"]  # type: ignore[assignment]
    return compiled


def _check_together(raw: dict[str, Any], path: str, a: str, b: str) -> None:
    missing = b if a in raw else a
    fail(child(path, missing), ErrorCode.MISSING_FIELD, f"{a} and {b} go together")


def _check_one_of(raw: dict[str, Any], path: str, a: str, b: str, shown: str) -> None:
    code = ErrorCode.CONFLICT if a in raw else ErrorCode.MISSING_FIELD
    fail(path, code, f"needs exactly one of {shown}")


def _plain_return(record: Record, variables: dict[str, str], names: dict[str, Any]) -> list[str]:
    """A plain record's return: a dict literal of the decoded values in JSON form (JSON names,
    declared order), an optional field left out when absent unless `keep_absent`."""
    required, optional = [], []
    for k, field in enumerate(record.fields):
        var, convert = variables[field.name], _decoded_json(field.kind)
        if convert is not None:
            names[f"_j{k}"] = convert
        value = var if convert is None else f"_j{k}({var})"
        if field.required or record.keep_absent:
            required.append(f"{field.name!r}: {value}")
        else:
            names[f"_p{k}"] = field.kind.absent
            optional += [f"    if {var} is not _p{k}:", f"        out[{field.name!r}] = {value}"]
    return [f"    out = {{{', '.join(required)}}}", *optional, "    return out"]


def _decoded_json(kind: Kind) -> Callable[[Any], Any] | None:
    """How a kind's decoded value becomes its JSON form inside a plain record: None when it
    already is (strings, numbers, plain records), else a converter (tuple -> list, ...)."""
    from services.contracts.choices import ClassMap
    from services.contracts.containers import Array

    inner = kind.kind if isinstance(kind, Shared) else kind
    if _is_json(inner):
        return None
    if isinstance(inner, Array) and _is_json(_unshared(inner.items)):
        return _as_list
    if isinstance(inner, ClassMap) and _is_json(_unshared(inner.values)):
        return dict
    return kind.to_json


def _unshared(kind: Kind) -> Kind:
    return kind.kind if isinstance(kind, Shared) else kind


def _is_json(kind: Kind) -> bool:
    from services.contracts.choices import Choice

    if getattr(kind, "fields", None) is not None:  # a record: plain ones decode to JSON
        return bool(getattr(kind, "plain", False))
    if isinstance(kind, Choice):
        return kind.convert is None
    return type(kind).to_json is Kind.to_json


def _as_list(value: Any) -> list[Any] | None:
    return None if value is None else list(value)
