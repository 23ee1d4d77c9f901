"""Typed settings: build a frozen dataclass from a YAML mapping, or say exactly why not.

Every settings class (a study's training block, each environment family's and each
architecture family's ``Config``) is a frozen dataclass whose fields carry their
type, default and a docstring.  :func:`build` checks a mapping against it: unknown
keys (listing the valid ones), wrong types, and the class's own ``validate`` checks,
each reported as a :class:`~mesaprobe.errors.SpecError` naming the key path.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from mesaprobe.errors import SpecError

T = TypeVar("T")


class SettingError(ValueError):
    """Raised by a settings class's ``validate``: ``key`` is the field at fault."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


#: Characters of a value shown in an error message; longer values are cut (a message stays one
#: readable line whatever the file holds).
SHOWN_CHARACTERS = 80


def shorten(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """``text``, cut to ``limit`` characters with ``...`` where it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: object) -> str:
    """A value as error messages show it: its kind and, shortened, its text."""
    if isinstance(value, str):
        return f"the string {shorten(repr(value))}"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if value is None:
        return "nothing (null)"
    if isinstance(value, int) and value.bit_length() > 64:  # Python refuses to print very long ones
        return f"an integer of about {round(value.bit_length() * math.log10(2))} digits"
    if isinstance(value, (list, tuple)):
        try:
            return f"a list {shorten(repr(list(value)))}"
        except (ValueError, RecursionError):  # an integer too long to print, or a list holding itself
            return f"a list of {len(value)} values"
    if isinstance(value, Mapping):
        return "a mapping"
    return shorten(repr(value))


def expected_text(annotation: Any) -> str:
    """A plain-English name for a type annotation, for error messages."""
    origin = typing.get_origin(annotation)
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if annotation is bool:
        return "true or false"
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(expected_text(arg) for arg in typing.get_args(annotation))
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        return f"a list of {expected_text(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return str(annotation)


def coerce(value: Any, annotation: Any, key: str, file: str) -> Any:
    """Check ``value`` against ``annotation``; return it in the field's own type."""
    origin = typing.get_origin(annotation)
    fail = SpecError(file, key, f"expected {expected_text(annotation)}, got {describe(value)}")
    if annotation is Any:
        return value
    if annotation is type(None):  # the null of an optional setting (``float | None``)
        if value is None:
            return None
        raise fail
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise fail
    if annotation is int:
        if isinstance(value, bool):
            raise fail
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            raise SpecError(
                file, key, f"expected an integer, got {describe(value)} (write 3_000_000 or 3.0e+6)"
            )
        raise fail
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the range of floating point
            number = math.inf
        if not math.isfinite(number):
            raise SpecError(file, key, f"expected a finite number, got {describe(value)}")
        return number
    if annotation is str:
        if isinstance(value, str):
            return value
        raise fail
    if origin is Literal:
        if any(value == choice and type(value) is type(choice) for choice in typing.get_args(annotation)):
            return value
        raise fail
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return coerce(value, arg, key, file)
            except SpecError:
                continue
        raise fail
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail
        args = typing.get_args(annotation)
        element = args[0]
        items = tuple(coerce(item, element, f"{key}[{i}]", file) for i, item in enumerate(value))
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return items
        if origin is tuple and len(args) != len(items):
            raise SpecError(file, key, f"expected a list of {len(args)} values, got {len(items)}")
        return items if origin is tuple else list(items)
    raise TypeError(f"unsupported settings annotation {annotation!r} for {key}")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The type of each field of a settings class, resolved once per class (a grid of many
    points builds the same classes many times)."""
    return typing.get_type_hints(cls)


def build(cls: type[T], mapping: Any, *, key: str, file: str, drop: tuple[str, ...] = ()) -> T:
    """Build ``cls`` (a frozen dataclass) from ``mapping``; SpecError on any problem.

    ``key`` is the dotted path of ``mapping`` in the study file; ``drop`` names keys
    that belong to the caller (``family``, ``kind``, an environment's ``task_pool``) and
    are not fields of ``cls`` (they are listed with the valid keys in errors).
    """
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise SpecError(file, key, f"expected a mapping of settings, got {describe(mapping)}")
    hints = field_types(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    values: dict[str, Any] = {}
    for name, value in mapping.items():
        if name in drop:
            continue
        if name not in fields:
            valid = ", ".join(sorted({*fields, *drop})) or "(none)"
            raise SpecError(file, join(key, str(name)), f"unknown setting; expected one of: {valid}")
        values[name] = coerce(value, hints[name], join(key, name), file)
    missing = [
        name
        for name, field in fields.items()
        if name not in values
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SpecError(file, join(key, missing[0]), "required setting is missing")
    instance = cls(**values)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        try:
            validate()
        except SettingError as error:
            raise SpecError(file, join(key, error.key), error.problem) from None
    return instance


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a settings dataclass (for schema docs)."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for owner in reversed(cls.__mro__):  # a subclass's settings include its bases' (documented there)
        if not dataclasses.is_dataclass(owner):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(owner)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for statement, following in itertools.pairwise(body):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def as_dict(instance: Any) -> dict[str, Any]:
    """A settings dataclass as plain JSON-ready data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return {field.name: plain(getattr(instance, field.name)) for field in dataclasses.fields(instance)}
