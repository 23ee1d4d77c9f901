"""The study format's reference, generated from the typed settings (``mesaprobe list``).

Every extension axis (environments, architectures, probes, baselines) is a registry of
names, each with a frozen ``Config`` dataclass whose fields carry a type, a default and a
docstring; the ``training`` block is :class:`~mesaprobe.train.config.TrainingConfig`.
This module reads them, so the reference can never disagree with what a study accepts:
:func:`reference` returns JSON-ready data, :func:`render` the same as text.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from mesaprobe.baselines import BASELINES
from mesaprobe.envs import ENVIRONMENTS
from mesaprobe.errors import UserError
from mesaprobe.models import ARCHITECTURES
from mesaprobe.probes import PROBES
from mesaprobe.registry import Registry, UnknownName
from mesaprobe.settings import expected_text, field_docs, field_types
from mesaprobe.study.load import study_schema
from mesaprobe.train import ALGORITHMS
from mesaprobe.train.config import TrainingConfig


@dataclass(frozen=True)
class Axis:
    """One extension axis of a study: its block, the key that picks a name, its registry."""

    name: str
    """The study's key for the axis (``environments``), also its name on the command line."""
    singular: str
    """The axis in the singular (``environment``), accepted on the command line too."""
    selector: str
    """The key of a block that selects a registered name (``family``, ``kind``, ``algorithm``)."""
    registry: Registry
    """Name -> class (training: the algorithms, whose settings are the block's own)."""
    settings: type | None = None
    """Training only: the settings of the block itself (TrainingConfig)."""


def axes() -> tuple[Axis, ...]:
    """Every extension axis, in the order a study lists them."""
    return (
        Axis("environments", "environment", "family", ENVIRONMENTS),
        Axis("architectures", "architecture", "family", ARCHITECTURES),
        Axis("probes", "probe", "kind", PROBES),
        Axis("baselines", "baseline", "family", BASELINES),
        Axis("training", "training", "algorithm", ALGORITHMS, settings=TrainingConfig),
    )


def find_axis(text: str) -> Axis:
    """The axis named ``text`` (plural or singular); a one-line UserError otherwise."""
    for axis in axes():
        if text in (axis.name, axis.singular):
            return axis
    expected = ", ".join(axis.name for axis in axes())
    raise UserError(f"unknown axis {text!r}; expected one of: {expected} (or the singular)")


def summary(thing: type) -> str:
    """The first paragraph of a class's own docstring, else of its module's, on one line."""
    doc = thing.__dict__.get("__doc__")
    if dataclasses.is_dataclass(thing) and doc and doc.startswith(f"{thing.__name__}("):
        doc = None  # the signature dataclasses write for a class without a docstring
    doc = doc or sys.modules[thing.__module__].__doc__ or ""
    paragraph = inspect.cleandoc(doc).split("\n\n")[0]
    return plain_text(paragraph)


def plain_text(text: str) -> str:
    """reStructuredText markup as plain text on one line: ``:mod:`x``` and ````x```` become `x`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return " ".join(text.split())


def type_text(annotation: Any) -> str:
    """A field's type in plain words (``an integer``, ``one of 'a', 'b'``, ``... or null``)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return "any value (see its description)"
    if origin in (typing.Union, types.UnionType):
        parts = typing.get_args(annotation)
        words = [type_text(part) for part in parts if part is not type(None)]
        return " or ".join(words + ["null"] * (type(None) in parts))
    if origin in (tuple, list) and typing.get_origin(typing.get_args(annotation)[0]) is Literal:
        return "a list of " + expected_text(typing.get_args(annotation)[0]).removeprefix("one of ")
    return expected_text(annotation)


def plain(value: Any) -> Any:
    """A default as JSON-ready data (tuples become lists)."""
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def yaml_text(value: Any) -> str:
    """A JSON-ready value as it is written in a study file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(yaml_text(item) for item in value) + "]"
    return str(value)


def settings_reference(cls: type) -> list[dict[str, Any]]:
    """Each field of a settings dataclass: name, type in words, default (absent: required), docstring."""
    hints, docs = field_types(cls), field_docs(cls)
    fields = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        entry: dict[str, Any] = {"name": field.name, "type": type_text(hints[field.name])}
        if field.default is not dataclasses.MISSING:
            entry["default"] = plain(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            entry["default"] = plain(field.default_factory())
        entry["doc"] = plain_text(docs.get(field.name, ""))
        fields.append(entry)
    return fields


def block_keys(axis: Axis) -> dict[str, str]:
    """Keys every block of the axis takes besides its name's settings (``task_pool``, ``training``),
    with their descriptions, from the study schema."""
    block = study_schema()["properties"][axis.name].get("additionalProperties")
    if not isinstance(block, dict):
        return {}
    own = {
        field.name
        for name in axis.registry
        for field in dataclasses.fields(getattr(axis.registry.get(name), "Config", object))
    }
    return {
        key: plain_text(value.get("description", ""))
        for key, value in block.get("properties", {}).items()
        if key != axis.selector and key not in own
    }


def entry_reference(axis: Axis, name: str, *, full: bool) -> dict[str, Any]:
    """One registered name: how a block selects it, its summary and its settings."""
    try:
        entry = axis.registry.get(name)
    except UnknownName as error:
        raise UserError(str(error)) from None
    config = getattr(entry, "Config", None)
    data: dict[str, Any] = {"axis": axis.name, "name": name, "selected_by": {axis.selector: name}}
    data["summary"] = summary(entry)
    if config is None:
        return data
    data["settings_class"] = config.__name__
    shared = [
        other
        for other in axis.registry
        if other != name and getattr(axis.registry.get(other), "Config", None) is config
    ]
    if shared:
        data["settings_shared_with"] = shared
    settings = settings_reference(config)
    data["settings"] = settings if full else [without(field, "doc") for field in settings]
    return data


def without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in mapping.items() if name != key}


def axis_reference(axis: Axis, *, full: bool) -> dict[str, Any]:
    """An axis: the key that selects a name, the keys every block takes, every name."""
    data: dict[str, Any] = {"axis": axis.name, "selector": axis.selector}
    if axis.settings is not None:
        data["summary"] = summary(axis.settings)
        data["settings_class"] = axis.settings.__name__
        data["settings"] = settings_reference(axis.settings)
        for field in data["settings"]:
            if field["name"] == axis.selector:
                field["type"] = "one of " + ", ".join(repr(name) for name in axis.registry)
    keys = block_keys(axis)
    if keys:
        data["block_keys"] = keys
    names = axis.registry.names()
    if full:
        data["names"] = [entry_reference(axis, name, full=False) for name in names]
    else:
        data["names"] = [{"name": name, "summary": summary(axis.registry.get(name))} for name in names]
    return data


def reference(axis: str | None = None, name: str | None = None) -> dict[str, Any]:
    """``mesaprobe list [axis] [name]`` as JSON-ready data; a one-line UserError for unknown names."""
    if axis is None:
        return {"axes": [axis_reference(one, full=False) for one in axes()]}
    found = find_axis(axis)
    if name is None:
        return axis_reference(found, full=True)
    return entry_reference(found, name, full=True)


def render(data: dict[str, Any]) -> str:
    """:func:`reference`'s data as text."""
    if "axes" in data:
        return render_overview(data)
    if "selector" in data:
        return render_axis(data)
    return render_entry(data)


def wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text, width=96, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    )


def setting_lines(settings: list[dict[str, Any]], *, docs: bool) -> list[str]:
    """``key: default  # type`` per field (as in a study file), its docstring below it if ``docs``."""
    lines = []
    for field in settings:
        default = yaml_text(field["default"]) if "default" in field else "(required)"
        lines.append(f"  {field['name']}: {default}  # {field['type']}")
        if docs and field.get("doc"):
            lines += wrap(field["doc"], "      ")
    return lines


def render_overview(data: dict[str, Any]) -> str:
    lines = []
    for axis in data["axes"]:
        lines.append(f"{axis['axis']}  (a block's `{axis['selector']}` picks one)")
        if "settings_class" in axis:
            count = len(axis["settings"])
            lines += wrap(f"{axis['summary']} Settings: {axis['settings_class']} ({count} keys).", "  ")
        width = max((len(entry["name"]) for entry in axis["names"]), default=0)
        for entry in axis["names"]:
            lines += textwrap.wrap(
                entry["summary"],
                width=96,
                initial_indent=f"  {entry['name']:<{width}}  ",
                subsequent_indent=" " * (width + 4),
                break_on_hyphens=False,
            )
        lines.append("")
    lines.append(
        "`mesaprobe list AXIS` for every name's settings, `mesaprobe list AXIS NAME` for their meaning."
    )
    return "\n".join(lines)


def render_axis(data: dict[str, Any]) -> str:
    lines = [f"{data['axis']}  (a block's `{data['selector']}` picks one of the names below)"]
    if "settings_class" in data:
        lines += wrap(f"{data['summary']} Settings: {data['settings_class']}.", "")
        lines += setting_lines(data["settings"], docs=True)
    if data.get("block_keys"):
        lines.append("every block also takes:")
    for key, description in data.get("block_keys", {}).items():
        lines += wrap(f"{key}: {description}", "  ")
    for entry in data["names"]:
        lines += ["", *wrap(f"{entry['name']}: {entry['summary']}", "")]
        lines.append(f"  {data['selector']}: {entry['name']}")
        lines += setting_lines(entry.get("settings", []), docs=False)
    lines += ["", f"`mesaprobe list {data['axis']} NAME` for what each setting means."]
    return "\n".join(lines)


def render_entry(data: dict[str, Any]) -> str:
    lines = [f"{data['name']} ({data['axis']})", *wrap(data["summary"], "")]
    if "settings_class" in data:
        shared = data.get("settings_shared_with")
        also = f", shared with {', '.join(shared)}" if shared else ""
        lines.append(f"settings: {data['settings_class']}{also}")
    selector, name = next(iter(data["selected_by"].items()))
    lines.append(f"  {selector}: {name}")
    lines += setting_lines(data.get("settings", []), docs=True)
    return "\n".join(lines)
